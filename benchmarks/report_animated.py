"""Animated GIF / APNG / WebP: original bytes vs imgopt's animated WebP, per requested width.

    python benchmarks/report_animated.py [--widths 0,640,256] [--extra FILE ...]

Inputs: the animations of the generated test corpus, the realistic ones tests/test_animated.py
generates (a dithered photo pan as GIF, APNG and WebP), and the benchmark corpus's
pan-anim.gif when it has been built (benchmarks/make_corpus.py). Width 0 means "the source's own width" (no
resize: re-encoding alone). "served" is what the service answers: the WebP, or the original
when the WebP is not smaller. Prints Markdown.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common as C  # noqa: E402
from imgopt import animated, transform  # noqa: E402

MIMES = {".gif": "image/gif", ".png": "image/png", ".webp": "image/webp"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="0,640,256")
    ap.add_argument("--extra", nargs="*", default=[])
    args = ap.parse_args()
    transform.configure_libvips()
    from imagecorpus import build_corpus
    from test_animated import make_animations

    root = Path(tempfile.mkdtemp(prefix="imgopt-anim-"))
    build_corpus(root)
    make_animations(root)
    files = [root / n for n in ("animated.gif", "animated-odd.gif", "animated.png", "animated2.png", "animated.webp",
                                "pan.gif", "pan.png", "pan.webp")]
    bench = C.CORPUS / "pan-anim.gif"
    if bench.is_file():
        files.append(bench)
    files += [Path(p) for p in args.extra]
    widths = [int(w) for w in args.widths.split(",")]
    print("| animation | frames | size | original bytes | width | WebP bytes | served bytes | saved | CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    tot_orig = tot_served = 0
    for f in files:
        buf = f.read_bytes()
        mime = MIMES[f.suffix]
        frames, fw, fh = animated.probe(buf, mime)
        for w in widths:
            width = fw if w == 0 else w
            if width > fw:
                continue
            t0 = time.process_time()
            try:
                img = animated._load_apng(buf, width, frames) if mime == "image/png" else animated._load_vips(buf, width)
                webp = img.webpsave_buffer(Q=75, effort=animated.WEBP_EFFORT, keep="none", mixed=mime != "image/webp")
            except animated.Skip as e:
                print(f"| {f.name} | {frames} | {fw}x{fh} | {len(buf):,} | {width} | skipped: {e} | | | |")
                continue
            cpu = time.process_time() - t0
            served = min(len(webp), len(buf))
            tot_orig += len(buf)
            tot_served += served
            print(f"| {f.name} | {frames} | {fw}x{fh} | {len(buf):,} | {width} | {len(webp):,} | {served:,} | "
                  f"{100 * (len(buf) - served) / len(buf):.0f}% | {cpu * 1000:.0f} ms |")
    print(f"\nTotal: {tot_orig:,} bytes of originals, {tot_served:,} served "
          f"({100 * (tot_orig - tot_served) / tot_orig:.0f}% saved); q=75, effort {animated.WEBP_EFFORT}.")


if __name__ == "__main__":
    main()
