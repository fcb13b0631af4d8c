"""``--cache s3://bucket/prefix``: one cache in a bucket shared by replicas, and its faults.

Real processes throughout: SeaweedFS (tests/seaweed.py) as the S3 store, redis-server for the
``--lock``, three ``imgopt serve`` replicas (the first with a local disk tier) and nginx
round-robin in front (tests/cluster.py), plus in-process checks of the store against the same
SeaweedFS.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from cluster import Nginx, RedisServer, image, metric
from conftest import PROFILE_C, ImgoptServer, free_port, wait_for
from seaweed import SeaweedFS

from imgopt import cli
from imgopt.cache import Entry, decode_entry, encode_entry
from imgopt.objectstorage import BucketURL
from imgopt.stores.bucket import BucketStore

BUCKET, PREFIX = "imgopt-cache", "variants"


class BucketCluster:
    """SeaweedFS + Redis (locks only) + N replicas sharing ``s3://imgopt-cache/variants`` + nginx."""

    def __init__(self, tmp: Path, origin_url: str, tiers: tuple[str, ...] = ("disk", "none", "none")) -> None:
        self.tmp = tmp
        self.seaweed = SeaweedFS(tmp / "seaweed").start()
        self.seaweed.put(BUCKET, "created", b"1")  # the bucket exists before the replicas start
        self.redis = RedisServer(tmp / "redis").start()
        self.replicas = [
            ImgoptServer(tmp / f"replica{i}", PROFILE_C, "--cache", f"s3://{BUCKET}/{PREFIX}", "--cache-tier", tier,
                         "--lock", self.redis.url, "--store-timeout", "0.5", "--origin", origin_url,
                         env=self.seaweed.env())
            for i, tier in enumerate(tiers)
        ]
        with concurrent.futures.ThreadPoolExecutor(len(self.replicas)) as ex:
            list(ex.map(lambda r: r.start(), self.replicas))
        self.nginx = Nginx(tmp / "nginx", [r.port for r in self.replicas]).start()

    def close(self) -> None:
        self.nginx.stop()
        for r in self.replicas:
            r.stop()
        self.redis.stop()
        self.seaweed.stop()

    def alive(self) -> list[ImgoptServer]:
        return [r for r in self.replicas if r.proc and r.proc.poll() is None]

    def total(self, name: str, **labels: str) -> float:
        return sum(metric(r.url, name, **labels) for r in self.alive())

    def objects(self) -> dict[str, bytes]:
        import obstore

        store = self.seaweed.store(BUCKET)
        keys = [m["path"] for page in obstore.list(store, prefix=PREFIX) for m in page]
        return {k: bytes(obstore.get(store, k).bytes()) for k in keys}


@pytest.fixture(scope="module")
def cluster(origin, tmp_path_factory) -> Iterator[BucketCluster]:
    c = BucketCluster(tmp_path_factory.mktemp("bucket-cluster"), origin.base_url)
    try:
        yield c
    finally:
        c.close()


def unique_path(origin, corpus: Path, name: str = "test.jpg") -> str:
    path = f"/bucket/{uuid.uuid4().hex}-{name}"
    origin.add_file(path, (corpus / name).read_bytes())
    return path


def _health(base: str) -> dict[str, Any]:
    r = httpx.get(base + "/healthz", timeout=10)
    assert r.status_code == 200
    return r.json()


# -- three replicas behind nginx ----------------------------------------------------------------


def test_thirty_concurrent_requests_one_transform_then_hit_everywhere(cluster, origin, corpus):
    path = unique_path(origin, corpus, "mountains.jpg")
    url = origin.base_url + path + "?delay=1000"  # a wide window: all 30 arrive while it is worked on
    transforms = cluster.total("imgopt_transform_seconds_count")
    served_before = [metric(r.url, "imgopt_http_requests_total", route="/_next/image") for r in cluster.replicas]

    with concurrent.futures.ThreadPoolExecutor(30) as ex:
        rs = list(ex.map(lambda _: image(cluster.nginx.url, url, 1080), range(30)))

    assert [r.status_code for r in rs] == [200] * 30
    assert len({r.content for r in rs}) == 1 and rs[0].headers["content-type"] == "image/webp"
    assert origin.hits[path] == 1
    assert cluster.total("imgopt_transform_seconds_count") - transforms == 1
    served = [metric(r.url, "imgopt_http_requests_total", route="/_next/image") for r in cluster.replicas]
    assert all(after > before for after, before in zip(served, served_before)), "nginx spread the requests"
    assert cluster.total("imgopt_cluster_locks_total", result="acquired") >= 1
    assert cluster.total("imgopt_cluster_locks_total", result="waited") >= 1

    for replica in cluster.replicas:  # with or without the local tier
        for _ in range(2):
            r = image(replica.url, url, 1080)
            assert r.status_code == 200 and r.headers["x-nextjs-cache"] == "HIT"
            assert r.content == rs[0].content
    assert origin.hits[path] == 1
    assert cluster.total("imgopt_transform_seconds_count") - transforms == 1
    assert cluster.total("imgopt_cache_lookups_total", tier="s3", result="hit") >= 1


def test_bucket_holds_framed_entries(cluster, origin, corpus):
    path = unique_path(origin, corpus)
    r = image(cluster.replicas[1].url, origin.base_url + path, 399)
    assert r.status_code == 200
    mine = [(k, decode_entry(k.rsplit("/", 1)[1], v)) for k, v in cluster.objects().items() if v.endswith(r.content)]
    assert len(mine) == 1
    key, entry = mine[0]
    name = key.rsplit("/", 1)[1]
    assert key == f"{PREFIX}/{name[:2]}/{name}" and len(name) == 64
    assert entry is not None and entry.body == r.content and entry.mime == "image/webp"
    assert entry.max_age == 14400 and entry.etag == r.headers["etag"]


def test_replica_without_lock_shares_the_same_entries(cluster, origin, corpus, tmp_path):
    """No --lock: single flight stays inside each replica, entries are shared all the same."""
    path = unique_path(origin, corpus)
    url = origin.base_url + path
    made = image(cluster.replicas[2].url, url, 399)
    assert made.headers["x-nextjs-cache"] == "MISS"
    lone = ImgoptServer(tmp_path / "lone", PROFILE_C, "--cache", f"s3://{BUCKET}/{PREFIX}", "--origin",
                        origin.base_url, env=cluster.seaweed.env()).start()
    try:
        assert _health(lone.url) == {"status": "ok", "cache": "s3"}
        r = image(lone.url, url, 399)
        assert r.headers["x-nextjs-cache"] == "HIT" and r.content == made.content
        fresh = origin.base_url + unique_path(origin, corpus)
        assert image(lone.url, fresh, 399).headers["x-nextjs-cache"] == "MISS"
        assert metric(lone.url, "imgopt_cluster_locks_total") == 0  # nobody to agree with
    finally:
        lone.stop()
    assert image(cluster.replicas[1].url, fresh, 399).headers["x-nextjs-cache"] == "HIT"
    assert origin.hits[path] == 1


def test_a_replica_killed_mid_run_loses_nothing_stored(cluster, origin, corpus):
    victim, survivors = cluster.replicas[0], cluster.replicas[1:]
    urls = [origin.base_url + unique_path(origin, corpus, "test.png") for _ in range(12)]
    done: list[tuple[str, int]] = []
    killed = threading.Event()

    def load(i: int) -> None:
        try:
            done.append((urls[i], image(cluster.nginx.url, urls[i], 256).status_code))
        except httpx.HTTPError:
            done.append((urls[i], 599))
        if i == 5:  # halfway: the replica dies, other requests in flight on it or not
            victim.stop(signal.SIGKILL)
            killed.set()

    try:
        with concurrent.futures.ThreadPoolExecutor(3) as ex:
            list(ex.map(load, range(len(urls))))
        assert killed.is_set()
        stored = [u for u, status in done if status == 200]
        assert len(stored) >= len(urls) - 3  # at most the requests in flight on the victim were lost
        transforms = sum(metric(r.url, "imgopt_transform_seconds_count") for r in survivors)
        for u in stored:
            for replica in survivors:
                assert image(replica.url, u, 256).headers["x-nextjs-cache"] == "HIT", u
        assert sum(metric(r.url, "imgopt_transform_seconds_count") for r in survivors) == transforms
    finally:
        victim.start()
    for u in stored:  # back, empty memory, and everything is still there
        assert image(victim.url, u, 256).headers["x-nextjs-cache"] == "HIT"


def test_store_frozen_then_back_degraded_never_a_5xx(cluster, origin, corpus):
    """Runs last on the shared cluster: SeaweedFS is stopped (SIGSTOP), then continued."""
    c = cluster
    hot = origin.base_url + unique_path(origin, corpus, "test.png")
    assert image(c.nginx.url, hot, 399).status_code == 200
    results: list[int] = []
    stop = threading.Event()

    def load(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            url, w = (hot, 399) if i % 2 else (origin.base_url + "/test.jpg?v=%d-%d" % (n, i % 7), 384)
            try:
                results.append(image(c.nginx.url, url, w, timeout=30).status_code)
            except httpx.HTTPError:
                results.append(599)

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(results) >= 5, "the load to start", interval=0.1)
        c.seaweed.send(signal.SIGSTOP)
        # Each replica notices, on its next store access or health check; after a few failures its
        # circuit opens (imgopt_cache_backend_up 0) and it stops waiting for the store at all.
        wait_for(lambda: all(_health(r.url)["status"] == "degraded"
                     and metric(r.url, "imgopt_cache_backend_up", backend="s3") == 0 for r in c.replicas),
                 "the replicas to see the store frozen", interval=0.1)
        frozen = [_health(r.url) for r in c.replicas]
        mark = len(results)
        wait_for(lambda: len(results) >= mark + 20, "requests served while the store is frozen", timeout=60, interval=0.1)
    finally:
        c.seaweed.send(signal.SIGCONT)
        stop.set()
        for t in threads:
            t.join(60)

    assert [s for s in results if s >= 500] == []
    assert frozen == [{"status": "degraded", "cache": "s3 unreachable"}] * 3

    wait_for(lambda: all(_health(r.url)["status"] == "ok" for r in c.replicas), "the replicas to see the store again", interval=0.1)
    url = origin.base_url + unique_path(origin, corpus, "test.png")
    assert image(c.replicas[1].url, url, 1080).headers["x-nextjs-cache"] == "MISS"
    assert image(c.replicas[2].url, url, 1080).headers["x-nextjs-cache"] == "HIT"


# -- the store in process, against the same SeaweedFS -------------------------------------------


def entry(body: bytes = b"body", max_age: int = 60, expire_in: float = 60) -> Entry:
    return Entry(body, "image/webp", '"e"', '"u"', max_age, time.time() + expire_in)


@pytest.fixture
def aws_env(cluster, monkeypatch):
    for k, v in cluster.seaweed.env().items():
        monkeypatch.setenv(k, v)


def test_store_roundtrip_and_damaged_entry_is_a_removed_miss(cluster, aws_env):
    import obstore

    store = BucketStore(BucketURL("s3", BUCKET, "unit"))
    e = entry(b"hello", expire_in=-5)
    store.set("k1", e)
    assert store.get("k1") == e and store.get("k1").is_stale()  # kept past expiry: served STALE
    raw_store = cluster.seaweed.store(BUCKET)
    assert bytes(obstore.get(raw_store, "unit/k1/k1").bytes()) == encode_entry("k1", e)
    raw = encode_entry("k1", entry(b"hello"))
    obstore.put(raw_store, "unit/k1/k1", raw[:-1] + b"!")  # same length, wrong checksum
    assert store.get("k1") is None
    with pytest.raises(FileNotFoundError):
        obstore.head(raw_store, "unit/k1/k1")
    assert store.get("never-written") is None and store.breaker.closed  # a miss is no failure
    big = entry(b"x" * (40 << 20))  # over Redis's 32 MiB cap: shared here all the same
    store.set("big", big)
    assert store.get("big") == big
    assert store.ping()


def test_unreachable_store_is_a_fast_miss_and_trips_the_breaker(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    for k, v in (("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s"), ("AWS_ALLOW_HTTP", "true"),
                 ("AWS_REGION", "us-east-1")):
        monkeypatch.setenv(k, v)
    store = BucketStore(BucketURL("s3", BUCKET, "unit"), timeout=0.5)
    for _ in range(10):
        assert store.get("k") is None
        store.set("k", entry())
    assert not store.breaker.closed
    assert not store.ping()

    from imgopt.cache import LocalCoordinator
    from imgopt.stores.bucket import BucketCoordinator

    health = asyncio.run(BucketCoordinator(store, LocalCoordinator("s3"), False).health())
    assert health == {"status": "degraded", "cache": "s3 unreachable"}


def test_wrong_credentials_for_the_cache_one_line_and_exit_2(cluster, tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, **cluster.seaweed.env(AWS_ACCESS_KEY_ID="nobody")}
    done = subprocess.run(
        [sys.executable, "-m", "imgopt", "serve", "--port", "1", "--cache-dir", str(tmp_path), "--cache",
         f"s3://{BUCKET}/{PREFIX}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"imgopt: --cache s3://{BUCKET}/{PREFIX}: access denied (")


def test_cache_options():
    def settings(*argv: str, env: dict[str, str] | None = None):
        return cli.settings_from(cli.resolve_options(cli.build_parser().parse_args(["serve", *argv]), env or {}))

    s = settings("--cache", "s3://bucket/pre/fix/", "--cache-tier", "disk", "--lock", "redis://r:6379/1",
                 "--store-timeout", "1.5")
    assert (s.cache, s.cache_tier, s.lock, s.store_timeout) == (
        BucketURL("s3", "bucket", "pre/fix"), "disk", "redis://r:6379/1", 1.5)
    env = {"IMGOPT_CACHE": "gs://bucket", "IMGOPT_LOCK": "redis://r:6379/0"}
    assert settings(env=env).cache == BucketURL("gs", "bucket", "")
    for bad in (["--cache", "s3://"], ["--cache", "s3://b/../x"], ["--lock", "redis://r/0"],
                ["--cache", "s3://b", "--lock", "http://r"], ["--store-timeout", "0"]):
        with pytest.raises(cli.UsageError):
            settings(*bad)
