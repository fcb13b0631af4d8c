"""What every source of originals shares (imgopt/sources has a module per source).

:class:`Original`, and for HTTP: the transports (with the address guard of :mod:`imgopt.netguard`
inside the connection step, so DNS cannot change between check and connect; one retry of a GET
on a kept-alive connection that turned out dead), Content-Encoding decoded in bounded steps with
the *decoded* bytes counted against ``maximumResponseBody``; for files and buckets:
:func:`local_key`, the one check that keeps a local url under its root.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import httpcore
import httpx

from . import netguard
from .errors import NOT_ALLOWED, UPSTREAM_INVALID, ImageError
from .params import RemoteURL, split_local, strict_unquote

REDIRECTS = {301, 302, 303, 307, 308}
_REQUEST_HEADERS = {
    "accept": "*/*",
    "accept-encoding": "gzip, deflate",
    "user-agent": "imgopt",
}
_MAX_CODINGS = 5
_DECODE_STEP = 1 << 16


@dataclass(frozen=True)
class Original:
    """The upstream bytes and the few upstream headers that matter."""

    body: bytes
    content_type: str | None  # what upstream said; never trusted for detection
    cache_control: str | None
    etag: str  # base64url of upstream's ETag, or of sha256(body)
    weak_etag: bool = False  # upstream's ETag was W/…: it does not name these exact bytes


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def upstream_etag(header: str | None, body: bytes) -> str:
    return b64url(header.encode("utf-8", "replace")) if header else b64url(hashlib.sha256(body).digest())


# The new connections opened for the request in flight (RetryOnStaleConnection's counter).
_NEW_CONNECTIONS: contextvars.ContextVar[list[int]] = contextvars.ContextVar("imgopt_new_connections")


def _count_connection() -> None:
    counter = _NEW_CONNECTIONS.get(None)
    if counter is not None:
        counter[0] += 1


class CountingBackend(httpcore.AnyIOBackend):
    async def connect_tcp(self, *args, **kwargs):
        _count_connection()
        return await super().connect_tcp(*args, **kwargs)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the address in the same step that connects to it."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        _count_connection()
        addrs = await netguard.resolve_checked(host, port, allow_private=self._allow_private)
        error: Exception | None = None
        for _family, ip in addrs:
            try:
                return await self._inner.connect_tcp(
                    ip, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        assert error is not None
        raise error

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def wire_url(url: RemoteURL) -> httpx.URL:
    """The URL handed to httpx, which must mean the same host as ada's parse (the one the
    patterns matched): a host httpx would spell differently, or cannot represent, is refused."""
    try:
        wire = httpx.URL(url.href)
    except httpx.InvalidURL:
        wire = None
    if wire is None or wire.raw_host != url.hostname.strip("[]").encode("ascii"):
        raise ImageError(400, '"url" parameter is invalid (its host cannot be fetched)')
    return wire


def location(resp: httpx.Response) -> str:
    """The Location header as fetch reads it (bytes as Latin-1)."""
    return next((v.decode("latin-1").strip() for k, v in resp.headers.raw if k.lower() == b"location"), "")


class RetryOnStaleConnection(httpx.AsyncBaseTransport):
    """A GET that fails on a reused keep-alive connection before its response head arrives
    (the origin closed it, or left bytes on it) is sent once more, on a new connection, as
    browsers and undici do. Never more than once, and never when the failing connection was new."""

    def __init__(self, make: Callable[[], httpx.AsyncHTTPTransport]) -> None:
        self._make = make
        self._pool = make()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        counter = [0]
        token = _NEW_CONNECTIONS.set(counter)
        try:
            return await self._pool.handle_async_request(request)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            if counter[0] or request.method not in ("GET", "HEAD"):
                raise
        finally:
            _NEW_CONNECTIONS.reset(token)
        once = self._make()
        try:
            response = await once.handle_async_request(request)
        except BaseException:
            await once.aclose()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _ClosingStream(response.stream, once)
        return response

    async def aclose(self) -> None:
        await self._pool.aclose()


class _ClosingStream(httpx.AsyncByteStream):
    """A response body that closes its one-off transport when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, transport: httpx.AsyncBaseTransport) -> None:
        self._stream = stream
        self._transport = transport

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            await self._transport.aclose()


def transport(backend: Callable[[], httpcore.AsyncNetworkBackend]) -> RetryOnStaleConnection:
    """httpx's transport without its client: no redirect handling (the fetcher follows them
    itself, and httpx would parse every Location with its own rules) and no per-step timeouts
    (its default is 5 s): --fetch-timeout bounds the whole fetch."""

    def make() -> httpx.AsyncHTTPTransport:
        transport = httpx.AsyncHTTPTransport(retries=0)
        transport._pool._network_backend = backend()  # httpcore's documented hook
        return transport

    return RetryOnStaleConnection(make)


@contextlib.asynccontextmanager
async def get(transport: httpx.AsyncBaseTransport, url: httpx.URL | str) -> AsyncIterator[httpx.Response]:
    resp = await transport.handle_async_request(httpx.Request("GET", url, headers=_REQUEST_HEADERS))
    try:
        yield resp
    finally:
        await resp.aclose()


class Decoder:
    """Content-Encoding decoding in bounded steps, so a small bomb never expands at once.

    ``feed`` is a generator of pieces of at most 64 KiB each; the reader counts every piece
    before the next one is produced and stops as soon as the limit is passed.
    """

    def __init__(self, encoding: str | None) -> None:
        codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > _MAX_CODINGS:
            raise ImageError(400, f"{UPSTREAM_INVALID} (too many content codings)")
        # An unknown coding leaves the body as it is (as Next does); detection then decides.
        self._codings = [c for c in reversed(codings) if c in ("gzip", "x-gzip", "deflate")]
        self._objs = [
            zlib.decompressobj(zlib.MAX_WBITS if c == "deflate" else 16 + zlib.MAX_WBITS)
            for c in self._codings
        ]
        self._raw: set[int] = set()

    def feed(self, data: bytes, final: bool = False) -> Iterator[bytes]:
        return self._stage(0, data, final)

    def _stage(self, i: int, data: bytes, final: bool) -> Iterator[bytes]:
        if i == len(self._objs):
            if data:
                yield data
            return
        for piece in self._inflate(i, data, final):
            yield from self._stage(i + 1, piece, False)
        if final:
            yield from self._stage(i + 1, b"", True)

    def _inflate(self, i: int, data: bytes, final: bool) -> Iterator[bytes]:
        obj = self._objs[i]
        try:
            while data:
                try:
                    piece = obj.decompress(data, _DECODE_STEP)
                except zlib.error:
                    if self._codings[i] != "deflate" or i in self._raw:
                        raise
                    # "deflate" without the zlib wrapper: some servers send raw DEFLATE.
                    self._raw.add(i)
                    self._objs[i] = obj = zlib.decompressobj(-zlib.MAX_WBITS)
                    piece = obj.decompress(data, _DECODE_STEP)
                self._raw.add(i)  # the wrapper question is settled after the first piece
                yield piece
                data = obj.unconsumed_tail
            if final:
                yield obj.flush()
        except zlib.error:
            raise ImageError(502, f"{UPSTREAM_INVALID} (bad {self._codings[i]} encoding)") from None


async def read_limited(chunks: AsyncIterator[bytes], decoder: Decoder, limit: int, message: str) -> bytes:
    """Read and decode a body, failing with 413 the moment it passes `limit` decoded bytes."""
    buf = bytearray()
    async for raw in chunks:
        for piece in decoder.feed(raw):
            buf += piece
            if len(buf) > limit:
                raise ImageError(413, message)
    for piece in decoder.feed(b"", final=True):
        buf += piece
        if len(buf) > limit:
            raise ImageError(413, message)
    if not buf:
        raise ImageError(400, message)
    return bytes(buf)


def local_key(url: str, base_path: str, asset_prefix: str = "") -> str:
    """The relative path a local url names under the root (``a/b.png``; '' for the root itself).

    ``{basePath}/x`` is ``x`` (Next serves public/x there), and with a path ``assetPrefix``
    ``{assetPrefix}/_next/x`` is ``_next/x`` (where a static export keeps what the prefix serves).

    Decoded once; a NUL, a backslash or a ``..`` segment left after decoding (``%2e%2e``,
    ``..%2f``, ``%5c``) is refused, so no spelling leaves the root. Empty segments are dropped.
    Folders and buckets (imgopt/sources) both read the path from here.
    """
    path, _search = split_local(url)
    if base_path and (path == base_path or path.startswith(base_path + "/")):
        path = path[len(base_path):] or "/"  # Next serves public/x at {basePath}/x
    elif asset_prefix and path.startswith(asset_prefix + "/_next/"):
        path = path[len(asset_prefix):]
    try:
        decoded = strict_unquote(path)
    except ValueError:
        raise ImageError(400, '"url" parameter is invalid') from None
    parts = decoded.split("/")
    if "\x00" in decoded or "\\" in decoded or ".." in parts:
        raise ImageError(400, NOT_ALLOWED)
    return "/".join(p for p in parts if p)


async def read_original(resp: httpx.Response, limit: int, message: str) -> Original:
    """A final (non-redirect) response as an Original: a 2xx body decoded and read within
    ``limit``; a 4xx keeps its status, anything else is a 502, with ``message``."""
    if not 200 <= resp.status_code <= 299:
        raise ImageError(resp.status_code if 400 <= resp.status_code < 500 else 502, message)
    body = await read_limited(resp.aiter_raw(), Decoder(resp.headers.get("content-encoding")), limit, message)
    return original_from(resp, body)


def original_from(resp: httpx.Response, body: bytes) -> Original:
    """The Original of an HTTP response's decoded body: its type, TTL and validators."""
    return Original(
        body=body,
        content_type=resp.headers.get("content-type"),
        cache_control=resp.headers.get("cache-control"),
        etag=upstream_etag(resp.headers.get("etag"), body),
        weak_etag=(resp.headers.get("etag") or "").lstrip().startswith(("W/", "w/")),
    )
