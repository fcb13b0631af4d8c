"""The HTTP app: routes, response headers, conditional requests, errors as plain text."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from . import encoding, metrics
from .cache import cache_key, store_degraded
from .config import Settings
from .errors import ImageError
from .imagetypes import EXTENSIONS
from .params import ImageRequest, RequestMemo, parse_placeholder_request
from .service import ImageService, Served

log = logging.getLogger("imgopt")

STATIC_CACHE_CONTROL = "public, max-age=315360000, immutable"
_NOT_LATIN1 = re.compile(r"[^\x20-\x7e\xa0-\xff]")
# Accept and Accept-Encoding are cut to this many characters before they are negotiated (the cut
# ends at a comma): browsers send under 300, and negotiating 4 KiB already costs ~5 ms of the
# event loop, 1.9 MB over a second.
NEGOTIATED_HEADER_MAX = 1024


def file_name(href: str, mime: str) -> str:
    """Next's getFileNameWithExtension: last path segment, up to its first dot, plus extension."""
    segment = href.split("?", 1)[0].split("/")[-1]
    ext = EXTENSIONS.get(mime)
    if not segment or not ext:
        return "image.bin"
    return f"{segment.split('.', 1)[0]}.{ext}"


def content_disposition(kind: str, name: str) -> str:
    """As the content-disposition npm package: a Latin-1 fallback plus filename* when needed."""
    # one '?' per UTF-16 code unit, as the package's regex (no u flag) replaces: an emoji is '??'
    fallback = _NOT_LATIN1.sub(lambda m: "??" if ord(m.group()) > 0xFFFF else "?", name)
    quoted_ok = re.fullmatch(r"[\x20-\x7e\x80-\xff]+", name) is not None
    parts = [kind]
    if quoted_ok or fallback != name:
        value = fallback.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'filename="{value}"')
    if fallback != name or not quoted_ok or re.search(r"%[0-9A-Fa-f]{2}", name):
        parts.append("filename*=UTF-8''" + quote(name, safe="-_.!~"))
    return "; ".join(parts)


def client_header(request: Request, name: str, limit: int = NEGOTIATED_HEADER_MAX) -> str:
    """A header for negotiation (all its lines joined), at most ``limit`` characters: a longer
    one is cut after its last complete element (comma-separated), never inside one."""
    value = ", ".join(request.headers.getlist(name))
    if len(value) <= limit:
        return value
    cut = value[: limit + 1]
    comma = cut.rfind(",")
    return cut[:comma] if comma >= 0 else ""


# `fresh`'s /(?:^|,)\s*?no-cache\s*?(?:,|$)/: case-sensitive, JavaScript's \s, $ only at the end
_JS_SPACE = r"[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
_NO_CACHE = re.compile(rf"(?:^|,){_JS_SPACE}*?no-cache{_JS_SPACE}*?(?:,|\Z)")


def _token_list(value: str) -> list[str]:
    """`fresh`'s parseTokenList: split at ',', drop the spaces (only U+0020) around each token."""
    tokens: list[str] = []
    start = end = 0
    for i, c in enumerate(value):
        if c == " ":
            if start == end:
                start = end = i + 1
        elif c == ",":
            tokens.append(value[start:end])
            start = end = i + 1
        else:
            end = i + 1
    tokens.append(value[start:end])
    return tokens


def fresh(headers: dict[str, str], etag: str) -> bool:
    """The `fresh` npm package (Next's next/dist/compiled/fresh) for a response with this ETag
    and no Last-Modified. `headers` as Node gives them: lower-case names, repeated
    If-None-Match and Cache-Control joined with ', ', the first If-Modified-Since."""
    inm = headers.get("if-none-match")
    ims = headers.get("if-modified-since")
    if not ims and not inm:
        return False
    cache_control = headers.get("cache-control")
    if cache_control and _NO_CACHE.search(cache_control):
        return False
    if inm and inm != "*":
        if not any(t == etag or t == f"W/{etag}" or f"W/{t}" == etag for t in _token_list(inm)):
            return False
    return not ims  # no Last-Modified is sent, so an If-Modified-Since never matches


def is_fresh(request: Request, etag: str) -> bool:
    """Whether Next would answer 304 (``fresh(req.headers, {etag})``)."""
    h = request.headers
    node = {name: ", ".join(h.getlist(name)) for name in ("if-none-match", "cache-control") if name in h}
    if "if-modified-since" in h:
        node["if-modified-since"] = h["if-modified-since"]
    return fresh(node, etag)


def error_response(e: ImageError) -> Response:
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if e.retry_after is not None:
        headers["Retry-After"] = str(e.retry_after)
    return PlainTextResponse(e.message, status_code=e.status, headers=headers)


async def image_response(request: Request, served: Served, req: ImageRequest, settings: Settings,
                         encoded: encoding.EncodedBodies) -> Response:
    entry = served.entry
    href, is_static = req.href, req.is_static
    headers = {
        "Vary": "Accept",
        "Cache-Control": (f"public, max-age={served.max_age}, must-revalidate" if served.max_age is not None
                          else STATIC_CACHE_CONTROL if is_static else f"public, max-age={entry.max_age}, must-revalidate"),
        "ETag": entry.etag,
    }
    if served.max_age is not None:
        # --fast-first's early answer: it stands in for this format, which is being made
        # (`imgopt warm` asks again for it as a client that takes nothing else).
        headers["X-Imgopt-Deferred"] = req.mime
    if is_fresh(request, entry.etag):
        return Response(status_code=304, headers=headers)
    cfg = settings.images
    headers.update({
        "Content-Type": entry.mime,
        "Content-Disposition": content_disposition(cfg.content_disposition_type, file_name(href, entry.mime)),
        "Content-Security-Policy": cfg.content_security_policy,
        "X-Content-Type-Options": "nosniff",
        "X-Nextjs-Cache": served.state,
    })
    body = entry.body
    if entry.mime in encoding.COMPRESSIBLE:  # SVG, BMP, ICO: as Next's compression middleware
        headers["Vary"] = "Accept, Accept-Encoding"
        coding = encoding.choose(client_header(request, "accept-encoding") or None)
        if coding and request.method != "HEAD" and len(body) >= encoding.THRESHOLD and encoded.accepts(body):
            key = cache_key(req.href, req.width, req.quality, req.cache_mime)
            body = await encoded.get(key, entry.etag, body, coding)
            headers["Content-Encoding"] = coding
    headers["Content-Length"] = str(len(body))
    return Response(b"" if request.method == "HEAD" else body, status_code=200, headers=headers)


async def without_trailing_slash(request: Request) -> Response:
    """Next's redirect for a path with a trailing slash (no trailingSlash in next.config)."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    location = request.url.path.rstrip("/") + (f"?{query}" if query else "")
    # Next sends the location as the body, with no Content-Type
    return Response(location.encode("latin-1", "replace"), status_code=308,
                    headers={"Location": location, "Refresh": f"0;url={location}"})


def placeholder_response(request: Request, served: Served) -> Response:
    """The placeholder JSON (imgopt/placeholder.py) with the images' caching headers."""
    entry = served.entry
    headers = {
        "Cache-Control": f"public, max-age={entry.max_age}, must-revalidate",
        "ETag": entry.etag,
        "Access-Control-Allow-Origin": "*",
    }
    if is_fresh(request, entry.etag):
        return Response(status_code=304, headers=headers)
    headers.update({
        "Content-Type": entry.mime,
        "X-Content-Type-Options": "nosniff",
        "X-Nextjs-Cache": served.state,
        "Content-Length": str(len(entry.body)),
    })
    return Response(b"" if request.method == "HEAD" else entry.body, status_code=200, headers=headers)


def create_app(settings: Settings) -> Starlette:
    service = ImageService(settings)
    # compressed SVG/BMP/ICO bodies, kept beside the hot tier (half its budget)
    encoded = encoding.EncodedBodies(settings.memory_cache_size // 2, concurrency=max(1, settings.workers // 2))
    metrics.bind_pool(service.pool)
    metrics.bind_memory({"responses": service.memory, "resized": service.resized, "encoded": encoded.lru})
    metrics.bind_resized(service.resized)
    requests = RequestMemo(settings.images)

    async def image(request: Request) -> Response:
        try:
            req = requests.parse(
                request.scope.get("query_string", b"").decode("utf-8", "replace"),
                client_header(request, "accept"),
            )
            served = await service.get(req)
            return await image_response(request, served, req, settings, encoded)
        except ImageError as e:
            return error_response(e)
        except Exception:  # a bug must still get an answer, and a trace in the log
            log.exception("unexpected error for %s", request.url)
            return error_response(ImageError(500, "Internal error while optimizing the image"))

    async def placeholder(request: Request) -> Response:
        try:
            req = parse_placeholder_request(
                request.scope.get("query_string", b"").decode("utf-8", "replace"), settings.images
            )
            return placeholder_response(request, await service.get(req))
        except ImageError as e:
            return error_response(e)
        except Exception:
            log.exception("unexpected error for %s", request.url)
            return error_response(ImageError(500, "Internal error while making the placeholder"))

    async def healthz(request: Request) -> Response:
        # Always 200 while the process can answer: a degraded cache (Redis down, a read-only or
        # full cache dir) is reported in the body with its reason, and the replica keeps
        # serving (from memory), so probes and balancers should keep it.
        health = await service.coordinator.health()
        reason = store_degraded(service.store)
        if reason is not None:
            health = {**health, "status": "degraded", "reason": reason}
        return JSONResponse(health, headers={"Cache-Control": "no-store"})

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await service.aclose()

    # At /_next/image, and at {basePath}/_next/image where Next serves it for a site with a
    # basePath (a proxy may send either, with or without stripping the prefix).
    # With the optimizer off (unoptimized, another loader) every image route answers 404.
    off = settings.images.optimizer_off
    if off:
        log.warning("%s: /_next/image answers 404, as in Next.js", off)

        async def optimizer_off(request: Request) -> Response:
            return error_response(ImageError(404, f"Not Found: image optimization is off ({off})"))

        image = placeholder = optimizer_off
    # /_next/image/: served with next.config's trailingSlash (spec 6.2 case 29); otherwise a 308
    # to the path without the slash, with the query, as Next's trailing-slash redirect
    slashed = image if settings.images.trailing_slash or off else without_trailing_slash
    prefixes = dict.fromkeys(["", settings.images.base_path])
    # (path, endpoint, the route's name in the metrics and the access log)
    paths = [
        (f"{prefix}{path}", endpoint, label)
        for prefix in prefixes
        for path, endpoint, label in (("/_next/image", image, "/_next/image"), ("/_next/image/", slashed, "/_next/image"),
                                      ("/_next/image/placeholder", placeholder, "/_next/image/placeholder"))
    ]
    # images.path elsewhere (Next's default loader, or imgopt's, pointed at imgopt's own URL):
    # there too (answering 404 like the others when the optimizer is off)
    custom = unquote(settings.images.path)  # routes match the decoded path
    if custom not in {f"{p}/_next/image" for p in prefixes}:
        paths.append((custom, image, "/_next/image"))
        if custom != "/":
            paths.append((f"{custom}/", slashed, "/_next/image"))
    image_routes = [Route(path, endpoint, methods=["GET", "HEAD"]) for path, endpoint, _label in paths]
    app = Starlette(
        routes=[
            *image_routes,
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            # with --metrics-port, /metrics is served there only, off the public port
            *([Route("/metrics", metrics_endpoint, methods=["GET"])] if settings.metrics_port is None else []),
        ],
        lifespan=lifespan,
        middleware=[Middleware(metrics.ObserveMiddleware, routes={path: label for path, _e, label in paths})],
    )
    app.state.service = service
    return app
