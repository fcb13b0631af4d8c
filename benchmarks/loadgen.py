#!/usr/bin/env python3
"""Load generator for one image-optimization server ("peer"), measured in ONE run:

  cold_c<N>  every (image x width x format) requested exactly once at concurrency N (default 2
             and 4). Each pass uses its own quality value (default 74, 76) so no request can be
             answered from a result cache filled by an earlier pass; start scripts also clear
             the peer's cache. images/s, p50/p95/p99 latency, errors, output bytes.
  warm       one URL (primed once) hammered at concurrency 16 for ~10 s: req/s and p99.
             Uses `wrk` when installed (less client CPU), else an aiohttp loop.
  RSS        VmRSS of the peer process tree (pid + descendants), plus the memfds the tree holds
             open (shared memory no process may have mapped, so no VmRSS shows it: imgopt's
             worker processes share resized pixels that way; a page both mapped and held is
             counted twice, so the figure errs high), sampled every 100 ms.

Only 127.0.0.1 targets are accepted. Results: --out JSON (default $PEERS_DIR/results/<peer>.json)
+ a markdown table on stdout. benchmarks/compare_next.sh runs it once per peer and repeat.

URL templates use Python str.format fields:
  {base} peer base URL   {src} origin URL of the image   {src_enc} percent-encoded {src}
  {file} corpus file name   {w} width   {q} quality   {fmt} webp|avif|jpeg
Every request also sends an Accept header matching {fmt} (see loadgen_common.ACCEPT), which is how
Next.js picks its output format.

Example (origin and peer already running, see benchmarks/peers/):
  loadgen.py --peer next --base http://127.0.0.1:8701 --pidfile .bench-cache/run/next.pid
"""
import argparse
import asyncio
import datetime as dt
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadgen_common import (ACCEPT, CORPUS, EXPECTED_CTYPE, FORMATS, PEERS_DIR, RESULTS, WIDTHS, cold_jobs,  # noqa: E402
                    host_busy_s, lat_summary, load_manifest, split_names)

import aiohttp  # noqa: E402

try:
    import pyvips  # only for reading output headers (dimensions, frames)
except Exception:  # pragma: no cover
    pyvips = None

PRESETS = {
    "next": "{base}/_next/image?url={src_enc}&w={w}&q={q}",
    "imgopt": "{base}/_next/image?url={src_enc}&w={w}&q={q}",
}

CLK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- process tree stats
def _children(pid):
    out = []
    for f in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(f) as fh:
                out += [int(x) for x in fh.read().split()]
        except OSError:
            pass
    return out


def proc_tree(pid):
    seen, todo = [], [pid]
    while todo and len(seen) < 512:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo += _children(p)
    return seen


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memfd_kb(pids):
    """Size of the distinct memfds the processes hold open (each counted once)."""
    seen = {}
    for pid in pids:
        d = f"/proc/{pid}/fd"
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            try:
                if not os.readlink(f"{d}/{n}").startswith("/memfd:"):
                    continue
                st = os.stat(f"{d}/{n}")
            except OSError:
                continue
            seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512  # pages in use, not the length
    return sum(seen.values()) // 1024


def cpu_ticks(pid, with_children=False):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        t = int(fields[11]) + int(fields[12])  # utime, stime
        if with_children:
            t += int(fields[13]) + int(fields[14])  # cutime, cstime (reaped children)
        return t
    except (OSError, IndexError, ValueError):
        return 0


def tree_cpu_s(pid):
    return sum(cpu_ticks(p, with_children=(p == pid)) for p in proc_tree(pid)) / CLK


def self_cpu_s():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system  # includes reaped wrk


class CpuAccount:
    """CPU used during a phase by: the peer tree, this load generator (+wrk), the origin, and
    everything else on the machine ("foreign": other users' processes -> noisy numbers)."""

    def __init__(self, peer_pid, origin_pid):
        self.peer_pid, self.origin_pid = peer_pid, origin_pid
        self.t0 = self._snap()

    def _snap(self):
        return (host_busy_s(), tree_cpu_s(self.peer_pid) if self.peer_pid else 0.0,
                self_cpu_s(), tree_cpu_s(self.origin_pid) if self.origin_pid else 0.0, time.time())

    def done(self):
        t1 = self._snap()
        d = [b - a for a, b in zip(self.t0, t1)]
        foreign = d[0] - d[1] - d[2] - d[3]
        return {"host_busy_cpu_s": round(d[0], 2), "peer_cpu_s": round(d[1], 2), "loadgen_cpu_s": round(d[2], 2),
                "origin_cpu_s": round(d[3], 2), "foreign_cpu_s": round(max(foreign, 0.0), 2),
                "foreign_cores": round(max(foreign, 0.0) / d[4], 2) if d[4] > 0 else None}


class RssSampler(threading.Thread):
    def __init__(self, pid, interval=0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.phase = "idle"
        self.peak_kb = 0
        self.phase_peak_kb = {}
        self.max_procs = 0
        self.samples = 0
        self._halt = threading.Event()

    def sample(self):
        tree = proc_tree(self.pid)
        kb = sum(rss_kb(p) for p in tree) + memfd_kb(tree)
        self.samples += 1
        self.max_procs = max(self.max_procs, len(tree))
        self.peak_kb = max(self.peak_kb, kb)
        self.phase_peak_kb[self.phase] = max(self.phase_peak_kb.get(self.phase, 0), kb)
        return kb

    def run(self):
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()


# --------------------------------------------------------------------------- helpers
def check_local(url):
    host = urllib.parse.urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"refusing non-loopback target {url!r}")


def build_url(template, base, origin, file, w, q, fmt):
    src = f"{origin}/{file}"
    return template.format(base=base.rstrip("/"), src=src, src_enc=urllib.parse.quote(src, safe=""),
                           file=file, w=w, q=q, fmt=fmt)


def out_header(body):
    """(width, height, pages) of a response body, header only; None if unknown."""
    if pyvips is None or not body:
        return None
    try:
        im = pyvips.Image.new_from_buffer(body, "")
        fields = im.get_fields()
        pages = im.get("n-pages") if "n-pages" in fields else 1
        h = im.get("page-height") if "page-height" in fields else im.height
        return [im.width, h, pages]
    except Exception:
        return None


# --------------------------------------------------------------------------- cold phase
async def cold_phase(args, jobs, conc, q, sampler):
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    # default: a new TCP connection per cold request, so prefork servers (several worker
    # processes) are load-balanced by accept() instead of pinned per keep-alive
    # connection (with keep-alive, c=2 can land both connections on one of two workers).
    conn = aiohttp.TCPConnector(limit=conc, force_close=not args.keepalive)
    records = []
    idx = 0
    t0 = time.perf_counter()
    deadline = t0 + args.phase_timeout
    acct = CpuAccount(args.pid, args.origin_pid)

    async with aiohttp.ClientSession(timeout=timeout, connector=conn, auto_decompress=False) as s:
        async def worker():
            nonlocal idx
            while idx < len(jobs) and time.perf_counter() < deadline:
                im, w, fmt = jobs[idx]
                idx += 1
                url = build_url(args.template, args.base, args.origin, im["name"], w, q, fmt)
                rec = {"image": im["name"], "w": w, "fmt": fmt, "status": None, "ms": None,
                       "bytes": 0, "ctype": None, "out": None, "err": None}
                st = time.perf_counter()
                rec["start_ms"] = round((st - t0) * 1000, 1)
                try:
                    async with s.get(url, headers={"Accept": ACCEPT[fmt]}) as r:
                        body = await r.read()
                        rec["status"] = r.status
                        rec["ctype"] = r.headers.get("Content-Type", "").split(";")[0].strip()
                        if r.status == 200:
                            rec["bytes"] = len(body)
                        else:
                            rec["err"] = f"HTTP {r.status}: {body[:160].decode('utf-8', 'replace')}"
                except Exception as e:  # timeouts, resets
                    rec["err"] = f"{type(e).__name__}: {e}"[:200]
                rec["ms"] = round((time.perf_counter() - st) * 1000, 2)
                if rec["status"] == 200:
                    rec["out"] = out_header(body)
                records.append(rec)

        await asyncio.gather(*[worker() for _ in range(conc)])
    wall = time.perf_counter() - t0
    return summarize_cold(records, len(jobs), wall, conc, q, acct.done() if args.pid else None)


def summarize_cold(records, njobs, wall, conc, q, cpu):
    ok = [r for r in records if r["status"] == 200]
    errs = [r for r in records if r["status"] != 200]
    ctypes, mismatch = {}, {}
    for r in ok:
        ctypes[r["ctype"]] = ctypes.get(r["ctype"], 0) + 1
        if r["ctype"] != EXPECTED_CTYPE[r["fmt"]]:
            key = f"{r['fmt']}->{r['ctype']}"
            mismatch[key] = mismatch.get(key, 0) + 1
    per_format = {}
    for f in FORMATS:
        rs = [r for r in ok if r["fmt"] == f]
        per_format[f] = {"ok": len(rs), "bytes": sum(r["bytes"] for r in rs),
                         **lat_summary([r["ms"] / 1000 for r in rs])}
    per_image = {}
    for r in records:
        d = per_image.setdefault(r["image"], {"ok": 0, "err": 0, "ms": [], "bytes": 0})
        if r["status"] == 200:
            d["ok"] += 1
            d["ms"].append(r["ms"])
            d["bytes"] += r["bytes"]
        else:
            d["err"] += 1
    for d in per_image.values():
        ms = d.pop("ms")
        d["mean_ms"] = round(sum(ms) / len(ms), 1) if ms else None
    err_kinds = {}
    for r in errs:
        k = f"{r['image']}: {(r['err'] or '')[:120]}"
        err_kinds[k] = err_kinds.get(k, 0) + 1
    return {
        "concurrency": conc, "quality": q, "requests_planned": njobs, "requests_sent": len(records),
        "not_run": njobs - len(records), "ok": len(ok), "errors": len(errs),
        "wall_s": round(wall, 3), "images_per_s": round(len(ok) / wall, 3) if wall else None,
        "latency": lat_summary([r["ms"] / 1000 for r in ok]),
        "bytes_out": sum(r["bytes"] for r in ok),
        "content_types": ctypes, "format_not_as_requested": mismatch,
        "upscaled": sum(1 for r in ok if r["out"] and r["out"][0] > r["w"]),
        "per_format": per_format, "per_image": per_image, "error_kinds": err_kinds,
        "peer_cpu_s": cpu["peer_cpu_s"] if cpu else None, "cpu": cpu,
        "records": records,
    }


# --------------------------------------------------------------------------- warm phase
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(txt):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", txt)
    return round(float(m.group(1)) * _UNIT[m.group(2)], 2) if m else None


def warm_wrk(args, url, accept):
    cmd = ["wrk", f"-t{args.wrk_threads}", f"-c{args.warm_concurrency}", f"-d{args.warm_seconds}s",
           "--latency", "--timeout", "30s", "-H", f"Accept: {accept}", url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.warm_seconds + 60)
    out = p.stdout
    res = {"tool": "wrk", "cmd": " ".join(cmd[:-1]) + " <url>", "raw": out[-2000:]}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+\w+) read", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["req_per_s"] = float(m.group(1)) if m else None
    lat = {}
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            lat[f"p{pct}_ms"] = _ms(m.group(1))
    res["latency"] = lat
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    sock = sum(int(x) for x in m.groups()) if m else 0
    res["errors"] = non2xx + sock
    if p.returncode != 0:
        res["error"] = f"wrk rc={p.returncode}: {p.stderr[-300:]}"
    return res


async def warm_aiohttp(args, url, accept):
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    conn = aiohttp.TCPConnector(limit=args.warm_concurrency)
    lats, errors, nbytes = [], 0, 0
    t0 = time.perf_counter()
    end = t0 + args.warm_seconds
    async with aiohttp.ClientSession(timeout=timeout, connector=conn, auto_decompress=False) as s:
        async def worker():
            nonlocal errors, nbytes
            while time.perf_counter() < end:
                st = time.perf_counter()
                try:
                    async with s.get(url, headers={"Accept": accept}) as r:
                        b = await r.read()
                        if r.status == 200:
                            lats.append(time.perf_counter() - st)
                            nbytes += len(b)
                        else:
                            errors += 1
                except Exception:
                    errors += 1
        await asyncio.gather(*[worker() for _ in range(args.warm_concurrency)])
    wall = time.perf_counter() - t0
    ls = lat_summary(lats)
    return {"tool": "aiohttp", "requests": len(lats) + errors, "req_per_s": round(len(lats) / wall, 2),
            "latency": {"p50_ms": ls["p50_ms"], "p99_ms": ls["p99_ms"]}, "errors": errors,
            "bytes": nbytes, "wall_s": round(wall, 3)}


async def warm_phase(args, sampler):
    im = args.warm_image
    url = build_url(args.template, args.base, args.origin, im, args.warm_width, args.warm_q, args.warm_format)
    accept = ACCEPT[args.warm_format]
    res = {"url": url, "image": im, "w": args.warm_width, "fmt": args.warm_format, "q": args.warm_q,
           "concurrency": args.warm_concurrency, "seconds": args.warm_seconds}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=args.request_timeout)) as s:
        st = time.perf_counter()
        async with s.get(url, headers={"Accept": accept}) as r:
            body = await r.read()
            res["prime"] = {"status": r.status, "ms": round((time.perf_counter() - st) * 1000, 1),
                            "ctype": r.headers.get("Content-Type"), "bytes": len(body),
                            "cache_headers": {k: v for k, v in r.headers.items()
                                              if k.lower() in ("cache-control", "x-nextjs-cache", "etag", "age")}}
        # second request shows whether the peer answers from a cache (Next: x-nextjs-cache: HIT)
        st = time.perf_counter()
        async with s.get(url, headers={"Accept": accept}) as r:
            await r.read()
            res["second"] = {"status": r.status, "ms": round((time.perf_counter() - st) * 1000, 1),
                             "x-nextjs-cache": r.headers.get("x-nextjs-cache")}
    if res["prime"]["status"] != 200:
        res["skipped"] = "prime request failed"
        return res
    acct = CpuAccount(args.pid, args.origin_pid) if args.pid else None
    if shutil.which("wrk") and not args.no_wrk:
        res.update(await asyncio.get_running_loop().run_in_executor(None, warm_wrk, args, url, accept))
    else:
        res.update(await warm_aiohttp(args, url, accept))
    if acct:
        res["cpu"] = acct.done()
        res["peer_cpu_s"] = res["cpu"]["peer_cpu_s"]
    return res


# --------------------------------------------------------------------------- main
def mb(kb):
    return round(kb / 1024, 1)


def markdown(result):
    rows = ["| peer | phase | conc | img/s or req/s | p50 ms | p95 ms | p99 ms | errors | out MB | peer CPU s | peak RSS MB | foreign cores |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, ph in result["phases"].items():
        if name.startswith("cold"):
            L = ph["latency"]
            rows.append(f"| {result['peer']} | {name} (q{ph['quality']}) | {ph['concurrency']} | {ph['images_per_s']} | "
                        f"{L['p50_ms']} | {L['p95_ms']} | {L['p99_ms']} | {ph['errors']}"
                        f"{' +%d not run' % ph['not_run'] if ph['not_run'] else ''} | "
                        f"{ph['bytes_out'] / 1e6:.2f} | {ph['peer_cpu_s']} | {ph.get('peak_rss_mb')} | "
                        f"{(ph.get('cpu') or {}).get('foreign_cores')} |")
        else:
            L = ph.get("latency", {})
            rows.append(f"| {result['peer']} | warm ({ph.get('tool', '-')}) | {ph['concurrency']} | {ph.get('req_per_s')} | "
                        f"{L.get('p50_ms')} | - | {L.get('p99_ms')} | {ph.get('errors', ph.get('skipped'))} | - | "
                        f"{ph.get('peer_cpu_s')} | {ph.get('peak_rss_mb')} | {(ph.get('cpu') or {}).get('foreign_cores')} |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--base", required=True, help="peer base URL, e.g. http://127.0.0.1:8701")
    ap.add_argument("--template", help="URL template (default: preset for --peer: %s)" % ", ".join(PRESETS))
    ap.add_argument("--origin", default=os.environ.get("ORIGIN_URL", "http://127.0.0.1:8700"))
    ap.add_argument("--pid", type=int, help="peer root pid for RSS/CPU sampling")
    ap.add_argument("--pidfile", help="read --pid from this file (e.g. .bench-cache/run/<peer>.pid)")
    ap.add_argument("--origin-pidfile", default=os.path.join(PEERS_DIR, "origin.pid"),
                    help="origin pid file, for CPU accounting only")
    ap.add_argument("--version-info", default="", help="free text stored in the result (peer version)")
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--exclude", default="", help="corpus file names to leave out, comma separated")
    ap.add_argument("--concurrency", default="2,4", help="cold passes, comma separated")
    ap.add_argument("--cold-qualities", default="74,76",
                    help="one quality per cold pass (distinct => no cross-pass cache hits)")
    ap.add_argument("--warm-q", type=int, default=75)
    ap.add_argument("--warm-image", default="photo1.jpg")
    ap.add_argument("--warm-width", type=int, default=1080)
    ap.add_argument("--warm-format", default="webp")
    ap.add_argument("--warm-concurrency", type=int, default=16)
    ap.add_argument("--warm-seconds", type=int, default=10)
    ap.add_argument("--keepalive", action="store_true",
                    help="reuse connections in cold passes (default: new connection per request)")
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--no-wrk", action="store_true", help="use the aiohttp loop for the warm phase")
    ap.add_argument("--skip-warm", action="store_true")
    ap.add_argument("--request-timeout", type=float, default=120.0)
    ap.add_argument("--phase-timeout", type=float, default=900.0, help="max seconds per cold pass")
    ap.add_argument("--out", help="result JSON (default $PEERS_DIR/results/<peer>.json)")
    ap.add_argument("--keep-records", action="store_true", help="keep per-request records in the JSON")
    args = ap.parse_args()

    args.template = args.template or PRESETS.get(args.peer)
    if not args.template:
        sys.exit(f"no --template and no preset for {args.peer!r}")
    for u in (args.base, args.origin):
        check_local(u)
    if args.pidfile and not args.pid:
        with open(args.pidfile) as f:
            args.pid = int(f.read().strip())
    args.origin_pid = None
    try:
        with open(args.origin_pidfile) as f:
            args.origin_pid = int(f.read().strip())
    except (OSError, ValueError):
        pass
    concs = [int(x) for x in args.concurrency.split(",")]
    quals = [int(x) for x in args.cold_qualities.split(",")]
    if len(quals) < len(concs):
        sys.exit("need one --cold-qualities value per --concurrency value")
    if args.warm_q in quals:
        print(f"warning: warm q {args.warm_q} also used by a cold pass", file=sys.stderr)

    images = load_manifest(args.corpus)
    jobs = cold_jobs(images, [int(x) for x in args.widths.split(",")], args.formats.split(","),
                     exclude=split_names(args.exclude))

    b0, t0 = host_busy_s(), time.time()
    time.sleep(2)
    preflight_busy = round((host_busy_s() - b0) / (time.time() - t0), 2)
    if preflight_busy > 0.15:
        print(f"WARNING: machine already busy before the run ({preflight_busy} cores used by other "
              f"processes); numbers will be noisy", file=sys.stderr)

    sampler = None
    if args.pid:
        if not os.path.exists(f"/proc/{args.pid}"):
            sys.exit(f"pid {args.pid} not running")
        sampler = RssSampler(args.pid)
        sampler.sample()
        idle_kb = sampler.peak_kb
        sampler.start()

    result = {
        "peer": args.peer, "base_url": args.base, "template": args.template, "origin": args.origin,
        "version": args.version_info, "pid": args.pid,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                 "busy_cores_before_run": preflight_busy},
        "corpus": [{k: im[k] for k in ("name", "format", "width", "height", "pages", "bytes")} for im in images],
        "jobs_per_cold_pass": len(jobs), "cold_keepalive": args.keepalive, "excluded": split_names(args.exclude), "phases": {},
    }
    if sampler:
        result["rss"] = {"idle_mb": mb(idle_kb)}

    for conc, q in zip(concs, quals):
        name = f"cold_c{conc}"
        if sampler:
            sampler.phase = name
        print(f"[{args.peer}] {name}: {len(jobs)} requests, q={q} ...", file=sys.stderr, flush=True)
        ph = asyncio.run(cold_phase(args, jobs, conc, q, sampler))
        if not args.keep_records:
            ph.pop("records")
        if sampler:
            ph["peak_rss_mb"] = mb(sampler.phase_peak_kb.get(name, 0))
        result["phases"][name] = ph
        print(f"[{args.peer}] {name}: {ph['images_per_s']} img/s, ok={ph['ok']} err={ph['errors']} "
              f"wall={ph['wall_s']}s", file=sys.stderr, flush=True)

    if not args.skip_warm:
        if sampler:
            sampler.phase = "warm"
        print(f"[{args.peer}] warm: c={args.warm_concurrency} {args.warm_seconds}s ...", file=sys.stderr, flush=True)
        ph = asyncio.run(warm_phase(args, sampler))
        if sampler:
            ph["peak_rss_mb"] = mb(sampler.phase_peak_kb.get("warm", 0))
        result["phases"]["warm"] = ph

    if sampler:
        sampler.stop()
        sampler.join(1)
        result["rss"].update({"peak_mb": mb(sampler.peak_kb), "samples": sampler.samples,
                              "max_processes": sampler.max_procs})
    result["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    out = args.out or os.path.join(RESULTS, f"{args.peer}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(markdown(result))
    print(f"\nresult: {out}")


if __name__ == "__main__":
    main()
