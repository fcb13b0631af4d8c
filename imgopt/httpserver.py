"""The HTTP/1.1 server imgopt runs: uvicorn's httptools protocol with the limits it lacks.

uvicorn bounds neither the request-header bytes (httptools keeps appending a header that never
ends) nor the time a request's headers may take, and it keeps every accepted connection. This
protocol adds, per connection:

* ``max_header_bytes``: the request line and headers of one request; more is answered 431 and
  the connection closed (at most one socket read, 256 KiB, is taken past the limit).
* ``header_timeout``: from the connection's start (or the first byte of a later request) to
  the end of the headers; a request still incomplete then gets 408 and is closed, a connection
  that sent nothing is closed. The deadline is not extended by bytes that trickle in.
* ``max_connections``: at the cap, the connection that has waited longest without a request
  in progress (idle keep-alive or half-sent headers) is closed to make room, so a crowd of
  idle or half-sent connections can never keep a new client out; when every connection has a
  request in progress the new one is answered 503 (Retry-After: 1) and closed.

The keep-alive idle timeout is uvicorn's own (``timeout_keep_alive``). Each rejection is
counted in ``imgopt_http_rejected_total{reason}``. A reverse proxy in front (README) remains
the first line for slow clients and TLS; these limits keep one process safe without one.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import metrics

_LINGER = 1.0  # seconds a rejected connection is kept open so the client can read the answer
_DISCARD_MAX = 256 << 10  # bytes read and dropped after a rejection before closing at once


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = 16 << 10  # as Node's --max-http-header-size default (Next answers 431 too)
    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0  # as Node's server.keepAliveTimeout default
    max_connections: int = 1024
    drain_timeout: float = 20.0


def default_max_connections() -> int:
    """1024, or half the open-file limit when that is lower (leaving files for the cache, the
    workers and the upstream connections)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(16, min(1024, soft // 2))


def raise_open_file_limit(cap: int = 1 << 16) -> None:
    """Raise the soft open-file limit to the hard one (at most ``cap``), as Go programs do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass


def _response(status: int, reason: str, message: str, extra: bytes = b"") -> bytes:
    body = message.encode("ascii")
    return (f"HTTP/1.1 {status} {reason}\r\n".encode("ascii")
            + b"content-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\nconnection: close\r\n"
            + extra + b"content-length: " + str(len(body)).encode("ascii") + b"\r\n\r\n" + body)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header-size, header-time and connection-count limits."""

    limits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: Any = None
        self._linger_timer: Any = None
        self._in_headers = False
        self._header_bytes = 0
        self._got_bytes = False
        self._began = False
        self._completed = False
        self._rejected = False
        self._discarded = 0
        self._waiting_since = time.monotonic()

    @classmethod
    def with_limits(cls, limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
        return type("GuardedHttpToolsProtocol", (cls,), {"limits": limits})

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._evict_one():
            metrics.HTTP_REJECTED.labels("connections").inc()
            self._reject(503, "Service Unavailable", "Too many connections; retry shortly\n", b"retry-after: 1\r\n")
            return
        self._start_headers(got_bytes=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    def _evictable(self) -> bool:
        """Nothing in progress: waiting for (the rest of) a request's headers, or idle."""
        if self._rejected or self.transport is None or self.transport.is_closing():
            return False
        return self._in_headers or self.cycle is None or self.cycle.response_complete

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest without a request in progress."""
        oldest: GuardedHttpToolsProtocol | None = None
        for conn in self.connections:
            if conn is not self and isinstance(conn, GuardedHttpToolsProtocol) and conn._evictable():
                if oldest is None or conn._waiting_since < oldest._waiting_since:
                    oldest = conn
        if oldest is None:
            return False
        metrics.HTTP_REJECTED.labels("evicted").inc()
        oldest._close_waiting()
        return True

    def _close_waiting(self) -> None:
        if self._in_headers and self._got_bytes:
            self._reject(408, "Request Timeout", "Request Timeout\n", linger=False)
        else:
            self._stop_header_timer()
            self.transport.close()

    # -- request headers -------------------------------------------------------------------------

    def _start_headers(self, got_bytes: bool = True) -> None:
        self._in_headers = True
        self._header_bytes = 0
        self._got_bytes = got_bytes
        self._waiting_since = time.monotonic()
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._header_timeout)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self._in_headers or self._rejected or self.transport.is_closing():
            return
        metrics.HTTP_REJECTED.labels("header_timeout").inc()
        self._close_waiting()

    def data_received(self, data: bytes) -> None:
        if self._rejected:  # the answer is sent: drop what still arrives, for a little while
            self._discarded += len(data)
            if self._discarded > _DISCARD_MAX:
                self.transport.close()
            return
        if not self._in_headers and (self.cycle is None or self.cycle.response_complete):
            self._start_headers()  # the next request on a kept-alive connection
        self._got_bytes = True
        self._began = self._completed = False
        super().data_received(data)
        if not self._in_headers or self._rejected or self.transport.is_closing():
            return
        # A request whose headers are still open. Its bytes in this read: all of them, unless an
        # earlier request ended in the same read (pipelining; then this one is counted from the
        # next read on, at most one read under).
        if not (self._began and self._completed):
            self._header_bytes += len(data)
        if self._header_bytes > self.limits.max_header_bytes:
            self._too_large()

    def on_message_begin(self) -> None:
        if self._rejected:
            return
        self._began = True
        if not self._in_headers:
            self._start_headers()  # pipelined behind a request in progress
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._rejected:
            return
        self._in_headers = False
        self._completed = True
        self._stop_header_timer()
        # the whole header block, when it arrived within one read: request line, fields, CRLFs
        size = len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._too_large()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._rejected:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._rejected:
            super().on_message_complete()

    def _too_large(self) -> None:
        metrics.HTTP_REJECTED.labels("header_bytes").inc()
        self._reject(431, "Request Header Fields Too Large",
                     f"Request Header Fields Too Large: more than {self.limits.max_header_bytes} bytes\n")

    def _reject(self, status: int, reason: str, message: str, extra: bytes = b"", linger: bool = True) -> None:
        """Answer ``status`` and close; with ``linger``, half-close first and read (and drop) a
        little more, so a client still sending can read the answer instead of a reset."""
        self._rejected = True
        self._in_headers = False
        self._stop_header_timer()
        self._unset_keepalive_if_required()
        self.transport.write(_response(status, reason, message, extra))
        if linger and self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger_timer = self.loop.call_later(_LINGER, self.transport.close)
        else:
            self.transport.close()
