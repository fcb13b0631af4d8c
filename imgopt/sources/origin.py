"""Originals fetched from the site's origin: ``--origin https://www.example.com`` (or the Next.js
server behind the same proxy). The local url is sent as it is, path and query, as Next hands it
to its own router; the origin is trusted (no address guard), the body is limited like any.
"""

from __future__ import annotations

import httpx

from ..errors import INTERNAL_INVALID, ImageError
from ..fetch import CountingBackend, Original, get, read_original, transport
from ..params import ImageRequest


class OriginSource:
    def __init__(self, origin: str) -> None:
        self.origin = origin.rstrip("/")
        self.transport = transport(CountingBackend)

    async def get(self, req: ImageRequest, limit: int) -> Original:
        try:
            async with get(self.transport, self.origin + req.href) as resp:
                return await read_original(resp, limit, INTERNAL_INVALID)
        except httpx.TimeoutException:
            raise
        except httpx.HTTPError as e:
            raise ImageError(502, f"{INTERNAL_INVALID} ({type(e).__name__})") from None

    async def aclose(self) -> None:
        await self.transport.aclose()
