"""Content-coding of compressible responses, as Next.js's compression middleware does it.

Next.js sends every response through the `compression` npm package (next/dist/server/lib/
router-server.js, default options). Of the types /_next/image answers with, mime-db marks SVG,
BMP and ICO compressible (the passthroughs: WebP, AVIF, JPEG, PNG, GIF and ICNS are not). For
those, the package adds ``Accept-Encoding`` to ``Vary``, and when the body is at least 1 KiB,
the request is not HEAD and the client accepts it, it gzips the body (or deflates it when the
client accepts deflate but not gzip). The choice is the `negotiator` package's, ported here with
its JavaScript edge cases (``q`` read with parseFloat; a ``q=0`` does not lower the implicit
identity's quality). ``tests/test_next_parity.py`` compares the outcome with a real `next start`.

Unlike Next, a body is compressed once, not on every response: ``EncodedBodies`` keeps the
compressed variants of cached entries in a bounded LRU (keyed by the entry's cache key, ETag
and coding), makes each one once however many requests want it at the same time, and makes
large ones on a thread, a bounded number at a time. A body too large for that LRU (more than an
eighth of it: 8 MiB with the default --memory-cache-size) is sent uncompressed, so no response
is compressed per hit.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from . import metrics
from .lru import BytesLRU
from .params import js_parse_float

# mime-db's compressible image types (the ones imgopt can send are SVG, BMP and ICO)
COMPRESSIBLE = frozenset({
    "image/svg+xml", "image/bmp", "image/x-ms-bmp", "image/x-icon", "image/vnd.microsoft.icon",
    "image/vnd.adobe.photoshop", "image/vnd.ms-dds",
})
THRESHOLD = 1024  # compression's default: smaller bodies are sent as they are
OFFERED = ("gzip", "deflate", "identity")

_SIMPLE = re.compile(r"^\s*([^\s;]+)\s*(?:;(.*))?$", re.S)


def _js_or(*values: float) -> float:
    """JavaScript's ``a || b || c`` over numbers: the first that is neither 0 nor NaN, else the last."""
    for v in values[:-1]:
        if v and not math.isnan(v):
            return v
    return values[-1]


@dataclass(frozen=True)
class _Spec:
    encoding: str
    q: float
    i: int  # position in the header


@dataclass(frozen=True)
class _Priority:
    q: float
    s: int  # 1 for an exact name, 0 for '*'
    o: int  # position of the matching spec in the header (-1: none)
    i: int  # position in the offered list


def _parse(header: str) -> list[_Spec]:
    specs: list[_Spec] = []
    has_identity = False
    min_quality = 1.0
    parts = header.split(",")
    for i, part in enumerate(parts):
        m = _SIMPLE.match(part.strip())
        if not m:
            continue
        q = 1.0
        if m.group(2):
            for param in m.group(2).split(";"):
                p = param.strip().split("=")
                if p[0] == "q":
                    q = js_parse_float(p[1] if len(p) > 1 else None)
                    break
        spec = _Spec(m.group(1), q, i)
        specs.append(spec)
        has_identity = has_identity or _specify("identity", spec, 0) is not None
        min_quality = min(min_quality, _js_or(q, 1.0))
    if not has_identity:  # identity is acceptable unless named, at the lowest quality given
        specs.append(_Spec("identity", min_quality, len(parts)))
    return specs


def _specify(encoding: str, spec: _Spec, index: int) -> _Priority | None:
    if spec.encoding.lower() == encoding.lower():
        return _Priority(spec.q, 1, spec.i, index)
    if spec.encoding != "*":
        return None
    return _Priority(spec.q, 0, spec.i, index)


def _priority(encoding: str, specs: list[_Spec], index: int) -> _Priority:
    best = _Priority(0.0, 0, -1, index)
    for spec in specs:
        p = _specify(encoding, spec, index)
        if p is not None and _js_or(best.s - p.s, best.q - p.q, best.o - p.o) < 0:
            best = p
    return best


def _compare(a: _Priority, b: _Priority) -> int:
    d = _js_or(b.q - a.q, b.s - a.s, a.o - b.o, a.i - b.i, 0)
    return 0 if math.isnan(d) else (d > 0) - (d < 0)


def preferred(header: str | None, offered: Sequence[str]) -> str | None:
    """`accepts(req).encoding(offered)`: the client's favourite of the offered codings, or None."""
    specs = _parse(header or "")
    ranked = [p for p in (_priority(e, specs, i) for i, e in enumerate(offered)) if p.q > 0]
    ranked.sort(key=functools.cmp_to_key(_compare))
    return offered[ranked[0].i] if ranked else None


def choose(header: str | None) -> str | None:
    """What compression picks: "gzip", "deflate", or None for the body as it is."""
    method = preferred(header, OFFERED)
    if method == "deflate" and preferred(header, ("gzip",)):
        method = preferred(header, ("gzip", "identity"))  # "we really don't prefer deflate"
    return None if method in (None, "identity") else method


def encode(body: bytes, coding: str) -> bytes:
    """zlib's default level, as node's createGzip/createDeflate."""
    return gzip.compress(body, compresslevel=6, mtime=0) if coding == "gzip" else zlib.compress(body, 6)


class _EncodedLRU(BytesLRU[tuple[str, str, int, str], bytes]):
    max_share = 4

    def size_of(self, value: bytes) -> int:
        return len(value)


class EncodedBodies:
    """Compressed bodies of cached entries, made once per (entry, coding) and kept, bounded."""

    inline = 256 << 10  # smaller bodies are compressed on the event loop (faster than a thread hop)

    def __init__(self, max_bytes: int, concurrency: int = 1) -> None:
        self.lru = _EncodedLRU(max_bytes)
        self._concurrency = max(1, concurrency)
        self._slots: asyncio.Semaphore | None = None
        self._making: dict[tuple[str, str, int, str], asyncio.Task[bytes]] = {}

    def accepts(self, body: bytes) -> bool:
        """Whether a body of this size is compressed at all (its compressed form can be kept)."""
        return len(body) <= self.lru.max_bytes // self.lru.max_share

    async def get(self, key: str, etag: str, body: bytes, coding: str) -> bytes:
        """``body`` compressed with ``coding``; made at most once while it stays in the LRU."""
        k = (key, etag, len(body), coding)
        found = self.lru.get(k)
        if found is not None:
            metrics.ENCODED_BODIES.labels(coding, "reused").inc()
            return found
        task = self._making.get(k)
        if task is None:
            task = asyncio.ensure_future(self._make(body, coding))
            self._making[k] = task
            task.add_done_callback(functools.partial(self._done, k))
        else:
            metrics.ENCODED_BODIES.labels(coding, "reused").inc()
        return await asyncio.shield(task)

    async def _make(self, body: bytes, coding: str) -> bytes:
        metrics.ENCODED_BODIES.labels(coding, "made").inc()
        if len(body) <= self.inline:
            return encode(body, coding)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._concurrency)
        async with self._slots:
            return await asyncio.to_thread(encode, body, coding)

    def _done(self, k: tuple[str, str, int, str], task: asyncio.Task[bytes]) -> None:
        self._making.pop(k, None)
        if not task.cancelled() and task.exception() is None:
            self.lru.put(k, task.result())
