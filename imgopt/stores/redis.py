"""Redis as the cache that many replicas share, and one transform per variant across them.

``RedisStore`` is a :class:`~imgopt.cache.Store` (sync, called through ``asyncio.to_thread``
like the disk store) holding the same checksum-framed entries (``cache.encode_entry``). Keys
live as long as the entry is fresh plus a grace period, so an expired entry can still be served
as STALE while one replica refreshes it::

    redis TTL = (expire_at - now) + max(max_age, GRACE)        GRACE = 1 day

``RedisCoordinator`` makes concurrent misses on different replicas share one piece of work:
the first takes a lock (``SET lock <token> NX PX``, the token is a per-key fencing counter),
renews it while it works and writes the entry with a script that only accepts the write
while its token is still the newest one issued. The others poll for the entry with a bounded
wait; when the lock disappears without an entry (the owner died, or failed with an error that
is not shared) one of them takes over. An owner that dies therefore blocks nobody for longer
than ``LOCK_TTL``.

Redis that is down or slow never fails a request: every call has short socket timeouts and
goes through a :class:`CircuitBreaker`; when Redis cannot answer, reads are misses, writes are
skipped, locks are not taken and the replica works on its own (with its local tier, if any).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .. import metrics
from ..cache import (
    Entry,
    decode_entry,
    encode_entry,
)
from ..errors import ImageError

log = logging.getLogger("imgopt.redis")

T = TypeVar("T")

LOCK_TTL = 5.0  # seconds; the owner renews every LOCK_TTL / 3
GRACE = 86_400  # seconds an entry stays in Redis after it turns stale, at least
ERROR_NOTE_TTL = 5.0  # seconds a shared failure is visible to the replicas waiting for it
FENCE_TTL = 86_400  # seconds the per-key fencing counter is kept after its last lock
MAX_ENTRY = 32 << 20  # larger entries stay out of Redis (local tier only)
KEY_PREFIX = "imgopt:"

# KEYS: lock, fence, entry. ARGV: lock ttl ms, fence ttl ms, '1' to answer with the entry if
# there is one. Returns a new token (> 0), 0 when another owner holds the lock, or the entry.
_LOCK = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[3] == '1' then
  local e = redis.call('GET', KEYS[3])
  if e then return e end
end
local t = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], t, 'PX', ARGV[1])
return t
"""

# KEYS: lock. ARGV: token, ttl ms.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: entry, lock, fence, note. ARGV: token, value, entry ttl ms. The write is refused when a
# newer token has been issued since (another replica took over from us).
_WRITE = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[4])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""

# KEYS: lock, note. ARGV: token, note ('' for none), note ttl ms.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
return 1
"""

# KEYS: entry, lock, note. Returns {entry or nil, 1 if locked, note or nil}, all at one instant.
_PEEK = """
return {redis.call('GET', KEYS[1]), redis.call('EXISTS', KEYS[2]), redis.call('GET', KEYS[3])}
"""


def redis_ttl_ms(entry: Entry, now: float | None = None) -> int:
    """How long Redis keeps an entry: its freshness left plus max(max_age, GRACE)."""
    now = time.time() if now is None else now
    fresh_left = max(0.0, entry.expire_at - now)
    return max(1000, int((fresh_left + max(entry.max_age, GRACE)) * 1000))


class Unavailable(Exception):
    """Redis did not answer (or the circuit is open); the caller carries on without it."""


class CircuitBreaker:
    """Closed → open after ``threshold`` failures in a row; after ``cooldown`` one trial call.

    A failed trial re-opens the circuit for twice as long (up to ``max_cooldown``); a success
    closes it. While open, calls fail at once instead of each waiting for a socket timeout.
    """

    def __init__(self, threshold: int = 3, cooldown: float = 1.0, max_cooldown: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, name: str = "redis") -> None:
        self.name = name  # the backend, in the log lines
        self.threshold = threshold
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._cooldown = cooldown
        self._open_until: float | None = None
        self._trial = False

    @property
    def closed(self) -> bool:
        return self._open_until is None

    def allow(self) -> bool:
        with self._lock:
            if self._open_until is None:
                return True
            if self._trial or self._clock() < self._open_until:
                return False
            self._trial = True  # half-open: this caller is the trial
            return True

    def success(self) -> None:
        with self._lock:
            reopened = self._open_until is not None
            self._failures = 0
            self._cooldown = self.base_cooldown
            self._open_until = None
            self._trial = False
        if reopened:
            log.warning("%s reachable again: shared cache back in use", self.name)

    def failure(self, reason: str = "") -> None:
        with self._lock:
            self._failures += 1
            if self._trial or (self._open_until is None and self._failures >= self.threshold):
                was_closed = self._open_until is None
                self._open_until = self._clock() + self._cooldown
                cooldown = self._cooldown
                self._cooldown = min(self._cooldown * 2, self.max_cooldown)
                self._trial = False
                if was_closed:
                    log.warning("%s unreachable (%s): serving without the shared cache, retry in %.1fs",
                                self.name, reason, cooldown)


def _k(key: str, part: str) -> str:
    # The hash tag {key} keeps an entry, its lock, fence and note in one Redis Cluster slot.
    return f"{KEY_PREFIX}{{{key}}}:{part}"


class RedisStore:
    """Entries in Redis, shared by every replica; never raises for Redis trouble."""

    tier = "redis"

    def __init__(self, url: str, timeout: float = 0.25, breaker: CircuitBreaker | None = None,
                 max_entry: int = MAX_ENTRY) -> None:
        self.url = url
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # no hidden retries: a failure is reported at once
            health_check_interval=0,
            client_name="imgopt",
        )
        self.breaker = breaker or CircuitBreaker()
        self.max_entry = max_entry
        self.leases: dict[str, int] = {}  # key -> fencing token while this process owns the key
        self._lock = self.client.register_script(_LOCK)
        self._renew = self.client.register_script(_RENEW)
        self._write = self.client.register_script(_WRITE)
        self._release = self.client.register_script(_RELEASE)
        self._peek = self.client.register_script(_PEEK)
        metrics.CACHE_UP.labels("redis").set_function(lambda: 1 if self.breaker.closed else 0)

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        if not self.breaker.allow():
            metrics.CACHE_ERRORS.labels("redis", op).inc()
            raise Unavailable("circuit open")
        try:
            result = fn()
        except redis.exceptions.ResponseError as e:  # Redis answered, with an error (OOM, ...)
            self.breaker.success()
            metrics.CACHE_ERRORS.labels("redis", op).inc()
            log.warning("redis %s failed: %s", op, e)
            raise Unavailable(str(e)) from None
        except (redis.exceptions.RedisError, OSError) as e:
            self.breaker.failure(f"{type(e).__name__}: {e}")
            metrics.CACHE_ERRORS.labels("redis", op).inc()
            raise Unavailable(str(e)) from None
        self.breaker.success()
        return result

    # -- Store ---------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        try:
            raw = self._call("get", lambda: self.client.get(_k(key, "e")))
        except Unavailable:
            return None
        return self._decode(key, raw)

    def _decode(self, key: str, raw: Any) -> Entry | None:
        if raw is None:
            return None
        entry = decode_entry(key, raw) if isinstance(raw, bytes) else None
        if entry is None:  # damaged: never served, removed
            metrics.CACHE_ERRORS.labels("redis", "corrupt").inc()
            self.delete(key)
        return entry

    def set(self, key: str, entry: Entry) -> None:
        value = encode_entry(key, entry)
        if len(value) > self.max_entry:
            metrics.CACHE_ERRORS.labels("redis", "too_large").inc()
            return
        ttl = redis_ttl_ms(entry)
        token = self.leases.get(key)
        try:
            if token is None:
                self._call("set", lambda: self.client.set(_k(key, "e"), value, px=ttl))
            elif not self._call("set", lambda: self._write(
                    keys=[_k(key, "e"), _k(key, "l"), _k(key, "f"), _k(key, "x")], args=[token, value, ttl])):
                log.info("write for %s refused: another replica took the work over", key[:16])
        except Unavailable:
            pass

    def delete(self, key: str) -> None:
        try:
            self._call("delete", lambda: self.client.delete(_k(key, "e")))
        except Unavailable:
            pass

    def close(self) -> None:
        self.client.close()

    # -- coordination (used by RedisCoordinator; these raise Unavailable) ----------------------

    def ping(self) -> None:
        self._call("ping", self.client.ping)

    def try_lock(self, key: str, want_entry: bool) -> int | Entry | None:
        """A new fencing token, 0 when another replica owns the key, or (want_entry) the entry."""
        res = self._call("lock", lambda: self._lock(
            keys=[_k(key, "l"), _k(key, "f"), _k(key, "e")],
            args=[int(LOCK_TTL * 1000), FENCE_TTL * 1000, "1" if want_entry else "0"]))
        if isinstance(res, bytes):
            return self._decode(key, res)
        return int(res)

    def renew(self, key: str, token: int) -> bool:
        return bool(self._call("renew", lambda: self._renew(keys=[_k(key, "l")], args=[token, int(LOCK_TTL * 1000)])))

    def release(self, key: str, token: int, note: str = "") -> None:
        self._call("release", lambda: self._release(
            keys=[_k(key, "l"), _k(key, "x")], args=[token, note, int(ERROR_NOTE_TTL * 1000)]))

    def peek(self, key: str) -> tuple[Entry | None, bool, dict[str, Any] | None]:
        raw, locked, note = self._call("peek", lambda: self._peek(keys=[_k(key, "e"), _k(key, "l"), _k(key, "x")]))
        parsed = None
        if note:
            try:
                parsed = json.loads(note)
            except ValueError:
                parsed = None
        return self._decode(key, raw), bool(locked), parsed


class RedisCoordinator:
    """One producer per key across replicas; the others wait for its entry (or its error)."""

    def __init__(self, store: RedisStore, max_wait: float) -> None:
        self.redis = store
        self.max_wait = max_wait

    async def run(self, key: str, previous: Entry | None, produce: Callable[[], Awaitable[Entry]]) -> Entry:
        """``produce()`` here, or the entry another replica produced meanwhile.

        ``previous`` is the stale entry being refreshed (None for a miss): a refresh that finds
        another replica at work returns it at once instead of waiting.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        took_over = False
        while True:
            try:
                got = await asyncio.to_thread(self.redis.try_lock, key, previous is None)
            except Unavailable:
                metrics.LOCKS.labels("unavailable").inc()
                return await produce()
            if isinstance(got, Entry):
                if not got.is_stale():
                    metrics.LOCKS.labels("waited").inc()
                    return got
                previous = got  # only a stale copy: refresh it
                continue
            if got:
                metrics.LOCKS.labels("takeover" if took_over else "acquired").inc()
                return await self._own(key, got, produce)
            if previous is not None:
                metrics.LOCKS.labels("busy").inc()  # another replica is refreshing it
                return previous
            delay = 0.02
            while True:
                if loop.time() >= deadline:
                    metrics.LOCKS.labels("timeout").inc()
                    log.warning("waited %.0fs for another replica's transform of %s; doing it here",
                                self.max_wait, key[:16])
                    return await produce()
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.25)
                try:
                    entry, locked, note = await asyncio.to_thread(self.redis.peek, key)
                except Unavailable:
                    metrics.LOCKS.labels("unavailable").inc()
                    return await produce()
                if entry is not None and not entry.is_stale():
                    metrics.LOCKS.labels("waited").inc()
                    return entry
                if locked:
                    continue
                if note is not None:
                    metrics.LOCKS.labels("error_shared").inc()
                    raise ImageError(int(note["status"]), str(note["message"]), retry_after=note.get("retry_after"))
                took_over = True  # the owner is gone without a result: compete for the lock
                break

    async def _own(self, key: str, token: int, produce: Callable[[], Awaitable[Entry]]) -> Entry:
        self.redis.leases[key] = token  # RedisStore.set now makes the fenced write
        renewing = asyncio.ensure_future(self._keep(key, token))
        note = ""
        try:
            return await produce()
        except ImageError as e:
            if e.status != 503:  # 503 is this replica being busy: the others may do better
                note = json.dumps({"status": e.status, "message": e.message, "retry_after": e.retry_after})
            raise
        finally:
            renewing.cancel()
            self.redis.leases.pop(key, None)
            try:
                await asyncio.to_thread(self.redis.release, key, token, note)
            except Unavailable:
                pass  # the lock expires by itself

    async def _keep(self, key: str, token: int) -> None:
        while True:
            await asyncio.sleep(LOCK_TTL / 3)
            try:
                if not await asyncio.to_thread(self.redis.renew, key, token):
                    log.warning("lost the lock for %s; the result will not overwrite a newer one", key[:16])
                    return
            except Unavailable:
                continue

    async def health(self) -> dict[str, str]:
        try:
            await asyncio.to_thread(self.redis.ping)
        except Unavailable:
            return {"status": "degraded", "cache": "redis unreachable"}
        return {"status": "ok", "cache": "redis"}
