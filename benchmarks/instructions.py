#!/usr/bin/env python3
"""imgopt's transform step vs raw libvips in instructions (valgrind callgrind).

CPU time on this shared 2-core VM moves 5-30% between identical runs, which is larger than the
≤ 5% the issue allows imgopt's layers, so bench_transform.py's CPU ratio needs many quiet rounds.
callgrind counts instructions instead: the same count for the same binary, input and environment
whatever else the machine does. For each format x width, three runs of this script under
callgrind, libvips on one thread (VIPS_CONCURRENCY=1, so thread scheduling cannot change the
work):

* ``base``: imports, the corpus read, and one warm-up job through both paths (libraries loaded,
  encoders initialised);
* ``raw``: the base + every photo (PNG output: the PNG sources) through ``thumbnail_buffer`` + save
  with Next.js's settings (``_common.raw_transform``), no imgopt code;
* ``imgopt``: the base + the same jobs through ``imgopt.transform.process`` with ENCODERS set to
  the same Next settings (type detection, animation check, header pixel check, thumbnail, sRGB,
  deadline watch, encode).

ratio = (imgopt - base) / (raw - base), the "≤ 1.05 × raw libvips" in instructions. The
outputs of both paths are compared byte for byte (the same settings must give the same files).

  python benchmarks/instructions.py                 # jpeg,webp,png x 640,1080  (~25 min)
  python benchmarks/instructions.py --formats avif --widths 640 --images 2   (AVIF: ~60x slower)

Instructions are not time (cache misses, SIMD width), but the layers imgopt adds are Python and
small libvips calls, where the two track each other.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

Q = 75


def _child(mode: str, fmt: str, width: int, images: int) -> None:
    """Runs under callgrind: the work for one mode; prints the output sizes and a digest."""
    import hashlib

    import _common as C
    from imgopt import transform as T

    imgs = C.load_corpus(("png",) if fmt == "png" else ("photo",))[:images]
    T.configure_libvips()
    T.ENCODERS.update(C.NEXT_ENCODERS)
    neg = C.negotiated(fmt)

    def raw(im: C.Img) -> bytes:
        return C.raw_transform(im.data, width, C.output_mime(im, fmt), Q, C.NEXT_ENCODERS)

    def imgopt(im: C.Img) -> bytes:
        r = T.process(im.data, neg, False, width, Q, 268_402_689, time.monotonic() + 3600)
        if r.kind != "optimized":
            raise SystemExit(f"{im.name}: {r.kind}")
        return r.body

    warm = imgs[0]
    raw(warm)
    imgopt(warm)
    digest = hashlib.sha256()
    if mode != "base":
        for im in imgs:
            digest.update((raw if mode == "raw" else imgopt)(im))
    print(json.dumps({"digest": digest.hexdigest()}))


def _callgrind(mode: str, fmt: str, width: int, images: int, tmp: str, timeout: float) -> tuple[int, str]:
    out = os.path.join(tmp, f"cg.{fmt}.{width}.{mode}")
    env = {**os.environ, "VIPS_CONCURRENCY": "1"}
    # --fair-sched=yes: once (PNG 1080, imgopt path) every thread of the child sat in a futex wait
    # under valgrind's default scheduling after 49 G instructions; the same job never hung natively
    try:
        p = subprocess.run(["valgrind", "--tool=callgrind", "--fair-sched=yes", f"--callgrind-out-file={out}",
                            sys.executable, __file__, "--child", mode, fmt, str(width), str(images)],
                           env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{mode} {fmt} {width}: no answer under callgrind in {timeout} s") from None
    if p.returncode != 0:
        raise SystemExit(f"{mode} {fmt} {width}: exit {p.returncode}\n{p.stderr[-2000:]}")
    m = re.search(r"^totals: (\d+)", Path(out).read_text(), re.M)
    os.unlink(out)
    return int(m.group(1)), json.loads(p.stdout.strip().splitlines()[-1])["digest"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=4, metavar=("MODE", "FMT", "W", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--formats", default="jpeg,webp,png")
    ap.add_argument("--widths", default="640,1080")
    ap.add_argument("--images", type=int, default=99, help="at most this many corpus images per case")
    ap.add_argument("--jobs", type=int, default=3, help="callgrind runs at once (counts do not depend on it)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds for one run under callgrind")
    a = ap.parse_args()
    if a.child:
        mode, fmt, w, n = a.child
        _child(mode, fmt, int(w), int(n))
        return 0
    cases = [(f, int(w)) for f in a.formats.split(",") for w in a.widths.split(",")]
    print("| format | width | raw libvips (M instr) | imgopt (M instr) | imgopt / raw | same bytes |")
    print("|---|---|---|---|---|---|", flush=True)
    ratios = []
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(a.jobs) as pool:
        for f, w in cases:  # one row as soon as its three runs are done
            runs = {m: pool.submit(_callgrind, m, f, w, a.images, tmp, a.timeout) for m in ("base", "raw", "imgopt")}
            (base, _), (raw, rd), (imgopt, od) = (runs[m].result() for m in ("base", "raw", "imgopt"))
            ratio = (imgopt - base) / (raw - base)
            ratios.append(ratio)
            print(f"| {f} | {w} | {(raw - base) / 1e6:,.0f} | {(imgopt - base) / 1e6:,.0f} | {ratio:.4f} | "
                  f"{'yes' if rd == od else 'NO'} |", flush=True)
    print(f"\nmedian imgopt / raw: {statistics.median(ratios):.4f} over {len(ratios)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
