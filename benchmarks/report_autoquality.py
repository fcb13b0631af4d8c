"""Auto quality vs fixed quality: bytes, SSIM and CPU, per image and output format.

    python benchmarks/report_autoquality.py [--dir DIR --glob '*.jpg'] [--width 1080]
        [--formats webp,avif,jpeg] [--targets worst,median,0.975]

Without --dir it measures the photos of the generated test corpus (tests/imagecorpus.py).
Targets: a number, or 'worst' / 'median' = the worst / median SSIM that fixed q=75 gets on
the set (per format), i.e. "no image worse than q=75's worst (median) image".

CPU is per request (decode + resize + encoding or search), process time over all
threads. For each target the summary compares auto quality with (a) fixed q=75 and (b) the lowest
fixed quality (on a grid of 5) that reaches the target on *every* image: the honest baseline
for "equal or better SSIM on every image". Prints Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from imgopt import autoquality, native, transform  # noqa: E402
from imgopt.extensions import AutoQuality  # noqa: E402

CORPUS_PHOTOS = ["test.jpg", "mountains.jpg", "large.jpg", "progressive.jpg", "dir with space/photo.jpg",
                 "cmyk.jpg", "exif-rotated.jpg", "test.webp", "test.avif", "test.png", "alpha.png"]


def load(buf: bytes, out: str, width: int):
    job = transform.Job(buf, out, width, 75, 10**10, time.monotonic() + 600)
    return autoquality.flatten_for(out, transform._to_srgb8(transform._load(job)))


def measure(files: list[Path], width: int, fmt: str, targets: list[str], aq: AutoQuality) -> dict:
    out = f"image/{fmt}"
    enc = transform.ENCODERS[out]
    grid = list(range(aq.min_quality, aq.max_quality + 1, 5))
    if aq.max_quality not in grid:
        grid.append(aq.max_quality)
    rows = []
    for f in files:
        buf = f.read_bytes()
        t0 = time.process_time()  # a fixed-quality request: decode + resize + one encode
        enc(load(buf, out, width), 75)
        cpu75 = time.process_time() - t0
        ref = autoquality.Reference(load(buf, out, width))
        fixed = enc(ref.image, 75)
        row = {"file": f.name, "q75": (len(fixed), ref.ssim(fixed)), "cpu75": cpu75, "curve": {}, "auto": {}}
        for q in grid:
            body = enc(ref.image, q)
            row["curve"][q] = (len(body), ref.ssim(body))
        rows.append(row)
        print(f"  {fmt} {f.name}: q75 and curve", file=sys.stderr)
    q75s = sorted(r["q75"][1] for r in rows)
    resolved = []
    for t in targets:
        if t == "worst":
            resolved.append((f"q75 worst = {q75s[0]:.4f}", q75s[0]))
        elif t == "median":
            resolved.append((f"q75 median = {statistics.median(q75s):.4f}", statistics.median(q75s)))
        else:
            resolved.append((t, float(t)))
    for f, row in zip(files, rows):
        buf = f.read_bytes()
        for label, t in resolved:
            img = load(buf, out, width)
            t0 = time.process_time()
            o = autoquality.search(img, enc, replace(aq, target=t), time.monotonic() + 600)
            row["auto"][label] = (o.quality, len(o.body), o.ssim, time.process_time() - t0, len(o.trials))
        print(f"  {fmt} {f.name}: auto", file=sys.stderr)
    return {"fmt": fmt, "rows": rows, "targets": resolved, "grid": grid}


def report(m: dict) -> str:
    fmt, rows, targets, grid = m["fmt"], m["rows"], m["targets"], m["grid"]
    lines = [f"\n**{fmt}** ({len(rows)} images)\n"]
    head = "| image | q=75: bytes | SSIM |" + "".join(f" {label}: q | bytes | SSIM |" for label, _ in targets)
    lines += [head, "|" + "---|" * (3 + 3 * len(targets))]
    for r in rows:
        cells = [r["file"][:30], f"{r['q75'][0]:,}", f"{r['q75'][1]:.4f}"]
        for label, _ in targets:
            q, n, s, _cpu, _k = r["auto"][label]
            cells += [str(q), f"{n:,}", f"{s:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| target | auto: total bytes | vs q=75 | worst SSIM (q=75: "
              f"{min(r['q75'][1] for r in rows):.4f}) | images reaching it | fixed q reaching it on all | "
              "its bytes | auto vs it | CPU: auto vs q=75 request | encodes |", "|---|---|---|---|---|---|---|---|---|---|"]
    tot75 = sum(r["q75"][0] for r in rows)
    cpu75 = sum(r["cpu75"] for r in rows)
    for label, t in targets:
        tot = sum(r["auto"][label][1] for r in rows)
        cpu = sum(r["auto"][label][3] for r in rows)
        worst = min(r["auto"][label][2] for r in rows)
        reach = sum(1 for r in rows if r["auto"][label][2] >= t)
        enc = statistics.mean(r["auto"][label][4] for r in rows)
        fixed_q = next((q for q in grid if all(r["curve"][q][1] >= t for r in rows)), None)
        if fixed_q is None:
            fq, fbytes, vs = f"none <= {grid[-1]}", "-", "-"
        else:
            fb = sum(r["curve"][fixed_q][0] for r in rows)
            fq, fbytes, vs = str(fixed_q), f"{fb:,}", f"{100 * (tot - fb) / fb:+.1f}%"
        lines.append(f"| {label} | {tot:,} | {100 * (tot - tot75) / tot75:+.1f}% | {worst:.4f} | {reach}/{len(rows)} | "
                     f"{fq} | {fbytes} | {vs} | {cpu / cpu75:.1f}x ({cpu:.1f}s vs {cpu75:.1f}s) | {enc:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="worst,median,0.975")
    ap.add_argument("--width", type=int, default=1080)
    ap.add_argument("--formats", default="webp,avif,jpeg")
    ap.add_argument("--dir", action="append", default=[])
    ap.add_argument("--glob", default="*")
    args = ap.parse_args()
    transform.configure_libvips()
    if args.dir:
        files = sorted(p for d in args.dir for p in Path(d).glob(args.glob) if p.is_file())
    else:
        from imagecorpus import build_corpus

        root = Path(tempfile.mkdtemp(prefix="imgopt-corpus-"))
        build_corpus(root)
        files = [root / n for n in CORPUS_PHOTOS]
    aq = AutoQuality()
    print(f"native kernels: {native.IMPLEMENTATION}; width {args.width}; search q {aq.min_quality}..{aq.max_quality}, "
          f"<= {aq.max_encodes} encodes", file=sys.stderr)
    for fmt in args.formats.split(","):
        print(report(measure(files, args.width, fmt, args.targets.split(","), aq)), flush=True)


if __name__ == "__main__":
    main()
