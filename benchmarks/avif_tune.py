#!/usr/bin/env python3
"""AVIF libaom tune and chroma vs Next.js's settings, paired on the same pixels.

For q in --qualities: every photo of the corpus x 640/1080/1920 (libvips thumbnail), encoded with
Next's settings (Q=round(q*5/8), effort 3, 4:4:4, libvips's default tune = iq) and with the
candidates below, interleaved image by image (min CPU of 2), then bytes, encode CPU and SSIM
(Y and RGB, vs the high-quality reference) as ratios/deltas against Next's.

  python benchmarks/avif_tune.py [--qualities 50,60,75,90] [--deltas 0,1] [--extra 2:off:ssim:+1,...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import pyvips  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qualities", default="50,60,75,90")
    ap.add_argument("--deltas", default="0,1", help="Q offsets over Next's Q for the tune=ssim 4:2:0 candidate")
    ap.add_argument("--extra", default="", help="more candidates, EFFORT:on|off:TUNE:QDELTA,... e.g. 2:off:ssim:+1")
    a = ap.parse_args()
    pyvips.cache_set_max(0)
    photos = C.load_corpus(["photo"])
    for q in [int(x) for x in a.qualities.split(",")]:
        Qn = max(int(q * 50 / 80 + 0.5), 1)
        cands = {
            "Next: effort 3, 4:4:4, tune iq": dict(effort=3, subsample_mode="off", tune="iq", Q=Qn),
            "effort 3, 4:2:0, tune iq": dict(effort=3, subsample_mode="on", tune="iq", Q=Qn),
        }
        for d in [int(x) for x in a.deltas.split(",")]:
            cands[f"effort 3, 4:2:0, tune ssim, Q{d:+d}"] = dict(effort=3, subsample_mode="on", tune="ssim", Q=Qn + d)
        for e in filter(None, a.extra.split(",")):
            ef, sub, tune, d = e.split(":")
            cands[f"effort {ef}, {'4:2:0' if sub == 'on' else '4:4:4'}, tune {tune}, Q{int(d):+d}"] = dict(
                effort=int(ef), subsample_mode=sub, tune=tune, Q=Qn + int(d))
        tot = {k: [0, 0.0, 0.0, 0.0] for k in cands}
        n = 0
        for w in (640, 1080, 1920):
            for p in photos:
                im = C.raw_thumbnail(p.data, w).copy_memory()
                ref = C.reference_for(p.data, im.width, im.height)
                best = {k: 1e9 for k in cands}
                outs: dict[str, bytes] = {}
                for _ in range(2):
                    for k, kw in cands.items():
                        t = time.process_time()
                        outs[k] = im.heifsave_buffer(compression="av1", keep="none", **kw)
                        best[k] = min(best[k], time.process_time() - t)
                for k in cands:
                    s = C.ssim(ref, C.decode_output(outs[k]))
                    t_ = tot[k]
                    t_[0] += len(outs[k]); t_[1] += best[k]; t_[2] += s["y"]; t_[3] += s["rgb"]
                n += 1
        b0 = next(iter(tot.values()))
        print(f"\n### q={q} (Next's Q={Qn}), {n} encodes per setting\n")
        print("| setting | bytes / Next | encode CPU / Next | ΔSSIM-Y | ΔSSIM-RGB |\n|---|---|---|---|---|")
        for k, (b, c, y, rgb) in tot.items():
            print(f"| {k} | {b / b0[0]:.3f} | {c / b0[1]:.2f} | {(y - b0[2]) / n:+.4f} | {(rgb - b0[3]) / n:+.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
