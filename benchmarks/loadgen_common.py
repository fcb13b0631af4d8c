"""The job list, Accept headers and percentiles shared by loadgen.py and raw_vips.py (standard
library only). Paths follow peers/_lib.sh: everything under BENCH_CACHE (default .bench-cache/ at
the repository root)."""
import json
import os
import random

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_CACHE = os.environ.get("BENCH_CACHE", os.path.join(_ROOT, ".bench-cache"))
PEERS_DIR = os.environ.get("PEERS_DIR", os.path.join(BENCH_CACHE, "run"))
CORPUS = os.environ.get("BENCH_CORPUS", os.path.join(BENCH_CACHE, "corpus"))
RESULTS = os.environ.get("RESULTS_DIR", os.path.join(PEERS_DIR, "results"))

WIDTHS = [640, 1080, 1920]
FORMATS = ["webp", "avif", "jpeg"]

# Accept header sent with every request. Next.js (and imgopt) negotiate its output from it (formats: ['image/avif','image/webp']). For "jpeg" Next returns
# the *original* format (jpeg for jpeg input, png for png, gif passthrough ...), so "jpeg" means
# "jpeg-or-original" there.
ACCEPT = {
    "avif": "image/avif,image/webp,image/*;q=0.8,*/*;q=0.5",
    "webp": "image/webp,image/*;q=0.8,*/*;q=0.5",
    "jpeg": "image/jpeg,image/png,image/gif",
}
EXPECTED_CTYPE = {"webp": "image/webp", "avif": "image/avif", "jpeg": "image/jpeg"}


def host_busy_s():
    """Machine-wide busy CPU seconds so far (user+nice+system+irq+softirq+steal, all CPUs)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def load_manifest(corpus=CORPUS):
    with open(os.path.join(corpus, "manifest.json")) as f:
        return json.load(f)["images"]


def cold_jobs(images, widths=WIDTHS, formats=FORMATS, seed=42, exclude=()):
    """Every (image, width, format) once, in a fixed shuffled order (same for every peer).
    The order is computed on the full list and excluded images are dropped afterwards, so a
    subset run keeps the relative order of the remaining jobs."""
    jobs = [(im, w, f) for im in images for w in widths for f in formats]
    random.Random(seed).shuffle(jobs)
    return [j for j in jobs if j[0]["name"] not in set(exclude)]


def split_names(s):
    return [x for x in (s or "").split(",") if x]


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def lat_summary(lat_s):
    """latencies in seconds -> dict in milliseconds"""
    if not lat_s:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    return {
        "p50_ms": round(percentile(lat_s, 50) * 1000, 1),
        "p95_ms": round(percentile(lat_s, 95) * 1000, 1),
        "p99_ms": round(percentile(lat_s, 99) * 1000, 1),
        "mean_ms": round(sum(lat_s) / len(lat_s) * 1000, 1),
        "max_ms": round(max(lat_s) * 1000, 1),
    }


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 2 and sys.argv[1] == "--wait-idle":
        # `python3 loadgen_common.py --wait-idle SECONDS`: wait (bounded) until the machine is idle,
        # i.e. < 0.15 cores busy over a 2 s window; prints what it saw. Never fails.
        import time

        limit = time.time() + float(sys.argv[2])
        while True:
            b0, t0 = host_busy_s(), time.time()
            time.sleep(2)
            busy = (host_busy_s() - b0) / (time.time() - t0)
            if busy < 0.15 or time.time() > limit:
                print(f"machine busy: {busy:.2f} cores" + ("" if busy < 0.15 else " (gave up waiting)"))
                break
