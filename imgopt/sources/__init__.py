"""Where originals come from, behind one small interface, and the ``Fetcher`` that picks one.

A :class:`Source` gets the original a validated request names, at most ``limit`` bytes of it
(``maximumResponseBody``), and answers with an :class:`~imgopt.fetch.Original` or an
:class:`~imgopt.errors.ImageError` with the status a client should see (404 missing, 413 too
large, 502 trouble upstream, 400 refused).

One module per source: :mod:`.http` (remote URLs), :mod:`.folder` (``--local-root DIR``),
:mod:`.bucket` (``--local-root s3://…``, ``gs://``, ``az://``) and :mod:`.origin` (``--origin``).
:class:`Fetcher` is the only place that knows which: remote urls go to the HTTP source, local
urls to the one ``--local-root`` or ``--origin`` names, and ``--fetch-timeout`` bounds each.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import httpx

from ..errors import UPSTREAM_TIMEOUT, ImageError
from .http import HTTPSource

if TYPE_CHECKING:
    from ..config import Settings
    from ..fetch import Original
    from ..params import ImageRequest

__all__ = ["Fetcher", "Source"]


class Source(Protocol):
    async def get(self, req: ImageRequest, limit: int) -> Original: ...
    async def aclose(self) -> None: ...


def open_local(settings: Settings) -> Source | None:
    """The source of local urls: the ``--local-root`` folder or bucket, else ``--origin``."""
    from ..objectstorage import BucketURL

    base_path, asset_prefix = settings.images.base_path, settings.images.asset_prefix
    if isinstance(settings.local_root, BucketURL):
        from .bucket import BucketSource

        return BucketSource(settings.local_root, settings.fetch_timeout, base_path, asset_prefix)
    if isinstance(settings.local_root, Path):
        from .folder import FolderSource

        return FolderSource(settings.local_root, base_path, asset_prefix)
    if settings.origin:
        from .origin import OriginSource

        return OriginSource(settings.origin)
    return None


class Fetcher:
    """Gets originals for validated requests."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.remote = HTTPSource(settings.images)
        self.local = open_local(settings)

    async def aclose(self) -> None:
        await self.remote.aclose()
        if self.local is not None:
            await self.local.aclose()

    async def fetch(self, req: ImageRequest) -> Original:
        source: Source | None = self.remote if req.remote is not None else self.local
        if source is None:
            raise ImageError(
                400,
                '"url" parameter is a local path, but imgopt has no --local-root or --origin to read it from',
            )
        try:
            async with asyncio.timeout(self._settings.fetch_timeout):
                return await source.get(req, self._settings.images.maximum_response_body)
        except (TimeoutError, httpx.TimeoutException):
            raise ImageError(504, UPSTREAM_TIMEOUT) from None
