"""Settings: the Next.js ``images`` object and the server's own options.

A user pastes the ``images`` section of their next.config.js (as JSON) and gets the same
behaviour as Next.js 16. Missing keys take Next.js 16's defaults (spec §2). Anything wrong
raises :class:`ConfigError` with a one-line message naming the key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .extensions import AnimatedLimits, AutoQuality, parse_animated, parse_auto_quality
from .objectstorage import BucketURL
from .patterns import (
    LocalPattern,
    PatternError,
    RemotePattern,
    default_local_patterns,
    has_remote_match,
    local_pathname_and_search,
    parse_url,
)

DEFAULT_DEVICE_SIZES = (640, 750, 828, 1080, 1200, 1920, 2048, 3840)
DEFAULT_IMAGE_PATH = "/_next/image"  # images.path: where Next's default loader sends images
DEFAULT_IMAGE_SIZES = (32, 48, 64, 96, 128, 256, 384)
DEFAULT_CSP = "script-src 'none'; frame-src 'none'; sandbox;"
FORMATS = ("image/avif", "image/webp")

# Keys Next.js knows in `images` that do not change what this service does (the site's loader
# settings, say). They are accepted so a pasted config works, and otherwise ignored.
_IGNORED_KEYS = {"loaderFile", "disableStaticImages", "customCacheHandler"}
# imgopt's own routes, which images.path cannot take
RESERVED_PATHS = ("/healthz", "/metrics")
# Next's VALID_LOADERS. With `default` the site sends images to /_next/image; with `custom` its
# loaderFile builds the URLs (imgopt's own loader/ does that); the others send them elsewhere.
LOADERS = ("default", "imgix", "cloudinary", "akamai", "custom")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


@dataclass(frozen=True)
class ImagesConfig:
    """The Next.js `images` object, validated, with Next 16 defaults."""

    device_sizes: tuple[int, ...] = DEFAULT_DEVICE_SIZES
    image_sizes: tuple[int, ...] = DEFAULT_IMAGE_SIZES
    qualities: tuple[int, ...] | None = (75,)
    formats: tuple[str, ...] = ("image/webp",)
    minimum_cache_ttl: int = 14400
    remote_patterns: tuple[RemotePattern, ...] = ()
    local_patterns: tuple[LocalPattern, ...] | None = field(
        default_factory=lambda: default_local_patterns(None)
    )
    domains: tuple[str, ...] = ()
    dangerously_allow_svg: bool = False
    content_security_policy: str = DEFAULT_CSP
    content_disposition_type: str = "attachment"
    maximum_response_body: int = 50_000_000
    maximum_redirects: int = 3
    dangerously_allow_local_ip: bool = False
    maximum_disk_cache_size: int | None = None
    unoptimized: bool = False
    loader: str = "default"
    # next.config's basePath (outside `images` there; --next-config brings it along): the
    # optimizer also answers at {basePath}/_next/image, static media are {basePath}/_next/static/media
    base_path: str = ""
    # next.config's trailingSlash (likewise): without it /_next/image/ is a 308 to /_next/image
    trailing_slash: bool = False
    # images.path: where Next's default loader sends image requests (the pathname of an absolute
    # URL as the browser sends it, percent-encoded, without a trailing slash; "/" for a host's root). imgopt also answers there, so the
    # loader can point at imgopt itself: path: 'https://img.example.com/optimize'.
    path: str = DEFAULT_IMAGE_PATH
    # next.config's assetPrefix when it is a path ("/cdn"): static imports are then
    # {assetPrefix}/_next/static/media/..., which a folder or bucket source finds under _next/
    # (an http(s) assetPrefix is a remote pattern instead)
    asset_prefix: str = ""
    # next.config's experimental.imgOptMaxInputPixels and imgOptTimeoutInSeconds (carried the same
    # way): the defaults of --max-input-pixels and --transform-timeout when those are not given
    max_input_pixels: int | None = None
    transform_timeout: float | None = None
    # imgopt extensions, not Next.js options (imgopt/extensions.py, docs/extras.md)
    auto_quality: AutoQuality | None = None
    animated: AnimatedLimits | None = None

    @property
    def widths(self) -> frozenset[int]:
        return frozenset(self.device_sizes) | frozenset(self.image_sizes)

    @property
    def optimizer_off(self) -> str | None:
        """Why /_next/image answers 404, as next start does (spec 1.1 item 3), or None.

        Next 404s for every loader but `default`; imgopt also serves `custom`, because a site
        whose loaderFile points at imgopt (loader/) is the reason this service exists.
        """
        if self.unoptimized:
            return "images.unoptimized is true"
        if self.loader not in ("default", "custom"):
            return f"images.loader is {self.loader!r}"
        return None


def _int_list(raw: Any, key: str, lo: int, hi: int, max_len: int, min_len: int = 0) -> tuple[int, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"images.{key}: expected an array of integers, got {json.dumps(raw)}")
    if len(raw) > max_len:
        raise ConfigError(f"images.{key}: Array must contain at most {max_len} element(s)")
    if len(raw) < min_len:
        raise ConfigError(f"images.{key}: Array must contain at least {min_len} element(s)")
    for i, v in enumerate(raw):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"images.{key}[{i}]: expected an integer, got {json.dumps(v)}")
        if v < lo:
            raise ConfigError(f"images.{key}[{i}]: Number must be greater than or equal to {lo}")
        if v > hi:
            raise ConfigError(f"images.{key}[{i}]: Number must be less than or equal to {hi}")
    return tuple(raw)


def _bool(raw: Any, key: str) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(f"images.{key}: expected true or false, got {json.dumps(raw)}")
    return raw


def _int(raw: Any, key: str, lo: int, hi: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ConfigError(f"images.{key}: expected an integer, got {json.dumps(raw)}")
    if raw < lo:
        raise ConfigError(f"images.{key}: Number must be greater than or equal to {lo}")
    if hi is not None and raw > hi:
        raise ConfigError(f"images.{key}: Number must be less than or equal to {hi}")
    return raw


def parse_images_config(obj: Any) -> ImagesConfig:
    """Validate a Next.js `images` object (or ``{"images": {...}}``) into an ImagesConfig."""
    if isinstance(obj, dict) and set(obj) == {"images"}:
        obj = obj["images"]
    if not isinstance(obj, dict):
        raise ConfigError("images: expected an object")
    unknown = set(obj) - _KNOWN_KEYS
    if unknown:
        raise ConfigError(f"images.{sorted(unknown)[0]}: unknown key (not a Next.js images option)")
    kw: dict[str, Any] = {}
    if "deviceSizes" in obj:
        kw["device_sizes"] = _int_list(obj["deviceSizes"], "deviceSizes", 1, 10000, 25, 1)
    if "imageSizes" in obj:
        kw["image_sizes"] = _int_list(obj["imageSizes"], "imageSizes", 1, 10000, 25)
    if "qualities" in obj and obj["qualities"] is not None:
        kw["qualities"] = _int_list(obj["qualities"], "qualities", 1, 100, 20, 1)
    if "formats" in obj:
        fmts = obj["formats"]
        if not isinstance(fmts, list) or len(fmts) > 4:
            raise ConfigError("images.formats: expected an array of at most 4 formats")
        for i, f in enumerate(fmts):
            if f not in FORMATS:
                raise ConfigError(
                    f"images.formats[{i}]: Expected 'image/avif' | 'image/webp', received {json.dumps(f)}"
                )
        kw["formats"] = tuple(fmts)
    if "minimumCacheTTL" in obj:
        kw["minimum_cache_ttl"] = _int(obj["minimumCacheTTL"], "minimumCacheTTL", 0)
    if "domains" in obj:
        doms = obj["domains"]
        if not isinstance(doms, list) or not all(isinstance(d, str) for d in doms):
            raise ConfigError("images.domains: expected an array of hostnames")
        if len(doms) > 50:
            raise ConfigError("images.domains: Array must contain at most 50 element(s)")
        kw["domains"] = tuple(d.lower() for d in doms)
    try:
        if "remotePatterns" in obj:
            rps = obj["remotePatterns"]
            if not isinstance(rps, list) or len(rps) > 50:
                raise ConfigError("images.remotePatterns: expected an array of at most 50 patterns")
            kw["remote_patterns"] = tuple(RemotePattern.from_config(p) for p in rps)
        if "localPatterns" in obj:
            lps = obj["localPatterns"]
            if lps is not None and (not isinstance(lps, list) or len(lps) > 25):
                raise ConfigError("images.localPatterns: expected an array of at most 25 patterns")
            kw["local_patterns"] = default_local_patterns(
                None if lps is None else [LocalPattern.from_config(p) for p in lps]
            )
    except PatternError as e:
        raise ConfigError(f"images: {e}".replace("\n", " ")) from None
    if "assetPrefix" in obj:
        kw["remote_patterns"] = _with_asset_prefix(obj["assetPrefix"], kw.get("remote_patterns", ()))
        kw["asset_prefix"] = asset_prefix_path(obj["assetPrefix"])
    if "basePath" in obj:
        bp = obj["basePath"]
        if not isinstance(bp, str):
            raise ConfigError("images.basePath: expected a string")
        if bp and not bp.startswith("/"):
            raise ConfigError(f'images.basePath: Specified basePath has to start with a /, found "{bp}"')
        if bp.endswith("/"):
            raise ConfigError(f'images.basePath: Specified basePath should not end with /, found "{bp}"')
        if any(c in bp for c in "?#\\") or any(ord(c) <= 0x20 for c in bp):
            raise ConfigError(f'images.basePath: Specified basePath must be a plain path, found "{bp}"')
        kw["base_path"] = bp
    if "path" in obj:
        kw["path"] = _image_path(obj["path"])
    if "imgOptMaxInputPixels" in obj:
        kw["max_input_pixels"] = _int(obj["imgOptMaxInputPixels"], "imgOptMaxInputPixels", 1)
    if "imgOptTimeoutInSeconds" in obj:
        t = obj["imgOptTimeoutInSeconds"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 3600:
            raise ConfigError(f"images.imgOptTimeoutInSeconds: expected a number of seconds (0-3600), got {json.dumps(t)}")
        kw["transform_timeout"] = float(t)
    if "trailingSlash" in obj:
        if not isinstance(obj["trailingSlash"], bool):
            raise ConfigError("images.trailingSlash: expected a boolean")
        kw["trailing_slash"] = obj["trailingSlash"]
    if "loader" in obj:
        if obj["loader"] not in LOADERS:
            raise ConfigError(
                f"images.loader: Specified images.loader should be one of ({', '.join(LOADERS)}), "
                f"received invalid value ({obj['loader']})"
            )
        kw["loader"] = obj["loader"]
    for key, attr in (
        ("dangerouslyAllowSVG", "dangerously_allow_svg"),
        ("dangerouslyAllowLocalIP", "dangerously_allow_local_ip"),
        ("unoptimized", "unoptimized"),
    ):
        if key in obj:
            kw[attr] = _bool(obj[key], key)
    if "contentSecurityPolicy" in obj:
        if not isinstance(obj["contentSecurityPolicy"], str):
            raise ConfigError("images.contentSecurityPolicy: expected a string")
        kw["content_security_policy"] = obj["contentSecurityPolicy"]
    if "contentDispositionType" in obj:
        v = obj["contentDispositionType"]
        if v not in ("inline", "attachment"):
            raise ConfigError(
                f"images.contentDispositionType: Expected 'inline' | 'attachment', received {json.dumps(v)}"
            )
        kw["content_disposition_type"] = v
    if "maximumResponseBody" in obj:
        kw["maximum_response_body"] = _int(obj["maximumResponseBody"], "maximumResponseBody", 1)
    if "maximumRedirects" in obj:
        kw["maximum_redirects"] = _int(obj["maximumRedirects"], "maximumRedirects", 0, 20)
    if "maximumDiskCacheSize" in obj and obj["maximumDiskCacheSize"] is not None:
        kw["maximum_disk_cache_size"] = _int(obj["maximumDiskCacheSize"], "maximumDiskCacheSize", 0)
    for key, attr, parse in (
        ("autoQuality", "auto_quality", lambda raw: parse_auto_quality(raw, kw.get("qualities", (75,)))),
        ("animated", "animated", parse_animated),
    ):
        if key in obj:
            try:
                kw[attr] = parse(obj[key])
            except ValueError as e:
                raise ConfigError(f"images.{key}: {e}") from None
    return ImagesConfig(**kw)


def _with_asset_prefix(prefix: Any, patterns: tuple[RemotePattern, ...]) -> tuple[RemotePattern, ...]:
    """next.config's ``assetPrefix``: when it is an http(s) URL, static imports are built as
    ``{assetPrefix}/_next/static/media/…``, absolute URLs on that host, and Next's config.ts
    allows them by adding ``{hostname, protocol, port}`` of the prefix to ``remotePatterns``
    unless a pattern already matches the prefix. imgopt does the same."""
    if not isinstance(prefix, str):
        raise ConfigError(f'images.assetPrefix: Specified assetPrefix is not a string, found type "{type(prefix).__name__}"')
    if not prefix.startswith("http"):
        return patterns  # a path prefix: static imports stay local urls
    try:
        url = parse_url(prefix)
    except ValueError as e:
        raise ConfigError(f"images.assetPrefix: Invalid assetPrefix provided. Original error: {e}") from None
    protocol = url.protocol[:-1]
    if protocol not in ("http", "https") or has_remote_match((), patterns, url):
        return patterns  # ("httpx://…": nothing imgopt could fetch from)
    return (*patterns, RemotePattern(hostname=url.hostname, protocol=protocol, port=url.port))


def _image_path(raw: Any) -> str:
    """The pathname imgopt answers for ``images.path`` (Next's default loader writes
    ``{path}?url=…``, which the browser resolves as ``new URL`` does): that of an http(s) URL,
    or of a path; without a trailing slash (Next adds one under trailingSlash, served as
    /_next/image/ is)."""
    if not isinstance(raw, str):
        raise ConfigError("images.path: expected a string")
    try:
        if raw.startswith("/") and not raw.startswith("//"):
            pathname = local_pathname_and_search(raw)[0]
        elif raw.lower().startswith(("http://", "https://", "//")):
            pathname = parse_url(raw if not raw.startswith("//") else "http:" + raw).pathname
        else:
            raise ValueError("not a path or an http(s) URL")
    except ValueError:
        raise ConfigError(f"images.path: expected a path starting with / or an http(s) URL, got {json.dumps(raw)}") from None
    pathname = pathname.rstrip("/") or "/"
    decoded = unquote(pathname)
    if "{" in decoded or "}" in decoded:  # route parameters to the router
        raise ConfigError(f"images.path: braces are not supported, got {json.dumps(raw)}")
    if pathname in RESERVED_PATHS:
        raise ConfigError(f"images.path: {pathname} is imgopt's own route; choose another path")
    return pathname


def asset_prefix_path(prefix: str) -> str:
    """A path ``assetPrefix`` as Next normalises it (normalizedAssetPrefix: no leading or
    trailing slashes, then one leading slash): ``"cdn/"`` -> ``"/cdn"``; ``""`` for none, for
    ``"/"`` and for an http(s) URL."""
    if prefix.startswith("http"):
        return ""
    stripped = prefix.strip("/")
    return f"/{stripped}" if stripped else ""


_KNOWN_KEYS = {
    "deviceSizes", "imageSizes", "qualities", "formats", "minimumCacheTTL", "remotePatterns",
    "localPatterns", "domains", "dangerouslyAllowSVG", "contentSecurityPolicy",
    "contentDispositionType", "maximumResponseBody", "maximumRedirects", "dangerouslyAllowLocalIP",
    "maximumDiskCacheSize", "loader", "unoptimized", "basePath", "trailingSlash", "assetPrefix",
    "path", "imgOptMaxInputPixels", "imgOptTimeoutInSeconds",  # from next.config's experimental
    "autoQuality", "animated",  # imgopt extensions
} | _IGNORED_KEYS


def load_images_config(path: str | os.PathLike[str]) -> ImagesConfig:
    """Read a JSON file holding a Next.js `images` object."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read file ({e.strerror})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config {path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    return parse_images_config(obj)


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to run: the images config plus server options."""

    images: ImagesConfig = field(default_factory=ImagesConfig)
    host: str = "127.0.0.1"
    port: int = 3001
    local_root: Path | BucketURL | None = None  # a folder, or a bucket (s3://, gs://, az://)
    origin: str | None = None
    cache_dir: Path = Path(".imgopt-cache")
    cache_size: int = 1 << 30
    cache: str | BucketURL = "disk"  # 'disk', a redis:// / rediss:// / unix:// URL, or a bucket, shared by replicas
    lock: str | None = None  # with a bucket --cache: a Redis URL for one transform per variant across replicas
    store_timeout: float = 2.0  # seconds per object-storage request of the cache before it is skipped
    cache_tier: str = "none"  # with Redis: 'disk' keeps --cache-dir as a local first tier
    memory_cache_size: int = 64 << 20  # hot entries kept in process memory (0 = none)
    resized_cache_size: int = 128 << 20  # recent resized originals, shared by the formats (0 = none)
    redis_timeout: float = 0.25  # seconds per Redis socket operation (connect, read, write)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    queue: int | None = None  # None: 4 × workers
    fetch_timeout: float = 7.0
    transform_timeout: float = 7.0
    isolation: str = "process"  # image work in worker processes ('process') or server threads ('thread')
    worker_max_jobs: int = 500  # a worker process is replaced after this many jobs (0 = never)
    worker_max_rss: int = 1 << 30  # ... or once its RSS passes this many bytes after a job (0 = no bound)
    max_input_pixels: int = 268_402_689
    fast_first: bool = False  # a cold AVIF is answered at once in WebP while AVIF is made (docs/warm.md)
    fast_first_max_age: int = 60  # ... with this max-age, so browsers and CDNs ask again soon
    metrics_port: int | None = None  # /metrics on its own port (and not on the main one)

    @property
    def queue_limit(self) -> int:
        return self.queue if self.queue is not None else 4 * self.workers

    def with_(self, **kw: Any) -> Settings:
        return replace(self, **kw)
