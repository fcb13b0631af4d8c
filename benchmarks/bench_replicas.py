"""Cache-hit throughput with 1, 2 and 3 imgopt replicas sharing one Redis, behind nginx.

    .venv/bin/python benchmarks/bench_replicas.py [--duration 5] [--concurrency 32] [--tier none|disk]

Starts everything itself on 127.0.0.1 (redis-server, the test origin, N replicas, nginx
round-robin; see tests/cluster.py), warms a set of variants, then drives nginx with a small
keep-alive HTTP/1.1 load generator and prints a markdown table:

* hot: every request is a cache HIT (from Redis, or from the local disk tier with --tier disk);
* cold: every request is a new variant (fetch + transform + Redis write).

Read the numbers for what they are on a small machine: the load generator, nginx, Redis and
every replica share the same cores. On 2 cores, cold work is CPU-bound (libvips) and stays
flat however many replicas there are; hot throughput can only grow while a single replica's
Python event loop, not the machine, is the limit. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cluster import Cluster, image  # noqa: E402
from imagecorpus import build_corpus  # noqa: E402
from origin import Origin  # noqa: E402

HOT_IMAGES = ("test.jpg", "test.png", "test.webp", "mountains.jpg", "progressive.jpg", "alpha.png")
WIDTHS = (384, 399, 1080)


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, target: str) -> tuple[int, int]:
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: image/webp,*/*\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length)
    return status, len(body)


async def drive(base: str, targets, duration: float, concurrency: int) -> dict[str, float]:
    """Closed loop: `concurrency` keep-alive connections, each sending the next target."""
    parts = urlsplit(base)
    host, port = parts.hostname, parts.port
    latencies: list[float] = []
    errors = 0
    nbytes = 0
    deadline = time.monotonic() + duration

    async def worker() -> None:
        nonlocal errors, nbytes
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                try:
                    status, n = await _one(reader, writer, f"{host}:{port}", next(targets))
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                latencies.append(time.perf_counter() - t0)
                nbytes += n
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - start
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {"rps": len(latencies) / elapsed, "p50": q[49] * 1000, "p99": q[98] * 1000,
            "errors": errors, "mbps": nbytes / elapsed / 1e6}


def hot_targets(origin_url: str):
    variants = [f"/_next/image?{urlencode({'url': f'{origin_url}/{name}', 'w': w, 'q': 75})}"
                for name in HOT_IMAGES for w in WIDTHS]
    i = 0
    while True:
        yield variants[i % len(variants)]
        i += 1


def cold_targets(origin_url: str, tag: str):
    i = 0
    while True:
        i += 1
        yield f"/_next/image?{urlencode({'url': f'{origin_url}/test.jpg?cold={tag}-{i}', 'w': 384, 'q': 75})}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", default="1,2,3")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--tier", choices=("none", "disk"), default="none", help="--cache-tier of every replica")
    ap.add_argument("--workers", type=int, default=None, help="--workers of every replica")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        build_corpus(corpus)
        with Origin(root=corpus) as origin:
            for n in [int(x) for x in args.replicas.split(",")]:
                extra = ("--workers", str(args.workers)) if args.workers else ()
                with Cluster(Path(tmp) / f"n{n}", origin.base_url, tiers=(args.tier,) * n, extra=extra) as c:
                    for name in HOT_IMAGES:  # warm: one MISS through nginx, then a HIT on each replica
                        for w in WIDTHS:
                            assert image(c.nginx.url, f"{origin.base_url}/{name}", w).status_code == 200
                            for r in c.replicas:
                                assert image(r.url, f"{origin.base_url}/{name}", w).headers["x-nextjs-cache"] == "HIT"
                    hot = asyncio.run(drive(c.nginx.url, hot_targets(origin.base_url), args.duration, args.concurrency))
                    cold = asyncio.run(drive(c.nginx.url, cold_targets(origin.base_url, f"n{n}"),
                                             args.duration, min(args.concurrency, 8)))
                    rows.append((n, hot, cold))
                    print(f"# {n} replica(s): hot {hot['rps']:.0f} req/s, cold {cold['rps']:.1f} req/s",
                          file=sys.stderr)

    print(f"| replicas | hot req/s | hot p50 ms | hot p99 ms | hot MB/s | cold req/s | cold p50 ms | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, hot, cold in rows:
        print(f"| {n} | {hot['rps']:.0f} | {hot['p50']:.1f} | {hot['p99']:.1f} | {hot['mbps']:.1f} "
              f"| {cold['rps']:.1f} | {cold['p50']:.0f} | {int(hot['errors'] + cold['errors'])} |")
    print(f"\nnginx round-robin, one Redis, --cache-tier {args.tier}, {args.concurrency} keep-alive connections "
          f"(cold: {min(args.concurrency, 8)}), {args.duration:g} s each, everything on this machine's "
          f"{__import__('os').cpu_count()} cores. Cold work (fetch + libvips) is CPU-bound: flat on 2 cores.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
