"""Originals from allowed remote URLs (``remotePatterns``, ``domains``).

Connections go only to addresses :mod:`imgopt.netguard` has checked, inside the connection step
(``fetch.GuardedBackend``), unless ``dangerouslyAllowLocalIP``. Redirects are followed by hand,
at most ``maximumRedirects``: each ``Location`` is resolved with ada as ``fetch`` resolves it
and checked against the patterns again (Next.js does not do this).
"""

from __future__ import annotations

import ada_url
import httpx

from .. import netguard
from ..config import ImagesConfig
from ..errors import NOT_ALLOWED, UPSTREAM_INVALID, ImageError
from ..fetch import (
    REDIRECTS,
    GuardedBackend,
    Original,
    get,
    location,
    read_original,
    transport,
    wire_url,
)
from ..params import ImageRequest, RemoteURL, parse_remote_url
from ..patterns import has_remote_match


class HTTPSource:
    def __init__(self, cfg: ImagesConfig) -> None:
        self.cfg = cfg
        allow_private = cfg.dangerously_allow_local_ip
        self.transport = transport(lambda: GuardedBackend(allow_private))

    async def get(self, req: ImageRequest, limit: int) -> Original:
        assert req.remote is not None
        url: RemoteURL = req.remote
        redirects_left = self.cfg.maximum_redirects
        while True:
            try:
                async with get(self.transport, wire_url(url)) as resp:
                    where = location(resp)
                    if resp.status_code in REDIRECTS and where:
                        if redirects_left == 0:
                            raise ImageError(508, UPSTREAM_INVALID)
                        url = self.next_hop(url, where)
                        redirects_left -= 1
                        continue
                    return await read_original(resp, limit, UPSTREAM_INVALID)
            except netguard.ForbiddenAddress:
                raise ImageError(400, NOT_ALLOWED) from None
            except netguard.InvalidHost as e:
                raise ImageError(400, f'"url" parameter is invalid (its host cannot be fetched: {e.reason})') from None
            except netguard.ResolveError:
                raise ImageError(502, f"{UPSTREAM_INVALID} (host could not be resolved)") from None
            except httpx.TimeoutException:
                raise
            except httpx.HTTPError as e:
                raise ImageError(502, f"{UPSTREAM_INVALID} ({type(e).__name__})") from None

    def next_hop(self, current: RemoteURL, where: str) -> RemoteURL:
        """``new URL(location, current)``, as fetch follows a redirect; checked like the url."""
        try:
            nxt = parse_remote_url(ada_url.join_url(current.href, where))
        except (ValueError, ImageError) as e:
            if isinstance(e, ImageError) and e.message == NOT_ALLOWED:  # userinfo in the Location
                raise
            raise ImageError(502, f"{UPSTREAM_INVALID} (bad redirect location)") from None
        if not has_remote_match(self.cfg.domains, self.cfg.remote_patterns, nxt):
            raise ImageError(400, NOT_ALLOWED)
        return nxt

    async def aclose(self) -> None:
        await self.transport.aclose()
