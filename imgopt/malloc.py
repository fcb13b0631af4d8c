"""glibc malloc settings for a libvips process: fewer arenas, and giving freed memory back to
the system when the workers go idle.

libvips allocates and frees large pixel buffers on its worker threads; with glibc's defaults the
freed memory stays in the process (per-thread arenas, a heap top that cannot shrink past a live
block), so RSS grows with every new peak of concurrent work. Only glibc is touched: with another
allocator preloaded (LD_PRELOAD, e.g. jemalloc), or on another platform, this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Callable

_M_ARENA_MAX = -8


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or "LD_PRELOAD" in os.environ:
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 - glibc has these; musl has neither
        libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return libc


def tune() -> None:
    """Two glibc arenas; call before any thread starts. Skipped when the operator set MALLOC_*
    variables or preloads another allocator.

    glibc's default of 8 arenas per core lets each libvips worker thread keep its own freed
    buffers (benchmarks/job_mix.py: peak RSS 776-830 MB, 378-439 MB with 2 arenas).
    glibc's dynamic mmap threshold is left alone. imgopt used to fix it at 256 KiB, so that every
    large buffer went back to the system on free; that cost ~5% of a cold transform's CPU in
    page faults, and ``idle_trimmer`` now gives freed memory back instead. imgopt alone under
    the shared loadgen, 99 cold transforms: CPU per image at c2 317 -> 302 ms, peak RSS
    350 -> 420-490 MB; bench_memory's RSS after 5,000 requests unchanged (benchmarks/FRONTIER.md,
    "The fixed mmap threshold dropped").
    """
    libc = _glibc()
    if libc is None or any(k.startswith("MALLOC_") for k in os.environ):
        return
    libc.mallopt(_M_ARENA_MAX, 2)


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
