"""The hot tier: recent entries kept in process memory, bounded by their bytes."""

from __future__ import annotations

from .. import metrics
from ..cache import Entry
from ..lru import BytesLRU


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
