#!/usr/bin/env python3
"""Encoder frontier: CPU time, output bytes and SSIM for encoder settings around
Next.js's own, over the photo corpus -> benchmarks/FRONTIER.md (+ results/frontier.json).

For every (image, width) the resize is done once exactly as imgopt does it (thumbnail_buffer,
shrink-on-load, never enlarge) and kept in memory; only the *encode* is timed (CPU seconds of
this process, all libvips/libheif threads included; min of --reps runs). SSIM is computed
against a high-quality reference (full decode, one Lanczos3 resize to the output geometry)
with libvips image ops (Gaussian window sigma 1.5) -- see _common.ssim; `--selftest` checks it
against an independent pure-Python SSIM.

Per format, a setting is compared with Next's point (the settings Next.js 16 passes to sharp at
the same q) in two ways:
  * curve: quality offsets around Next's quality value;
  * iso-bytes: the highest quality whose total bytes are <= Next's total bytes (binary search).
A setting *dominates* Next when, at iso-bytes, SSIM(Y) and SSIM(RGB) are >= Next's and the
encode CPU is lower. Bytes and SSIM are deterministic; CPU is noisy on a shared machine (the
machine's foreign CPU is recorded in the output).

  python benchmarks/frontier.py                      # full grid (~40 min on 2 quiet cores)
  python benchmarks/frontier.py --quick              # smoke: 2 images, small grid
  python benchmarks/frontier.py --formats avif --q 50,75,90
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _common as C  # noqa: E402
import pyvips  # noqa: E402

VIPS_MAX_COORD = 10_000_000


# ------------------------------------------------------------------------------------ settings
class Setting:
    def __init__(self, fmt: str, label: str, enc: Callable[[pyvips.Image, int], bytes], next_q: Callable[[int], int],
                 is_next: bool = False, qrange: tuple[int, int] = (1, 100)):
        self.fmt, self.label, self.enc, self.next_q, self.is_next, self.qrange = fmt, label, enc, next_q, is_next, qrange


def avif_settings(efforts, subs) -> list[Setting]:
    out = []
    for e in efforts:
        for s in subs:
            out.append(Setting("avif", f"effort={e} subsample={s}",
                               (lambda e, s: lambda im, Q: im.heifsave_buffer(Q=Q, effort=e, compression="av1",
                                                                              subsample_mode=s, keep="none"))(e, s),
                               C._q_avif_next, is_next=(e == 3 and s == "off")))
    return out


def webp_settings(efforts, smart) -> list[Setting]:
    out = []
    for e in efforts:
        for sm in smart:
            out.append(Setting("webp", f"effort={e} smart_subsample={sm}",
                               (lambda e, sm: lambda im, Q: im.webpsave_buffer(Q=Q, effort=e, smart_subsample=sm,
                                                                               keep="none"))(e, sm),
                               lambda q: q, is_next=(e == 4 and not sm)))
    return out


JPEG_VARIANTS = {
    # label: jpegsave kwargs (Q added). "mozjpeg" = sharp's mozjpeg:true = Next.
    "mozjpeg (trellis+deringing+opt scans+qt3, progressive)": dict(
        optimize_coding=True, trellis_quant=True, overshoot_deringing=True, optimize_scans=True, quant_table=3,
        interlace=True),
    "mozjpeg without optimize_scans (progressive)": dict(
        optimize_coding=True, trellis_quant=True, overshoot_deringing=True, quant_table=3, interlace=True),
    "trellis+qt3, baseline": dict(optimize_coding=True, trellis_quant=True, overshoot_deringing=True, quant_table=3),
    "qt3 only, baseline (no trellis)": dict(optimize_coding=True, quant_table=3),
    "plain libjpeg defaults + optimize_coding": dict(optimize_coding=True),
    "plain libjpeg defaults + progressive": dict(optimize_coding=True, interlace=True),
}


def jpeg_settings(names=None) -> list[Setting]:
    out = []
    for i, (label, kw) in enumerate(JPEG_VARIANTS.items()):
        if names and i not in names:
            continue
        out.append(Setting("jpeg", label,
                           (lambda kw: lambda im, Q: C._flatten(im).jpegsave_buffer(Q=Q, keep="none", subsample_mode="on",
                                                                                    **kw))(kw),
                           lambda q: q, is_next=(i == 0)))
    return out


def png_settings(efforts, compressions) -> list[Setting]:
    out = []
    for e in efforts:
        for c in compressions:
            out.append(Setting("png", f"palette effort={e} compression={c}",
                               (lambda e, c: lambda im, Q: im.pngsave_buffer(palette=True, Q=Q, effort=e, compression=c,
                                                                             keep="none"))(e, c),
                               lambda q: q, is_next=(e == 7 and c == 6)))
    return out


# ------------------------------------------------------------------------------------ evaluation
class Evaluator:
    def __init__(self, images: list[C.Img], widths: list[int], reps: int):
        self.reps = reps
        self.items = []  # (name, width, thumbnail, reference)
        for im in images:
            for w in widths:
                th = pyvips.Image.thumbnail_buffer(im.data, w, height=VIPS_MAX_COORD, size="down")
                th = th.colourspace("srgb") if th.interpretation != "srgb" else th
                th = th.copy_memory()
                ref = C.reference_for(im.data, th.width, th.height)
                self.items.append((im.name, w, th, ref))
        self.cache: dict[tuple[str, str, int], dict] = {}
        self.encodes = 0

    def point(self, s: Setting, Q: int) -> dict:
        key = (s.fmt, s.label, Q)
        if key in self.cache:
            return self.cache[key]
        per = []
        for name, w, th, ref in self.items:
            cpu, wall = [], []
            for _ in range(self.reps):
                t0, c0 = time.perf_counter(), time.process_time()
                body = s.enc(th, Q)
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - t0)
            self.encodes += self.reps
            out = C.decode_output(body)
            ss = C.ssim(ref, out)
            per.append({"image": name, "w": w, "bytes": len(body), "cpu_s": min(cpu), "wall_s": min(wall),
                        "ssim_y": ss["y"], "ssim_rgb": ss["rgb"]})
        n = len(per)
        agg = {"Q": Q, "bytes": sum(p["bytes"] for p in per), "cpu_s": sum(p["cpu_s"] for p in per),
               "wall_s": sum(p["wall_s"] for p in per), "ssim_y": sum(p["ssim_y"] for p in per) / n,
               "ssim_rgb": sum(p["ssim_rgb"] for p in per) / n, "per_image": per}
        self.cache[key] = agg
        return agg

    def paired_cpu_ratio(self, s: Setting, Q: int, ref: Setting, ref_Q: int, reps: int) -> float:
        """CPU(s at Q) / CPU(ref at ref_Q), the two encodes interleaved image by image (min of reps
        each), so drift in the machine's load hits both sides alike."""
        tot_s = tot_r = 0.0
        for _name, _w, th, _ref in self.items:
            cs, cr = [], []
            for _ in range(reps):
                c0 = time.process_time()
                ref.enc(th, ref_Q)
                cr.append(time.process_time() - c0)
                c0 = time.process_time()
                s.enc(th, Q)
                cs.append(time.process_time() - c0)
            self.encodes += 2 * reps
            tot_s += min(cs)
            tot_r += min(cr)
        return tot_s / tot_r if tot_r else float("nan")

    def iso_bytes(self, s: Setting, target_bytes: int, q_hint: int) -> dict | None:
        """Highest Q whose total bytes <= target (bytes grow with Q): gallop from the hint, bisect."""
        lo, hi = s.qrange
        ok = lambda Q: self.point(s, Q)["bytes"] <= target_bytes  # noqa: E731
        q = max(lo, min(hi, q_hint))
        step = 2
        if ok(q):
            a = q
            while True:
                nq = min(hi, a + step)
                if nq == a:
                    return self.point(s, a)
                if ok(nq):
                    a, step = nq, step * 2
                else:
                    b = nq
                    break
        else:
            b = q
            while True:
                nq = max(lo, b - step)
                if nq == b:
                    return None
                if ok(nq):
                    a = nq
                    break
                b, step = nq, step * 2
        while b - a > 1:  # bytes(a) <= target < bytes(b)
            m = (a + b) // 2
            if ok(m):
                a = m
            else:
                b = m
        return self.point(s, a)


def compare(p: dict, ref: dict) -> dict:
    return {"bytes_ratio": p["bytes"] / ref["bytes"], "cpu_ratio": p["cpu_s"] / ref["cpu_s"] if ref["cpu_s"] else None,
            "d_ssim_y": p["ssim_y"] - ref["ssim_y"], "d_ssim_rgb": p["ssim_rgb"] - ref["ssim_rgb"]}


def within_issue_target(c: dict) -> bool:
    """The quality bar: bytes <= Next, SSIM >= Next - 0.005 (both Y and RGB), CPU <= 0.67 x Next."""
    return (c["bytes_ratio"] <= 1.0 and c["d_ssim_y"] >= -0.005 and c["d_ssim_rgb"] >= -0.005
            and c["cpu_ratio"] is not None and c["cpu_ratio"] <= 0.67)


def dominates(c: dict, cpu_margin: float) -> bool:
    return (c["bytes_ratio"] <= 1.0 and c["d_ssim_y"] >= 0 and c["d_ssim_rgb"] >= 0
            and c["cpu_ratio"] is not None and c["cpu_ratio"] <= cpu_margin)


# ------------------------------------------------------------------------------------ main
def run_format(ev: Evaluator, fmt: str, settings: list[Setting], q: int, offsets: list[int], iso: bool,
               cpu_margin: float, paired_reps: int = 3) -> dict:
    nxt = next(s for s in settings if s.is_next)
    nq = nxt.next_q(q)
    npt = ev.point(nxt, nq)
    rows = []
    for s in settings:
        q0 = s.next_q(q)
        curve = []
        for off in offsets:
            Q = q0 + off
            if s.qrange[0] <= Q <= s.qrange[1]:
                pt = ev.point(s, Q)
                curve.append({**{k: v for k, v in pt.items() if k != "per_image"}, **compare(pt, npt)})
        # without a rate knob (PNG palette: Q is a colour budget) compare at the same Q instead
        iso_pt = ev.iso_bytes(s, npt["bytes"], q0) if iso else ev.point(s, q0)
        iso_row = ({**{k: v for k, v in iso_pt.items() if k != "per_image"}, **compare(iso_pt, npt)}
                   if iso_pt else None)
        if iso_row:
            # CPU measured again, interleaved with Next's encode (the curve CPU numbers are unpaired)
            iso_row["cpu_ratio_unpaired"] = iso_row["cpu_ratio"]
            iso_row["cpu_ratio"] = ev.paired_cpu_ratio(s, iso_row["Q"], nxt, nq, paired_reps)
            # SSIM at exactly Next's bytes: linear between the iso point and the next quality up
            up = ev.cache.get((s.fmt, s.label, iso_row["Q"] + 1))
            if up and up["bytes"] > iso_row["bytes"]:
                t = (npt["bytes"] - iso_row["bytes"]) / (up["bytes"] - iso_row["bytes"])
                iso_row["d_ssim_y_eq"] = iso_row["ssim_y"] + t * (up["ssim_y"] - iso_row["ssim_y"]) - npt["ssim_y"]
                iso_row["d_ssim_rgb_eq"] = iso_row["ssim_rgb"] + t * (up["ssim_rgb"] - iso_row["ssim_rgb"]) - npt["ssim_rgb"]
        rows.append({"setting": s.label, "is_next": s.is_next, "curve": curve, "iso_bytes": iso_row,
                     "dominates_next": bool(iso_row and not s.is_next and dominates(iso_row, cpu_margin)),
                     "within_issue_target": bool(iso_row and not s.is_next and within_issue_target(iso_row))})
        print(f"  {fmt} {s.label}: iso-bytes "
              + (f"Q={iso_row['Q']} bytes x{iso_row['bytes_ratio']:.3f} cpu x{iso_row['cpu_ratio']:.2f} "
                 f"dSSIM-Y {iso_row['d_ssim_y']:+.4f} dSSIM-RGB {iso_row['d_ssim_rgb']:+.4f} "
                 f"(at equal bytes {iso_row.get('d_ssim_y_eq', float('nan')):+.4f}/{iso_row.get('d_ssim_rgb_eq', float('nan')):+.4f})"
                 f"{'  DOMINATES' if rows[-1]['dominates_next'] else ''}" if iso_row else "-"),
              file=sys.stderr, flush=True)
    return {"format": fmt, "q": q, "next_Q": nq, "next_point": {k: v for k, v in npt.items()}, "rows": rows}


def fmt_md(results: list[dict], meta: dict) -> str:
    L = ["# Encoder frontier", "",
         f"Generated by `python benchmarks/frontier.py {meta['argv']}`"
         + (f" merged with `{meta['merged_with']}`" if meta.get("merged_with") else "") + f" on {meta['started']} "
         f"({meta['cpus']} CPUs, libvips {meta['libvips']}, pyvips {meta['pyvips']}).", "",
         f"Images: {', '.join(meta['images'])} at widths {meta['widths']} (resize as imgopt: thumbnail, shrink-on-load; "
         "the encode alone is timed, CPU seconds of all threads, min of "
         f"{meta['reps']} run(s)). SSIM vs a high-quality reference (full decode + one Lanczos3 resize to the output "
         "size), libvips Gaussian-window SSIM (sigma 1.5) on BT.601 luma (Y) and the mean over R,G,B; "
         f"self-check against an independent pure-Python SSIM: |diff| = {meta['ssim_selfcheck']['abs_diff']:.1e}.", "",
         f"**Noise:** foreign CPU (other users of the machine) averaged {meta['foreign_cores']} cores during the last run "
         f"({meta['cpus']} cores). Bytes and SSIM are deterministic; CPU ratios are only indicative when this is "
         "well above 0.1.", "",
         "*Next* = the settings Next.js 16 passes to sharp at the same q (AVIF Q=round(q*5/8) effort 3 4:4:4, "
         "WebP Q=q effort 4, JPEG mozjpeg, PNG palette effort 7). *iso-bytes* = highest Q whose total bytes <= "
         "Next's. *dominates* = at iso-bytes SSIM-Y and SSIM-RGB >= Next and CPU <= "
         f"{meta['cpu_margin']} x Next.", ""]
    L += ["## Summary", "", "| format | q | settings that dominate Next | within the issue bar (not applied unless dominating) |",
          "|---|---|---|---|"]
    for r in results:
        dom = [row["setting"] for row in r["rows"] if row["dominates_next"]]
        bar = [f"{row['setting']} (Q={row['iso_bytes']['Q']}, CPU x{row['iso_bytes']['cpu_ratio']:.2f})"
               for row in r["rows"] if row.get("within_issue_target")]
        L.append(f"| {r['format']} | {r['q']} | {', '.join(dom) or 'none'} | {', '.join(bar) or 'none'} |")
    L.append("")
    for r in results:
        n = r["next_point"]
        L += [f"## {r['format'].upper()} at q={r['q']} (Next: Q={r['next_Q']}, {n['bytes'] / 1024:.0f} KiB total, "
              f"SSIM-Y {n['ssim_y']:.4f}, SSIM-RGB {n['ssim_rgb']:.4f}, encode CPU {n['cpu_s'] * 1000:.0f} ms)", "",
              f"Foreign CPU during this format: {r.get('foreign_cores', '?')} cores.", "",
              "### iso-bytes comparison", "",
              "| setting | Q | bytes / Next | CPU / Next (paired) | ΔSSIM-Y | ΔSSIM-RGB | ΔSSIM-Y / -RGB at equal bytes† | dominates Next | within issue bar* |",
              "|---|---|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            i = row["iso_bytes"]
            if not i:
                L.append(f"| {row['setting']}{' (Next)' if row['is_next'] else ''} | - | - | - | - | - | - | - | - |")
                continue
            eq = (f"{i['d_ssim_y_eq']:+.4f} / {i['d_ssim_rgb_eq']:+.4f}" if "d_ssim_y_eq" in i else "-")
            L.append(f"| {row['setting']}{' **(Next)**' if row['is_next'] else ''} | {i['Q']} | {i['bytes_ratio']:.3f} | "
                     f"{i['cpu_ratio']:.2f} | {i['d_ssim_y']:+.4f} | {i['d_ssim_rgb']:+.4f} | {eq} | "
                     f"{'**yes**' if row['dominates_next'] else 'no'} | {'yes' if row['within_issue_target'] else 'no'} |")
        L += ["", "† linear interpolation between the iso-bytes quality and the next one up, i.e. the SSIM the setting "
              "would reach at exactly Next's bytes if quality were continuous. CPU (paired) = the setting's encodes "
              "interleaved with Next's, image by image, min of 3; Next's own row shows the noise floor (ideal 1.00).",
              "", "\\* quality bar: bytes <= Next, SSIM-Y and SSIM-RGB >= Next - 0.005, CPU <= 0.67 x Next "
              "(weaker than *dominates*; listed as an option, not applied).", "",
              "### curves (quality offsets around Next's quality value)", "",
              "| setting | Q | KiB | CPU ms | SSIM-Y | SSIM-RGB | bytes / Next | CPU / Next |",
              "|---|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            for c in row["curve"]:
                L.append(f"| {row['setting']} | {c['Q']} | {c['bytes'] / 1024:.0f} | {c['cpu_s'] * 1000:.0f} | "
                         f"{c['ssim_y']:.4f} | {c['ssim_rgb']:.4f} | {c['bytes_ratio']:.3f} | {c['cpu_ratio']:.2f} |")
        L.append("")
    extra = sorted((C.BENCH_DIR / "results").glob("match_next-q*.md"), key=lambda p: int(p.stem.split("-q")[1]))
    if extra:
        L += ["## imgopt vs Next's actual outputs (match_next.py)", "",
              "The curves above compare encoders on the *same* resized pixels. This section compares imgopt's whole "
              "transform (its libvips thumbnail resize + each encoder candidate) with the bodies Next.js 16 really "
              "returned for the same URLs (fetched with `compare_next.py fetch --peer next`; every corpus image Next "
              "transforms x 640/1080/1920 at q=75, x 640/1080 at q=50 and q=90). imgopt's thumbnail keeps more "
              "detail than sharp's fast shrink-on-load, so at Next's own settings imgopt is slightly larger and "
              "slightly better; the candidates trade that surplus for bytes. Regenerate with "
              "`python benchmarks/match_next.py --bodies DIR --out benchmarks/results/match_next-qN.md`.", ""]
        for p in extra:
            L += [f"### q={p.stem.split('-q')[1]}", "", p.read_text().strip(), ""]
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="avif,webp,jpeg,png")
    ap.add_argument("--q", default="75", help="user quality values (Next's q), comma separated")
    ap.add_argument("--widths", default="1080")
    ap.add_argument("--images", type=int, default=0, help="use only the first N photos (0 = all)")
    ap.add_argument("--reps", type=int, default=1, help="timed runs per curve point (min); iso rows are re-timed paired x3")
    ap.add_argument("--offsets", default="-6,-3,0,3,6")
    ap.add_argument("--avif-efforts", default="0,1,2,3,4")
    ap.add_argument("--avif-subsample", default="auto,off",
                    help="auto,on,off; 'on' gives byte-identical output to 'auto' below Q 90 (checked), so it is "
                         "left out by default")
    ap.add_argument("--webp-efforts", default="0,1,2,3,4,5,6")
    ap.add_argument("--png-efforts", default="1,2,3,4,5,6,7,8,9,10")
    ap.add_argument("--png-compression", default="6")
    ap.add_argument("--cpu-margin", type=float, default=0.95, help="dominates needs CPU <= this x Next")
    ap.add_argument("--no-iso", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 images, 640 px, small grid")
    ap.add_argument("--vips-concurrency", type=int, default=0)
    ap.add_argument("--out-md", default=str(C.BENCH_DIR / "FRONTIER.md"))
    ap.add_argument("--out-json", default=str(C.BENCH_DIR / "results" / "frontier.json"))
    ap.add_argument("--selftest", action="store_true", help="only run the SSIM self-check")
    ap.add_argument("--render-only", action="store_true", help="rewrite --out-md from --out-json (no encoding)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other formats' results already in --out-json (replace only what this run measured)")
    a = ap.parse_args()
    if a.quick:
        a.images, a.widths, a.reps, a.offsets = a.images or 2, "640", 1, "-4,0,4"
        a.avif_efforts, a.webp_efforts, a.png_efforts = "2,3", "2,4", "3,7"
    if a.render_only:
        with open(a.out_json) as f:
            d = json.load(f)
        Path(a.out_md).write_text(fmt_md(d["results"], d["meta"]) + f"\n\n_{d['meta']['encodes']} encodes in "
                                  f"{d['meta']['wall_s']:.0f} s._\n")
        print(f"wrote {a.out_md}", file=sys.stderr)
        return 0
    pyvips.cache_set_max(0)
    if a.vips_concurrency:
        pyvips.concurrency_set(a.vips_concurrency)
    st = C.ssim_selfcheck()
    print(f"SSIM self-check: libvips {st['vips']:.6f} vs pure Python {st['python']:.6f} (|diff| {st['abs_diff']:.1e}), "
          f"SSIM(x,x) = {st['identity']:.6f}", file=sys.stderr)
    if a.selftest:
        return 0 if st["abs_diff"] < 1e-4 and abs(st["identity"] - 1) < 1e-9 else 1

    photos = C.load_corpus(["photo"])
    if a.images:
        photos = photos[: a.images]
    pngs = C.load_corpus(["png"])
    widths = [int(x) for x in a.widths.split(",")]
    offsets = [int(x) for x in a.offsets.split(",")]
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    busy0, t0 = C.host_busy_s(), time.monotonic()
    cpu0 = time.process_time()
    ev_photo = Evaluator(photos, widths, a.reps)
    ev_png = None
    results = []
    for q in ints(a.q):
        for fmt in a.formats.split(","):
            print(f"== {fmt} q={q}", file=sys.stderr, flush=True)
            fb0, ft0, fc0 = C.host_busy_s(), time.monotonic(), time.process_time()
            if fmt == "avif":
                results.append(run_format(ev_photo, fmt, avif_settings(ints(a.avif_efforts), a.avif_subsample.split(",")),
                                          q, offsets, not a.no_iso, a.cpu_margin))
            elif fmt == "webp":
                results.append(run_format(ev_photo, fmt, webp_settings(ints(a.webp_efforts), [False, True]), q, offsets,
                                          not a.no_iso, a.cpu_margin))
            elif fmt == "jpeg":
                results.append(run_format(ev_photo, fmt, jpeg_settings(), q, offsets, not a.no_iso, a.cpu_margin))
            elif fmt == "png":
                ev_png = ev_png or Evaluator(pngs, widths, a.reps)
                # palette Q changes the colour count, not a rate knob: curves at offsets, no iso-bytes search
                results.append(run_format(ev_png, fmt, png_settings(ints(a.png_efforts), ints(a.png_compression)), q,
                                          [0], False, a.cpu_margin))
            if results and results[-1]["format"] == fmt:
                fw = time.monotonic() - ft0
                results[-1]["foreign_cores"] = round(max(C.host_busy_s() - fb0 - (time.process_time() - fc0), 0) / fw, 2)
    wall = time.monotonic() - t0
    foreign = max(C.host_busy_s() - busy0 - (time.process_time() - cpu0), 0) / wall
    meta = {"argv": " ".join(sys.argv[1:]), "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpus": os.cpu_count(), "libvips": ".".join(str(pyvips.version(i)) for i in range(3)),
            "pyvips": pyvips.__version__, "images": [p.name for p in photos] + ([p.name for p in pngs] if ev_png else []),
            "widths": widths, "reps": a.reps, "ssim_selfcheck": st, "foreign_cores": round(foreign, 2),
            "cpu_margin": a.cpu_margin, "wall_s": round(wall, 1), "encodes": ev_photo.encodes + (ev_png.encodes if ev_png else 0)}
    Path(a.out_json).parent.mkdir(parents=True, exist_ok=True)
    if a.merge and Path(a.out_json).exists():
        with open(a.out_json) as f:
            old = json.load(f)
        done = {(r["format"], r["q"]) for r in results}
        results = [r for r in old["results"] if (r["format"], r["q"]) not in done] + results
        order = ["avif", "webp", "jpeg", "png"]
        results.sort(key=lambda r: (r["q"], order.index(r["format"]) if r["format"] in order else 9))
        meta["merged_with"] = old["meta"].get("argv")
        meta["encodes"] += old["meta"].get("encodes", 0)
        meta["images"] = sorted(set(meta["images"]) | set(old["meta"].get("images", [])))
    with open(a.out_json, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    Path(a.out_md).write_text(fmt_md(results, meta) + f"\n\n_{meta['encodes']} encodes in {wall:.0f} s._\n")
    print(f"wrote {a.out_md} and {a.out_json} ({wall:.0f} s, foreign {foreign:.2f} cores)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
