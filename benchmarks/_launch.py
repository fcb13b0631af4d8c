"""Start `imgopt serve` exactly as `python -m imgopt serve ...`, plus optional experiment knobs
(benchmarks only, so the experiments need no change to imgopt itself):

  BENCH_MALLOPT="arena=2,mmap=262144"   glibc mallopt() before any thread starts
  BENCH_MALLOC_TRIM_S=5                 a thread calling malloc_trim(0) every 5 s
  BENCH_DISKCACHE_POLICY=...            force diskcache's eviction policy (e.g. least-recently-stored)
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
    period = float(os.environ.get("BENCH_MALLOC_TRIM_S", "0") or 0)
    if period > 0:
        threading.Thread(target=_trimmer, args=(period,), daemon=True, name="malloc-trim").start()
    from imgopt.cli import main

    sys.exit(main(sys.argv[1:]))
