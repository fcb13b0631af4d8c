"""Cache entries and what every store shares: the entry, its key and its frame, the ``Store``
and ``Coordinator`` interfaces, and the stores that wrap others (tiers, metrics, none).

An entry is the response body plus a small header: type, validators, TTL and a CRC-32 over
the key, every metadata field and the body. A damaged entry (bad header, wrong length, wrong
checksum, or an entry stored under another key) is deleted, counted
(``imgopt_cache_errors{op="corrupt"}``) and reported as a miss, never served. Entries are not
expired by a store: a stale entry is served as STALE while one refresh runs.

The stores themselves are in :mod:`imgopt.stores`, a module each: memory, disk, Redis, bucket;
``stores.open_store`` picks them for ``--cache``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from . import metrics

log = logging.getLogger("imgopt")

CACHE_VERSION = "imgopt-1"
_MAGIC = b"IMGOPT2\n"  # 2: the checksum covers key and metadata, not only the body


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


def _checksum(key: str, head: bytes, body: bytes) -> int:
    """CRC-32 over the key, the metadata exactly as stored, and the body."""
    crc = zlib.crc32(key.encode("utf-8", "surrogatepass") + b"\x00")
    crc = zlib.crc32(struct.pack(">I", len(head)), crc)
    crc = zlib.crc32(head, crc)
    return zlib.crc32(body, crc)


def encode_entry(key: str, e: Entry) -> bytes:
    """MAGIC, checksum, metadata length, metadata (JSON), body. The checksum covers the key the
    entry is stored under, so an entry (or a value file) moved to another key does not verify."""
    meta = {k: v for k, v in asdict(e).items() if k != "body"}
    meta["length"] = len(e.body)
    head = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    return _MAGIC + struct.pack(">II", _checksum(key, head, e.body), len(head)) + head + e.body


def decode_entry(key: str, raw: bytes) -> Entry | None:
    """The entry stored under ``key``, or None when anything about it is wrong."""
    try:
        if not raw.startswith(_MAGIC):
            return None
        crc, n = struct.unpack_from(">II", raw, len(_MAGIC))
        start = len(_MAGIC) + 8
        head = raw[start : start + n]
        body = raw[start + n :]
        if len(head) != n or not body or _checksum(key, head, body) != crc:
            return None
        meta = json.loads(head)
        if len(body) != meta["length"]:
            return None
        fields = (meta["mime"], meta["etag"], meta["upstream_etag"], meta["max_age"], meta["expire_at"])
        if not all(isinstance(v, str) for v in fields[:3]) or type(fields[3]) is not int:
            return None
        if not isinstance(fields[4], (int, float)) or isinstance(fields[4], bool):
            return None
        return Entry(body, fields[0], fields[1], fields[2], fields[3], float(fields[4]))
    except (ValueError, KeyError, TypeError, struct.error):
        return None


class Store(Protocol):
    def get(self, key: str) -> Entry | None: ...
    def set(self, key: str, entry: Entry) -> None: ...
    def close(self) -> None: ...


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


def store_degraded(store: object) -> str | None:
    """Why a store (or its local tier) is degraded, or None; shown by /healthz."""
    reason = getattr(store, "degraded", None)
    return reason if isinstance(reason, str) else None


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

    @property
    def degraded(self) -> str | None:
        return store_degraded(self.inner)

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

    @property
    def degraded(self) -> str | None:
        return store_degraded(self.near)

    def close(self) -> None:
        try:
            self.near.close()
        finally:
            self.far.close()


class Coordinator(Protocol):
    """Who produces a missing or stale entry: here, or another replica (see stores.redis)."""

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

