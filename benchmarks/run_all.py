#!/usr/bin/env python3
"""`make bench`: run every imgopt benchmark and write benchmarks/RESULTS.md.

  1. bench_transform.py  in-process transform vs raw libvips (CPU time, pytest-benchmark)
  2. bench_http.py       real uvicorn process: cold/warm throughput + latency at c1/2/4/8(/16),
                         and the same cold jobs in-process (raw libvips floor)
  3. bench_memory.py     RSS after 500 vs 5,000 mixed requests, per allocator variant

Medians over rounds (after warm-up rounds); the machine's noise (CPU used by other processes,
"foreign cores") is measured before, after and during every benchmark and printed. A ratio is
not reported when either side had errors.

  python benchmarks/run_all.py                 # full run (~55 min on 2 quiet cores: transform ~11,
                                               # http ~14, http variants ~10, memory ~20)
  python benchmarks/run_all.py --quick         # smoke: tiny workloads, checks the harness (~4 min)
  python benchmarks/run_all.py --only transform,memory --rounds 7
  python benchmarks/run_all.py --report-only   # rebuild RESULTS.md from benchmarks/results/*.json

Env passed through to the benches: BENCH_HTTP_VARIANT, BENCH_MEM_VARIANTS, BENCH_MEM_REQUESTS,
BENCH_MEM_MISS, BENCH_WARM_SECONDS, BENCH_CORPUS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402

SUITES = {
    "transform": ("bench_transform.py", "time.process_time"),
    "http": ("bench_http.py", "time.perf_counter"),
    "memory": ("bench_memory.py", "time.perf_counter"),
}
NOISY = 0.1  # foreign cores above this: the row is contaminated by other users of the machine


def ensure_corpus() -> None:
    if C.corpus_available():
        return
    script = HERE / "make_corpus.py"
    print(f"no corpus at {C.CORPUS}: generating it with {script.relative_to(ROOT)} (~10 s)", flush=True)
    subprocess.run([sys.executable, str(script), str(C.CORPUS)], check=True)
    if not C.corpus_available():
        sys.exit(f"no corpus at {C.CORPUS}: run benchmarks/make_corpus.py or set BENCH_CORPUS")


def run_suite(name: str, out_json: Path, env: dict, quick: bool, k: str | None = None) -> int:
    fn, timer = SUITES[name]
    cmd = [sys.executable, "-m", "pytest", str(HERE / fn), "-q", "-p", "no:cacheprovider", "--benchmark-enable",
           f"--benchmark-json={out_json}", f"--benchmark-timer={timer}", "--benchmark-columns=median,min,max,rounds",
           "--benchmark-sort=name", "-rs"] + (["-k", k] if k else [])
    print(f"\n== {name}: {' '.join(cmd[2:])}", flush=True)
    t0 = time.monotonic()
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    print(f"== {name}: exit {rc} in {time.monotonic() - t0:.0f} s", flush=True)
    return rc


# ------------------------------------------------------------------------------------ report
def load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        return json.load(f).get("benchmarks", [])


def f(v, nd=1, dash="-"):
    if v is None:
        return dash
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def flag(foreign) -> str:
    return f"{foreign:.2f}" + (" ⚠" if foreign is not None and foreign > NOISY else "") if foreign is not None else "-"


def transform_section(benches: list[dict]) -> list[str]:
    if not benches:
        return []
    L = ["## 1. In-process transform: imgopt vs raw libvips (bench_transform.py)", "",
         "CPU seconds of the process for one call (all photos once; PNG: the PNG sources) at q=75. "
         "*raw-next* = `thumbnail_buffer` + save with Next.js's encoder settings, no imgopt code; "
         "*imgopt-next* = `imgopt.transform.process` with ENCODERS set to the same settings (target ≤ 1.05 × raw); "
         "*imgopt-default* = `process` with imgopt's shipped ENCODERS. The three run back to back in every round; "
         "ratios are per round (paired), then the median over rounds.", "",
         "| format | width | raw-next CPU ms | imgopt-next CPU ms | imgopt-next / raw (paired) | ≤ 1.05 | "
         "imgopt-default CPU ms | default / raw-next (paired) | bytes default / next | wall ms raw / next / default | "
         "rounds | foreign cores |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ratios = []
    order = ["webp", "avif", "jpeg", "png"]
    for b in sorted(benches, key=lambda b: (order.index(b["extra_info"]["fmt"]), b["extra_info"]["w"])):
        e = b["extra_info"]
        raw, nxt, dft = e["raw-next"], e["imgopt-next"], e["imgopt-default"]
        errs = raw["errors"] + nxt["errors"] + dft["errors"]
        rn, rd = e.get("ratio_next_vs_raw"), e.get("ratio_default_vs_raw")
        if errs:
            rn_s = rd_s = f"n/a (errors {errs})"
            rn = None
        else:
            rn_s, rd_s = f(rn, 3), f(rd, 3)
        if rn is not None:
            ratios.append(rn)
        walls = "/".join(f(x["wall_median_s"] * 1000, 0) for x in (raw, nxt, dft))
        L.append(f"| {e['fmt']} | {e['w']} | {f(raw['cpu_median_s'] * 1000, 0)} | {f(nxt['cpu_median_s'] * 1000, 0)} | "
                 f"{rn_s} | {'' if rn is None else ('PASS' if rn <= 1.05 else 'FAIL')} | {f(dft['cpu_median_s'] * 1000, 0)} | "
                 f"{rd_s} | {dft['bytes'] / nxt['bytes']:.3f} | {walls} | {e['rounds']} | {flag(e.get('foreign_cores'))} |")
    if ratios:
        L += ["", f"Median imgopt-next / raw-next over all cases: **{C.median(ratios):.3f}** "
                  f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target ≤ 1.05."]
    return L + [""]


def http_section(benches: list[dict]) -> list[str]:
    if not benches:
        return []
    cold = {b["extra_info"]["conc"]: b["extra_info"] for b in benches if b["extra_info"].get("kind") == "http_cold"}
    warm = {b["extra_info"]["conc"]: b["extra_info"] for b in benches if b["extra_info"].get("kind") == "http_warm"}
    raw = {b["extra_info"]["conc"]: b["extra_info"] for b in benches if b["extra_info"].get("kind") == "raw_inprocess"}
    variant = next((e.get("variant") for e in list(cold.values()) + list(warm.values())), "default")
    L = ["## 2. HTTP against a real imgopt process (bench_http.py)", "",
         f"Server variant: `{variant}`; workers: {next((e.get('workers') for e in cold.values()), None) or 'default (CPUs)'}. "
         "Cold: every photo/PNG x {640,1080,1920} x {webp,avif,jpeg} once per round, fresh `?v=` per round (all misses), "
         "new connection per request, originals from a local nginx. *raw in-process* = the same jobs in the bench "
         "process with N threads (thumbnail_buffer + imgopt's ENCODERS, originals in memory): the floor.", "",
         "### Cold (misses)", "",
         "| conc | img/s | p50 / p95 / p99 ms | server CPU ms/img | peak RSS MB | raw in-process img/s | raw CPU ms/img | "
         "HTTP / raw img/s | HTTP / raw CPU | errors | rounds | foreign cores |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in sorted(cold):
        e, r = cold[c], raw.get(c, {})
        ok = not e.get("errors")
        rt = f"{e['images_per_s'] / r['images_per_s']:.2f}" if ok and r.get("images_per_s") else ("n/a (errors)" if not ok else "-")
        rc = (f"{e['server_cpu_ms_per_img'] / r['server_cpu_ms_per_img']:.2f}" if ok and r.get("server_cpu_ms_per_img")
              else ("n/a (errors)" if not ok else "-"))
        L.append(f"| {c} | {f(e.get('images_per_s'), 2)} | {f(e.get('p50_ms'), 0)} / {f(e.get('p95_ms'), 0)} / "
                 f"{f(e.get('p99_ms'), 0)} | {f(e.get('server_cpu_ms_per_img'), 0)} | {f(e.get('peak_rss_mb_max'), 0)} | "
                 f"{f(r.get('images_per_s'), 2)} | {f(r.get('server_cpu_ms_per_img'), 0)} | {rt} | {rc} | "
                 f"{e.get('errors')}{' ' + '; '.join(e.get('error_kinds') or [])[:120] if e.get('errors') else ''} | "
                 f"{e.get('rounds')} | {flag(max(e.get('foreign_cores') or 0, r.get('foreign_cores') or 0))} |")
    L += ["", "### Warm (cache hits, one hot URL, keep-alive)", "",
          "| conc | req/s | p50 ms | p99 ms | server CPU ms/req | tool | errors | rounds | foreign cores |",
          "|---|---|---|---|---|---|---|---|---|"]
    for c in sorted(warm):
        e = warm[c]
        L.append(f"| {c} | {f(e.get('req_per_s'), 0)} | {f(e.get('p50_ms'), 2)} | {f(e.get('p99_ms'), 2)} | "
                 f"{f(e.get('cpu_ms_per_img'), 2)} | {e.get('tool')} | {e.get('errors')} | {e.get('rounds')} | "
                 f"{flag(e.get('foreign_cores'))} |")
    return L + [""]


def variants_section(res_dir: Path) -> list[str]:
    runs = [("default", load(res_dir / "http.json"))]
    for p in sorted(res_dir.glob("http-variant-*.json")):
        runs.append((p.stem.replace("http-variant-", ""), load(p)))
    rows, stack = [], []
    for v, benches in runs:
        for b in benches:
            e = b["extra_info"]
            if e.get("kind") == "http_cold" and e.get("conc") in (2, 4):
                rows.append((v, e))
            if e.get("kind") == "stack":
                stack.append((v, e))
    L = []
    if len(runs) > 1 and rows:
        L += ["### Threads per image vs workers (cold misses)", "",
              "vcN = VIPS_CONCURRENCY=N (libvips threads per image; default: CPUs // workers, i.e. 1 with the "
              "default workers), wN = `--workers N` (default = CPUs). Same cold job list as above, fresh server "
              "per variant.", "",
              "| variant | conc | img/s | p50 / p99 ms | server CPU ms/img | peak RSS MB | errors | foreign cores |",
              "|---|---|---|---|---|---|---|---|"]
        for v, e in sorted(rows, key=lambda r: (r[1]["conc"], r[0])):
            L.append(f"| {v} | {e['conc']} | {f(e.get('images_per_s'), 2)} | {f(e.get('p50_ms'), 0)} / {f(e.get('p99_ms'), 0)} | "
                     f"{f(e.get('server_cpu_ms_per_img'), 0)} | {f(e.get('peak_rss_mb_max'), 0)} | {e.get('errors')} | "
                     f"{flag(e.get('foreign_cores'))} |")
        L.append("")
    if stack:
        v, e = stack[0]
        L += [f"Server stack (checked in /proc/<pid>/maps): uvloop {'loaded' if e['uvloop'] else 'NOT loaded'}, "
              f"httptools {'loaded' if e['httptools'] else 'NOT loaded'}; {e['threads']} threads at idle.", ""]
    return L


def memory_section(benches: list[dict]) -> list[str]:
    if not benches:
        return []
    L = ["## 3. RSS over a long mixed run (bench_memory.py)", "",
         "Fresh server per variant; mixed misses/hits at c=4 (see bench_memory.py); RSS of the server sampled after "
         "every 10 % of the requests with nothing in flight. Target: growth from the first to the last sample < 10 %. "
         "*net of caches*: the same growth of RSS less the bytes the bounded in-process caches hold at each sample "
         "(`imgopt_memory_bytes`), i.e. what grows besides the caches filling up to their bounds.", "",
         "| variant | requests (miss %) | idle MB | RSS @first MB | RSS @last MB | growth | < 10 % | caches MB first/last | "
         "growth net of caches | peak MB | server CPU s | errors | wall s | foreign cores | curve (requests:MB) |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in benches:
        e = b["extra_info"]
        if not e:
            continue
        curve = " ".join(f"{n}:{v:.0f}" for n, v in e["curve"])
        verdict = "n/a (errors)" if e["errors"] else ("PASS" if e["growth"] < 0.10 else "FAIL")
        caches = f"{e['caches_mb'][1]:.0f} / {e['caches_mb'][-1]:.0f}" if "caches_mb" in e else "-"
        net = f"{e['growth_net_of_caches'] * 100:+.1f} %" if "growth_net_of_caches" in e else "-"
        L.append(f"| {e['variant']} | {e['requests']} ({e['miss_fraction'] * 100:.0f} %) | {e['idle_rss_mb']:.0f} | "
                 f"{e['rss_first_mb']:.0f} (@{e['rss_first_at']}) | {e['rss_last_mb']:.0f} (@{e['rss_last_at']}) | "
                 f"{e['growth'] * 100:+.1f} % | {verdict} | {caches} | {net} | {e['peak_rss_mb']:.0f} | {e['server_cpu_s']:.1f} | {e['errors']} | "
                 f"{e['wall_s']:.0f} | {flag(e['foreign_cores'])} | {curve} |")
    return L + [""]


def write_report(res_dir: Path, out: Path, meta: dict) -> None:
    L = [f"# imgopt benchmarks{' — SMOKE RUN (tiny workloads, numbers meaningless)' if meta.get('quick') else ''}", "",
         f"`{meta.get('command', 'make bench')}` on {meta.get('started', '?')}: {meta.get('cpus')} CPUs, "
         f"{meta.get('platform', '')}; libvips {meta.get('libvips')}, pyvips {meta.get('pyvips')}, python "
         f"{meta.get('python')}; took {meta.get('elapsed_s', '?')} s.", "",
         f"**Machine noise**: CPU used by other processes: {meta.get('noise_before')} cores before the run, "
         f"{meta.get('noise_after')} after; per-row *foreign cores* below were measured during that row (⚠ > {NOISY}: "
         "throughput/latency of that row depressed; CPU-time numbers are more robust). Client, origin and server "
         "share the machine's cores.", "",
         f"Rounds: {meta.get('rounds') or 'defaults (transform 5, http 3, memory 1)'} measured after {meta.get('warmup', 1)} "
         "warm-up round(s); values are medians over the measured rounds.", ""]
    for name, sec in (("transform", transform_section), ("http", http_section), ("memory", memory_section)):
        L += sec(load(res_dir / f"{name}.json"))
        if name == "http":
            L += variants_section(res_dir)
    if meta.get("failures"):
        L += ["**Suites that exited non-zero**: " + ", ".join(meta["failures"]), ""]
    L += ["Raw pytest-benchmark JSON: `benchmarks/results/{transform,http,memory}.json`.", ""]
    out.write_text("\n".join(L))
    print(f"wrote {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run (BENCH_SMOKE=1): checks the harness, not a measurement")
    ap.add_argument("--only", default="transform,http,memory")
    ap.add_argument("--rounds", type=int, help="measured rounds per benchmark (default: transform 5, http 3)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--out", help="markdown output (default benchmarks/RESULTS.md; --quick: results/RESULTS-smoke.md)")
    ap.add_argument("--results", default=str(HERE / "results"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--http-variants", default="vc1,w1,jemalloc,mallopt",
                    help="extra server variants for the threads experiment (cold c2/c4 only); '' to skip. "
                         "vcN = VIPS_CONCURRENCY (libvips threads per image), wN = --workers N, jemalloc, mallopt "
                         "(arena2+mmap256 via mallopt), arena2, mmapK, trim, lrs (see _common.variant_env)")
    a = ap.parse_args()
    res_dir = Path(a.results)
    if a.quick:
        res_dir = res_dir / "smoke"
    res_dir.mkdir(parents=True, exist_ok=True)
    out = Path(a.out) if a.out else (res_dir / "RESULTS-smoke.md" if a.quick else HERE / "RESULTS.md")
    meta_path = res_dir / "meta.json"
    if a.report_only:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        write_report(res_dir, out, meta)
        return 0

    ensure_corpus()
    import pyvips

    t0 = time.monotonic()
    meta = {"command": "python benchmarks/run_all.py " + " ".join(sys.argv[1:]),
            "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
            "platform": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "libvips": ".".join(str(pyvips.version(i)) for i in range(3)), "pyvips": pyvips.__version__,
            "quick": a.quick, "rounds": a.rounds, "warmup": a.warmup}
    print("measuring machine noise (3 s) ...", flush=True)
    meta["noise_before"] = C.machine_noise(3)
    if meta["noise_before"] > 0.15:
        print(f"WARNING: {meta['noise_before']} cores busy with other processes: numbers will be noisy", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_WARMUP": str(a.warmup)}
    if a.quick:
        env["BENCH_SMOKE"] = "1"
        env.setdefault("BENCH_MEM_VARIANTS", "default")
    if a.rounds:
        env["BENCH_ROUNDS"] = str(a.rounds)
    failures = []
    for name in [s for s in a.only.split(",") if s]:
        if name not in SUITES:
            sys.exit(f"unknown suite {name}; choose from {', '.join(SUITES)}")
        if run_suite(name, res_dir / f"{name}.json", env, a.quick) != 0:
            failures.append(name)
        if name == "http" and a.http_variants:
            # threads per image vs workers: cold c2/c4 only, one fresh server per variant
            for v in [x for x in a.http_variants.split(",") if x]:
                venv = {**env, "BENCH_HTTP_VARIANT": v}
                venv.setdefault("BENCH_ROUNDS", "2")  # 2 measured rounds per variant unless --rounds
                if run_suite("http", res_dir / f"http-variant-{v}.json", venv, a.quick,
                             k="test_cold and (c2 or c4) or test_server_stack") != 0:
                    failures.append(f"http[{v}]")
    meta["noise_after"] = C.machine_noise(3)
    meta["elapsed_s"] = round(time.monotonic() - t0)
    meta["failures"] = failures
    meta_path.write_text(json.dumps(meta, indent=1))
    write_report(res_dir, out, meta)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
