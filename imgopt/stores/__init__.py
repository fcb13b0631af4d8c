"""Where finished variants are kept, behind one small interface: :class:`imgopt.cache.Store`.

A store is synchronous (``get``, ``set``, ``close``; the service calls it through
``asyncio.to_thread``), holds entries framed by :func:`imgopt.cache.encode_entry` (metadata and
a CRC-32 of the body; a damaged entry is a miss, never served) and never raises for trouble in
its backend: a shared store that cannot answer is a miss and a skipped write.

Implementations: memory, disk (imgopt/cache.py) and Redis (imgopt/rediscache.py); one module
here per object store: :mod:`imgopt.stores.bucket` (S3, GCS, Azure). :func:`open_shared`
returns the store and coordinator for ``--cache`` when it is a bucket, else None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..cache import Coordinator, Store

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["Coordinator", "Store", "open_shared"]


def open_shared(settings: Settings) -> tuple[Store, Coordinator] | None:
    from ..objectstorage import BucketURL

    if not isinstance(settings.cache, BucketURL):
        return None
    from .bucket import open_bucket_cache

    return open_bucket_cache(settings)
