"""A bucket as the cache that many replicas share: ``--cache s3://bucket/prefix`` (gs://, az://).

Each entry is one object, ``{prefix}/{key[:2]}/{key}``, holding exactly what the disk and Redis
stores hold (:func:`imgopt.cache.encode_entry`: type, validators, ``max_age``, ``expire_at`` and
a CRC-32 of the body). Expiry is read from that header as for every store: an expired entry is
served STALE while one replica refreshes it (the refresh rewrites the object). Nothing is deleted
by imgopt; a lifecycle rule on the prefix prunes objects not rewritten for a while
(docs/object-storage.md). Unlike Redis, there is no size cap: large entries are shared too.

Every request has a timeout (``--store-timeout``) and goes through a circuit breaker: a store
that is down or frozen makes reads misses and writes skipped, the replica serves on its own
(with its ``--cache-tier disk`` first tier, if any) and ``/healthz`` says ``degraded``.

One transform per variant across replicas (``--lock redis://…``): the lock, its fencing token
and the shared error note live in Redis, exactly as :class:`imgopt.stores.redis.RedisCoordinator`
keeps them; only the entry is read from the bucket. The owner writes the object before it
releases the lock, and a waiter reads the bucket only once the lock is gone, so it finds the
entry. Without ``--lock`` each replica transforms a missing variant once (single flight inside
the process): up to one transform per replica for a variant first asked of all at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .. import metrics
from ..cache import (
    Coordinator,
    Entry,
    LocalCoordinator,
    MeteredStore,
    Store,
    TieredStore,
    decode_entry,
    encode_entry,
)
from ..config import Settings
from ..objectstorage import BucketURL, connect, describe, is_missing
from .disk import DiskStore
from .redis import LOCK_TTL, CircuitBreaker, RedisCoordinator, RedisStore, Unavailable

log = logging.getLogger("imgopt.stores")

T = TypeVar("T")
HEALTH_KEY = "imgopt-health"  # never written: a HEAD that answers 404 shows the store is there


class BucketStore:
    """Entries as objects under a prefix; never raises for trouble with the store."""

    def __init__(self, url: BucketURL, timeout: float = 2.0, breaker: CircuitBreaker | None = None) -> None:
        self.url = url
        self.tier = url.scheme
        self._store = connect(url, timeout)
        self.breaker = breaker or CircuitBreaker(name=f"{url} (cache)")
        metrics.CACHE_UP.labels(self.tier).set_function(lambda: 1 if self.breaker.closed else 0)

    @staticmethod
    def path(key: str) -> str:
        return f"{key[:2]}/{key}"

    def _call(self, op: str, fn: Callable[[], T]) -> T | None:
        """fn() through the breaker; None when the object is missing; Unavailable on trouble."""
        if not self.breaker.allow():
            metrics.CACHE_ERRORS.labels(self.tier, op).inc()
            raise Unavailable("circuit open")
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - obstore's errors: missing, or the store's trouble
            if is_missing(e):
                self.breaker.success()
                return None
            self.breaker.failure(describe(e))
            metrics.CACHE_ERRORS.labels(self.tier, op).inc()
            raise Unavailable(describe(e)) from None
        self.breaker.success()
        return result

    # -- Store ---------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        import obstore

        try:
            raw = self._call("get", lambda: bytes(obstore.get(self._store, self.path(key)).bytes()))
        except Unavailable:
            return None
        if raw is None:
            return None
        entry = decode_entry(key, raw)
        if entry is None:  # damaged: never served, removed
            metrics.CACHE_ERRORS.labels(self.tier, "corrupt").inc()
            self.delete(key)
        return entry

    def set(self, key: str, entry: Entry) -> None:
        import obstore

        value = encode_entry(key, entry)
        try:
            self._call("set", lambda: obstore.put(self._store, self.path(key), value,
                                                  attributes={"Content-Type": "application/octet-stream"}))
        except Unavailable:
            pass

    def delete(self, key: str) -> None:
        import obstore

        try:
            self._call("delete", lambda: obstore.delete(self._store, self.path(key)))
        except Unavailable:
            pass

    def close(self) -> None:
        pass

    def ping(self) -> bool:
        """True when the store answers (a HEAD of a key that is never written: 404 is fine)."""
        import obstore

        try:
            self._call("ping", lambda: obstore.head(self._store, HEALTH_KEY))
        except Unavailable:
            return False
        return True


class BucketLocks:
    """What :class:`RedisCoordinator` asks of its store, with locks in Redis and entries in the bucket."""

    def __init__(self, locks: RedisStore, entries: BucketStore) -> None:
        self.locks = locks
        self.entries = entries
        self.leases: dict[str, int] = {}  # the coordinator notes its tokens here; bucket writes are not fenced

    def try_lock(self, key: str, want_entry: bool) -> int | Entry | None:
        token = self.locks.try_lock(key, False)
        if isinstance(token, int) and token and want_entry:
            # Another replica may have written the entry and released the lock since our miss.
            entry = self.entries.get(key)
            if entry is not None:
                self.locks.release(key, token)
                return entry
        return token

    def renew(self, key: str, token: int) -> bool:
        return self.locks.renew(key, token)

    def release(self, key: str, token: int, note: str = "") -> None:
        self.locks.release(key, token, note)

    def peek(self, key: str) -> tuple[Entry | None, bool, dict[str, Any] | None]:
        _none, locked, note = self.locks.peek(key)
        if locked:
            return None, True, note
        return self.entries.get(key), False, note  # the owner wrote it before releasing

    def ping(self) -> None:
        self.locks.ping()


class BucketCoordinator:
    """The bucket's health in front of whichever coordinator decides who transforms."""

    def __init__(self, store: BucketStore, inner: Coordinator, locking: bool) -> None:
        self.store = store
        self.inner = inner
        self.locking = locking

    async def run(self, key: str, previous: Entry | None, produce: Callable[[], Awaitable[Entry]]) -> Entry:
        return await self.inner.run(key, previous, produce)

    async def health(self) -> dict[str, str]:
        name = self.store.tier
        if not await asyncio.to_thread(self.store.ping):
            return {"status": "degraded", "cache": f"{name} unreachable"}
        if self.locking and (await self.inner.health())["status"] != "ok":
            return {"status": "degraded", "cache": name, "lock": "redis unreachable"}
        return {"status": "ok", "cache": name}


def open_bucket_cache(settings: Settings) -> tuple[Store, Coordinator]:
    """``--cache`` bucket (+ ``--cache-tier disk`` first tier, + ``--lock`` Redis)."""
    url = settings.cache
    assert isinstance(url, BucketURL)
    shared = BucketStore(url, settings.store_timeout)
    far: Store = MeteredStore(shared, shared.tier)
    inner: Coordinator
    if settings.lock:
        locks = RedisStore(settings.lock, settings.redis_timeout)
        max_wait = settings.fetch_timeout + settings.transform_timeout + LOCK_TTL + 2
        inner = RedisCoordinator(BucketLocks(locks, shared), max_wait)  # type: ignore[arg-type]
    else:
        inner = LocalCoordinator(shared.tier)
    coordinator = BucketCoordinator(shared, inner, settings.lock is not None)
    if settings.cache_size > 0 and settings.cache_tier == "disk":
        near = MeteredStore(DiskStore(settings.cache_dir, settings.cache_size), "disk")
        return TieredStore(near, far), coordinator
    return far, coordinator
