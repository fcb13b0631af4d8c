"""Caching: finished variants in an embedded disk cache (diskcache), LRU-bounded.

An entry is the response body plus a small header: type, validators, TTL and a CRC-32 of
the body. A damaged entry (bad header, wrong length, wrong checksum) is deleted and reported
as a miss, never served. Entries are not expired by the store: a stale entry is served as
STALE while one refresh runs, and the size limit evicts the least recently used.

``rediscache.open_cache`` picks the store for ``--cache``: this disk cache, or Redis shared by
replicas, optionally with the disk cache as a local first tier (``TieredStore``), plus the
``Coordinator`` that decides which replica produces a missing entry.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Awaitable, Callable, Protocol

import diskcache

from . import metrics
from .lru import BytesLRU

CACHE_VERSION = "imgopt-1"
_MAGIC = b"IMGOPT1\n"


@dataclass(frozen=True)
class Entry:
    body: bytes
    mime: str
    etag: str  # quoted strong validator
    upstream_etag: str
    max_age: int  # seconds, as sent in Cache-Control
    expire_at: float  # epoch seconds; stale after this

    def is_stale(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) > self.expire_at


def cache_key(href: str, width: int, quality: int, mime: str) -> str:
    """Key from the normalised url, width, quality and the *negotiated* type (with separators)."""
    h = hashlib.sha256()
    for part in (CACHE_VERSION, href, str(width), str(quality), mime):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def encode_entry(e: Entry) -> bytes:
    meta = {k: v for k, v in asdict(e).items() if k != "body"}
    meta["length"] = len(e.body)
    meta["crc32"] = zlib.crc32(e.body)
    head = json.dumps(meta, separators=(",", ":")).encode()
    return _MAGIC + struct.pack(">I", len(head)) + head + e.body


def decode_entry(raw: bytes) -> Entry | None:
    """The entry, or None when anything about it is wrong."""
    try:
        if not raw.startswith(_MAGIC):
            return None
        (n,) = struct.unpack_from(">I", raw, len(_MAGIC))
        start = len(_MAGIC) + 4
        meta = json.loads(raw[start : start + n])
        body = raw[start + n :]
        if len(body) != meta["length"] or zlib.crc32(body) != meta["crc32"] or not body:
            return None
        return Entry(body, meta["mime"], meta["etag"], meta["upstream_etag"], int(meta["max_age"]), float(meta["expire_at"]))
    except (ValueError, KeyError, TypeError, struct.error):
        return None


class Store(Protocol):
    def get(self, key: str) -> Entry | None: ...
    def set(self, key: str, entry: Entry) -> None: ...
    def close(self) -> None: ...


class DiskStore:
    """diskcache-backed store: survives restarts, bounded by size with LRU eviction."""

    def __init__(self, directory: Path, size_limit: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(
            str(directory),
            size_limit=size_limit,
            eviction_policy="least-recently-used",
            cull_limit=16,
            statistics=False,
            timeout=5,
        )

    def get(self, key: str) -> Entry | None:
        try:
            raw = self._cache.get(key, default=None, retry=True)
        except Exception:  # a damaged store must not take the request down
            return None
        if raw is None:
            return None
        entry = decode_entry(raw) if isinstance(raw, bytes) else None
        if entry is None:
            self.delete(key)
        return entry

    def set(self, key: str, entry: Entry) -> None:
        self._cache.set(key, encode_entry(entry), retry=True)

    def delete(self, key: str) -> None:
        try:
            self._cache.delete(key, retry=True)
        except Exception:
            pass

    def volume(self) -> int:
        return self._cache.volume()

    def close(self) -> None:
        self._cache.close()


class NullStore:
    """No cache at all (maximumDiskCacheSize: 0)."""

    def get(self, key: str) -> Entry | None:
        return None

    def set(self, key: str, entry: Entry) -> None:
        pass

    def close(self) -> None:
        pass


def get_max_age(cache_control: str | None) -> int:
    """Seconds from upstream Cache-Control: s-maxage over max-age; 0 when absent or bad (Next)."""
    if not cache_control:
        return 0
    directives: dict[str, str] = {}
    for part in cache_control.split(","):
        key, _, value = part.partition("=")
        directives[key.strip().lower()] = value.strip().lower()
    raw = directives.get("s-maxage") or directives.get("max-age") or ""
    raw = raw.strip('"')
    digits = ""
    for ch in raw.lstrip("+"):  # parseInt: leading digits
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0


# -- tiers and cross-replica work ------------------------------------------------------------


class MemoryTier(BytesLRU[str, Entry]):
    """Hot entries in process memory, bounded by bytes, least recently used evicted.

    Looked up on the event loop before the store (a dict access: no thread hop, no sqlite
    access-time write), so a hot URL is answered without touching the disk or Redis. Entries
    keep their own expiry, so staleness is decided exactly as for the store.
    """

    max_share = 8

    def size_of(self, entry: Entry) -> int:
        return len(entry.body)

    def get(self, key: str) -> Entry | None:
        entry = super().get(key)
        if entry is not None:
            metrics.CACHE_LOOKUPS.labels("memory", "stale" if entry.is_stale() else "hit").inc()
        return entry


class MeteredStore:
    """A store that counts its look-ups (hit, stale, miss) under a tier name."""

    def __init__(self, inner: Store, tier: str) -> None:
        self.inner = inner
        self.tier = tier

    def get(self, key: str) -> Entry | None:
        entry = self.inner.get(key)
        result = "miss" if entry is None else "stale" if entry.is_stale() else "hit"
        metrics.CACHE_LOOKUPS.labels(self.tier, result).inc()
        return entry

    def set(self, key: str, entry: Entry) -> None:
        self.inner.set(key, entry)

    def close(self) -> None:
        self.inner.close()


class TieredStore:
    """A local first tier (this replica's disk) in front of a shared one (Redis).

    A fresh local entry answers at once; otherwise the shared tier is asked and a newer entry
    found there is copied into the local one. Writes go to both; a failing local tier never
    stops the shared write.
    """

    def __init__(self, near: Store, far: Store) -> None:
        self.near = near
        self.far = far

    def get(self, key: str) -> Entry | None:
        near = self.near.get(key)
        if near is not None and not near.is_stale():
            return near
        far = self.far.get(key)
        if far is None or (near is not None and near.expire_at >= far.expire_at):
            return near
        try:
            self.near.set(key, far)
        except Exception:
            pass
        return far

    def set(self, key: str, entry: Entry) -> None:
        try:
            self.near.set(key, entry)
        finally:
            self.far.set(key, entry)

    def close(self) -> None:
        try:
            self.near.close()
        finally:
            self.far.close()


class Coordinator(Protocol):
    """Who produces a missing or stale entry: here, or another replica (see rediscache)."""

    async def run(self, key: str, previous: Entry | None, produce: Callable[[], Awaitable[Entry]]) -> Entry: ...
    async def health(self) -> dict[str, str]: ...


class LocalCoordinator:
    """One process, nobody to share with: always produce here."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    async def run(self, key: str, previous: Entry | None, produce: Callable[[], Awaitable[Entry]]) -> Entry:
        return await produce()

    async def health(self) -> dict[str, str]:
        return {"status": "ok", "cache": self.backend}

