"""HTTP throughput and latency against a real imgopt process (uvicorn, `python -m imgopt serve`).

* ``test_cold[cN]``: every (image x {640,1080,1920} x {webp,avif,jpeg}) once at concurrency N, a
  new TCP connection per request (as benchmarks/loadgen.py), originals fetched from a local
  nginx (or python http.server) origin each time. Each round uses a fresh ``?v=`` token on the
  origin URL, so every request is a miss (fetch + transform + cache write).
* ``test_warm[cN]``: one hot URL (photo1.jpg, w=1080, webp, q=75), primed, then requested for
  BENCH_WARM_SECONDS with keep-alive at concurrency N (wrk when installed, else the asyncio client).
* ``test_raw_inprocess[cN]``: the same cold job list in this process with N threads: raw
  ``thumbnail_buffer`` + imgopt's own ENCODERS settings, originals in memory -- the floor the HTTP
  service is compared with (its overhead = HTTP, fetch, Python, cache write).

The pytest-benchmark statistic is the wall time of one pass; run_all.py reads throughput,
percentiles, server CPU per image, peak RSS, errors and foreign CPU from extra_info.
BENCH_HTTP_VARIANT selects the server environment (_common.variant_env: default, vc1, w4, arena2,
jemalloc, trim, combinations with '+').
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import re
import subprocess
import threading
import time
import uuid

import pytest

import _common as C

Q = 75
CONCURRENCY = (1, 2, 4, 8)
WIDTHS = (640, 1080, 1920)
FORMATS = ("webp", "avif", "jpeg")
VARIANT = os.environ.get("BENCH_HTTP_VARIANT", "default")


class RssPeak(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self._halt = pid, 0.0, threading.Event()

    def run(self):
        while not self._halt.is_set():
            self.peak = max(self.peak, C.rss_mb(self.pid))
            self._halt.wait(0.1)

    def done(self) -> float:
        self._halt.set()
        self.join(1)
        return round(max(self.peak, C.rss_mb(self.pid)), 1)


@pytest.fixture(scope="module")
def server(origin):
    s = C.Server(origin.port, VARIANT).start()
    yield s
    s.stop()


def cold_jobs(photos, pngs, smoke):
    imgs = photos + pngs
    widths = (640,) if smoke else WIDTHS
    jobs = [(im.name, w, f) for im in imgs for w in widths for f in FORMATS]
    import random

    random.Random(42).shuffle(jobs)
    return jobs


@pytest.mark.parametrize("conc", CONCURRENCY, ids=[f"c{c}" for c in CONCURRENCY])
def test_cold(benchmark, smoke, server, origin, photos, pngs, conc):
    jobs = cold_jobs(photos, pngs, smoke)
    passes = []

    def one_pass():
        bust = uuid.uuid4().hex[:10]
        reqs = [(C.path_of(C.image_url(server.url, origin.url, n, w, Q, bust)), C.ACCEPT[f]) for n, w, f in jobs]
        rss = RssPeak(server.pid)
        rss.start()
        win = C.CpuWindow({"server": server.pid, "origin": origin.pid})
        t0 = time.perf_counter()
        res = asyncio.run(C.fetch_many(server.url, reqs, conc, keepalive=False))
        wall = time.perf_counter() - t0
        cpu = win.stop()
        ok = [r for r in res if r.status == 200]
        passes.append({"wall_s": wall, "ok": len(ok), "errors": len(res) - len(ok),
                       "error_kinds": sorted({r.err for r in res if r.err})[:5],
                       "images_per_s": len(ok) / wall, "server_cpu_ms_per_img": cpu["server_cpu_s"] * 1000 / max(len(ok), 1),
                       "bytes": sum(len(r.body) for r in ok), "peak_rss_mb": rss.done(),
                       "foreign_cores": cpu["foreign_cores"], "client_cpu_s": cpu["client_cpu_s"],
                       "origin_cpu_s": cpu.get("origin_cpu_s"), **C.lat_summary([r.ms for r in ok])})

    n, warm = C.bench_rounds(smoke, 3)
    benchmark.pedantic(one_pass, rounds=n, warmup_rounds=warm, iterations=1)
    meas = passes[warm:]
    benchmark.extra_info.update(_summary(meas, kind="http_cold", conc=conc, requests=len(jobs), variant=VARIANT,
                                         workers=server.workers))
    # errors (e.g. 504 when queue wait eats the transform deadline) are recorded, not asserted:
    # run_all.py refuses to compute a ratio from a measurement that had any.


def _summary(meas: list[dict], **kw) -> dict:
    keys = ("images_per_s", "server_cpu_ms_per_img", "p50_ms", "p95_ms", "p99_ms", "peak_rss_mb", "foreign_cores",
            "bytes", "req_per_s", "cpu_ms_per_img")
    out = dict(kw)
    out["rounds"] = len(meas)
    out["errors"] = sum(p.get("errors", 0) for p in meas)
    out["error_kinds"] = sorted({e for p in meas for e in p.get("error_kinds", [])})[:5]
    for k in keys:
        vals = [p[k] for p in meas if p.get(k) is not None]
        if vals:
            out[k] = round(C.median(vals), 3)
            out[k + "_all"] = [round(v, 3) for v in vals]
    if any("peak_rss_mb" in p for p in meas):
        out["peak_rss_mb_max"] = max(p.get("peak_rss_mb", 0) for p in meas)
    return out


def _wrk(url: str, accept: str, conc: int, seconds: int) -> dict:
    cmd = ["wrk", f"-t{min(2, conc)}", f"-c{conc}", f"-d{seconds}s", "--latency", "--timeout", "30s",
           "-H", f"Accept: {accept}", url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    out = p.stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}

    def ms(txt):
        m = re.match(r"([\d.]+)(us|ms|s|m)$", txt)
        return float(m.group(1)) * unit[m.group(2)] if m else None

    res = {"tool": "wrk"}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["req_per_s"] = float(m.group(1)) if m else None
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[f"p{pct}_ms"] = ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors += sum(int(x) for x in m.groups()) if m else 0
    res["errors"] = errors + (1 if p.returncode else 0)
    if res["req_per_s"] is None:
        res["errors"] += 1
        res["error_kinds"] = [(p.stderr or out)[-200:]]
    return res


@pytest.mark.parametrize("conc", CONCURRENCY + (16,), ids=[f"c{c}" for c in CONCURRENCY + (16,)])
def test_warm(benchmark, smoke, server, origin, conc):
    url = C.image_url(server.url, origin.url, "photo1.jpg", 1080, Q)
    prime = asyncio.run(C.fetch_many(server.url, [(C.path_of(url), C.ACCEPT["webp"])] * 2, 1, keepalive=True))
    assert all(r.status == 200 for r in prime), prime[0].err
    seconds = 1 if smoke else int(os.environ.get("BENCH_WARM_SECONDS", 5))
    passes = []

    def one_pass():
        win = C.CpuWindow({"server": server.pid})
        if C.wrk_available() and os.environ.get("BENCH_NO_WRK") != "1":
            r = _wrk(url, C.ACCEPT["webp"], conc, seconds)
        else:
            res = asyncio.run(C.fetch_many(server.url, [(C.path_of(url), C.ACCEPT["webp"])], conc, keepalive=True,
                                           until=time.monotonic() + seconds))
            ok = [x for x in res if x.status == 200]
            r = {"tool": "asyncio", "req_per_s": len(ok) / seconds, "errors": len(res) - len(ok),
                 "error_kinds": sorted({x.err for x in res if x.err})[:5], **C.lat_summary([x.ms for x in ok])}
        cpu = win.stop()
        r["foreign_cores"] = cpu["foreign_cores"]
        r["cpu_ms_per_img"] = cpu["server_cpu_s"] * 1000 / max(1, (r["req_per_s"] or 0) * cpu["wall_s"])
        passes.append(r)

    n, warm = C.bench_rounds(smoke, 3)
    benchmark.pedantic(one_pass, rounds=n, warmup_rounds=warm, iterations=1)
    meas = passes[warm:]
    benchmark.extra_info.update(_summary(meas, kind="http_warm", conc=conc, seconds=seconds, variant=VARIANT,
                                         tool=meas[0]["tool"]))


@pytest.mark.parametrize("conc", CONCURRENCY, ids=[f"c{c}" for c in CONCURRENCY])
def test_raw_inprocess(benchmark, smoke, photos, pngs, conc):
    import pyvips

    pyvips.cache_set_max(0)
    data = {im.name: im for im in photos + pngs}
    jobs = cold_jobs(photos, pngs, smoke)
    enc = C.imgopt_encoders()
    passes = []

    def out_mime(im, fmt):
        if fmt in ("webp", "avif"):
            return C.MIME[fmt]
        return "image/png" if im.format == "png" else "image/jpeg"

    def one(job):
        name, w, fmt = job
        im = data[name]
        st = time.perf_counter()
        body = C.raw_transform(im.data, w, out_mime(im, fmt), Q, enc)
        return (time.perf_counter() - st) * 1000, len(body)

    def one_pass():
        win = C.CpuWindow({})
        c0 = time.process_time()
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(conc) as ex:
            res = list(ex.map(one, jobs))
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        noise = win.stop()
        passes.append({"images_per_s": len(res) / wall, "server_cpu_ms_per_img": cpu * 1000 / len(res),
                       "bytes": sum(b for _, b in res), "foreign_cores": noise["foreign_cores"],
                       **C.lat_summary([ms for ms, _ in res])})

    n, warm = C.bench_rounds(smoke, 3)
    benchmark.pedantic(one_pass, rounds=n, warmup_rounds=warm, iterations=1)
    benchmark.extra_info.update(_summary(passes[warm:], kind="raw_inprocess", conc=conc, requests=len(jobs)))


def test_server_stack(benchmark, server):
    """Which event loop and HTTP parser the uvicorn process really uses (uvloop / httptools are
    installed by uvicorn[standard]; uvicorn's loop='auto' / http='auto' pick them when importable)."""
    maps = open(f"/proc/{server.pid}/maps").read()
    info = {"kind": "stack", "uvloop": "uvloop/loop" in maps, "httptools": "httptools/parser" in maps,
            "variant": VARIANT, "vips_concurrency_env": server.env.get("VIPS_CONCURRENCY"),
            "workers": server.workers, "threads": len(os.listdir(f"/proc/{server.pid}/task"))}
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(info)
