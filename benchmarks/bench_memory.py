"""RSS over a long mixed run: does the server's memory settle, or creep?

A fresh imgopt process (per allocator / threads variant) gets BENCH_MEM_REQUESTS (default 5,000)
requests at concurrency 4, from a fixed random sequence: BENCH_MEM_MISS (default 0.25) of them
are new variants (a fresh ``?v=`` token on the origin URL: fetch + transform + cache write),
the rest re-request a variant made earlier (cache hits). Variants mix every corpus image that
imgopt transforms (photos, alpha PNG, illustration PNG, small JPEG, WebP; animated GIF is passed
through), widths from 64 to 1920 and webp / avif / jpeg-or-original.

After every 10 % of the requests the client drains (no request in flight), waits 0.5 s and
samples the RSS of the server process tree. Reported: RSS after 500 (10 %) and after 5,000
(100 %) requests, growth = rss_5000 / rss_500 - 1 (target: < 10 %), the whole curve,
the peak RSS, errors, and wall time. With each RSS sample, the bytes the bounded in-process caches
hold (``imgopt_memory_bytes`` on /metrics: hot responses, resized pixels) are read too, and
growth_net_of_caches = (rss - caches) at 5,000 / (rss - caches) at 500 - 1 is what grows besides
the caches filling up to the bounds they were given (allocator creep or a leak).

Variants (BENCH_MEM_VARIANTS, comma separated, default "default,jemalloc,mallopt"):
default (as shipped: glibc with imgopt's own tuning, 2 arenas and a 4 MiB mmap threshold, see
imgopt/malloc.py), arena2 (MALLOC_ARENA_MAX=2), mmapN (MALLOC_MMAP_THRESHOLD_=N KiB, e.g. mmap256,
which also turns off glibc's dynamic threshold; any MALLOC_* variable makes imgopt skip its own
tuning, so arena2 alone means glibc's dynamic threshold), mallopt (arena2+mmap256 set in-process with mallopt()
before any thread starts, see _launch.py), jemalloc (LD_PRELOAD libjemalloc2, skipped when not
installed), trim (benchmarks/_launch.py calls malloc_trim(0) every 5 s), vcN (libvips threads per
image), wN (worker threads), nomem (no in-memory tiers: --memory-cache-size 0 and
--resized-cache-size 0, so what grows is the allocator, not caches filling up to their bounds),
and '+' combinations such as arena2+trim.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import _common as C

VARIANTS = [v for v in os.environ.get("BENCH_MEM_VARIANTS", "default,jemalloc,mallopt").split(",") if v]
WIDTHS = [64, 128, 256, 384, 640, 750, 828, 1080, 1200, 1920]
WIDTH_WEIGHTS = [1, 2, 3, 3, 4, 2, 3, 3, 1, 1]
FORMATS = ["webp", "avif", "jpeg"]
FORMAT_WEIGHTS = [5, 3, 2]
QUALITIES = [74, 75, 76]
CONC = 4


def sequence(n: int, miss: float, names: list[str], seed: int = 5):
    rnd = random.Random(seed)
    made: list[tuple] = []
    seq = []
    for i in range(n):
        if not made or rnd.random() < miss:
            v = (rnd.choice(names), rnd.choices(WIDTHS, WIDTH_WEIGHTS)[0], rnd.choice(QUALITIES),
                 rnd.choices(FORMATS, FORMAT_WEIGHTS)[0], f"m{i}")
            made.append(v)
        else:
            v = rnd.choice(made)
        seq.append(v)
    return seq


def cache_mb(url: str) -> float:
    """MB held by the server's bounded in-process caches (imgopt_memory_bytes on /metrics)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        families = text_string_to_metric_families(r.read().decode())
    held = sum(s.value for f in families for s in f.samples if s.name == "imgopt_memory_bytes")
    return round(held / 2**20, 1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_rss_growth(benchmark, smoke, origin, variant):
    if smoke and variant != VARIANTS[0] and "BENCH_MEM_VARIANTS" not in os.environ:
        pytest.skip("smoke: first variant only (set BENCH_MEM_VARIANTS to choose)")
    if C.variant_env(variant) is None:
        pytest.skip(f"{variant}: not available on this machine (libjemalloc2 not installed?)")
    total = 300 if smoke else int(os.environ.get("BENCH_MEM_REQUESTS", 5000))
    miss = float(os.environ.get("BENCH_MEM_MISS", 0.25))
    names = [m.name for m in C.load_corpus(["all"])] + ["pan-anim.gif"]
    seq = sequence(total, miss, names)
    step = total // 10
    result = {}

    def run():
        with C.Server(origin.port, variant) as srv:
            curve = [(0, round(C.rss_mb(srv.pid), 1))]
            caches = [cache_mb(srv.url)]
            errors, kinds, peak = 0, set(), 0.0
            t0 = time.perf_counter()
            win = C.CpuWindow({"server": srv.pid, "origin": origin.pid})
            for start in range(0, total, step):
                chunk = seq[start:start + step]
                reqs = [(C.path_of(C.image_url(srv.url, origin.url, n, w, q, bust)), C.ACCEPT[f]) for n, w, q, f, bust in chunk]

                async def go():
                    nonlocal peak
                    task = asyncio.ensure_future(C.fetch_many(srv.url, reqs, CONC, keepalive=True))
                    while not task.done():
                        peak = max(peak, C.rss_mb(srv.pid))
                        await asyncio.sleep(0.2)
                    return task.result()

                res = asyncio.run(go())
                bad = [r for r in res if r.status != 200]
                errors += len(bad)
                kinds |= {r.err for r in bad}
                time.sleep(0.5)
                curve.append((start + len(chunk), round(C.rss_mb(srv.pid), 1)))
                caches.append(cache_mb(srv.url))
            cpu = win.stop()
            wall = time.perf_counter() - t0
        first = curve[1][1]
        last = curve[-1][1]
        # RSS less what the bounded in-process caches hold: what grows besides caches filling up
        # to their configured bounds (allocator creep, leaks)
        net_first, net_last = first - caches[1], last - caches[-1]
        result.update({"kind": "memory", "variant": variant, "requests": total, "miss_fraction": miss,
                       "concurrency": CONC, "rss_first_mb": first, "rss_first_at": curve[1][0], "rss_last_mb": last,
                       "rss_last_at": curve[-1][0], "growth": round(last / first - 1, 4),
                       "caches_mb": caches, "net_first_mb": round(net_first, 1), "net_last_mb": round(net_last, 1),
                       "growth_net_of_caches": round(net_last / net_first - 1, 4),
                       "peak_rss_mb": round(max(peak, max(v for _, v in curve)), 1), "idle_rss_mb": curve[0][1],
                       "curve": curve, "errors": errors, "error_kinds": sorted(kinds)[:5], "wall_s": round(wall, 1),
                       "server_cpu_s": cpu["server_cpu_s"], "foreign_cores": cpu["foreign_cores"]})

    benchmark.pedantic(run, rounds=1, warmup_rounds=0, iterations=1)
    benchmark.extra_info.update(result)
