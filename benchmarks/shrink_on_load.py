#!/usr/bin/env python3
"""Resize-path experiment: libvips ``thumbnail`` (imgopt's _load today) vs a sharp-style
"fast shrink-on-load" (what Next.js gets from sharp's default ``fastShrinkOnLoad: true``).

libvips thumbnail leaves at least a factor of 2 for the final Lanczos3 reduce (JPEG: shrink 8
only when the factor is >= 16); sharp shrinks on load by the largest of 2/4/8 that does not
go below the target, then reduces the rest. The fast path decodes far fewer pixels: less
CPU, a slightly softer result, and fewer output bytes. Measured per photo and width: CPU of
decode+resize (min of --reps, interleaved), and bytes + SSIM (vs the high-quality reference)
after the same WebP q75 / mozjpeg q75 encode.

  python benchmarks/shrink_on_load.py [--widths 640,1080,1920] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import pyvips  # noqa: E402

MAX = 10_000_000


def thumb(buf: bytes, w: int) -> pyvips.Image:
    return pyvips.Image.thumbnail_buffer(buf, w, height=MAX, size="down", option_string="access=sequential")


def fast(buf: bytes, w: int, fmt: str, src_w: int) -> pyvips.Image:
    """sharp-like: shrink-on-load by the largest power of two <= src_w / w, then reduce the rest."""
    factor = src_w / w
    if fmt == "jpeg":
        s = 8 if factor >= 8 else 4 if factor >= 4 else 2 if factor >= 2 else 1
        im = pyvips.Image.new_from_buffer(buf, "", shrink=s, access="sequential") if s > 1 else \
            pyvips.Image.new_from_buffer(buf, "", access="sequential")
    elif fmt == "webp":
        im = pyvips.Image.new_from_buffer(buf, "", scale=min(1.0, w / src_w * 1.0), access="sequential")
    else:
        im = pyvips.Image.new_from_buffer(buf, "", access="sequential")
    im = im.autorot()
    if im.width > w:
        im = im.resize(w / im.width, kernel="lanczos3")
    return im


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="640,1080,1920")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--images", type=int, default=0)
    a = ap.parse_args()
    pyvips.cache_set_max(0)
    photos = [p for p in C.load_corpus(["photo"]) if p.format == "jpeg"]
    if a.images:
        photos = photos[: a.images]
    encs = {"webp": C.NEXT_ENCODERS["image/webp"], "jpeg": C.NEXT_ENCODERS["image/jpeg"]}
    busy0, t0, c0 = C.host_busy_s(), time.monotonic(), time.process_time()
    print("| image | w | thumbnail CPU ms | fast CPU ms | fast/thumb | enc | bytes fast/thumb | SSIM-Y thumb | SSIM-Y fast | Δ |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    tot = {"t": 0.0, "f": 0.0}
    agg = {}
    for p in photos:
        for w in [int(x) for x in a.widths.split(",")]:
            ct, cf_ = [], []
            for _ in range(a.reps):
                s = time.process_time(); thumb(p.data, w).copy_memory(); ct.append(time.process_time() - s)
                s = time.process_time(); fast(p.data, w, p.format, p.width).copy_memory(); cf_.append(time.process_time() - s)
            tot["t"] += min(ct)
            tot["f"] += min(cf_)
            it, ifa = thumb(p.data, w).copy_memory(), fast(p.data, w, p.format, p.width).copy_memory()
            for en, enc in encs.items():
                bt, bf = enc(it, 75), enc(ifa, 75)
                st, sf = C.ssim_of(p.data, bt), C.ssim_of(p.data, bf)
                g = agg.setdefault(en, {"bt": 0, "bf": 0, "st": 0.0, "sf": 0.0, "n": 0})
                g["bt"] += len(bt); g["bf"] += len(bf); g["st"] += st["y"]; g["sf"] += sf["y"]; g["n"] += 1
                print(f"| {p.name} | {w} | {min(ct) * 1000:.0f} | {min(cf_) * 1000:.0f} | {min(cf_) / min(ct):.2f} | {en} | "
                      f"{len(bf) / len(bt):.3f} | {st['y']:.4f} | {sf['y']:.4f} | {sf['y'] - st['y']:+.4f} |", flush=True)
    foreign = max(C.host_busy_s() - busy0 - (time.process_time() - c0), 0) / (time.monotonic() - t0)
    print(f"\nTotal decode+resize CPU: thumbnail {tot['t'] * 1000:.0f} ms, fast {tot['f'] * 1000:.0f} ms "
          f"(x{tot['f'] / tot['t']:.2f}); foreign CPU during the run {foreign:.2f} cores")
    for en, g in agg.items():
        print(f"{en}: bytes fast/thumb {g['bf'] / g['bt']:.3f}, mean SSIM-Y thumb {g['st'] / g['n']:.4f} "
              f"fast {g['sf'] / g['n']:.4f} (Δ {(g['sf'] - g['st']) / g['n']:+.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
