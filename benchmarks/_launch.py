"""Start `imgopt serve` exactly as `python -m imgopt serve ...`, optionally with a periodic
glibc malloc_trim(0) thread (env BENCH_MALLOC_TRIM_S=seconds) for the RSS-creep experiment.

Used only by the benchmarks, so the allocator experiment needs no change to imgopt itself.
"""

import ctypes
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _trimmer(period: float) -> None:
    libc = ctypes.CDLL("libc.so.6")
    while True:
        time.sleep(period)
        libc.malloc_trim(0)


def _mallopt(spec: str) -> None:
    """BENCH_MALLOPT="arena=2,mmap=262144": the in-process equivalent of MALLOC_ARENA_MAX /
    MALLOC_MMAP_THRESHOLD_, called before any thread exists (what imgopt's cli could do)."""
    libc = ctypes.CDLL("libc.so.6")
    opts = {"arena": -8, "mmap": -3, "trim": -1}  # M_ARENA_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    for part in spec.split(","):
        k, v = part.split("=")
        if libc.mallopt(opts[k], int(v)) != 1:
            raise SystemExit(f"mallopt({k}={v}) failed")


if __name__ == "__main__":
    if os.environ.get("BENCH_MALLOPT"):
        _mallopt(os.environ["BENCH_MALLOPT"])
    if os.environ.get("BENCH_DISKCACHE_POLICY"):
        # experiment only: force the diskcache eviction policy imgopt's DiskStore asks for
        import diskcache

        _orig_init = diskcache.Cache.__init__

        def _init(self, *args, **kw):  # noqa: ANN001
            kw["eviction_policy"] = os.environ["BENCH_DISKCACHE_POLICY"]
            _orig_init(self, *args, **kw)

        diskcache.Cache.__init__ = _init
    if os.environ.get("BENCH_MEMHOT"):
        # experiment only: an in-process dict of fresh entries checked on the event loop before
        # the disk store (no thread hop, no SQLite, no file read, no CRC) -- to size the gain of
        # a real bounded in-memory hot tier. Unbounded; never use outside a benchmark.
        from imgopt import service as _svc
        from imgopt.cache import cache_key

        _orig_get = _svc.ImageService.get
        _hot: dict = {}

        async def _get(self, req):  # noqa: ANN001
            key = cache_key(req.href, req.width, req.quality, req.cache_mime)
            e = _hot.get(key)
            if e is not None and not e.is_stale():
                return _svc.Served(e, "HIT")
            served = await _orig_get(self, req)
            _hot[key] = served.entry
            return served

        _svc.ImageService.get = _get
    period = float(os.environ.get("BENCH_MALLOC_TRIM_S", "0") or 0)
    if period > 0:
        threading.Thread(target=_trimmer, args=(period,), daemon=True, name="malloc-trim").start()
    from imgopt.cli import main

    sys.exit(main(sys.argv[1:]))
