"""CPU per image with image work in worker processes (``--isolation process``) against threads of
the server process (``--isolation thread``), measured in the same run.

A real ``imgopt serve`` with no response cache (every request is a cold transform) gets the same
job list in each mode: the test corpus (tests/imagecorpus.py) and two camera-sized originals x widths x Accept (AVIF, WebP, the
original type), from ``--clients`` concurrent clients. CPU is read from /proc: the server's
utime+stime, plus its reaped children's (workers that were replaced) and its live children's
(the workers), before and after the jobs; so worker start-up at server start is excluded but
replacements during the run count. Modes alternate over ``--rounds`` rounds, each on a fresh
server. Prints CPU ms per image per mode and the ratio process/thread.

    .venv/bin/python benchmarks/bench_isolation.py --rounds 2
    .venv/bin/python benchmarks/bench_isolation.py --ipc   # the boundary alone, per job

(~1 minute on 2 cores). Not a pytest file: no test functions.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from imagecorpus import build_corpus  # noqa: E402

IMAGES = ["test.jpg", "large.jpg", "mountains.jpg", "progressive.jpg", "cmyk.jpg", "test.png", "alpha.png",
          "palette.png", "test.webp", "big.jpg", "big.png"]
WIDTHS = [640, 1080]
ACCEPTS = ["image/avif,image/webp,*/*", "image/webp,*/*", "*/*"]
TICK = os.sysconf("SC_CLK_TCK")


def build_big(root: Path) -> None:
    """Two camera-sized originals (a 4000x3000 JPEG of ~4 MB, a 2000x1500 PNG of ~5 MB), so the
    cost of moving originals between processes is in the measurement."""
    import pyvips

    noise = pyvips.Image.gaussnoise(4000, 3000, sigma=40).gaussblur(1.5)
    grad = pyvips.Image.xyz(4000, 3000)
    img = (noise + grad[0] * 0.03).bandjoin([noise.rot180() + grad[1] * 0.05, noise.fliphor() + 60])
    img = img.cast("uchar").copy(interpretation="srgb")
    img.jpegsave(str(root / "big.jpg"), Q=92)
    img.crop(0, 0, 2000, 1500).pngsave(str(root / "big.png"), compression=3)


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def tree_cpu(pid: int) -> float:
    """Seconds of CPU of the server, its reaped children and its live children."""
    s = _stat(pid)
    total = sum(int(x) for x in s[11:15])  # utime stime cutime cstime
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for c in children:
            try:
                total += sum(int(x) for x in _stat(int(c))[11:13])
            except (OSError, IndexError):
                pass
    return total / TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_mode(mode: str, root: Path, clients: int, workers: int, log: Path) -> tuple[float, int, float]:
    port = free_port()
    cache = tempfile.mkdtemp(prefix="imgopt-bench-iso-")
    argv = [sys.executable, "-m", "imgopt", "serve", "--port", str(port), "--local-root", str(root),
            "--cache-dir", cache, "--cache-size", "0", "--isolation", mode, "--workers", str(workers),
            "--queue", "64", "--log-level", "warning"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"server did not start ({log})")
            time.sleep(0.1)
        while mode == "process" and not any(  # the workers' start-up is not counted
                line.startswith("imgopt_workers_ready ") and float(line.split()[-1]) >= workers
                for line in httpx.get(base + "/metrics", timeout=10).text.splitlines()):
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            time.sleep(0.1)
        time.sleep(0.5)
        jobs = [(img, w, acc) for img in IMAGES for w in WIDTHS for acc in ACCEPTS]
        before = tree_cpu(proc.pid)
        t0 = time.monotonic()

        def one(job: tuple[str, int, str]) -> int:
            img, w, acc = job
            with httpx.Client(timeout=60) as c:
                r = c.get(base + "/_next/image", params={"url": f"/{img}", "w": str(w), "q": "75"},
                          headers={"Accept": acc})
                return r.status_code

        with concurrent.futures.ThreadPoolExecutor(clients) as ex:
            codes = list(ex.map(one, jobs))
        wall = time.monotonic() - t0
        cpu = tree_cpu(proc.pid) - before
        metrics = httpx.get(base + "/metrics", timeout=10).text
        hits = next((float(line.split()[-1]) for line in metrics.splitlines()
                     if line.startswith('imgopt_resized_lookups_total{result="hit"}')), 0.0)
        print(f"  {mode}: resized-memo hits {hits:.0f}", flush=True)
        bad = [c for c in codes if c != 200]
        if bad:
            raise RuntimeError(f"{mode}: {len(bad)} non-200 answers: {sorted(set(bad))}")
        return cpu, len(jobs), wall
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def ipc_cost() -> None:
    """Per-job cost of the worker boundary alone: ``len`` of an original of each size run in a
    worker process, CPU of this process and the worker per job."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    from imgopt.workers import ProcessPool

    async def run() -> None:
        pool = ProcessPool(1, 0, trim=False, max_jobs=0)
        while not pool.ready:
            await asyncio.sleep(0.05)
        (pid,) = pool.pids()
        for size in (1000, 1 << 20, 7 << 20):
            buf = os.urandom(size)
            await pool.run(len, buf, timeout=10)
            n = 200
            c0 = sum(os.times()[:2]) + sum(int(x) for x in _stat(pid)[11:13]) / TICK
            t0 = time.perf_counter()
            for _ in range(n):
                await pool.run(len, buf, timeout=10)
            wall = time.perf_counter() - t0
            cpu = sum(os.times()[:2]) + sum(int(x) for x in _stat(pid)[11:13]) / TICK - c0
            print(f"boundary, {size:>8} B original: {wall / n * 1000:.2f} ms wall, {cpu / n * 1000:.2f} ms CPU per job")
        pool.shutdown()

    asyncio.run(run())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ipc", action="store_true", help="only the cost of the process boundary per job")
    a = ap.parse_args()
    if a.ipc:
        ipc_cost()
        return 0
    with tempfile.TemporaryDirectory(prefix="imgopt-bench-iso-corpus-") as tmp:
        root = Path(tmp)
        build_corpus(root)
        build_big(root)
        print(f"originals: {', '.join(f'{n} {(root / n).stat().st_size >> 10} KiB' for n in IMAGES)}")
        log = root / "server.log"
        per_image: dict[str, list[float]] = {"thread": [], "process": []}
        for r in range(a.rounds):
            for mode in ("thread", "process") if r % 2 == 0 else ("process", "thread"):
                cpu, n, wall = run_mode(mode, root, a.clients, a.workers, log)
                per_image[mode].append(cpu / n * 1000)
                print(f"round {r + 1} {mode:7s}: {n} images, CPU {cpu:.2f} s = {cpu / n * 1000:.1f} ms/image, "
                      f"wall {wall:.1f} s", flush=True)
        t, p = (statistics.median(per_image[m]) for m in ("thread", "process"))
        print(f"median CPU per image: thread {t:.1f} ms, process {p:.1f} ms, ratio process/thread {p / t:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
