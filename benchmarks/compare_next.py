#!/usr/bin/env python3
"""Helpers of compare_next.sh (imgopt vs Next.js's optimizer, side by side).

  compare_next.py fetch --peer P --base URL --template T --origin URL --out DIR [--exclude a,b]
      quality pass: every transformable corpus image x {640,1080,1920} x {webp,avif,jpeg} at q=75,
      sequentially, with the Accept header loadgen uses; bodies + index.json into DIR.
  compare_next.py report --results DIR --out RESULTS-next.md
      medians over repeats of the loadgen.py results, ratios imgopt/Next against the
      targets (no ratio when either side had errors), quality table (bytes, SSIM vs a
      high-quality reference, computed here with libvips ops), raw_vips --profile next floor.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

WIDTHS = [640, 1080, 1920]
FORMATS = ["webp", "avif", "jpeg"]
Q = 75
EXT = {"image/webp": "webp", "image/avif": "avif", "image/jpeg": "jpg", "image/png": "png", "image/gif": "gif"}


# ------------------------------------------------------------------------------------ fetch
def cmd_fetch(a: argparse.Namespace) -> int:
    os.makedirs(a.out, exist_ok=True)
    with open(C.CORPUS / "manifest.json") as f:
        images = [m for m in json.load(f)["images"] if m["name"] not in a.exclude.split(",")]
    index = []
    for m in images:
        for w in [int(x) for x in a.widths.split(",")]:
            for fmt in a.formats.split(","):
                src = f"{a.origin}/{m['name']}"
                url = a.template.format(base=a.base.rstrip("/"), src=src, src_enc=urllib.parse.quote(src, safe=""),
                                        file=m["name"], w=w, q=a.q, fmt=fmt)
                rec = {"image": m["name"], "w": w, "fmt": fmt, "q": a.q, "status": None, "ctype": None, "bytes": 0, "file": None}
                try:
                    req = urllib.request.Request(url, headers={"Accept": C.ACCEPT[fmt]})
                    with urllib.request.urlopen(req, timeout=120) as r:
                        body = r.read()
                        rec["status"], rec["ctype"] = r.status, r.headers.get("Content-Type", "").split(";")[0]
                except urllib.error.HTTPError as e:
                    rec["status"], body = e.code, b""
                except OSError as e:
                    rec["status"], body = 0, b""
                    rec["err"] = str(e)[:200]
                if rec["status"] == 200:
                    fn = f"{m['name']}__{w}__{fmt}.{EXT.get(rec['ctype'], 'bin')}"
                    with open(os.path.join(a.out, fn), "wb") as f:
                        f.write(body)
                    rec["file"], rec["bytes"] = fn, len(body)
                index.append(rec)
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    ok = sum(1 for r in index if r["status"] == 200)
    print(f"{a.peer}: {ok}/{len(index)} fetched -> {a.out}")
    return 0


# ------------------------------------------------------------------------------------ report
def _metrics(r: dict) -> dict:
    ph = r.get("phases", {})
    m: dict = {}
    for name in ("cold_c2", "cold_c4"):
        p = ph.get(name)
        if not p:
            continue
        k = name.replace("cold_", "")
        m[f"{k}_ips"] = p["images_per_s"]
        m[f"{k}_p50"] = p["latency"]["p50_ms"]
        m[f"{k}_p95"] = p["latency"]["p95_ms"]
        m[f"{k}_p99"] = p["latency"]["p99_ms"]
        for fmt, d in (p.get("per_format") or {}).items():  # by the client's Accept (loadgen_common.ACCEPT)
            m[f"{k}_p99_{fmt}"] = d.get("p99_ms")
        m[f"{k}_err"] = p["errors"] + p.get("not_run", 0)
        m[f"{k}_ok"] = p["ok"]
        m[f"{k}_cpu_ms"] = (p["peer_cpu_s"] * 1000 / p["ok"]) if p.get("ok") and p.get("peer_cpu_s") is not None else None
        m[f"{k}_bytes"] = p["bytes_out"]
        m[f"{k}_mismatch"] = sum((p.get("format_not_as_requested") or {}).values())
        # Responses per (requested -> returned) type: passthroughs (animated GIF) and PNG kept as
        # PNG are mismatches on both servers alike; bytes compare only when these agree.
        m[f"{k}_types"] = json.dumps(sorted((p.get("content_types") or {}).items()))
        m[f"{k}_rss"] = p.get("peak_rss_mb")
        m[f"{k}_foreign"] = (p.get("cpu") or {}).get("foreign_cores")
        m[f"{k}_upscaled"] = p.get("upscaled", 0)
    w = ph.get("warm")
    if w and not w.get("skipped"):
        m["warm_rps"] = w.get("req_per_s")
        m["warm_p50"] = (w.get("latency") or {}).get("p50_ms")
        m["warm_p99"] = (w.get("latency") or {}).get("p99_ms")
        m["warm_err"] = w.get("errors", 0) + (1 if w.get("error") else 0)
        m["warm_foreign"] = (w.get("cpu") or {}).get("foreign_cores")
        m["warm_rss"] = w.get("peak_rss_mb")
    elif w:
        m["warm_err"] = 1
    colds = [m.get("c2_rss"), m.get("c4_rss")]
    m["cold_peak_rss"] = max([x for x in colds if x is not None], default=None)
    m["idle_rss"] = (r.get("rss") or {}).get("idle_mb")
    return m


def _load(res_dir: str, peer: str) -> list[dict]:
    out = []
    for p in sorted(glob.glob(os.path.join(res_dir, f"{peer}.r*.json"))):
        with open(p) as f:
            r = json.load(f)
        out.append(r)
    return out


def _med(runs: list[dict], key: str):
    return C.median([m.get(key) for m in runs if m.get(key) is not None])


def _sum(runs: list[dict], key: str) -> int:
    return sum(m.get(key) or 0 for m in runs)


def fnum(v, nd=1) -> str:
    if v is None:
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def quality(res_dir: str) -> dict | None:
    idx = {}
    for peer in ("next", "imgopt"):
        p = os.path.join(res_dir, "bodies", peer, "index.json")
        if not os.path.exists(p):
            return None
        with open(p) as f:
            idx[peer] = {(r["image"], r["w"], r["fmt"]): r for r in json.load(f)}
    originals = {}
    per_fmt: dict = {}
    skipped = []
    for key, rn in idx["next"].items():
        ri = idx["imgopt"].get(key)
        if not ri or rn["status"] != 200 or ri["status"] != 200:
            skipped.append(f"{key}: next {rn['status']} imgopt {ri and ri['status']}")
            continue
        if rn["ctype"] != ri["ctype"]:
            skipped.append(f"{key}: next {rn['ctype']} vs imgopt {ri['ctype']}")
            continue
        image, w, fmt = key
        if ri["ctype"] in ("image/gif",):  # passthrough (animated), nothing to compare
            continue
        if image not in originals:
            originals[image] = (C.CORPUS / image).read_bytes()
        d = per_fmt.setdefault(ri["ctype"], {"n": 0, "bytes_next": 0, "bytes_imgopt": 0, "y_next": 0.0, "y_imgopt": 0.0,
                                             "rgb_next": 0.0, "rgb_imgopt": 0.0, "worst_dy": (0, None)})
        s = {}
        for peer, r in (("next", rn), ("imgopt", ri)):
            with open(os.path.join(res_dir, "bodies", peer, r["file"]), "rb") as f:
                body = f.read()
            s[peer] = C.ssim_of(originals[image], body)
            d[f"bytes_{peer}"] += len(body)
            d[f"y_{peer}"] += s[peer]["y"]
            d[f"rgb_{peer}"] += s[peer]["rgb"]
        d["n"] += 1
        dy = s["imgopt"]["y"] - s["next"]["y"]
        if dy < d["worst_dy"][0]:
            d["worst_dy"] = (dy, f"{image} w{w}")
    for d in per_fmt.values():
        for k in ("y_next", "y_imgopt", "rgb_next", "rgb_imgopt"):
            d[k] /= max(d["n"], 1)
    return {"per_format": per_fmt, "skipped": skipped}


TARGETS = [
    # key, label, better ("higher"/"lower"), target ratio, error keys
    ("c2_ips", "cold transforms/s, c2 (img/s)", "higher", 1.5, ("c2_err",)),
    ("c4_ips", "cold transforms/s, c4 (img/s)", "higher", 1.5, ("c4_err",)),
    ("c2_cpu_ms", "CPU per cold image, c2 (ms)", "lower", 0.67, ("c2_err",)),
    ("c4_cpu_ms", "CPU per cold image, c4 (ms)", "lower", 0.67, ("c4_err",)),
    ("c4_p99", "p99 latency cold c4 (ms)", "lower", 0.5, ("c4_err",)),
    # The same pass by the client's Accept: browsers (AVIF and WebP), WebP without AVIF, and
    # neither (the original's type: JPEG, palette PNG). --fast-first changes only the first.
    ("c4_p99_avif", "p99 cold c4, Accept with AVIF (ms)", "lower", None, ("c4_err",)),
    ("c4_p99_webp", "p99 cold c4, Accept with WebP only (ms)", "lower", None, ("c4_err",)),
    ("c4_p99_jpeg", "p99 cold c4, Accept with neither (ms)", "lower", None, ("c4_err",)),
    ("c4_p50", "p50 latency cold c4 (ms)", "lower", None, ("c4_err",)),
    ("warm_rps", "cache hits/s, 1 hot URL, c16 (req/s)", "higher", 1.0, ("warm_err",)),
    ("warm_p99", "cache-hit p99 latency c16 (ms)", "lower", 1.0, ("warm_err",)),
    ("cold_peak_rss", "peak RSS during cold passes (MB)", "lower", 0.5, ("c2_err", "c4_err")),
    ("idle_rss", "idle RSS (MB)", "lower", None, ()),
    ("c4_bytes", "output bytes, cold c4 pass (q76)", "lower", 1.0, ("c4_err",)),
]


def _corpus_line() -> str:
    try:
        with open(C.CORPUS / "manifest.json") as f:
            m = json.load(f)
    except OSError:
        return "?"
    ims = m["images"]
    made = ("generated by benchmarks/make_corpus.py" if m.get("generator", "").startswith("imgopt-bench-corpus")
            else "own images (make_corpus.py --index)" if m.get("generator") == "user" else "external")
    return (f"{len(ims)} images, {sum(i['bytes'] for i in ims) / 1e6:.1f} MB, {made}"
            f"{', id ' + m['corpus_id'] if m.get('corpus_id') else ''}")


def cmd_report(a: argparse.Namespace) -> int:
    runs = {p: _load(a.results, p) for p in ("next", "imgopt")}
    failed = {p: [r for r in rs if r.get("failed")] for p, rs in runs.items()}
    mets = {p: [_metrics(r) for r in rs if not r.get("failed")] for p, rs in runs.items()}
    raw = None
    rp = os.path.join(a.results, "raw_vips_next.json")
    if os.path.exists(rp):
        with open(rp) as f:
            raw = json.load(f)
    noise = open(os.path.join(a.results, "noise-before.txt")).read().strip() if os.path.exists(
        os.path.join(a.results, "noise-before.txt")) else "?"
    ver = {p: (rs[0].get("version") if rs else "?") for p, rs in runs.items()}
    extra = [f"`{k}={os.environ[k]}`" for k in ("IMGOPT_ARGS", "IMGOPT_ENV", "IMGOPT_WORKERS") if os.environ.get(k)]
    warm_tools = sorted({(r.get("phases") or {}).get("warm", {}).get("tool") for rs in runs.values() for r in rs} - {None})
    corpus = _corpus_line()
    L = ["# imgopt vs Next.js image optimizer, side by side", "",
         f"Command: `{a.command}` (run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
         f"{os.cpu_count()} CPUs shared by client, origin and server; REPEAT={a.repeat}"
         f"{', LOADGEN_ARGS=`' + a.loadgen_args + '`' if a.loadgen_args else ' (full load)'}"
         f"{', excluded: ' + a.exclude if a.exclude else ''}; whole run took {a.elapsed} s).", "",
         f"- **Next**: {ver['next']}", f"- **imgopt**: {ver['imgopt']}"
         + (" with " + ", ".join(extra) if extra else " (no extra flags or environment)"),
         f"- corpus: {corpus}",
         f"- harness: benchmarks/loadgen.py (cold c2 q74 + cold c4 q76: every image x width x format once, "
         f"new TCP connection per request, originals fetched from the origin ({a.origin_impl}) each time; "
         f"warm: 1 URL primed, {'/'.join(warm_tools) or '-'} c16). "
         "Values are medians over repeats; ratio = imgopt / Next.", "",
         f"**Machine noise**: {noise}. Per-phase CPU used by other processes (foreign cores) is listed below; "
         "rows above ~0.1 are contaminated (throughput and latency depressed, CPU ms/img still comparable).", ""]
    if failed["next"] or failed["imgopt"]:
        L += [f"**Failed runs**: next {len(failed['next'])}, imgopt {len(failed['imgopt'])}", ""]
    L += ["## Ratios against the targets", "",
          "| metric | Next | imgopt | imgopt / Next | target | verdict |", "|---|---|---|---|---|---|"]
    for key, label, better, target, errkeys in TARGETS:
        vn, vi = _med(mets["next"], key), _med(mets["imgopt"], key)
        errs_n = sum(_sum(mets["next"], k) for k in errkeys)
        errs_i = sum(_sum(mets["imgopt"], k) for k in errkeys)
        types_differ = key == "c4_bytes" and {m.get("c4_types") for m in mets["next"] + mets["imgopt"]} != {
            (mets["next"] or [{}])[0].get("c4_types")}
        if errs_n or errs_i:
            ratio_s, verdict = f"n/a (errors: Next {errs_n}, imgopt {errs_i})", "no ratio"
        elif types_differ:
            ratio_s, verdict = "n/a (the two returned different content types)", "no ratio"
        elif vn is None or vi is None or not vn:
            ratio_s, verdict = "-", "missing"
        else:
            ratio = vi / vn
            ratio_s = f"{ratio:.2f}"
            if target is None:
                verdict = ""
            elif key == "warm_p99":
                verdict = "PASS" if ratio < 1.0 else "FAIL"
            else:
                verdict = "PASS" if (ratio >= target if better == "higher" else ratio <= target) else "FAIL"
        tgt = "-" if target is None else (("≥ " if better == "higher" else ("< " if key == "warm_p99" else "≤ ")) + f"{target}")
        L.append(f"| {label} | {fnum(vn)} | {fnum(vi)} | {ratio_s} | {tgt} | {verdict} |")

    if raw:
        raw_ms = raw["process_cpu_s"] * 1000 / max(raw["ok"], 1)
        vi = _med(mets["imgopt"], "c2_cpu_ms")
        vn = _med(mets["next"], "c2_cpu_ms")
        L += ["", "## Against the in-process floor (raw libvips, Next's encoder settings)", "",
              "| | CPU ms / image | vs raw_vips_next |", "|---|---|---|",
              f"| raw_vips --profile next (pyvips in-process, 2 threads, originals in memory, {raw['errors']} errors) | "
              f"{raw_ms:.0f} | 1.00 |",
              f"| Next.js server, cold c2 (incl. HTTP fetch of originals, node, cache write) | {fnum(vn, 0)} | "
              f"{(vn / raw_ms) if vn else 0:.2f} |",
              f"| imgopt server, cold c2 (incl. HTTP fetch of originals, Python, cache write; imgopt's own encoder "
              f"defaults) | {fnum(vi, 0)} | {(vi / raw_ms) if vi else 0:.2f} |", "",
              "The in-process ratio of imgopt's transform to raw libvips *with identical settings* (the ≤ 1.05 target) "
              "is measured by `make bench` (bench_transform.py), not here."]

    q = None if a.no_quality else quality(a.results)
    if q:
        L += ["", f"## Output size and quality at q={Q} (every image x {{{os.environ.get('QUALITY_WIDTHS', '640,1080,1920')}}} "
              "x format, same URLs on both)", "",
              "SSIM against a high-quality reference (full decode, one Lanczos3 resize to the output size), libvips "
              "Gaussian-window SSIM on luma (Y) and mean over R,G,B. Target: bytes ≤ 1.0 x Next and SSIM ≥ Next − 0.005.", "",
              "| output type | n | KiB Next | KiB imgopt | bytes ratio | SSIM-Y Next | SSIM-Y imgopt | Δ | SSIM-RGB Next | SSIM-RGB imgopt | Δ | verdict | worst ΔY |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for ct, d in sorted(q["per_format"].items()):
            br = d["bytes_imgopt"] / d["bytes_next"] if d["bytes_next"] else 0
            dy, drgb = d["y_imgopt"] - d["y_next"], d["rgb_imgopt"] - d["rgb_next"]
            ok = br <= 1.0 and dy >= -0.005 and drgb >= -0.005
            L.append(f"| {ct} | {d['n']} | {d['bytes_next'] / 1024:.0f} | {d['bytes_imgopt'] / 1024:.0f} | {br:.3f} | "
                     f"{d['y_next']:.4f} | {d['y_imgopt']:.4f} | {dy:+.4f} | {d['rgb_next']:.4f} | {d['rgb_imgopt']:.4f} | "
                     f"{drgb:+.4f} | {'PASS' if ok else 'FAIL'} | {d['worst_dy'][0]:+.4f} {d['worst_dy'][1] or ''} |")
        if q["skipped"]:
            L += ["", f"Not compared ({len(q['skipped'])}): " + "; ".join(q["skipped"][:12])]

    L += ["", "## Per repeat (raw numbers)", "",
          "| peer | repeat | c2 img/s | c4 img/s | c4 p50/p95/p99 ms | CPU ms/img c2/c4 | errors c2/c4 | out MB c4 | "
          "warm req/s | warm p99 ms | idle/peak-cold RSS MB | foreign cores c2/c4/warm |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in ("next", "imgopt"):
        for i, m in enumerate(mets[p], 1):
            L.append(f"| {p} | {i} | {fnum(m.get('c2_ips'), 2)} | {fnum(m.get('c4_ips'), 2)} | "
                     f"{fnum(m.get('c4_p50'), 0)}/{fnum(m.get('c4_p95'), 0)}/{fnum(m.get('c4_p99'), 0)} | "
                     f"{fnum(m.get('c2_cpu_ms'), 0)}/{fnum(m.get('c4_cpu_ms'), 0)} | {m.get('c2_err')}/{m.get('c4_err')} | "
                     f"{(m.get('c4_bytes') or 0) / 1e6:.2f} | {fnum(m.get('warm_rps'), 0)} | {fnum(m.get('warm_p99'), 1)} | "
                     f"{fnum(m.get('idle_rss'), 0)}/{fnum(m.get('cold_peak_rss'), 0)} | "
                     f"{fnum(m.get('c2_foreign'), 2)}/{fnum(m.get('c4_foreign'), 2)}/{fnum(m.get('warm_foreign'), 2)} |")
    errs = []
    for p in ("next", "imgopt"):
        for r in runs[p]:
            for name, ph in (r.get("phases") or {}).items():
                for k, v in (ph.get("error_kinds") or {}).items():
                    errs.append(f"{p} {name}: {k} x{v}")
    if errs:
        L += ["", "Errors: " + "; ".join(sorted(set(errs))[:20])]
    res = os.path.abspath(a.results)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shown = os.path.relpath(res, root) if res.startswith(root + os.sep) else res
    L += ["", f"Raw results: `{shown}` (loadgen JSON per peer and repeat, quality-pass bodies)."]
    with open(a.out, "w") as f:
        f.write("\n".join(L) + "\n")
    print("\n".join(L[:60]))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch")
    f.add_argument("--peer", required=True)
    f.add_argument("--base", required=True)
    f.add_argument("--template", required=True)
    f.add_argument("--origin", default="http://127.0.0.1:8700")
    f.add_argument("--out", required=True)
    f.add_argument("--exclude", default="")
    f.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    f.add_argument("--formats", default=",".join(FORMATS))
    f.add_argument("--q", type=int, default=Q)
    r = sub.add_parser("report")
    r.add_argument("--results", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--elapsed", default="?")
    r.add_argument("--loadgen-args", default="")
    r.add_argument("--repeat", default="?")
    r.add_argument("--exclude", default="")
    r.add_argument("--no-quality", action="store_true")
    r.add_argument("--command", default="make bench-next", help="the command line, as the report quotes it")
    r.add_argument("--origin-impl", default="nginx")
    a = ap.parse_args()
    for u in (getattr(a, "base", None), getattr(a, "origin", None)):
        if u and urllib.parse.urlsplit(u).hostname not in ("127.0.0.1", "localhost"):
            sys.exit(f"refusing non-loopback {u}")
    return cmd_fetch(a) if a.cmd == "fetch" else cmd_report(a)


if __name__ == "__main__":
    sys.exit(main())
