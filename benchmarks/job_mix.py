#!/usr/bin/env python3
"""The cold job mix of benchmarks/loadgen.py (every corpus image x 640/1080/1920 x
webp/avif/original-type Accept) through imgopt.transform.process in-process.

  python benchmarks/job_mix.py [--threads 2] [--reps 2]       # CPU s, wall s, peak RSS
  python benchmarks/job_mix.py --attribute                     # CPU by step (1 thread)

Allocator and thread variants are set from outside, e.g. VIPS_CONCURRENCY=1, or
BENCH_ARENAS=2 BENCH_MMAP=262144 (mallopt before any thread starts). Run variants interleaved:
CPU time on this shared machine moves by ~5% between runs.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import json
import os
import resource
import sys
import time

if os.environ.get("BENCH_ARENAS") or os.environ.get("BENCH_MMAP"):
    _libc = ctypes.CDLL("libc.so.6")
    if os.environ.get("BENCH_ARENAS"):
        _libc.mallopt(-8, int(os.environ["BENCH_ARENAS"]))
    if os.environ.get("BENCH_MMAP"):
        _libc.mallopt(-3, int(os.environ["BENCH_MMAP"]))

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import _common as C  # noqa: E402

from imgopt import transform as T  # noqa: E402

NEG = {"webp": "image/webp", "avif": "image/avif", "jpeg": ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--memo", default="0", help="ResizedMemo size in MB (0 = none)")
    ap.add_argument("--attribute", action="store_true")
    a = ap.parse_args()
    T.configure_libvips()
    man = json.load(open(C.CORPUS / "manifest.json"))["images"]
    imgs = [(m["name"], (C.CORPUS / m["name"]).read_bytes()) for m in man if m["format"] != "svg"]
    jobs = [(n, b, w, f) for n, b in imgs for w in (640, 1080, 1920) for f in NEG]
    if a.attribute:
        dec: collections.Counter = collections.Counter()
        enc: collections.Counter = collections.Counter()
        for name, b, w, f in jobs:
            p = T.plan(b, NEG[f], False)
            if p.passthrough:
                continue
            c0 = time.process_time()
            job = T.Job(b, p.output, w, 75, 268402689, time.monotonic() + 60)
            T._check_pixels(job)
            img = T._to_srgb8(T._load(job)).copy_memory()
            c1 = time.process_time()
            T.ENCODERS[p.output](img, 75)
            dec[name] += c1 - c0
            enc[p.output] += time.process_time() - c1
        print(f"decode+resize {sum(dec.values()):.1f} s, encode {sum(enc.values()):.1f} s")
        print("encode by output:", {k: round(v, 1) for k, v in enc.most_common()})
        print("decode by source:", {k: round(v, 1) for k, v in dec.most_common()})
        return 0
    import random

    random.Random(42).shuffle(jobs)  # as loadgen: formats of one image are spread out
    for rep in range(a.reps):
        memo = T.ResizedMemo(int(a.memo) << 20)

        def run(j: tuple) -> int:
            n, b, w, f = j
            return len(T.process(b, NEG[f], False, w, 75, 268402689, time.monotonic() + 60,
                                 memo=memo, source_id=n).body)

        c0, t0 = time.process_time(), time.monotonic()
        with ThreadPoolExecutor(a.threads) as ex:
            out = sum(ex.map(run, jobs))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"rep {rep}: CPU {time.process_time() - c0:.2f} s, wall {time.monotonic() - t0:.2f} s, "
              f"{out} bytes, {len(jobs)} jobs, memo hits {memo.hits}, peak RSS {rss:.0f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
