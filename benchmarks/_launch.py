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


if __name__ == "__main__":
    period = float(os.environ.get("BENCH_MALLOC_TRIM_S", "0") or 0)
    if period > 0:
        threading.Thread(target=_trimmer, args=(period,), daemon=True, name="malloc-trim").start()
    from imgopt.cli import main

    sys.exit(main(sys.argv[1:]))
