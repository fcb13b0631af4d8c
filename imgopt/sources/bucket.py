"""Originals read from a bucket: ``--local-root s3://bucket/prefix`` (also ``gs://``, ``az://``).

The same guarantees as a folder: the key comes from :func:`imgopt.fetch.local_key` (no spelling
of ``..`` survives it) and is joined under the prefix by obstore, which also refuses ``.``/``..``
segments; ``maximumResponseBody`` is checked against the size in the GET response's metadata
before the body is read (and again while reading); the ETag is the object's. A missing object is
a 404 as for a missing file; refused credentials and an unreachable store are a 502 whose
message says which.
"""

from __future__ import annotations

import logging

from ..errors import INTERNAL_INVALID, ImageError
from ..fetch import Original, local_key, upstream_etag
from ..objectstorage import BucketURL, connect, describe, is_missing, is_refused
from ..params import ImageRequest

log = logging.getLogger("imgopt.sources")


class BucketSource:
    def __init__(self, url: BucketURL, timeout: float, base_path: str = "", asset_prefix: str = "") -> None:
        self.url = url
        self.base_path = base_path
        self.asset_prefix = asset_prefix
        self._store = connect(url, timeout, retries=1)

    async def get(self, req: ImageRequest, limit: int) -> Original:
        return await self.get_key(local_key(req.href, self.base_path, self.asset_prefix), limit)

    async def get_key(self, key: str, limit: int) -> Original:
        import obstore
        from obstore.exceptions import InvalidPathError

        if not key:
            raise ImageError(404, INTERNAL_INVALID)  # the prefix itself is no object
        try:
            result = await obstore.get_async(self._store, key)
            meta = result.meta
            if meta["size"] > limit:
                raise ImageError(413, INTERNAL_INVALID)  # the body is never read
            if meta["size"] == 0:
                raise ImageError(400, INTERNAL_INVALID)
            body = bytearray()
            async for chunk in result.stream(min_chunk_size=1 << 16):
                body += chunk
                if len(body) > limit:
                    raise ImageError(413, INTERNAL_INVALID)
        except ImageError:
            raise
        except InvalidPathError:
            raise ImageError(400, INTERNAL_INVALID) from None
        except Exception as e:  # noqa: BLE001 - obstore's errors, sorted into what a client sees
            if is_missing(e):
                raise ImageError(404, INTERNAL_INVALID) from None
            why = describe(e)
            if is_refused(e):
                log.error("%s refused the request for %s: %s", self.url, key, why)
            raise ImageError(502, f"{INTERNAL_INVALID} (bucket: {why})") from None
        if not body:
            raise ImageError(400, INTERNAL_INVALID)
        attrs = result.attributes or {}
        return Original(
            body=bytes(body),
            content_type=attrs.get("Content-Type"),
            cache_control=attrs.get("Cache-Control"),  # the object's Cache-Control sets the TTL, as an origin's
            etag=upstream_etag(meta.get("e_tag"), bytes(body)),
        )

    async def aclose(self) -> None:
        pass
