"""A real HTTP/1.1 origin server for the imgopt test-suite, including hostile behaviours.

Standard library only.  The server runs on asyncio raw streams in a background thread
(its own event loop), bound to 127.0.0.1 on a port chosen by the OS (or ``port=N``).
Every connection is its own task, so a slow or hanging request never blocks another.

Usage in tests::

    with Origin(root=tmp_path) as origin:
        httpx.get(origin.base_url + "/a.png")
        assert origin.hits["/a.png"] == 1

As a script (e2e / benchmarks)::

    python tests/origin.py --root DIR [--port N]

prints ``http://127.0.0.1:PORT`` as its first stdout line and serves until SIGTERM/SIGINT.

Query controls, accepted on ANY path and combinable:

    ?delay=MS            sleep before sending the response headers (capped at 60 s)
    ?status=N            respond with status N (missing file + status -> small text body)
    ?location=URL        set a Location header
    ?cc=VALUE            Cache-Control header
    ?ct=VALUE            override Content-Type (``?ct=`` with an empty value removes it)
    ?etag=V              ETag header (with If-None-Match -> 304 on plain responses)

Special paths (see the module's ``_dispatch`` for details):

    /redirect-loop                   308 Location: /redirect-loop forever
    /redirect?to=URL&code=302        redirect to URL
    /chain/N/<file>                  N redirects, then <file> (query string is preserved)
    /slow-body/<file>?chunk_delay=MS&chunk_size=B   headers now, body trickled
    /lying-length/<file>?claim=N     Content-Length: N (default real//2), full body, close
    /short-body/<file>               real Content-Length, only half the body, then close
    /chunked/<file>?chunk_size=B     Transfer-Encoding: chunked, no Content-Length
    /gzip/<file>, /br/<file>         Content-Encoding gzip / br (br only if ``brotli`` importable)
    /gzip-bomb?size=BYTES            tiny gzip body inflating to BYTES zeros (default 200 MB)
    /infinite                        never-ending chunked body starting with a PNG signature
    /reset/<file>?after=B            headers + part of the body, then TCP RST
    /hang                            reads the request, never answers (ends on client close / 60 s)
    /stateful/<name>                 bodies registered with ``set_stateful`` (cycling)
    /echo-headers                    JSON object of the request headers
    /no-header                       body ``foo`` with no Content-Type
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import email.utils
import functools
import gzip
import json
import logging
import mimetypes
import pathlib
import random
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from http import HTTPStatus
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

try:  # optional, never a dependency
    import brotli as _brotli  # type: ignore
except Exception:  # pragma: no cover - depends on environment
    _brotli = None

HAS_BROTLI = _brotli is not None

__all__ = ["Origin", "RequestRecord", "HAS_BROTLI", "PNG_SIGNATURE", "main"]

log = logging.getLogger("tests.origin")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

MAX_HANG = 60.0            # /hang, /infinite and every other open-ended wait end after this
IDLE_TIMEOUT = 30.0        # waiting for (the next) request head on a connection
MAX_DELAY_MS = 60_000      # ?delay cap
MAX_CHUNK_DELAY_MS = 10_000
MAX_REQUEST_BODY = 16 * 1024 * 1024
HEAD_LIMIT = 64 * 1024
DEFAULT_BOMB_SIZE = 200_000_000
MAX_BOMB_SIZE = 1 << 34

_EXTRA_TYPES = {
    ".png": "image/png",
    ".apng": "image/apng",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jfif": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".jxl": "image/jxl",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".json": "application/json",
    ".html": "text/html",
    ".txt": "text/plain",
}
_MIME = mimetypes.MimeTypes()  # built-in table only: deterministic, ignores /etc/mime.types


def guess_type(name: str) -> str | None:
    suffix = pathlib.PurePosixPath(name).suffix.lower()
    if suffix in _EXTRA_TYPES:
        return _EXTRA_TYPES[suffix]
    return _MIME.guess_type("x" + suffix, strict=False)[0] if suffix else None


def sniff_type(data: bytes) -> str | None:
    if data.startswith(PNG_SIGNATURE):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "image/avif"
    if data.lstrip()[:5].lower() in (b"<?xml", b"<svg "):
        return "image/svg+xml"
    return None


def _norm_path(path: str) -> str:
    """Path key normalisation used for hits / set_headers / set_stateful look-ups."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    path = unquote(path)
    if not path.startswith("/"):
        path = "/" + path
    return path


class _PathCounter(collections.Counter):
    """Counter keyed by percent-decoded path; look-ups also accept encoded paths or a query."""

    def __missing__(self, key):
        if isinstance(key, str):
            nk = _norm_path(key)
            if nk != key and dict.__contains__(self, nk):
                return dict.__getitem__(self, nk)
        return 0


@dataclasses.dataclass
class RequestRecord:
    method: str
    path: str                 # percent-decoded path, without query
    query: str                # raw query string ('' if none)
    headers: dict[str, str]   # lower-case names; repeated headers joined with ', '
    raw_path: str = ""        # path as sent on the wire (still percent-encoded)
    params: dict[str, str] = dataclasses.field(default_factory=dict)  # parsed query (last wins)
    http_version: str = "HTTP/1.1"
    body: bytes = b""
    time: float = 0.0         # time.monotonic() when the request head was parsed


class _BadRequest(Exception):
    def __init__(self, status: int, msg: str):
        super().__init__(msg)
        self.status = status
        self.msg = msg


class _Req:
    __slots__ = ("method", "path", "raw_path", "query", "params", "headers", "version", "keep_alive", "body")


class _Headers:
    """Ordered, case-insensitive response header set."""

    def __init__(self, items=None):
        self._d: dict[str, tuple[str, str]] = {}
        for k, v in (items or {}).items() if isinstance(items, dict) else (items or ()):
            self.set(k, v)

    def set(self, name: str, value) -> None:
        if value is None:
            self._d.pop(name.lower(), None)
        else:
            self._d[name.lower()] = (name, str(value))

    def pop(self, name: str) -> None:
        self._d.pop(name.lower(), None)

    def get(self, name: str):
        v = self._d.get(name.lower())
        return v[1] if v else None

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._d

    def items(self):
        return list(self._d.values())


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def _enc(s: str) -> bytes:
    s = s.replace("\r", "").replace("\n", "")
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        return s.encode("utf-8")


def _head_bytes(status: int, headers: _Headers) -> bytes:
    out = [b"HTTP/1.1 %d %s\r\n" % (status, _enc(_reason(status)))]
    for name, value in headers.items():
        out.append(_enc(name) + b": " + _enc(value) + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@functools.lru_cache(maxsize=8)
def _gzip_bomb(size: int) -> bytes:
    """gzip member that inflates to `size` zero bytes, built without deflating all of it.

    A raw-deflate segment ending in Z_FULL_FLUSH is byte aligned and references nothing
    before it, so it can be repeated verbatim; a final small segment terminates the stream.
    """
    seg_len = 1 << 20
    zeros = bytes(seg_len)
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    seg = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    n, rem = divmod(size, seg_len)
    c2 = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    tail = c2.compress(bytes(rem)) + c2.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(rem), crc)
    header = b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + b"\x02\xff"
    trailer = struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)
    return header + seg * n + tail + trailer


class Origin:
    """Runs in a background thread (its own event loop) on 127.0.0.1, port chosen by the OS."""

    HAS_BROTLI = HAS_BROTLI
    host = "127.0.0.1"

    def __init__(self, root: pathlib.Path | str | None = None, port: int = 0):
        self.root = pathlib.Path(root) if root is not None else None
        self._root_resolved = self.root.resolve() if self.root is not None else None
        self._want_port = port
        self.port: int = 0
        self.base_url: str = ""
        self.hits: collections.Counter[str] = _PathCounter()
        self.requests: list[RequestRecord] = []
        self.max_hang = MAX_HANG
        self.idle_timeout = IDLE_TIMEOUT
        self._extra_headers: dict[str, dict[str, str]] = {}
        self._stateful: dict[str, list[bytes]] = {}
        self._stateful_idx: dict[str, int] = {}
        self._files: dict[str, tuple[bytes, str | None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._active = 0
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    # ------------------------------------------------------------------ public API
    def start(self) -> "Origin":
        if self._thread is not None:
            return self
        self._started.clear()
        self._thread = threading.Thread(target=self._run, name=f"origin-{id(self):x}", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("origin server did not start")
        if self._start_error is not None:
            self._thread.join(1)
            self._thread = None
            raise self._start_error
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            fut.result(timeout=1.5)
        except Exception:
            pass
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:
            pass
        thread.join(timeout=2)
        self._thread = None

    def __enter__(self) -> "Origin":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset_counters(self) -> None:
        self.hits.clear()
        self.requests.clear()

    def set_headers(self, path: str, headers: dict[str, str]) -> None:
        """Extra response headers for a path (applied last, before query overrides)."""
        self._extra_headers[_norm_path(path)] = dict(headers)

    def set_stateful(self, path: str, bodies: list[bytes]) -> None:
        """Serve a different body on each request to `path`, cycling.

        `path` with a leading '/' is an exact request path (any path works, it takes precedence
        over everything else); a bare name means '/stateful/<name>'.  A request for
        '/stateful/<name>' also finds bodies registered as '/<name>'.
        """
        if not bodies:
            raise ValueError("bodies must not be empty")
        key = _norm_path(path) if path.startswith("/") else "/stateful/" + unquote(path)
        self._stateful[key] = [bytes(b) for b in bodies]
        self._stateful_idx[key] = 0

    def add_file(self, path: str, data: bytes, content_type: str | None = None) -> None:
        """Serve an in-memory file at `path` (takes precedence over `root`)."""
        self._files[_norm_path(path)] = (bytes(data), content_type)

    def url(self, path: str, **query) -> str:
        """base_url + percent-encoded `path` (+ urlencoded query)."""
        u = self.base_url + quote(path if path.startswith("/") else "/" + path, safe="/")
        if query:
            u += "?" + urlencode({k: str(v) for k, v in query.items()})
        return u

    @property
    def active_connections(self) -> int:
        """Number of connection handlers currently running."""
        return self._active

    # ------------------------------------------------------------------ loop / lifecycle
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle_conn, self.host, self._want_port,
                                     limit=HEAD_LIMIT, backlog=512, reuse_address=True))
            self.port = self._server.sockets[0].getsockname()[1]
            self.base_url = f"http://{self.host}:{self.port}"
        except BaseException as e:  # noqa: BLE001
            self._start_error = e
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                for w in list(self._writers):
                    w.transport.abort()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=0.5))
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception:
                pass
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for w in list(self._writers):
            try:
                w.transport.abort()
            except Exception:
                pass
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=0.5)

    # ------------------------------------------------------------------ connection handling
    async def _handle_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self._writers.add(writer)
        self._active += 1
        graceful = True
        try:
            while True:
                try:
                    req = await self._read_request(reader)
                except _BadRequest as e:
                    await self._simple(writer, None, e.status, e.msg.encode(), "text/plain", keep=False)
                    break
                if req is None:
                    break
                keep = await self._dispatch(req, reader, writer)
                if not (keep and req.keep_alive):
                    break
        except asyncio.CancelledError:
            # Swallowed on purpose: this is the top-level task of the connection, and on 3.11
            # asyncio.streams calls task.exception() on it, which raises for a cancelled task.
            graceful = False
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            graceful = False
        except Exception:  # pragma: no cover - a bug in the origin itself
            log.exception("origin handler crashed")
            graceful = False
        finally:
            self._active -= 1
            self._tasks.discard(task)
            self._writers.discard(writer)
            if graceful and not writer.transport.is_closing():
                writer.close()
                try:
                    await asyncio.wait_for(writer.wait_closed(), 5)
                except BaseException:
                    writer.transport.abort()
            else:
                writer.transport.abort()

    async def _read_request(self, reader: asyncio.StreamReader) -> _Req | None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_timeout)
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError:
            raise _BadRequest(431, "request head too large")
        except (TimeoutError, asyncio.TimeoutError):
            return None
        head = head.lstrip(b"\r\n")
        if not head.strip():
            return None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _BadRequest(400, "bad request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(400, "bad header line")
            name = name.lower()
            value = value.strip()
            headers[name] = headers[name] + ", " + value if name in headers else value
        if target.startswith(("http://", "https://")):
            sp = urlsplit(target)
            target = (sp.path or "/") + ("?" + sp.query if sp.query else "")
        target = target.split("#", 1)[0]
        raw_path, _, query = target.partition("?")
        try:
            path = unquote(raw_path, errors="strict")
        except UnicodeDecodeError:
            path = unquote(raw_path, errors="replace")
        body = b""
        if "transfer-encoding" in headers:
            keep_alive = False  # request bodies with chunked encoding are not parsed
        else:
            keep_alive = True
            cl = headers.get("content-length")
            if cl:
                try:
                    n = int(cl)
                except ValueError:
                    raise _BadRequest(400, "bad content-length")
                if n < 0 or n > MAX_REQUEST_BODY:
                    raise _BadRequest(413, "request body too large")
                body = await asyncio.wait_for(reader.readexactly(n), self.idle_timeout)
        conn = headers.get("connection", "").lower()
        if version != "HTTP/1.1" or "close" in conn:
            keep_alive = False
        req = _Req()
        req.method = method.upper()
        req.path = path
        req.raw_path = raw_path
        req.query = query
        req.params = dict(parse_qsl(query, keep_blank_values=True))
        req.headers = headers
        req.version = version
        req.keep_alive = keep_alive
        req.body = body
        self.hits[path] = dict.get(self.hits, path, 0) + 1
        self.requests.append(RequestRecord(
            method=req.method, path=path, query=query, headers=dict(headers), raw_path=raw_path,
            params=dict(req.params), http_version=version, body=body, time=time.monotonic()))
        return req

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _int_param(req: _Req, name: str, default: int, lo: int, hi: int) -> int:
        raw = req.params.get(name)
        if raw is None or raw == "":
            return default
        try:
            v = int(float(raw))
        except ValueError:
            raise _BadRequest(400, f"bad {name}")
        return max(lo, min(hi, v))

    def _finalize(self, req: _Req | None, status: int, headers: _Headers,
                  file_path: str | None = None) -> int:
        """Apply set_headers (file path, then request path) and query overrides; return status."""
        if req is None:
            return status
        for key in (file_path, req.path):
            extra = self._extra_headers.get(key) if key else None
            if extra:
                for k, v in extra.items():
                    headers.set(k, v)
        p = req.params
        if "cc" in p:
            headers.set("Cache-Control", p["cc"])
        if "ct" in p:
            headers.set("Content-Type", p["ct"] or None)
        if "etag" in p:
            headers.set("ETag", p["etag"])
        if "location" in p:
            headers.set("Location", p["location"])
        if "status" in p:
            try:
                status = max(100, min(999, int(p["status"])))
            except ValueError:
                pass
        return status

    def _base_headers(self, content_type: str | None, keep: bool, length: int | None) -> _Headers:
        h = _Headers()
        h.set("Date", email.utils.formatdate(usegmt=True))
        h.set("Server", "imgopt-test-origin")
        if content_type:
            h.set("Content-Type", content_type)
        if length is not None:
            h.set("Content-Length", length)
        h.set("Connection", "keep-alive" if keep else "close")
        return h

    async def _simple(self, writer, req: _Req | None, status: int, body: bytes,
                      content_type: str | None, keep: bool = True, file_path: str | None = None,
                      extra: dict[str, str] | None = None, conditional: bool = False) -> bool:
        """Send a complete response; returns keep-alive."""
        keep = keep and (req is None or req.keep_alive)
        h = self._base_headers(content_type, keep, len(body))
        for k, v in (extra or {}).items():
            h.set(k, v)
        status = self._finalize(req, status, h, file_path)
        if (conditional and req is not None and status == 200 and "status" not in req.params
                and h.get("ETag") and _etag_match(req.headers.get("if-none-match"), h.get("ETag"))):
            status = 304
        if status == 304 or status == 204 or 100 <= status < 200:
            body = b""
            h.pop("Content-Length")
            if status == 304:
                h.pop("Content-Type")
        send_body = req is None or req.method != "HEAD"
        writer.write(_head_bytes(status, h) + (body if send_body else b""))
        await writer.drain()
        return keep

    async def _stream_head(self, writer, req: _Req, status: int, h: _Headers,
                           file_path: str | None = None) -> bool:
        """Write the header block of a streaming response; returns False for HEAD (no body)."""
        status = self._finalize(req, status, h, file_path)
        writer.write(_head_bytes(status, h))
        await writer.drain()
        return req.method != "HEAD"

    def _load(self, path: str) -> tuple[bytes, str] | None:
        """Look a file up (in-memory first, then under root). Returns (data, content_type)."""
        mem = self._files.get(path)
        if mem is not None:
            data, ct = mem
            return data, ct or guess_type(path) or "application/octet-stream"
        if self._root_resolved is None or "\x00" in path:
            return None
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if not parts or any(p == ".." for p in parts):
            return None
        try:
            real = self._root_resolved.joinpath(*parts).resolve(strict=True)
            if not real.is_relative_to(self._root_resolved) or not real.is_file():
                return None
            data = real.read_bytes()
        except (OSError, ValueError):
            return None
        return data, guess_type(real.name) or "application/octet-stream"

    async def _not_found(self, writer, req: _Req, what: str | None = None) -> bool:
        if "status" in req.params:
            code = self._int_param(req, "status", 404, 100, 999)
            return await self._simple(writer, req, code, b"status %d\n" % code, "text/plain")
        body = (b"<!DOCTYPE html><html><head><title>404 Not Found</title></head>"
                b"<body><h1>404 Not Found</h1></body></html>\n")
        return await self._simple(writer, req, 404, body, "text/html; charset=utf-8")

    def _sub(self, req: _Req, prefix: str) -> str:
        return "/" + req.path[len(prefix):].lstrip("/")

    # ------------------------------------------------------------------ dispatch
    async def _dispatch(self, req: _Req, reader, writer) -> bool:
        try:
            delay = self._int_param(req, "delay", 0, 0, MAX_DELAY_MS)
            if delay:
                await asyncio.sleep(delay / 1000)
            return await self._route(req, reader, writer)
        except _BadRequest as e:
            return await self._simple(writer, req, e.status, e.msg.encode() + b"\n", "text/plain",
                                      keep=False)

    async def _route(self, req: _Req, reader, writer) -> bool:
        path = req.path
        if path in self._stateful:
            return await self._serve_stateful(req, writer, path)
        if path == "/redirect-loop":
            return await self._simple(writer, req, 308, b"", None, extra={"Location": "/redirect-loop"})
        if path == "/redirect":
            to = req.params.get("to")
            if not to:
                raise _BadRequest(400, "missing ?to=")
            code = self._int_param(req, "code", 302, 300, 399)
            return await self._simple(writer, req, code, b"", None, extra={"Location": to})
        if path.startswith("/chain/"):
            return await self._serve_chain(req, writer)
        if path.startswith("/stateful/"):
            alt = self._sub(req, "/stateful/")
            if alt in self._stateful:
                return await self._serve_stateful(req, writer, alt)
            return await self._not_found(writer, req)
        if path == "/echo-headers":
            body = json.dumps(req.headers, sort_keys=True).encode()
            return await self._simple(writer, req, 200, body, "application/json")
        if path == "/no-header":
            return await self._simple(writer, req, 200, b"foo", None)
        if path == "/gzip-bomb":
            return await self._serve_bomb(req, writer)
        if path == "/infinite":
            return await self._serve_infinite(req, writer)
        if path == "/hang":
            return await self._serve_hang(req, reader)
        for prefix, handler in (
            ("/slow-body/", self._serve_slow_body),
            ("/lying-length/", self._serve_lying_length),
            ("/short-body/", self._serve_short_body),
            ("/chunked/", self._serve_chunked),
            ("/gzip/", self._serve_gzip),
            ("/br/", self._serve_br),
            ("/reset/", self._serve_reset),
        ):
            if path.startswith(prefix):
                fpath = self._sub(req, prefix)
                found = self._load(fpath)
                if found is None:
                    return await self._not_found(writer, req)
                return await handler(req, writer, fpath, *found)
        found = self._load(path)
        if found is None:
            return await self._not_found(writer, req)
        data, ctype = found
        return await self._simple(writer, req, 200, data, ctype, file_path=path, conditional=True)

    # ------------------------------------------------------------------ special handlers
    async def _serve_stateful(self, req: _Req, writer, key: str) -> bool:
        bodies = self._stateful[key]
        i = self._stateful_idx.get(key, 0)
        if req.method != "HEAD":
            self._stateful_idx[key] = (i + 1) % len(bodies)
        body = bodies[i % len(bodies)]
        ctype = guess_type(key) or sniff_type(body) or "application/octet-stream"
        return await self._simple(writer, req, 200, body, ctype, file_path=key, conditional=True)

    async def _serve_chain(self, req: _Req, writer) -> bool:
        rest = req.path[len("/chain/"):]
        n_str, _, file_part = rest.partition("/")
        try:
            n = int(n_str)
        except ValueError:
            return await self._not_found(writer, req)
        if n <= 0:
            fpath = "/" + file_part
            found = self._load(fpath)
            if found is None:
                return await self._not_found(writer, req)
            return await self._simple(writer, req, 200, found[0], found[1], file_path=fpath,
                                      conditional=True)
        raw_rest = req.raw_path.split("/", 3)[3] if req.raw_path.count("/") >= 3 else ""
        loc = f"/chain/{n - 1}/{raw_rest}" if n > 1 else f"/{raw_rest}"
        if req.query:
            loc += "?" + req.query
        code = self._int_param(req, "code", 302, 300, 399)
        return await self._simple(writer, req, code, b"", None, extra={"Location": loc})

    async def _serve_slow_body(self, req: _Req, writer, fpath: str, data: bytes, ctype: str) -> bool:
        chunk_delay = self._int_param(req, "chunk_delay", 100, 0, MAX_CHUNK_DELAY_MS) / 1000
        chunk_size = self._int_param(req, "chunk_size", 1024, 1, 1 << 24)
        h = self._base_headers(ctype, False, len(data))
        if await self._stream_head(writer, req, 200, h, fpath):
            for off in range(0, len(data), chunk_size):
                await asyncio.sleep(chunk_delay)
                writer.write(data[off:off + chunk_size])
                await writer.drain()
        return False

    async def _serve_lying_length(self, req: _Req, writer, fpath: str, data: bytes, ctype: str) -> bool:
        claim = self._int_param(req, "claim", len(data) // 2, 0, 1 << 62)
        h = self._base_headers(ctype, False, claim)
        if await self._stream_head(writer, req, 200, h, fpath):
            writer.write(data)  # the real body regardless of the claim, then close
            await writer.drain()
        return False

    async def _serve_short_body(self, req: _Req, writer, fpath: str, data: bytes, ctype: str) -> bool:
        h = self._base_headers(ctype, False, len(data))
        if await self._stream_head(writer, req, 200, h, fpath):
            writer.write(data[: len(data) // 2])
            await writer.drain()
        return False

    async def _serve_chunked(self, req: _Req, writer, fpath: str, data: bytes, ctype: str) -> bool:
        chunk_size = self._int_param(req, "chunk_size", 4096, 1, 1 << 24)
        chunk_delay = self._int_param(req, "chunk_delay", 0, 0, MAX_CHUNK_DELAY_MS) / 1000
        h = self._base_headers(ctype, req.keep_alive, None)
        h.set("Transfer-Encoding", "chunked")
        if await self._stream_head(writer, req, 200, h, fpath):
            for off in range(0, len(data), chunk_size):
                if chunk_delay:
                    await asyncio.sleep(chunk_delay)
                writer.write(_chunk(data[off:off + chunk_size]))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        return req.keep_alive

    async def _serve_gzip(self, req: _Req, writer, fpath: str, data: bytes, ctype: str) -> bool:
        body = gzip.compress(data, compresslevel=6, mtime=0)
        return await self._simple(writer, req, 200, body, ctype, file_path=fpath,
                                  extra={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})

    async def _serve_br(self, req: _Req, writer, fpath: str, data: bytes, ctype: str) -> bool:
        if _brotli is None:
            return await self._simple(writer, req, 404, b"brotli module not available\n", "text/plain")
        body = _brotli.compress(data)
        return await self._simple(writer, req, 200, body, ctype, file_path=fpath,
                                  extra={"Content-Encoding": "br", "Vary": "Accept-Encoding"})

    async def _serve_bomb(self, req: _Req, writer) -> bool:
        size = self._int_param(req, "size", DEFAULT_BOMB_SIZE, 0, MAX_BOMB_SIZE)
        body = await asyncio.to_thread(_gzip_bomb, size)
        return await self._simple(writer, req, 200, body, "image/png",
                                  extra={"Content-Encoding": "gzip"})

    async def _serve_infinite(self, req: _Req, writer) -> bool:
        h = self._base_headers("image/png", False, None)
        h.set("Transfer-Encoding", "chunked")
        if not await self._stream_head(writer, req, 200, h):
            return False
        block = random.Random(0x1D6).randbytes(16 * 1024)

        async def pump() -> None:
            writer.write(_chunk(PNG_SIGNATURE + block[: 1024 - len(PNG_SIGNATURE)]))
            await writer.drain()
            while True:  # ends when the client goes away (drain raises) or on timeout
                writer.write(_chunk(block))
                await writer.drain()

        try:
            await asyncio.wait_for(pump(), self.max_hang)
        except asyncio.TimeoutError:
            pass
        return False

    async def _serve_hang(self, req: _Req, reader) -> bool:
        async def drain_input() -> None:
            while await reader.read(65536):
                pass  # discard anything the client sends; EOF ends the hang

        try:
            await asyncio.wait_for(drain_input(), self.max_hang)
        except asyncio.TimeoutError:
            pass
        return False

    async def _serve_reset(self, req: _Req, writer, fpath: str, data: bytes, ctype: str) -> bool:
        after = self._int_param(req, "after", len(data) // 2, 0, len(data))
        h = self._base_headers(ctype, False, len(data))
        if await self._stream_head(writer, req, 200, h, fpath):
            writer.write(data[:after])
            await writer.drain()
        await asyncio.sleep(0.05)  # let the partial body reach the client before the RST
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        writer.transport.abort()
        return False


def _etag_match(if_none_match: str | None, etag: str | None) -> bool:
    if not if_none_match or not etag:
        return False
    if if_none_match.strip() == "*":
        return True

    def norm(t: str) -> str:
        t = t.strip()
        return t[2:] if t.startswith("W/") else t

    target = norm(etag)
    return any(norm(t) == target for t in if_none_match.split(","))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="imgopt test origin server")
    ap.add_argument("--root", type=pathlib.Path, default=None, help="directory to serve")
    ap.add_argument("--port", type=int, default=0, help="port (default: chosen by the OS)")
    args = ap.parse_args(argv)
    if args.root is not None and not args.root.is_dir():
        ap.error(f"--root {args.root} is not a directory")
    done = threading.Event()

    def on_signal(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    origin = Origin(root=args.root, port=args.port).start()
    print(origin.base_url, flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        origin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
