"""Where finished variants are kept, behind one small interface: :class:`imgopt.cache.Store`.

A store is synchronous (``get``, ``set``, ``close``; the service calls it through
``asyncio.to_thread``), holds entries framed by :func:`imgopt.cache.encode_entry` (metadata and
a CRC-32 over key, metadata and body; a damaged entry is a miss, never served) and never raises
for trouble in its backend: a shared store that cannot answer is a miss and a skipped write.

One module per store: :mod:`.memory` (the hot tier), :mod:`.disk` (the embedded disk cache),
:mod:`.redis` (shared by replicas) and :mod:`.bucket` (S3, GCS, Azure). :func:`open_store` is the
only place that knows which ``--cache`` means which: the service gets a store and a
``Coordinator`` (who produces a missing entry: this process, or one replica of many).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..cache import Coordinator, LocalCoordinator, MeteredStore, NullStore, Store, TieredStore

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["Coordinator", "Store", "open_store"]


def open_store(settings: Settings) -> tuple[Store, Coordinator]:
    """The store and coordinator for ``--cache`` / ``--cache-tier``.

    disk (default):        DiskStore in --cache-dir (NullStore when --cache-size is 0)
    redis://…:             RedisStore, with --cache-tier disk a DiskStore in front of it
    s3:// gs:// az://…:    BucketStore, likewise, and Redis locks with --lock
    """
    from ..objectstorage import BucketURL

    if isinstance(settings.cache, BucketURL):
        from .bucket import open_bucket_cache

        return open_bucket_cache(settings)
    from .disk import DiskStore

    disk: Store | None = None
    if settings.cache_size > 0 and (settings.cache == "disk" or settings.cache_tier == "disk"):
        disk = MeteredStore(DiskStore(settings.cache_dir, settings.cache_size), "disk")
    if settings.cache == "disk":
        return (disk if disk is not None else NullStore()), LocalCoordinator("disk" if disk is not None else "none")
    from .redis import LOCK_TTL, RedisCoordinator, RedisStore

    assert isinstance(settings.cache, str)
    shared = RedisStore(settings.cache, settings.redis_timeout)
    coordinator = RedisCoordinator(shared, settings.fetch_timeout + settings.transform_timeout + LOCK_TTL + 2)
    far = MeteredStore(shared, "redis")
    return (TieredStore(disk, far) if disk is not None else far), coordinator
