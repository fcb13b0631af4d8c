#!/usr/bin/env python3
"""The "physical limit" baseline: the same cold transforms as loadgen.py, done in-process with pyvips.

Originals are read into memory first (no HTTP, no disk during the run). Each job:
  pyvips.Image.thumbnail_buffer(data, w, size="down") then
  webpsave_buffer(Q=q) | heifsave_buffer(compression="av1", Q=q) | jpegsave_buffer(Q=q)
run on N worker threads (default 2 = cores; pyvips releases the GIL inside libvips).
libvips' operation cache is disabled so identical inputs are not served from cache.

--profile default   the calls above with libvips defaults (AVIF effort 4, 4:2:0 below Q 90)
--profile next      the encoder settings Next.js 16 passes to sharp, so this is a lower bound
                    for Next's own transforms: AVIF Q=round(q*50/80), effort 3, no chroma
                    subsampling (sharp's AVIF default 4:4:4); JPEG with mozjpeg options
                    (trellis, overshoot deringing, optimised scans, quant table 3); WebP Q=q.
Output: --out JSON (default $PEERS_DIR/results/raw_vips[_<profile>].json) and a markdown line.
"""
import argparse
import concurrent.futures as cf
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadgen_common import CORPUS, FORMATS, RESULTS, WIDTHS, cold_jobs, lat_summary, load_manifest, split_names, host_busy_s  # noqa: E402

import pyvips  # noqa: E402


def transform(data, w, fmt, q, avif_effort, profile):
    im = pyvips.Image.thumbnail_buffer(data, w, size="down")
    if fmt == "webp":
        return im.webpsave_buffer(Q=q)
    if fmt == "avif":
        if profile == "next":
            return im.heifsave_buffer(compression="av1", Q=max(round(q * 50 / 80), 1), effort=3,
                                      subsample_mode="off")
        return im.heifsave_buffer(compression="av1", Q=q, effort=avif_effort)
    if fmt == "jpeg":
        if profile == "next":
            return im.jpegsave_buffer(Q=q, trellis_quant=True, overshoot_deringing=True,
                                      optimize_scans=True, quant_table=3)
        return im.jpegsave_buffer(Q=q)
    raise ValueError(fmt)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--q", type=int, default=75)
    ap.add_argument("--avif-effort", type=int, default=4, help="libvips default is 4 (profile default)")
    ap.add_argument("--profile", choices=["default", "next"], default="default")
    ap.add_argument("--exclude", default="", help="corpus file names to leave out")
    ap.add_argument("--vips-concurrency", type=int, default=0,
                    help="threads per libvips operation (0 = libvips default = cores)")
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--out")
    args = ap.parse_args()
    label = "raw_vips" + ("" if args.profile == "default" else f"_{args.profile}")
    args.out = args.out or os.path.join(RESULTS, f"{label}.json")

    pyvips.cache_set_max(0)
    if args.vips_concurrency:
        pyvips.concurrency_set(args.vips_concurrency)
    images = load_manifest(args.corpus)
    data = {}
    for im in images:
        with open(os.path.join(args.corpus, im["name"]), "rb") as f:
            data[im["name"]] = f.read()
    jobs = cold_jobs(images, [int(x) for x in args.widths.split(",")], args.formats.split(","),
                     exclude=split_names(args.exclude))

    def run(job):
        im, w, fmt = job
        st = time.perf_counter()
        try:
            out = transform(data[im["name"]], w, fmt, args.q, args.avif_effort, args.profile)
            return {"image": im["name"], "w": w, "fmt": fmt, "s": time.perf_counter() - st, "bytes": len(out), "err": None}
        except Exception as e:
            return {"image": im["name"], "w": w, "fmt": fmt, "s": time.perf_counter() - st, "bytes": 0,
                    "err": str(e).splitlines()[0][:200]}

    cpu0 = time.process_time()
    busy0 = host_busy_s()
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(args.threads) as ex:
        recs = list(ex.map(run, jobs))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    foreign = max(host_busy_s() - busy0 - cpu, 0.0)
    ok = [r for r in recs if not r["err"]]
    per_format = {f: {"ok": len([r for r in ok if r["fmt"] == f]),
                      "bytes": sum(r["bytes"] for r in ok if r["fmt"] == f),
                      **lat_summary([r["s"] for r in ok if r["fmt"] == f])} for f in args.formats.split(",")}
    per_image = {}
    for r in ok:
        d = per_image.setdefault(r["image"], {"ok": 0, "s": 0.0, "bytes": 0})
        d["ok"] += 1
        d["s"] += r["s"]
        d["bytes"] += r["bytes"]
    for d in per_image.values():
        d["mean_ms"] = round(d.pop("s") / d["ok"] * 1000, 1)
    res = {
        "peer": label, "kind": "in-process baseline", "profile": args.profile,
        "excluded": split_names(args.exclude),
        "version": f"pyvips {pyvips.__version__}, libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "threads": args.threads, "q": args.q,
        "avif_effort": 3 if args.profile == "next" else args.avif_effort,
        "vips_concurrency": pyvips.concurrency_get(),
        "jobs": len(jobs), "ok": len(ok), "errors": len(recs) - len(ok),
        "error_kinds": sorted({f"{r['image']} {r['fmt']}: {r['err']}" for r in recs if r["err"]}),
        "wall_s": round(wall, 3), "images_per_s": round(len(ok) / wall, 3),
        "process_cpu_s": round(cpu, 2),
        "foreign_cpu_s": round(foreign, 2), "foreign_cores": round(foreign / wall, 2), "latency": lat_summary([r["s"] for r in ok]),
        "bytes_out": sum(r["bytes"] for r in ok), "per_format": per_format, "per_image": per_image,
    }
    try:
        with open("/proc/self/status") as f:
            res["peak_rss_mb"] = round(int([l for l in f if l.startswith("VmHWM:")][0].split()[1]) / 1024, 1)
    except Exception:
        pass
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    L = res["latency"]
    print("| baseline | threads | img/s | p50 ms | p95 ms | p99 ms | errors | out MB | CPU s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {label} ({res['version']}) | {args.threads} | {res['images_per_s']} | {L['p50_ms']} | {L['p95_ms']} | "
          f"{L['p99_ms']} | {res['errors']} | {res['bytes_out'] / 1e6:.2f} | {res['process_cpu_s']} | {res.get('peak_rss_mb')} |")
    print(f"\nresult: {args.out}")


if __name__ == "__main__":
    main()
