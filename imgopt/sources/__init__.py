"""Where originals of local urls (``/photos/a.jpg``) come from, behind one small interface.

A :class:`Source` gets the object at a relative key that :func:`imgopt.fetch.local_key` has
already checked (decoded once, no ``..``, no backslash, no NUL: it cannot leave the root) and
answers with an :class:`~imgopt.fetch.Original` or an :class:`~imgopt.errors.ImageError`
(404 missing, 413 larger than ``limit``, 502 store trouble). ``Fetcher`` delegates to it.

Implementations, one module each: :mod:`imgopt.sources.bucket` (S3, GCS, Azure). The folder
(``--local-root DIR``), the site's origin and remote URLs are still read by imgopt/fetch.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..config import Settings
    from ..fetch import Original


class Source(Protocol):
    async def get(self, key: str, limit: int) -> Original: ...
    async def aclose(self) -> None: ...


def open_source(settings: Settings) -> Source | None:
    """The source for ``--local-root`` when it is not a folder (a bucket URL), else None."""
    from ..objectstorage import BucketURL

    if isinstance(settings.local_root, BucketURL):
        from .bucket import BucketSource

        return BucketSource(settings.local_root, settings.fetch_timeout)
    return None
