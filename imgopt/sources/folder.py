"""Originals read from a folder: ``--local-root DIR`` (a static export's ``out/``, ``public/``).

The key comes from :func:`imgopt.fetch.local_key` (no spelling of ``..`` survives it); the path
is resolved with ``realpath`` and must stay under the resolved root (a symlink that leads out is
refused); the file is opened with ``O_NOFOLLOW | O_NONBLOCK`` and must be a regular file (a FIFO
never blocks); its size is checked before reading and at most ``limit + 1`` bytes are read.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from ..errors import INTERNAL_INVALID, NOT_ALLOWED, ImageError
from ..fetch import Original, local_key, upstream_etag
from ..params import ImageRequest


class FolderSource:
    def __init__(self, root: Path, base_path: str, asset_prefix: str = "") -> None:
        self.root = root
        self.base_path = base_path
        self.asset_prefix = asset_prefix

    async def get(self, req: ImageRequest, limit: int) -> Original:
        return await asyncio.to_thread(self.read, req.href, limit)

    def read(self, url: str, limit: int) -> Original:
        root_real = Path(os.path.realpath(self.root))
        target = Path(os.path.realpath(root_real.joinpath(*local_key(url, self.base_path, self.asset_prefix).split("/"))))
        if target != root_real and root_real not in target.parents:
            raise ImageError(400, NOT_ALLOWED)  # a symlink that leads out of the root
        try:
            fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            raise ImageError(404, INTERNAL_INVALID) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ImageError(404, INTERNAL_INVALID)
            if st.st_size > limit:
                raise ImageError(413, INTERNAL_INVALID)
            with os.fdopen(fd, "rb", closefd=False) as f:
                body = f.read(limit + 1)
        finally:
            os.close(fd)
        if len(body) > limit:
            raise ImageError(413, INTERNAL_INVALID)
        if not body:
            raise ImageError(400, INTERNAL_INVALID)
        return Original(body, None, None, upstream_etag(None, body))

    async def aclose(self) -> None:
        pass
