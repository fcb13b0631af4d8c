"""Many replicas, one Redis cache, one transform per variant, Redis trouble never a 5xx.

Real processes throughout: redis-server, three `imgopt serve` replicas and nginx round-robin in
front of them (tests/cluster.py), plus in-process checks of the store, the lock and the breaker
against the same real Redis.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from cluster import Cluster, RedisServer, image, metric
from conftest import wait_for
from imgopt import cli
from imgopt.cache import Entry, TieredStore, decode_entry, encode_entry
from imgopt.stores.disk import DiskStore
from imgopt.errors import ImageError
from imgopt.stores.redis import GRACE, LOCK_TTL, CircuitBreaker, RedisCoordinator, RedisStore, _k, redis_ttl_ms


def total(cluster: Cluster, name: str, **labels: str) -> float:
    return sum(metric(r.url, name, **labels) for r in cluster.replicas if r.proc and r.proc.poll() is None)


def unique_path(origin, corpus: Path, name: str = "test.jpg") -> str:
    path = f"/cluster/{uuid.uuid4().hex}-{name}"
    origin.add_file(path, (corpus / name).read_bytes())
    return path


def entry(body: bytes = b"body", max_age: int = 60, expire_in: float = 60) -> Entry:
    return Entry(body, "image/webp", '"e"', '"u"', max_age, time.time() + expire_in)


@pytest.fixture(scope="module")
def cluster(origin, tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("cluster"), origin.base_url) as c:
        yield c


@pytest.fixture(scope="module")
def redis_srv(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis-unit")).start()
    yield srv
    srv.stop()


# -- three replicas behind nginx ----------------------------------------------------------------


def test_thirty_concurrent_requests_one_fetch_one_transform(cluster, origin, corpus):
    path = unique_path(origin, corpus, "mountains.jpg")
    url = origin.base_url + path + "?delay=1000"  # a wide window: all 30 arrive while it is worked on
    transforms = total(cluster, "imgopt_transform_seconds_count")
    served_before = [metric(r.url, "imgopt_http_requests_total", route="/_next/image") for r in cluster.replicas]

    with concurrent.futures.ThreadPoolExecutor(30) as ex:
        rs = list(ex.map(lambda _: image(cluster.nginx.url, url, 1080), range(30)))

    assert [r.status_code for r in rs] == [200] * 30
    assert len({r.content for r in rs}) == 1 and rs[0].headers["content-type"] == "image/webp"
    assert origin.hits[path] == 1
    assert total(cluster, "imgopt_transform_seconds_count") - transforms == 1
    served = [metric(r.url, "imgopt_http_requests_total", route="/_next/image") for r in cluster.replicas]
    assert all(after > before for after, before in zip(served, served_before)), "nginx spread the requests"
    assert total(cluster, "imgopt_cluster_locks_total", result="acquired") >= 1

    # Every later request, on every replica (with or without the local tier), is a HIT.
    for replica in cluster.replicas:
        for _ in range(2):
            r = image(replica.url, url, 1080)
            assert r.status_code == 200 and r.headers["x-nextjs-cache"] == "HIT"
            assert r.content == rs[0].content
    for _ in range(6):
        assert image(cluster.nginx.url, url, 1080).headers["x-nextjs-cache"] == "HIT"
    assert origin.hits[path] == 1
    assert total(cluster, "imgopt_transform_seconds_count") - transforms == 1


def test_redis_holds_framed_entries_with_grace_ttl_and_no_lock_left(cluster, origin, corpus):
    path = unique_path(origin, corpus)
    r = image(cluster.replicas[1].url, origin.base_url + path, 399)
    assert r.status_code == 200
    client = cluster.redis.client()
    keys = [k.decode() for k in client.scan_iter(match="imgopt:*:e")]
    found = [decode_entry(k.split("{", 1)[1].split("}", 1)[0], client.get(k)) for k in keys]
    mine = [(k, e) for k, e in zip(keys, found) if e is not None and e.body == r.content]
    assert len(mine) == 1
    key, e = mine[0]
    assert e.max_age == 14400
    ttl = client.pttl(key) / 1000
    assert e.max_age + GRACE - 30 < ttl <= e.max_age + GRACE
    assert client.exists(key[: -len(":e")] + ":l") == 0  # the owner released its lock


def test_local_tier_is_filled_from_redis(cluster, origin, corpus):
    """Replica 0 has --cache-tier disk: an entry made by replica 1 is copied into its disk tier."""
    import sqlite3

    def disk_rows() -> int:
        db = sqlite3.connect(cluster.replicas[0].cache_dir / "cache.db", timeout=10)
        try:
            return db.execute("SELECT COUNT(*) FROM Cache").fetchone()[0]
        finally:
            db.close()

    path = unique_path(origin, corpus, "test.png")
    url = origin.base_url + path
    assert image(cluster.replicas[1].url, url, 256).headers["x-nextjs-cache"] == "MISS"
    rows = disk_rows()
    before = metric(cluster.replicas[0].url, "imgopt_cache_lookups_total", tier="memory", result="hit")
    assert image(cluster.replicas[0].url, url, 256).headers["x-nextjs-cache"] == "HIT"  # from redis
    assert disk_rows() == rows + 1  # ... and copied into the local disk tier
    assert image(cluster.replicas[0].url, url, 256).headers["x-nextjs-cache"] == "HIT"  # from memory
    assert metric(cluster.replicas[0].url, "imgopt_cache_lookups_total", tier="memory", result="hit") == before + 1
    assert origin.hits[path] == 1


def test_fast_first_replicas_make_one_avif_between_them(origin, corpus, tmp_path):
    """--fast-first on replicas sharing Redis: each answers its cold AVIF request with the WebP
    at once; the AVIFs they defer are one encode between them, which every replica then serves."""
    chrome = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
    path = unique_path(origin, corpus, "mountains.jpg")
    url = origin.base_url + path
    with Cluster(tmp_path, origin.base_url, tiers=("none", "none"), extra=("--fast-first",)) as c:
        firsts = [image(r.url, url, 1080, accept=chrome) for r in c.replicas]
        for r in firsts:
            assert r.status_code == 200 and r.headers["content-type"] == "image/webp", r.headers
            assert r.headers["cache-control"] == "public, max-age=60, must-revalidate"
        assert firsts[0].content == firsts[1].content
        wait_for(lambda: all(image(r.url, url, 1080, accept=chrome).headers["content-type"] == "image/avif"
                             for r in c.replicas), "every replica to serve the AVIF")
        later = [image(r.url, url, 1080, accept=chrome) for r in c.replicas]
        assert all(r.headers["x-nextjs-cache"] == "HIT" for r in later)
        assert later[0].content == later[1].content and later[0].content[4:12] == b"ftypavif"
        assert total(c, "imgopt_transform_seconds_count", format="avif") == 1
        assert total(c, "imgopt_transform_seconds_count", format="webp") == 1
        assert origin.hits[path] == 2  # the WebP, then the AVIF


def test_upstream_error_is_shared_not_repeated(cluster, origin):
    path = f"/cluster/{uuid.uuid4().hex}-missing.png"
    url = origin.base_url + path + "?delay=1500"
    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        rs = list(ex.map(lambda _: image(cluster.nginx.url, url, 399), range(12)))
    assert {r.status_code for r in rs} == {404}
    assert origin.hits[path] == 1


def test_owner_killed_mid_transform_another_replica_finishes(cluster, origin, corpus):
    owner, b, d = cluster.replicas
    survivors = [b, d]
    transforms = sum(metric(r.url, "imgopt_transform_seconds_count") for r in survivors)
    takeovers = sum(metric(r.url, "imgopt_cluster_locks_total", result="takeover") for r in survivors)
    path = unique_path(origin, corpus)
    url = origin.base_url + path + "?delay=1500"
    doomed = threading.Thread(target=lambda: _swallow(lambda: image(owner.url, url, 384)), daemon=True)
    doomed.start()
    deadline = time.monotonic() + 10
    while origin.hits[path] == 0:  # the owner has the lock and is fetching
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(9) as ex:
            futures = [ex.submit(image, base, url, 384) for base in [b.url] * 3 + [d.url] * 3 + [cluster.nginx.url] * 3]
            time.sleep(0.5)  # they are all waiting for the owner
            owner.stop(signal.SIGKILL)
            rs = [f.result() for f in futures]
        elapsed = time.monotonic() - start

        assert [r.status_code for r in rs] == [200] * 9
        assert len({r.content for r in rs}) == 1
        assert origin.hits[path] == 2  # the dead owner's fetch, then one takeover
        assert sum(metric(r.url, "imgopt_transform_seconds_count") for r in survivors) - transforms == 1
        assert sum(metric(r.url, "imgopt_cluster_locks_total", result="takeover") for r in survivors) - takeovers == 1
        assert elapsed < LOCK_TTL + 1.5 + 5, "nobody waited much past the dead owner's lock expiry"
        for replica in survivors:
            assert image(replica.url, url, 384).headers["x-nextjs-cache"] == "HIT"
    finally:
        doomed.join(5)
        owner.start()
    assert image(owner.url, url, 384).headers["x-nextjs-cache"] == "HIT"  # back, and sharing


def _swallow(fn) -> None:
    try:
        fn()
    except httpx.HTTPError:
        pass


def test_redis_slow_then_down_never_a_5xx(cluster, origin, corpus):
    """Runs last on the shared cluster: Redis is stopped (slow), killed (down), then restarted."""
    c = cluster
    hot = origin.base_url + unique_path(origin, corpus, "test.png")
    assert image(c.nginx.url, hot, 399).status_code == 200
    results: list[tuple[int, float]] = []
    stop = threading.Event()

    def load(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            url, w = (hot, 399) if i % 2 else (origin.base_url + "/test.jpg?v=%d-%d" % (n, i % 5), 384)
            t0 = time.monotonic()
            try:
                status = image(c.nginx.url, url, w, timeout=30).status_code
            except httpx.HTTPError:
                status = 599
            results.append((status, time.monotonic() - t0))

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        c.redis.send(signal.SIGSTOP)  # slow: connects hang, reads time out
        time.sleep(1.5)
        slow = [_health(r.url)["status"] for r in c.replicas]
        c.redis.send(signal.SIGCONT)
        time.sleep(0.3)
        c.redis.stop(signal.SIGKILL)  # down
        time.sleep(1.5)
        down = [_health(r.url) for r in c.replicas]
        # A replica's breaker opens after a few failed Redis calls in a row. Its load may all be
        # answered from its memory tier, so /healthz is asked until then: each one pings Redis,
        # a failure now that Redis is gone.
        deadline = time.monotonic() + 30
        for r in c.replicas:
            while metric(r.url, "imgopt_cache_backend_up", backend="redis") != 0:
                assert time.monotonic() < deadline, f"{r.url} still counts Redis as up"
                _health(r.url)
                time.sleep(0.05)
        # enough requests for the run to mean something, whatever the machine's speed
        while len(results) <= 20:
            assert time.monotonic() < deadline, f"only {len(results)} requests were answered"
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        if c.redis.proc is not None and c.redis.proc.poll() is not None:
            c.redis.start()  # Redis comes back (empty)

    assert len(results) > 20
    assert [s for s, _ in results if s >= 500] == []
    assert max(d for _, d in results) < 5, "a slow Redis costs a few socket timeouts, not a hang"
    assert "degraded" in slow
    assert down == [{"status": "degraded", "cache": "redis unreachable"}] * 3

    # Replicas notice Redis is back and share again.
    deadline = time.monotonic() + 20
    while any(_health(r.url)["status"] != "ok" for r in c.replicas):
        assert time.monotonic() < deadline, "replicas never saw Redis again"
        time.sleep(0.2)
    url = origin.base_url + unique_path(origin, corpus, "test.png")
    assert image(c.replicas[1].url, url, 1080).headers["x-nextjs-cache"] == "MISS"
    assert image(c.replicas[2].url, url, 1080).headers["x-nextjs-cache"] == "HIT"


def _health(base: str) -> dict:
    r = httpx.get(base + "/healthz", timeout=5)
    assert r.status_code == 200
    return r.json()


# -- the store, lock and breaker against a real Redis (in process) ----------------------------


def test_redis_ttl_keeps_entries_past_freshness():
    now = 1000.0
    assert redis_ttl_ms(Entry(b"x", "image/webp", "", "", 60, now + 60), now) == (60 + GRACE) * 1000
    assert redis_ttl_ms(Entry(b"x", "image/webp", "", "", 31536000, now + 31536000), now) == 2 * 31536000 * 1000
    assert redis_ttl_ms(Entry(b"x", "image/webp", "", "", 60, now - 10), now) == GRACE * 1000


def test_store_roundtrip_and_damaged_entry_is_a_removed_miss(redis_srv):
    store = RedisStore(redis_srv.url)
    e = entry(b"hello")
    store.set("k1", e)
    assert store.get("k1") == e
    raw = redis_srv.client().get(_k("k1", "e"))
    assert raw == encode_entry("k1", e)
    redis_srv.client().set(_k("k1", "e"), raw[:-1] + b"!")  # same length, wrong checksum
    assert store.get("k1") is None
    assert redis_srv.client().exists(_k("k1", "e")) == 0
    store.close()


def test_fenced_write_refused_after_takeover(redis_srv):
    a, b = RedisStore(redis_srv.url), RedisStore(redis_srv.url)
    key = uuid.uuid4().hex
    token_a = a.try_lock(key, True)
    assert isinstance(token_a, int) and token_a > 0
    assert b.try_lock(key, True) == 0  # held
    redis_srv.client().delete(_k(key, "l"))  # a's lock expired (a stalled or died)
    token_b = b.try_lock(key, True)
    assert token_b > token_a
    a.leases[key] = token_a
    a.set(key, entry(b"old owner"))
    assert b.get(key) is None  # refused
    b.leases[key] = token_b
    b.set(key, entry(b"new owner"))
    assert a.get(key).body == b"new owner"
    assert redis_srv.client().exists(_k(key, "l")) == 0  # the write released the lock
    assert isinstance(a.try_lock(key, True), Entry)  # a later miss gets the entry, not the lock


def test_coordinator_waits_for_owner_and_shares_errors(redis_srv):
    async def scenario() -> None:
        owner = RedisCoordinator(RedisStore(redis_srv.url), max_wait=10)
        waiter = RedisCoordinator(RedisStore(redis_srv.url), max_wait=10)
        key, produced = uuid.uuid4().hex, []
        # The waiter starts once the owner is at work, so it holds the lock by then.
        producing, failing = asyncio.Event(), asyncio.Event()

        async def produce(tag: str, store: RedisStore) -> Entry:
            produced.append(tag)
            producing.set()
            await asyncio.sleep(0.3)
            e = entry(tag.encode())
            store.set(key, e)
            return e

        got = await asyncio.gather(owner.run(key, None, lambda: produce("a", owner.redis)),
                                   _after(producing, waiter.run(key, None, lambda: produce("b", waiter.redis))))
        assert produced == ["a"] and got[0] == got[1]

        bad = uuid.uuid4().hex

        async def fail() -> Entry:
            failing.set()
            await asyncio.sleep(0.3)
            raise ImageError(404, "not there")

        results = await asyncio.gather(owner.run(bad, None, fail), _after(failing, waiter.run(bad, None, fail)),
                                       return_exceptions=True)
        assert [(type(r), getattr(r, "status", None)) for r in results] == [(ImageError, 404)] * 2

        # A refresh that finds another replica at work serves the stale copy at once.
        stale = entry(b"stale", expire_in=-5)
        busy = uuid.uuid4().hex
        assert isinstance(owner.redis.try_lock(busy, False), int)
        assert await waiter.run(busy, stale, fail) is stale

    asyncio.run(scenario())


async def _after(event: asyncio.Event, coro):
    await event.wait()
    return await coro


def test_unreachable_redis_is_a_fast_miss_and_trips_the_breaker(tmp_path):
    from conftest import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.25)
    t0 = time.monotonic()
    for _ in range(20):
        assert store.get("k") is None
        store.set("k", entry())
    assert time.monotonic() - t0 < 2
    assert not store.breaker.closed
    coordinator = RedisCoordinator(store, max_wait=5)
    assert asyncio.run(coordinator.health()) == {"status": "degraded", "cache": "redis unreachable"}

    # The local tier keeps working when Redis is gone.
    tiered = TieredStore(DiskStore(tmp_path / "disk", 1 << 20), store)
    tiered.set("k", entry(b"local"))
    assert tiered.get("k").body == b"local"
    tiered.close()


def test_breaker_states():
    now = [0.0]
    b = CircuitBreaker(threshold=3, cooldown=1.0, max_cooldown=4.0, clock=lambda: now[0])
    for _ in range(2):
        b.failure()
    assert b.closed and b.allow()
    b.failure()
    assert not b.closed and not b.allow()
    now[0] = 1.0
    assert b.allow() and not b.allow()  # one trial at a time
    b.failure()  # trial failed: open twice as long
    now[0] = 2.9
    assert not b.allow()
    now[0] = 3.0
    assert b.allow()
    b.success()
    assert b.closed and b.allow()


# -- options ------------------------------------------------------------------------------------


def test_cache_options_from_flags_and_environment():
    args = cli.build_parser().parse_args(["serve"])
    env = {"IMGOPT_CACHE": "redis://cache:6379/2", "IMGOPT_CACHE_TIER": "disk", "IMGOPT_REDIS_TIMEOUT": "0.5"}
    s = cli.settings_from(cli.resolve_options(args, env))
    assert (s.cache, s.cache_tier, s.redis_timeout) == ("redis://cache:6379/2", "disk", 0.5)
    assert cli.settings_from(cli.resolve_options(args, {})).cache == "disk"
    for bad in (["--cache", "memcached://x"], ["--cache", "redis://h:port/0"], ["--cache-tier", "ram"],
                ["--redis-timeout", "0"]):
        with pytest.raises(cli.UsageError):
            cli.resolve_options(cli.build_parser().parse_args(["serve", *bad]), {})
