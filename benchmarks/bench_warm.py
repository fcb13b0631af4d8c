"""What `imgopt warm` buys: the repository's e2e Next.js site, built, warmed, then opened in Chromium.

    .venv/bin/python benchmarks/bench_warm.py [--out FILE] [--concurrency N]

In one run, on 127.0.0.1 only:

1. builds tests/e2e/site (Next.js pinned by its package-lock.json; `npm ci` first when its
   node_modules is missing or was installed from another lock) as a static export with the imgopt loader,
   the "export, Turbopack, no basePath" shape of tests/test_e2e_browser.py, with the same
   generated images, remote image origin, server flags and pages;
2. `imgopt warm out/` in-process with the server's own flags on an empty cache folder (wall
   time, and the variants, bytes and failures of its summary line), then headless Chromium over
   every page x viewport against the server started on that cache;
3. the same with `imgopt warm out/ --server URL` against a running imgopt whose cache was
   emptied first, the server then restarted (its memory tier empty) before the browser run;
4. for contrast, the same browser run on an empty cache (no warm);

and writes a markdown report (default benchmarks/results/RESULTS-warm.md): counts of the image
responses by `X-Nextjs-Cache`, and their latency as Chromium's network stack measured it
(request start to last byte, Playwright's Request.timing), cold against warm. Counts and
ratios, no assertions; tests/test_e2e_browser.py is where HITs after warm are asserted.

Needs Node.js >= 20.9 with npm (and the npm registry, or npm's download cache, for `npm ci`),
Chromium (/usr/bin/chromium, or IMGOPT_E2E_CHROMIUM) and the test dependencies in the venv
(Playwright; `make install`). Logs and the built export go to .bench-cache/warm/ (BENCH_CACHE
elsewhere). Not to be run while tests/test_e2e_browser.py builds the same site in the same
checkout: both write tests/e2e/site/out and its .next-* folders. About 1 minute on 2 cores (plus
`npm ci` the first time).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import _common as C  # noqa: E402
import test_e2e_browser as e2e  # noqa: E402
from origin import Origin  # noqa: E402

SHAPE = e2e.WARM_SHAPE  # static export, Turbopack, no basePath
WORK = C.BENCH_CACHE / "warm"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "RESULTS-warm.md"
INSTALL_HINT = ("install it (Chromium: apt-get install chromium, as .ci/run does, or IMGOPT_E2E_CHROMIUM=PATH; "
                "Next.js 16 needs Node.js >= 20.9 with npm)")
SUMMARY = re.compile(r"imgopt warm: (\d+) variants, (\d+) ok \(([^)]*)\), ([\d,]+) bytes, (\d+) failed, ([\d.]+) s")


class BenchError(Exception):
    """A missing tool or a step that failed: one clear message, exit status 2."""


# -- tools -------------------------------------------------------------------------------------

def require(name: str, what: str) -> str:
    found = shutil.which(name) or (name if os.path.isfile(name) and os.access(name, os.X_OK) else None)
    if not found:
        raise BenchError(f"{what} ({name}) is not installed; {INSTALL_HINT}")
    return found


def check_tools() -> dict[str, str]:
    node = require("node", "Node.js")
    npm = require("npm", "npm")
    chromium = require(e2e.CHROMIUM, "Chromium")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    m = re.fullmatch(r"v(\d+)\.(\d+)\.\d+.*", version)
    if not m or (int(m[1]), int(m[2])) < (20, 9):
        raise BenchError(f"Node.js {version or '(unknown version)'} is too old: Next.js 16 needs >= 20.9")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        raise BenchError(f"Playwright is not importable from {sys.executable} ({e}): run `make install`, "
                         "which installs the test dependencies") from e
    return {"node": node, "npm": npm, "chromium": chromium, "node_version": version}


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_logged(argv: list[str], log: Path, *, cwd: Path, env: dict[str, str], timeout: float, what: str) -> float:
    """Run a child in its own process group, output to log; returns its wall time. On a timeout
    or an interrupt, exactly that group is ended."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log, "wb") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout)
        except BaseException as e:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            if isinstance(e, subprocess.TimeoutExpired):
                raise BenchError(f"{what} did not finish within {timeout:g} s; log {log}:\n{tail(log)}") from None
            raise
        seconds = time.monotonic() - t0
        out.write(f"[{what}: exit {rc} after {seconds:.1f} s]\n".encode())
    if rc != 0:
        raise BenchError(f"{what} failed (exit {rc}); log {log}:\n{tail(log)}")
    return seconds


# -- the site ------------------------------------------------------------------------------------

def site_deps(npm: str) -> float | None:
    """`npm ci` in tests/e2e/site when node_modules is missing or stale (the same stamp as the
    e2e test's, so neither redoes the other's work); the seconds it took, or None."""
    digest = hashlib.sha256((e2e.SITE / "package-lock.json").read_bytes()).hexdigest()
    stamp = e2e.SITE / "node_modules" / ".imgopt-e2e-lock.sha256"
    seconds = None
    if not e2e.NEXT_BIN.is_file() or not stamp.is_file() or stamp.read_text().strip() != digest:
        seconds = run_logged([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], WORK / "npm-ci.log",
                             cwd=e2e.SITE, env=e2e.node_env(), timeout=900, what="npm ci (tests/e2e/site)")
        stamp.write_text(digest + "\n")
    e2e.write_images(e2e.SITE, e2e.SITE_IMAGES)
    return seconds


def build_export(node: str, env: dict[str, str], imgopt_url: str, out: Path) -> float:
    """`next build` of the export shape, as start_export in the e2e test does; out/ copied to `out`."""
    for stale in (e2e.SITE / "out", e2e.SITE / env["IMGOPT_E2E_DIST"], out):
        shutil.rmtree(stale, ignore_errors=True)
    argv = [node, str(e2e.NEXT_BIN), "build"]
    seconds = run_logged(argv, WORK / "next-build.log", cwd=e2e.SITE,
                         env=e2e.node_env(**env, NEXT_PUBLIC_IMGOPT_URL=imgopt_url), timeout=900,
                         what=f"next build ({SHAPE.id})")
    built = e2e.SITE / "out" if (e2e.SITE / "out" / "index.html").is_file() else e2e.SITE / env["IMGOPT_E2E_DIST"]
    if not (built / "index.html").is_file():
        raise BenchError(f"next build wrote no index.html (looked in {built}); log {WORK / 'next-build.log'}")
    shutil.copytree(built, out)
    return seconds


def next_version() -> str:
    try:
        return str(json.loads((e2e.SITE / "node_modules" / "next" / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "?"


# -- imgopt warm ---------------------------------------------------------------------------------

@dataclass
class WarmRun:
    how: str
    argv: list[str]
    wall_s: float
    rc: int
    variants: int = 0
    ok: int = 0
    states: str = ""
    nbytes: int = 0
    failed: int = 0
    summary_s: float = 0.0
    cache_bytes: int = 0
    failures: list[str] = field(default_factory=list)
    foreign_cores: float = 0.0


def run_warm(how: str, argv: list[str], env: dict[str, str], log: Path) -> WarmRun:
    t0 = time.monotonic()
    r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    log.write_text(f"$ {' '.join(argv)}\n{r.stdout}{r.stderr}[exit {r.returncode} after {wall:.1f} s]\n")
    m = SUMMARY.search(r.stdout)
    if m is None:
        raise BenchError(f"imgopt warm ({how}) printed no summary line (exit {r.returncode}); log {log}:\n{tail(log)}")
    run = WarmRun(how, argv, wall, r.returncode, int(m[1]), int(m[2]), m[3], int(m[4].replace(",", "")),
                  int(m[5]), float(m[6]))
    run.failures = [line.strip() for line in r.stdout.splitlines() if line.strip().startswith("FAILED")]
    return run


# -- the browser ---------------------------------------------------------------------------------

@dataclass
class Hit:
    page: str
    viewport: str
    url: str
    status: int
    cache: str
    ms: float    # request start to the last byte, as Chromium's network stack measured it
    ttfb: float  # request start to the first byte of the response


@dataclass
class BrowserRun:
    name: str
    images: list[Hit] = field(default_factory=list)  # every image response from imgopt
    requests: int = 0  # requests the browser sent to imgopt (responses + failed or cancelled)
    failed: list[str] = field(default_factory=list)  # requests to imgopt that got no response
    other_images: int = 0  # image responses not from imgopt (the SVGs, loaded as they are)
    server: list[dict[str, Any]] = field(default_factory=list)  # imgopt's access log lines of the run
    visits: list[float] = field(default_factory=list)  # per visit: ms from goto until every image is complete
    visit_log: list[dict[str, Any]] = field(default_factory=list)  # per visit: page, viewport, start and end (UTC)
    seconds: float = 0.0
    foreign_cores: float = 0.0

    def count(self, state: str) -> int:
        return sum(1 for h in self.images if h.cache == state)

    def share(self, state: str) -> float | None:
        return self.count(state) / len(self.images) if self.images else None

    def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for h in self.images:
            out[h.cache] = out.get(h.cache, 0) + 1
        return dict(sorted(out.items()))

    def latency(self, state: str | None = None) -> list[float]:
        return [h.ms for h in self.images if state is None or h.cache == state]

    def server_ms(self, state: str | None = None) -> list[float]:
        return [float(d["duration_ms"]) for d in self.server if state is None or d.get("cache") == state]


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def visit_timed(browser: Any, url: str, viewport: tuple[int, int, float], endpoint: str,
                run: BrowserRun, page_path: str, vp: str) -> None:
    """One page at one viewport in a fresh context (no browser cache), every image scrolled
    into view and loaded (LOAD_ALL of the e2e test); its image responses go into `run`."""
    w, h, dpr = viewport
    ctx = browser.new_context(viewport={"width": w, "height": h}, device_scale_factor=dpr)
    try:
        page = ctx.new_page()
        responses: list[Any] = []
        sent: list[str] = []
        failed: list[str] = []
        page.on("request", lambda r: sent.append(r.url) if r.url.startswith(endpoint + "?") else None)
        page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}")
                if r.url.startswith(endpoint + "?") else None)
        page.on("response", lambda r: responses.append(r) if r.request.resource_type == "image" else None)
        t0, started = time.monotonic(), utc_now()
        page.goto(url, wait_until="load", timeout=180_000)
        page.evaluate(e2e.LOAD_ALL)
        page.wait_for_function("[...document.images].every((i) => i.complete)", timeout=180_000)
        run.visits.append(1000 * (time.monotonic() - t0))
        page.wait_for_load_state("networkidle", timeout=180_000)
        for r in responses:
            if r.url.startswith("data:"):
                continue
            if not r.url.startswith(endpoint + "?"):
                run.other_images += 1
                continue
            r.finished()
            timing = r.request.timing
            end = timing.get("responseEnd", -1)
            start = timing.get("responseStart", -1)
            run.images.append(Hit(page_path, vp, r.url, r.status, r.all_headers().get("x-nextjs-cache", "(none)"),
                                  float(end if end is not None and end >= 0 else start), float(start)))
        run.requests += len(sent)
        run.failed += failed
        run.visit_log.append({"page": page_path, "viewport": vp, "start": started, "end": utc_now()})
    finally:
        ctx.close()


def browse(name: str, browser: Any, site_url: str, endpoint: str) -> BrowserRun:
    run = BrowserRun(name)
    t0 = time.monotonic()
    for page_path in e2e.PAGES:
        for vp, viewport in e2e.VIEWPORTS.items():
            visit_timed(browser, site_url + page_path, viewport, endpoint, run, page_path, vp)
    run.seconds = time.monotonic() - t0
    return run


def access_log(path: Path, offset: int) -> list[dict[str, Any]]:
    """imgopt's access log lines for /_next/image from the browser, written after `offset`."""
    lines = []
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in f:
            try:
                d = json.loads(raw)
            except ValueError:
                continue
            if d.get("logger") == "imgopt.access" and "HeadlessChrome" in d.get("user_agent", "") \
                    and d.get("path", "").endswith("/_next/image"):
                lines.append(d)
    return lines


# -- the report ----------------------------------------------------------------------------------

def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def ms(values: list[float], p: float) -> str:
    v = C.percentile(values, p)
    return "–" if v is None else f"{v:,.0f} ms"


def ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None or b == 0 else f"{a / b:.1f}×"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def report(meta: dict[str, Any], warms: list[WarmRun], runs: dict[str, BrowserRun]) -> str:
    inproc, server = warms
    after_in, after_srv, cold = runs["after-inprocess"], runs["after-server"], runs["cold"]
    warm_lat, cold_lat = after_srv.latency(), cold.latency()
    warm_srv, cold_srv = after_srv.server_ms(), cold.server_ms()
    lines = [
        "# What `imgopt warm` buys: the e2e Next.js site, warmed, in Chromium",
        "",
        f"Command: `{meta['command']}` (run of {meta['date']}, whole run {meta['total_s']:.0f} s).",
        "",
        f"- machine: {meta['nproc']} CPUs ({meta['cpu']}), shared; load average {meta['load_start']} at the start, "
        f"{meta['load_end']} at the end",
        f"- imgopt {meta['commit']}, python {meta['python']}; Next.js {meta['next']}, node {meta['node']}; "
        f"Chromium {meta['chromium']} (headless, via Playwright)",
        f"- site: tests/e2e/site built as `{SHAPE.id}` (static export with the imgopt loader, Turbopack, "
        f"no basePath), {meta['build_s']:.0f} s for `next build`"
        + (f", {meta['npm_s']:.0f} s for `npm ci`" if meta["npm_s"] is not None else " (node_modules already there)"),
        f"- server: `imgopt serve {' '.join(meta['serve_flags'])}`",
        f"- browser: {len(e2e.PAGES)} pages ({', '.join(e2e.PAGES)}) x {len(e2e.VIEWPORTS)} viewports "
        f"({', '.join(e2e.VIEWPORTS)}), each visit a fresh browser context (no browser cache), every image "
        "scrolled into view (one after another, as the e2e test does); latency = request start to last byte, "
        "as Chromium's network stack measured it; a visit = from `goto` until every image on the page is "
        "complete",
        "",
        "## Summary",
        "",
        "| | |",
        "|---|---|",
        f"| `imgopt warm out/` in-process, wall time | {inproc.wall_s:.1f} s |",
        f"| `imgopt warm out/ --server URL`, wall time | {server.wall_s:.1f} s |",
        f"| variants warmed (image URLs x formats) | {inproc.variants} ({server.variants} via the server) |",
        f"| bytes of the variants | {inproc.nbytes:,} ({server.nbytes:,} via the server) |",
        f"| failures | {inproc.failed} in-process, {server.failed} via the server |",
        f"| browser image requests to imgopt after warm | {len(after_srv.images)} responses "
        f"({len({h.url for h in after_srv.images})} distinct URLs) to {after_srv.requests} requests |",
        f"| HIT share after warm | {pct(after_srv.share('HIT'))} ({after_srv.count('HIT')} of {len(after_srv.images)}; "
        f"after the in-process warm {pct(after_in.share('HIT'))}, {after_in.count('HIT')} of {len(after_in.images)}) |",
        f"| MISS share of the cold run (no warm) | {pct(cold.share('MISS'))} ({cold.count('MISS')} of "
        f"{len(cold.images)}; the rest are variants an earlier visit had already made) |",
        f"| image latency p50, cold / warm | {ms(cold_lat, 50)} / {ms(warm_lat, 50)} "
        f"({ratio(C.percentile(cold_lat, 50), C.percentile(warm_lat, 50))}) |",
        f"| image latency max, cold / warm | {ms(cold_lat, 100)} / {ms(warm_lat, 100)} "
        f"({ratio(max(cold_lat, default=None), max(warm_lat, default=None))}) |",
        f"| cold MISSes alone, p50 / max | {ms(cold.latency('MISS'), 50)} / {ms(cold.latency('MISS'), 100)} |",
        f"| time inside imgopt (its access log) p50, cold / warm | {ms(cold_srv, 50)} / {ms(warm_srv, 50)} |",
        f"| time inside imgopt max, cold / warm | {ms(cold_srv, 100)} / {ms(warm_srv, 100)} |",
        f"| a visit until every image is loaded, p50 / max, cold / warm | {ms(cold.visits, 50)} / "
        f"{ms(cold.visits, 100)}, {ms(after_srv.visits, 50)} / {ms(after_srv.visits, 100)} |",
        "",
        "\"Warm\" is the browser run after the warm through the server (the server restarted first, "
        "so every HIT comes from the disk cache, not from memory). The browser's latency includes "
        "what Chromium itself adds on the same 2 cores (a new renderer per visit, AVIF decoding); "
        "the time inside imgopt is from the request's arrival to its last byte sent.",
        "",
        "## imgopt warm",
        "",
        "| | wall time | summary line's time | variants | ok (by cache state) | bytes | failed | cache folder after "
        "| other processes (cores) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w in warms:
        lines.append(f"| {w.how} | {w.wall_s:.1f} s | {w.summary_s:.1f} s | {w.variants} | {w.ok} ({w.states}) "
                     f"| {w.nbytes:,} | {w.failed} | {w.cache_bytes:,} B | {w.foreign_cores:.2f} |")
    lines += ["", "Commands (PORT and CACHE stand for the run's own):", ""]
    for w in warms:
        lines.append(f"- {w.how}: `{' '.join(meta['redact'](w.argv))}`")
    fails = [f for w in warms for f in w.failures]
    if fails:
        lines += ["", "Failures:", "", *[f"- `{f}`" for f in fails[:40]]]
    lines += [
        "",
        "## The browser runs",
        "",
        "| run | requests to imgopt | image responses | by X-Nextjs-Cache | distinct URLs | not 200 "
        "| browser latency p50 / p90 / max | imgopt's log: requests from Chromium, by cache, p50 / p90 / max "
        "| visit until all images loaded, p50 / max | other image responses | wall time | other processes (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    titles = {"after-inprocess": "after `imgopt warm` in-process, server started on that cache",
              "after-server": "after `imgopt warm --server`, server restarted",
              "cold": "cold: empty cache, no warm"}
    for key, r in runs.items():
        lat = r.latency()
        states = ", ".join(f"{s} {n}" for s, n in r.states().items()) or "–"
        bad = sum(1 for h in r.images if h.status != 200)
        srv = r.server_ms()
        logged: dict[str, int] = {}
        for d in r.server:
            logged[str(d.get("cache"))] = logged.get(str(d.get("cache")), 0) + 1
        logged_states = ", ".join(f"{s} {n}" for s, n in sorted(logged.items())) or "–"
        lines.append(f"| {titles[key]} | {r.requests} | {len(r.images)} | {states} | {len({h.url for h in r.images})} "
                     f"| {bad} | {ms(lat, 50)} / {ms(lat, 90)} / {ms(lat, 100)} "
                     f"| {len(srv)} ({logged_states}), {ms(srv, 50)} / {ms(srv, 90)} / {ms(srv, 100)} "
                     f"| {ms(r.visits, 50)} / {ms(r.visits, 100)} | {r.other_images} "
                     f"| {r.seconds:.0f} s | {r.foreign_cores:.2f} |")
    extra = {key: len(r.server) - r.requests for key, r in runs.items() if len(r.server) != r.requests}
    if extra:
        lines += ["", "imgopt logged a different number of requests from Chromium than Playwright reported as page "
                  "requests (" + ", ".join(f"{k}: {n:+d}" for k, n in extra.items()) + "); browser-runs.json "
                  "has both, with each visit's start and end, to tell which visit sent them."]
    failed = [f"{key}: {f}" for key, r in runs.items() for f in r.failed]
    if failed:
        lines += ["", "Requests to imgopt that got no response (failed, or cancelled by the browser):", "",
                  *[f"- `{f}`" for f in failed[:20]]]
    lines += [
        "",
        "Per page and viewport, cold against after the warm through the server (image responses, "
        "MISSes, slowest image):",
        "",
        "| page | viewport | cold: images, MISS, max | warm: images, HIT, max |",
        "|---|---|---|---|",
    ]
    for page_path in e2e.PAGES:
        for vp in e2e.VIEWPORTS:
            c = [h for h in cold.images if h.page == page_path and h.viewport == vp]
            hot = [h for h in after_srv.images if h.page == page_path and h.viewport == vp]
            lines.append(f"| {page_path} | {vp} | {len(c)}, {sum(h.cache == 'MISS' for h in c)}, "
                         f"{max((h.ms for h in c), default=0):,.0f} ms | {len(hot)}, "
                         f"{sum(h.cache == 'HIT' for h in hot)}, {max((h.ms for h in hot), default=0):,.0f} ms |")
    lines += [
        "",
        "The cold run's MISS share is below 100% because the 8 visits share one server: a variant "
        "made for one viewport is a HIT for the next that picks the same srcset candidate. What "
        "warm removes is that first visitor's wait. Latencies are from one run on a shared machine; "
        "the \"other processes\" columns say how busy the rest of the machine was.",
        "",
        f"Logs: {meta['work']} (npm-ci.log, next-build.log, warm-*.log, imgopt/imgopt.log; every image "
        "response of the browser runs in browser-runs.json).",
        "",
    ]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------

class CpuWindow:
    """How busy the rest of the machine was: CPU of everything but this process and its
    descendants (the warm, imgopt and its workers, Chromium), in cores, over a window."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.mine0 = time.monotonic(), C.host_busy_s(), C.tree_cpu_s(os.getpid())

    def foreign_cores(self) -> float:
        wall = time.monotonic() - self.t0
        other = (C.host_busy_s() - self.busy0) - (C.tree_cpu_s(os.getpid()) - self.mine0)
        return max(other, 0.0) / wall if wall > 0 else 0.0


def measure(browser: Any, imgopt: e2e.ImgoptServer, out: Path, site_url: str, endpoint: str,
            concurrency: int | None) -> tuple[list[WarmRun], dict[str, BrowserRun]]:
    serve = imgopt.argv.index("serve")
    prefix, flags = imgopt.argv[:serve], imgopt.argv[serve + 1:]
    conc = ["--concurrency", str(concurrency)] if concurrency else []
    warms: list[WarmRun] = []
    runs: dict[str, BrowserRun] = {}

    def empty_cache() -> None:
        shutil.rmtree(imgopt.cache_dir, ignore_errors=True)

    def warm(how: str, argv: list[str], log: str) -> WarmRun:
        print(f"bench_warm: imgopt warm ({how})", flush=True)
        window = CpuWindow()
        w = run_warm(how, argv, imgopt.env, WORK / log)
        w.foreign_cores = window.foreign_cores()
        warms.append(w)
        return w

    def run_browser(key: str, what: str) -> None:
        """Chromium over every page x viewport against the server, which is started first and
        stopped after (its access log says how long each response took inside imgopt)."""
        offset = imgopt.log_path.stat().st_size if imgopt.log_path.exists() else 0
        imgopt.start()
        print(f"bench_warm: Chromium, {what}", flush=True)
        window = CpuWindow()
        runs[key] = browse(key, browser, site_url, endpoint)
        runs[key].foreign_cores = window.foreign_cores()
        imgopt.stop()
        runs[key].server = access_log(imgopt.log_path, offset)

    # 1. in-process, the server stopped, its cache folder empty; then the server on that cache
    empty_cache()
    w = warm("in-process", [*prefix, "warm", str(out), *flags, *conc], "warm-inprocess.log")
    w.cache_bytes = e2e.dir_size(imgopt.cache_dir)
    run_browser("after-inprocess", "after the in-process warm")

    # 2. through a running server whose cache was emptied before it started; then the server
    # restarted, so that its memory tier is empty and every HIT comes from the disk cache
    empty_cache()
    imgopt.start()
    w = warm("via the server", [*prefix, "warm", str(out), *flags, *conc, "--server", imgopt.url], "warm-server.log")
    imgopt.stop()
    w.cache_bytes = e2e.dir_size(imgopt.cache_dir)
    run_browser("after-server", "after the warm through the server")

    # 3. cold: an empty cache, no warm
    empty_cache()
    run_browser("cold", "on an empty cache")
    return warms, runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the report (default {DEFAULT_OUT.relative_to(ROOT)})")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="imgopt warm --concurrency for both warms (default: imgopt warm's own, 2)")
    args = ap.parse_args(argv)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_start = " ".join(open("/proc/loadavg").read().split()[:3])
    tools = check_tools()
    from playwright.sync_api import sync_playwright

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    print(f"bench_warm: working in {WORK}", flush=True)
    npm_s = site_deps(tools["npm"])

    remote_root = WORK / "remote"
    e2e.write_images(remote_root, e2e.REMOTE_IMAGES)
    remote = Origin(root=remote_root).start()
    cleanup: list[Any] = [remote.stop]
    try:
        env = e2e.shape_env(SHAPE, remote)
        out = WORK / "out"
        # The port is chosen before the build: NEXT_PUBLIC_IMGOPT_URL is baked into the pages.
        imgopt = e2e.ImgoptServer(WORK / "imgopt", None, "--next-config", str(e2e.SITE / "next.config.js"),
                                  "--local-root", str(out), *e2e.IMGOPT_ARGS, env=env)
        cleanup.insert(0, imgopt.stop)
        print("bench_warm: next build", flush=True)
        build_s = build_export(tools["node"], env, imgopt.url, out)
        static = e2e.StaticServer(out, SHAPE.base_path)
        cleanup.insert(0, static.stop)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=tools["chromium"], headless=True, args=e2e.CHROMIUM_FLAGS)
            chromium_version = browser.version
            try:
                warms, runs = measure(browser, imgopt, out, static.url + SHAPE.base_path,
                                      imgopt.url + SHAPE.base_path + "/_next/image", args.concurrency)
            finally:
                browser.close()
    finally:
        for stop in cleanup:
            try:
                stop()
            except Exception as e:  # noqa: BLE001 - the others must still be stopped
                print(f"bench_warm: while stopping: {e}", file=sys.stderr)

    work_s, cache_s = str(WORK), str(imgopt.cache_dir)
    serve = imgopt.argv.index("serve")

    def redact(argv: list[str]) -> list[str]:
        return [a.replace(cache_s, "CACHE").replace(str(imgopt.port), "PORT").replace(str(ROOT) + "/", "").replace(sys.executable, ".venv/bin/python") for a in argv]

    cmd = " ".join([".venv/bin/python", "benchmarks/bench_warm.py", *(argv if argv is not None else sys.argv[1:])])
    meta = {
        "command": cmd, "date": date, "nproc": os.cpu_count(), "cpu": cpu_model(),
        "python": platform.python_version(), "next": next_version(), "node": tools["node_version"].lstrip("v"),
        "chromium": chromium_version, "commit": git_commit(), "build_s": build_s, "npm_s": npm_s,
        "serve_flags": redact(imgopt.argv[serve + 1:]), "redact": redact, "work": work_s.replace(str(ROOT) + "/", ""),
        "load_start": load_start, "load_end": " ".join(open("/proc/loadavg").read().split()[:3]),
        "total_s": time.monotonic() - started,
    }
    (WORK / "browser-runs.json").write_text(json.dumps(
        {key: {"requests": r.requests, "failed": r.failed, "visits_ms": r.visits, "visits": r.visit_log, "responses": [vars(h) for h in r.images],
               "imgopt_access_log": r.server} for key, r in runs.items()}, indent=1, ensure_ascii=False))
    text = report(meta, warms, runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"bench_warm: report written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as err:
        print(f"bench_warm: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bench_warm: interrupted", file=sys.stderr)
        sys.exit(130)
