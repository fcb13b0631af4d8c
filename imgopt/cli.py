"""`imgopt serve`: flags, each also read from IMGOPT_<FLAG>; flag over variable over default."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, logs, malloc
from .config import ConfigError, ImagesConfig, Settings, load_images_config, parse_images_config
from .nextconfig import load_next_config
from .objectstorage import BucketURL, is_bucket_url, parse_bucket_url, probe

if TYPE_CHECKING:
    from .httpserver import HttpLimits


def _size(text: str) -> int:
    """Bytes, with an optional K/M/G suffix (powers of 1024)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    number = t[:-1] if mult > 1 else t
    value = int(float(number) * mult)
    if value < 0:
        raise ValueError("negative size")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _header_size(text: str) -> int:
    value = _size(text)
    if value < 1024:
        raise ValueError("must be at least 1K")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be more than 0")
    return value


def _cache_backend(text: str) -> str | BucketURL:
    value = text.strip()
    if is_bucket_url(value):
        return parse_bucket_url(value)
    if value == "disk" or value.startswith(("redis://", "rediss://", "unix://")):
        if value != "disk":
            from redis.connection import parse_url  # the client's own URL rules

            parse_url(value)
        return value
    raise ValueError("expected disk, a redis://host:port/db URL (rediss:// for TLS, unix:// for a socket) "
                     "or a bucket (s3://bucket/prefix, gs://, az://)")


def _redis_url(text: str) -> str:
    value = text.strip()
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://host:port/db URL")
    from redis.connection import parse_url

    parse_url(value)
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"expected {', '.join(allowed[:-1])} or {allowed[-1]}")
        return value

    return convert


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise ValueError("must be 1 to 65535")
    return value


def _isolation(text: str) -> str:
    value = text.strip().lower()
    if value not in ("process", "thread"):
        raise ValueError("expected process or thread")
    return value


def _cache_tier(text: str) -> str:
    value = text.strip().lower()
    if value not in ("none", "disk"):
        raise ValueError("expected none or disk")
    return value


def _switch(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


# flag, type, help. The environment variable is IMGOPT_ + the flag in upper case.
OPTIONS: list[tuple[str, Callable[[str], Any], str]] = [
    ("host", str, "address to bind (default 127.0.0.1)"),
    ("port", int, "port to listen on (default 3001)"),
    ("config", str, "JSON file with the Next.js `images` object (or {\"images\": {...}})"),
    ("next-config", str, "the site's next.config.(js|mjs|ts) or project folder, whose `images` section is read with node, "
                         "or its build (.next, a standalone folder), read without node"),
    ("local-root", str, "folder, or bucket (s3://bucket/prefix, gs://, az://), that relative urls (/img.png) are read from"),
    ("origin", str, "base URL that relative urls are fetched from when there is no --local-root"),
    ("cache-dir", str, "folder of the disk cache (default .imgopt-cache)"),
    ("cache-size", _size, "disk cache bound in bytes, K/M/G suffixes allowed (default 1G; 0 = no cache)"),
    ("memory-cache-size", _size, "hot cache entries kept in memory, in bytes (default 64M; 0 = none)"),
    ("resized-cache-size", _size, "recently resized originals kept in memory for their other formats, in bytes (default 128M; 0 = none)"),
    ("cache", _cache_backend, "disk (default), a redis://host:port/db URL or a bucket (s3://bucket/prefix): one cache shared by all replicas"),
    ("cache-tier", _cache_tier, "with a Redis or bucket --cache: disk keeps a local first tier in --cache-dir, none (default) does not"),
    ("lock", _redis_url, "with a bucket --cache: a redis:// URL where replicas agree who transforms a missing variant (one transform per variant)"),
    ("store-timeout", _seconds, "seconds allowed for each request to a bucket --cache before it is skipped (default 2)"),
    ("redis-timeout", _seconds, "seconds allowed for each Redis connect, read or write before the cache is skipped (default 0.25)"),
    ("workers", _positive_int, "image worker processes (threads with --isolation thread; default: number of CPUs)"),
    ("isolation", _isolation, "process (default): image work in supervised worker processes that are killed at the "
                              "deadline and replaced when they crash; thread: in threads of the server process"),
    ("worker-max-jobs", _non_negative_int, "a worker process is replaced after this many jobs (default 500; 0 = never)"),
    ("worker-max-rss", _size, "a worker process is replaced once its RSS passes this after a job (default 1G; 0 = no bound)"),
    ("queue", _non_negative_int, "requests that may wait for a worker before 503 (default 4 x workers)"),
    ("fetch-timeout", _seconds, "seconds allowed for fetching an original (default 7)"),
    ("transform-timeout", _seconds, "seconds allowed for one transform (default 7)"),
    ("max-input-pixels", _positive_int, "largest input image in pixels (default 268402689)"),
    ("log-level", _choice(*logs.LEVELS), "debug, info, warning, error or critical (default info)"),
    ("log-format", _choice(*logs.FORMATS), "json (default: one JSON object per line) or text; all logs go to stderr"),
    ("metrics-port", _port, "serve /metrics on this port (same --host) instead of the main one, which then answers 404 there"),
    ("max-header-bytes", _header_size, "largest request line plus headers of one request; more is answered 431 (default 16K)"),
    ("header-timeout", _seconds, "seconds a request's headers may take to arrive, from the connection's start; "
                                 "then 408 and close (default 10)"),
    ("keepalive-timeout", _seconds, "seconds an idle kept-alive connection stays open (default 5)"),
    ("max-connections", _positive_int, "open connections at most; at the cap the longest idle or half-sent one is "
                                       "closed, or 503 when all are busy (default 1024, or half the open-file limit)"),
    ("drain-timeout", _seconds, "seconds in-flight requests get to finish after SIGTERM (default 20)"),
    ("fast-first", _switch, "answer a cold AVIF request at once in WebP while the AVIF is made in the "
                            "background; later requests get AVIF (default off)"),
    ("fast-first-max-age", _positive_int, "--fast-first: the max-age of a WebP answered in place of a cold AVIF, "
                                          "how long browsers and CDNs may keep it (default 60)"),
]


def _env_name(flag: str) -> str:
    return "IMGOPT_" + flag.upper().replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgopt", description="Next.js-compatible image optimization service")
    parser.add_argument("--version", action="version", version=f"imgopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the HTTP service")
    warm = sub.add_parser(
        "warm", help="fill the cache with every image variant a built site uses",
        description="Collect every /_next/image URL of a static export folder, a sitemap.xml or page URLs, "
                    "and produce each once per output format, through --server or in this process with the "
                    "same flags as `imgopt serve` (so it writes the same cache).")
    warm.add_argument("sources", nargs="+", metavar="SOURCE",
                      help="a static export folder, a sitemap.xml (file or URL), or an http(s) page URL")
    warm.add_argument("--server", help="a running imgopt (e.g. http://127.0.0.1:3001) to send the requests to")
    warm.add_argument("--formats", help="comma-separated: avif, webp, original (default: the config's formats; "
                                        "with --server and no config, avif and webp, asked as browsers ask)")
    warm.add_argument("--concurrency", type=int, default=2, help="requests at once (default 2)")
    warm.add_argument("--dry-run", action="store_true", help="list the variants, request nothing")
    for p in (serve, warm):
        for flag, convert, help_text in OPTIONS:
            help_env = f"{help_text} [env {_env_name(flag)}]"
            if convert is _switch:
                p.add_argument(f"--{flag}", default=None, nargs="?", const="true", help=help_env)
            else:
                p.add_argument(f"--{flag}", default=None, help=help_env)
    return parser


class UsageError(Exception):
    pass


def resolve_options(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Flag over environment variable over default; each value converted and checked."""
    values: dict[str, Any] = {}
    for flag, convert, _help in OPTIONS:
        attr = flag.replace("-", "_")
        raw = getattr(args, attr)
        source = f"--{flag}"
        if raw is None and env.get(_env_name(flag)):
            raw, source = env[_env_name(flag)], _env_name(flag)
        if raw is None:
            continue
        try:
            values[attr] = convert(raw)
        except ValueError as e:
            shown = re.sub(r"//[^/@]*@", "//***@", raw)  # never echo a password from a URL
            raise UsageError(f"{source}: invalid value {shown!r} ({e})") from None
    return values


def settings_from(values: dict[str, Any]) -> Settings:
    if "config" in values and "next_config" in values:
        raise UsageError("--config and --next-config cannot be used together; give one source of the images settings")
    if "config" in values:
        images = load_images_config(values["config"])
    elif "next_config" in values:
        images = parse_images_config(load_next_config(values["next_config"]))
    else:
        images = ImagesConfig()
    kw: dict[str, Any] = {"images": images}
    # the site's own limits (next.config's experimental.imgOpt*), unless given here
    if images.max_input_pixels is not None:
        kw["max_input_pixels"] = images.max_input_pixels
    if images.transform_timeout is not None:
        kw["transform_timeout"] = images.transform_timeout
    for key in ("host", "port", "origin", "workers", "queue", "fetch_timeout", "transform_timeout", "max_input_pixels",
                "metrics_port", "fast_first", "fast_first_max_age", "isolation", "worker_max_jobs", "worker_max_rss"):
        if key in values:
            kw[key] = values[key]
    if "local_root" in values and is_bucket_url(values["local_root"]):
        try:
            kw["local_root"] = parse_bucket_url(values["local_root"])
        except ValueError as e:
            raise UsageError(f"--local-root {values['local_root']}: {e}") from None
    elif "local_root" in values:
        root = Path(values["local_root"])
        if not root.is_dir():
            raise UsageError(f"--local-root {root}: not a folder")
        kw["local_root"] = root.resolve()
    if "origin" in values and not values["origin"].startswith(("http://", "https://")):
        raise UsageError(f"--origin {values['origin']}: must start with http:// or https://")
    if "cache_dir" in values:
        kw["cache_dir"] = Path(values["cache_dir"])
    if "cache_size" in values:
        kw["cache_size"] = values["cache_size"]
    elif images.maximum_disk_cache_size is not None:
        kw["cache_size"] = images.maximum_disk_cache_size
    for key in ("cache", "cache_tier", "redis_timeout", "memory_cache_size", "resized_cache_size", "lock", "store_timeout"):
        if key in values:
            kw[key] = values[key]
    if "lock" in values and not isinstance(kw.get("cache"), BucketURL):
        raise UsageError("--lock: only with a bucket --cache (a Redis --cache keeps its locks in the same Redis)")
    return Settings(**kw)


def http_limits_from(values: dict[str, Any]) -> HttpLimits:
    """The HTTP server's limits from the resolved options (imgopt.httpserver's defaults)."""
    from .httpserver import HttpLimits, default_max_connections

    return HttpLimits(
        max_header_bytes=values.get("max_header_bytes", HttpLimits.max_header_bytes),
        header_timeout=values.get("header_timeout", HttpLimits.header_timeout),
        keepalive_timeout=values.get("keepalive_timeout", HttpLimits.keepalive_timeout),
        max_connections=values.get("max_connections", default_max_connections()),
        drain_timeout=values.get("drain_timeout", HttpLimits.drain_timeout),
    )


def main(argv: Sequence[str] | None = None) -> int:
    malloc.tune()
    args = build_parser().parse_args(argv)
    try:
        values = resolve_options(args, dict(os.environ))
        settings = settings_from(values)
    except (ConfigError, UsageError) as e:
        print(f"imgopt: {e}", file=sys.stderr)
        return 2
    level = values.get("log_level", "info")
    for flag, bucket in (("--local-root", settings.local_root), ("--cache", settings.cache)):
        # Refused credentials or no such bucket: one line and exit 2, not 502s or a cache that
        # never works. A store that does not answer yet is no reason to stop (requests say so).
        problem = probe(bucket) if isinstance(bucket, BucketURL) else None
        if problem:
            print(f"imgopt: {flag} {bucket}: {problem}", file=sys.stderr)
            return 2
    if args.command == "warm":
        logs.configure(level if "log_level" in values else "warning", values.get("log_format", "json"))
        return _warm(args, settings, config_given="config" in values or "next_config" in values)
    logs.configure(level, values.get("log_format", "json"))
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        try:
            start_http_server(settings.metrics_port, addr=settings.host)  # a daemon thread
        except OSError as e:
            logging.getLogger("imgopt").error("--metrics-port %d: cannot listen (%s)", settings.metrics_port, e)
            return 1

    import uvicorn

    from .app import create_app
    from .httpserver import GuardedHttpToolsProtocol, raise_open_file_limit

    raise_open_file_limit()
    limits = http_limits_from(values)

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM after a graceful shutdown; we exit 0 instead."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM:
                self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=level,
        log_config=None,  # uvicorn's lines go through the handler logs.configure installed
        http=GuardedHttpToolsProtocol.with_limits(limits),
        timeout_keep_alive=limits.keepalive_timeout,  # type: ignore[arg-type]  # uvicorn takes float seconds
        timeout_graceful_shutdown=limits.drain_timeout,  # type: ignore[arg-type]  # float seconds work
        access_log=False,
    )
    Server(config).run()
    return 0


def _warm(args: argparse.Namespace, settings: Settings, config_given: bool) -> int:
    import asyncio

    from . import warm

    if args.concurrency < 1:
        print("imgopt: --concurrency: must be at least 1", file=sys.stderr)
        return 2
    try:
        return asyncio.run(warm.warm(
            args.sources, settings=settings, server=args.server,
            formats=args.formats.split(",") if args.formats else None,
            concurrency=args.concurrency, dry_run=args.dry_run, config_given=config_given))
    except warm.WarmError as e:
        print(f"imgopt: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
