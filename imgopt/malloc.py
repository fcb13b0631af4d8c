"""glibc malloc settings for a libvips process: fewer arenas, a fixed mmap threshold, and
giving freed memory back to the system when the workers go idle.

libvips allocates and frees large pixel buffers on its worker threads; with glibc's defaults the
freed memory stays in the process (per-thread arenas, a heap top that cannot shrink past a live
block), so RSS grows with every new peak of concurrent work. Only glibc is touched: with another
allocator preloaded (LD_PRELOAD, e.g. jemalloc), or on another platform, this does nothing.

With worker processes (imgopt/workers.py) each worker calls ``tune()`` at its start and runs the
idle trim itself when the server asks (all workers idle for 0.2 s); recycling a worker after
``--worker-max-jobs`` jobs or over ``--worker-max-rss`` returns whatever is left.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable

_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or "LD_PRELOAD" in os.environ:
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        # glibc has both; musl has neither (the attribute lookup raises AttributeError)
        getattr(libc, "mallopt")  # noqa: B009
        getattr(libc, "malloc_trim")  # noqa: B009
    except (OSError, AttributeError):
        return None
    return libc


def tune() -> None:
    """Two glibc arenas and a 4 MiB mmap threshold; call before any thread starts. Skipped when
    the operator set MALLOC_* variables or preloads another allocator.

    glibc's default of 8 arenas per core lets each libvips worker thread keep its own freed
    buffers (benchmarks/job_mix.py: peak RSS 776-830 MB, 378-439 MB with 2 arenas). Buffers over
    the mmap threshold are mapped for each use and go back to the system on free. imgopt had it
    at 256 KiB, which cost ~4% of a cold transform's CPU in page faults (`perf`: 5.4% of the
    server's samples); glibc's dynamic threshold (up to 32 MiB) saved ~5% but let RSS settle
    ~50 MB higher and creep by +21% in one bench_memory run. 4 MiB keeps the RSS of 256 KiB
    (bench_memory, 5,000 requests: +5.7% without the in-memory tiers, +6.8% net of them) at
    0.55-0.65 M instead of 0.8 M minor faults per cold pass (c2 CPU per image 317 -> 311 ms).
    benchmarks/FRONTIER.md, "The mmap threshold", has the variants.
    """
    libc = _glibc()
    if libc is None or any(k.startswith("MALLOC_") for k in os.environ):
        return
    libc.mallopt(_M_ARENA_MAX, 2)
    libc.mallopt(_M_MMAP_THRESHOLD, 4 * 1024 * 1024)  # larger buffers go back to the OS on free


def idle_trimmer() -> Callable[[], None] | None:
    """``malloc_trim(0)``, to run when the transform workers have gone idle; None without glibc
    or when IMGOPT_MALLOC_TRIM=0.

    It returns the free pages of every arena to the system (madvise), not only the heap's top.
    After the cold job mix (benchmarks/job_mix.py's jobs, 2 threads) RSS went from 123 MB to
    66 MB in one call of 8 ms; a call with little to return takes ~0.2 ms. With nothing running
    there is no one to slow down, and under steady load the workers never go idle, so it never
    runs there (the pages it gives back would only be faulted in again by the next job).
    """
    libc = _glibc()
    if libc is None or os.environ.get("IMGOPT_MALLOC_TRIM", "1") == "0":
        return None
    return lambda: libc.malloc_trim(0)
