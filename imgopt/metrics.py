"""Observability: Prometheus metrics (served on /metrics) and the access log with request ids.

Every metric is defined here, in the default ``prometheus_client`` registry (so the process,
platform and GC collectors come along); docs/operations.md lists them all. The rest of the code
hooks in with one-line calls: ``ObserveMiddleware`` counts requests, latency and bytes out,
writes the access log and makes the request id known to every log line of the request;
``tracked_fetch`` times fetches of originals by source and outcome and counts upstream errors
by kind and bytes in; ``observe_transform`` times the transform by output format; ``bind_pool``
exposes the worker pool's queue depth and in-flight work, ``bind_memory`` the bytes the
in-process caches hold; the cache stores count lookups by tier.
"""

from __future__ import annotations

import functools
import logging
import platform
import re
import time
import uuid
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .errors import NOT_ALLOWED, ImageError
from .logs import FIELDS, REQUEST_ID

T = TypeVar("T")

disable_created_metrics()  # no *_created series: half the exposition, nothing dashboards use

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20)

REQUESTS = Counter("imgopt_http_requests", "HTTP requests answered, by route and status", ["route", "status"])
LATENCY = Histogram("imgopt_http_request_duration_seconds", "Time to answer a request (to the last body byte)",
                    ["route"], buckets=_LATENCY_BUCKETS)
RESPONSE_BYTES = Counter("imgopt_response_bytes", "Response body bytes sent, by route", ["route"])
HTTP_REJECTED = Counter("imgopt_http_rejected", "Connections closed by an HTTP limit before their request reached "
                        "the app (header_bytes: 431, header_timeout: 408 or close, evicted: closed at the "
                        "connection cap to make room, connections: 503 at the cap)", ["reason"])
IMAGES = Counter("imgopt_image_responses", "Image responses by X-Nextjs-Cache state (HIT, MISS, STALE)", ["cache"])

TRANSFORM = Histogram("imgopt_transform_seconds", "Time on a worker for one transform, by output format and kind "
                      "(optimized, passthrough, fallback)", ["format", "kind"], buckets=_LATENCY_BUCKETS)
TRANSFORM_ERRORS = Counter("imgopt_transform_errors", "Transforms that raised (timeouts, decoder limits)")

UPSTREAM_BYTES = Counter("imgopt_upstream_bytes", "Bytes of originals read (after content decoding)")
UPSTREAM_ERRORS = Counter("imgopt_upstream_errors", "Failed fetches of originals, by kind", ["kind"])
UPSTREAM_FETCH = Histogram("imgopt_upstream_fetch_seconds", "Time to fetch an original, by source (remote, origin, "
                           "local) and outcome (ok, timeout, error)", ["source", "outcome"], buckets=_LATENCY_BUCKETS)

CACHE_LOOKUPS = Counter("imgopt_cache_lookups", "Cache look-ups by tier (memory, disk, redis) and result (hit, stale, miss)",
                        ["tier", "result"])
CACHE_ERRORS = Counter("imgopt_cache_errors", "Cache operations that failed or were skipped (circuit open), by "
                       "tier and operation", ["tier", "op"])
CACHE_DEGRADED = Gauge("imgopt_cache_degraded", "1 while the disk cache cannot be used (read-only, full, unopenable "
                       "dir): responses are kept in the memory tier only, /healthz says degraded", ["tier"])
CACHE_DB_DAMAGED = Counter("imgopt_cache_db_damaged", "Damaged cache databases moved aside (cache.db.damaged-*) and "
                           "replaced by a new one", ["tier"])
ENCODED_BODIES = Counter("imgopt_encoded_bodies", "gzip/deflate response bodies (SVG, BMP, ICO): made (compressed "
                         "now) or reused (kept from an earlier response, or shared with one in progress)",
                         ["coding", "result"])
CACHE_UP = Gauge("imgopt_cache_backend_up", "1 when the shared cache backend answers (circuit closed), else 0",
                 ["backend"])
LOCKS = Counter("imgopt_cluster_locks", "Cross-replica single flight: how each miss or refresh got its entry "
                "(acquired, waited, takeover, busy, error_shared, timeout, unavailable)", ["result"])

POOL_ADMITTED = Gauge("imgopt_pool_admitted", "Misses in progress: running or queued for a worker")
POOL_RUNNING = Gauge("imgopt_pool_running", "Transforms running on a worker now (in flight)")
POOL_QUEUED = Gauge("imgopt_pool_queue_depth", "Misses admitted but not on a worker (fetching or waiting)")
POOL_CAPACITY = Gauge("imgopt_pool_capacity", "Workers plus queue places; more concurrent misses get 503")
WORKERS_READY = Gauge("imgopt_workers_ready", "Worker processes started and ready for jobs")
WORKER_PID = Gauge("imgopt_worker_pid", "Process id of each worker slot's current process (0 while none)", ["slot"])
WORKER_RSS = Gauge("imgopt_worker_rss_bytes", "Resident memory of each worker process after its last job", ["slot"])
MEMORY_BYTES = Gauge("imgopt_memory_bytes", "Bytes held by the bounded in-process caches, by cache (responses: the "
                     "hot-entry tier, --memory-cache-size; resized: resized pixels, --resized-cache-size)", ["cache"])
MEMORY_LIMIT = Gauge("imgopt_memory_limit_bytes", "The bound of each in-process cache", ["cache"])
class _ReadAtScrape(Collector):
    """Counters kept by other objects (the worker pool, the resized-pixels memo) as plain
    integers that only grow, read at scrape time and exposed as Prometheus counters."""

    def __init__(self) -> None:
        self.pool: Any = None
        self.memo: Any = None

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check against other metrics' names at registration

    def libvips(self) -> str:
        """The libvips version of the image workers: as a worker process reported it (the
        server does not load libvips then; "unknown" until one has started), or this process's."""
        if getattr(self.pool, "isolation", "thread") == "process":
            return self.pool.libvips_version or "unknown"
        try:
            import pyvips

            return ".".join(str(pyvips.version(i)) for i in range(3))
        except Exception:  # no libvips: the service cannot run, but /metrics must still answer
            return "unknown"

    def collect(self) -> Iterable[Metric]:
        build = InfoMetricFamily("imgopt_build", "Versions of imgopt, Python and libvips (value 1)")
        build.add_metric([], {"version": __version__, "python": platform.python_version(), "libvips": self.libvips()})
        yield build
        if self.pool is not None:
            idle = CounterMetricFamily(
                "imgopt_pool_idle_releases", "Times the workers had been idle for 0.2 s and freed memory "
                "was given back to the system (glibc malloc_trim)")
            idle.add_metric([], self.pool.idle_runs)
            yield idle
            if getattr(self.pool, "isolation", "thread") == "process":
                restarts = CounterMetricFamily(
                    "imgopt_worker_restarts", "Worker processes replaced since start, by reason (recycled: after "
                    "--worker-max-jobs or --worker-max-rss; killed: a job past its deadline; crashed: died in a job)",
                    labels=["reason"])
                for reason in ("recycled", "killed", "crashed"):
                    restarts.add_metric([reason], getattr(self.pool, reason))
                yield restarts
        if self.memo is not None:
            lookups = CounterMetricFamily(
                "imgopt_resized_lookups", "Lookups of an original's resized pixels (hit: another format of "
                "the same original and width was made recently, so no decode and resize)", labels=["result"])
            lookups.add_metric(["hit"], self.memo.hits)
            lookups.add_metric(["miss"], self.memo.misses)
            yield lookups


_READ_AT_SCRAPE = _ReadAtScrape()
REGISTRY.register(_READ_AT_SCRAPE)


def exposition() -> tuple[bytes, str]:
    """The /metrics body and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST


def bind_pool(pool: Any) -> None:
    """Read queue depth and in-flight work from a pool.WorkerPool at scrape time."""
    POOL_ADMITTED.set_function(lambda: pool.admitted)
    POOL_RUNNING.set_function(lambda: pool.running)
    POOL_QUEUED.set_function(lambda: max(0, pool.admitted - pool.running))
    POOL_CAPACITY.set_function(lambda: pool.capacity)
    _READ_AT_SCRAPE.pool = pool
    if getattr(pool, "isolation", "thread") == "process":
        WORKERS_READY.set_function(lambda: pool.ready)
        for i in range(pool.workers):
            WORKER_PID.labels(str(i)).set_function(functools.partial(_worker_pid, pool, i))
            WORKER_RSS.labels(str(i)).set_function(functools.partial(_worker_rss, pool, i))


def _worker_pid(pool: Any, i: int) -> float:
    return float(pool.pids()[i] or 0)


def _worker_rss(pool: Any, i: int) -> float:
    return float(pool.rss()[i])


def bind_memory(caches: dict[str, Any]) -> None:
    """Read the bytes held by each bounded in-process cache (an lru.BytesLRU) at scrape time."""
    for name, lru in caches.items():
        MEMORY_BYTES.labels(name).set_function(functools.partial(getattr, lru, "bytes"))
        MEMORY_LIMIT.labels(name).set_function(functools.partial(getattr, lru, "max_bytes"))


def bind_resized(memo: Any) -> None:
    """Read the resized-pixels memo's hit and miss counts (a transform.ResizedMemo) at scrape time."""
    _READ_AT_SCRAPE.memo = memo


def short_format(mime: str) -> str:
    """'image/webp' -> 'webp', 'image/svg+xml' -> 'svg' (a small, bounded label set)."""
    sub = mime.partition("/")[2].split("+", 1)[0].split(";", 1)[0].strip().lower()
    return sub if re.fullmatch(r"[a-z0-9.-]{1,16}", sub) else "other"


def observe_transform(result: Any, seconds: float) -> None:
    """A job finished on a worker (thread or process): its time by output format, or an error
    (result None: a timeout, a decoder limit, a crashed worker)."""
    if result is None:
        TRANSFORM_ERRORS.inc()
    else:
        TRANSFORM.labels(short_format(result.mime), result.kind).observe(seconds)


def upstream_error_kind(e: ImageError) -> str:
    """A small, stable label for why fetching an original failed."""
    msg = e.message
    if e.status == 504:
        return "timeout"
    if e.status == 413:
        return "too_large"
    if e.status == 508:
        return "redirects"
    if msg == NOT_ALLOWED or "not allowed" in msg:
        return "not_allowed"
    if "could not be resolved" in msg:
        return "dns"
    if "(ConnectError)" in msg or "(ConnectTimeout)" in msg:
        return "connect"
    if "encoding" in msg or "(Remote" in msg or "Protocol" in msg or "(Read" in msg:
        return "protocol"
    if 400 <= e.status < 500:
        return f"status_{e.status}"
    return "bad_response"


def fetch_source(remote: bool, local_root: object) -> str:
    """Where an original comes from: 'remote' (an absolute url), 'local' (--local-root) or
    'origin' (a relative url fetched from --origin)."""
    return "remote" if remote else "local" if local_root is not None else "origin"


async def tracked_fetch(fetch: Awaitable[T], source: str = "remote") -> T:
    """Await a Fetcher.fetch(...) call, timing it by source and outcome and counting its bytes
    or its error kind."""
    start = time.perf_counter()
    try:
        original = await fetch
    except ImageError as e:
        UPSTREAM_FETCH.labels(source, "timeout" if e.status == 504 else "error").observe(time.perf_counter() - start)
        UPSTREAM_ERRORS.labels(upstream_error_kind(e)).inc()
        raise
    except Exception:
        UPSTREAM_FETCH.labels(source, "error").observe(time.perf_counter() - start)
        raise
    UPSTREAM_FETCH.labels(source, "ok").observe(time.perf_counter() - start)
    UPSTREAM_BYTES.inc(len(getattr(original, "body", b"")))
    return original


# -- access log and request ids ----------------------------------------------------------------

access_log = logging.getLogger("imgopt.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_ROUTES = {"/_next/image": "/_next/image", "/_next/image/": "/_next/image", "/healthz": "/healthz",
           "/metrics": "/metrics", "/_next/image/placeholder": "/_next/image/placeholder"}


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-Id when it looks like one, else a new random id."""
    for name, value in headers:
        if name.lower() == b"x-request-id":
            text = value.decode("latin-1").strip()
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class ObserveMiddleware:
    """ASGI middleware: X-Request-Id in and out, request metrics, one access-log line."""

    def __init__(self, app: Any, routes: dict[str, str] | None = None) -> None:
        self.app = app
        # request path -> route name (the image routes under basePath and images.path too)
        self.routes = {**_ROUTES, **(routes or {})}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = request_id_from(scope.get("headers") or [])
        scope.setdefault("state", {})["request_id"] = rid
        token = REQUEST_ID.set(rid)  # every log line of this request carries its id
        route = self.routes.get(scope.get("path", ""), "other")
        info: dict[str, Any] = {"status": 500, "bytes": 0, "cache": None}

        async def send_observed(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                info["status"] = message["status"]
                headers = list(message.get("headers") or [])
                for name, value in headers:
                    if name.lower() == b"x-nextjs-cache":
                        info["cache"] = value.decode("latin-1")
                if message["status"] != 304:  # a 304 carries only Vary, Cache-Control and ETag, as in Next
                    headers.append((b"x-request-id", rid.encode("latin-1")))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                info["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            elapsed = time.perf_counter() - start
            status = str(info["status"])
            REQUESTS.labels(route, status).inc()
            LATENCY.labels(route).observe(elapsed)
            RESPONSE_BYTES.labels(route).inc(info["bytes"])
            if info["cache"]:
                IMAGES.labels(info["cache"]).inc()
            if route != "/healthz" and route != "/metrics" and access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                query = scope.get("query_string", b"").decode("latin-1")
                access_log.info("%s %s %s", scope.get("method"), scope.get("path"), info["status"], extra={FIELDS: {
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "query": query[:2048],
                    "status": info["status"],
                    "bytes": info["bytes"],
                    "duration_ms": round(elapsed * 1000, 2),
                    "cache": info["cache"],
                    "client": client[0] if client else None,
                    "user_agent": _header(scope, b"user-agent"),
                }})
            REQUEST_ID.reset(token)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return value.decode("latin-1")[:256]
    return None
