#!/usr/bin/env python3
"""Offline check of imgopt encoder candidates against Next.js's *actual* outputs.

Input: Next's q=75 outputs fetched by ``compare_next.py fetch --peer next`` (compare_next.sh keeps
them in $RESULTS_DIR/bodies/next). For every (image, width, format) Next answered, imgopt's
``transform.process`` is run in-process with each candidate encoder (ENCODERS patched for the
call), and bytes and SSIM (vs the high-quality reference, as in compare_next.py) are compared
with Next's body. Unlike frontier.py (encoders on the *same* resized pixels) this includes the
resize difference: imgopt's libvips thumbnail keeps more detail than sharp's fast
shrink-on-load, which costs bytes at equal settings.

  python benchmarks/match_next.py --bodies .bench-cache/results-next/bodies/next
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _common as C  # noqa: E402
from imgopt import transform as T  # noqa: E402

Q = 75


def avif(sub, dq=0, effort=3):
    return lambda img, q: img.heifsave_buffer(Q=C._q_avif_next(q) + dq, effort=effort, compression="av1",
                                              subsample_mode=sub, keep="none")


def webp(dq=0, **kw):
    return lambda img, q: img.webpsave_buffer(Q=q + dq, effort=4, keep="none", **kw)


def jpeg(dq=0, sub="auto"):
    return lambda img, q: C._flatten(img).jpegsave_buffer(Q=max(q + dq, 1), optimize_coding=True, trellis_quant=True,
                                                          overshoot_deringing=True, optimize_scans=True, quant_table=3,
                                                          interlace=True, subsample_mode=sub, keep="none")


CANDIDATES = {
    "image/avif": {"imgopt ENCODERS (shipped)": None, "4:4:4 = Next's settings": avif("off"),
                   "4:2:0 Q+2": avif("auto", 2), "4:4:4 Q-1": avif("off", -1)},
    "image/webp": {"imgopt ENCODERS (shipped)": None, "Q=q = Next's settings": webp(0), "Q=q-1": webp(-1),
                   "Q=q-2": webp(-2)},
    "image/jpeg": {"imgopt ENCODERS (shipped)": None, "Q=q, libvips auto chroma (4:4:4 at Q>=90)": jpeg(0),
                   "Q=q, 4:2:0 = Next's settings": jpeg(0, "on"), "Q=q-1, 4:2:0": jpeg(-1, "on"),
                   "Q=q-2, 4:2:0": jpeg(-2, "on")},
    "image/png": {"imgopt ENCODERS (shipped)": None},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bodies", default=str(C.BENCH_CACHE / "results-next" / "bodies" / "next"))
    ap.add_argument("--widths", default="")
    ap.add_argument("--formats", default="", help="only these output types, e.g. image/webp,image/jpeg")
    ap.add_argument("--out", help="also write the table to this markdown file")
    a = ap.parse_args()
    T.configure_libvips()
    with open(os.path.join(a.bodies, "index.json")) as f:
        index = [r for r in json.load(f) if r["status"] == 200 and r["ctype"] in CANDIDATES]
    if a.formats:
        index = [r for r in index if r["ctype"] in a.formats.split(",")]
    if a.widths:
        index = [r for r in index if str(r["w"]) in a.widths.split(",")]
    originals: dict[str, bytes] = {}
    agg: dict = {}
    shipped = dict(T.ENCODERS)
    for r in index:
        name, w, fmt, ct = r["image"], r["w"], r["fmt"], r["ctype"]
        if name not in originals:
            originals[name] = (C.CORPUS / name).read_bytes()
        orig = originals[name]
        nb = open(os.path.join(a.bodies, r["file"]), "rb").read()
        ns = C.ssim_of(orig, nb)
        negotiated = C.MIME[fmt] if fmt in ("webp", "avif") else ""
        for label, enc in CANDIDATES[ct].items():
            T.ENCODERS.clear()
            T.ENCODERS.update(shipped)
            if enc is not None:
                T.ENCODERS[ct] = enc
            c0 = time.process_time()
            res = T.process(orig, negotiated, False, w, r.get("q", Q), 268_402_689, time.monotonic() + 120)
            cpu = time.process_time() - c0
            if res.mime != ct:
                continue
            s = C.ssim_of(orig, res.body)
            d = agg.setdefault((ct, label), {"n": 0, "bn": 0, "bi": 0, "dy": 0.0, "drgb": 0.0, "cpu": 0.0, "worst": 0.0})
            d["n"] += 1
            d["bn"] += len(nb)
            d["bi"] += len(res.body)
            d["dy"] += s["y"] - ns["y"]
            d["drgb"] += s["rgb"] - ns["rgb"]
            d["worst"] = min(d["worst"], s["y"] - ns["y"])
            d["cpu"] += cpu
    T.ENCODERS.clear()
    T.ENCODERS.update(shipped)
    lines = [f"{len(index)} Next outputs at q={sorted({r.get('q', Q) for r in index})} from `{a.bodies}`", ""]
    lines.append("| output | imgopt candidate | n | bytes imgopt / Next | mean ΔSSIM-Y | mean ΔSSIM-RGB | worst ΔSSIM-Y | "
          "imgopt CPU s (unpaired) | meets bytes ≤ 1 and ΔSSIM ≥ 0 | meets issue bar (≥ −0.005) |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for (ct, label), d in agg.items():
        br, dy, drgb = d["bi"] / d["bn"], d["dy"] / d["n"], d["drgb"] / d["n"]
        lines.append(f"| {ct} | {label} | {d['n']} | {br:.3f} | {dy:+.4f} | {drgb:+.4f} | {d['worst']:+.4f} | {d['cpu']:.1f} | "
              f"{'yes' if br <= 1 and dy >= 0 and drgb >= 0 else 'no'} | "
              f"{'yes' if br <= 1 and dy >= -0.005 and drgb >= -0.005 else 'no'} |")
    print("\n".join(lines))
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
