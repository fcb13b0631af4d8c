"""`imgopt serve`: flags, each also read from IMGOPT_<FLAG>; flag over variable over default."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import malloc
from .config import ConfigError, ImagesConfig, Settings, load_images_config, parse_images_config
from .nextconfig import load_next_config


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


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be more than 0")
    return value


def _cache_backend(text: str) -> str:
    value = text.strip()
    if value == "disk" or value.startswith(("redis://", "rediss://", "unix://")):
        if value != "disk":
            from redis.connection import parse_url  # the client's own URL rules

            parse_url(value)
        return value
    raise ValueError("expected disk or a redis://host:port/db URL (rediss:// for TLS, unix:// for a socket)")


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


# flag, type, help. The environment variable is IMGOPT_ + the flag in upper case.
OPTIONS: list[tuple[str, Callable[[str], Any], str]] = [
    ("host", str, "address to bind (default 127.0.0.1)"),
    ("port", int, "port to listen on (default 3001)"),
    ("config", str, "JSON file with the Next.js `images` object (or {\"images\": {...}})"),
    ("next-config", str, "the site's next.config.(js|mjs|ts) or project folder; its `images` section is read with node"),
    ("local-root", str, "folder that relative urls (/img.png) are read from"),
    ("origin", str, "base URL that relative urls are fetched from when there is no --local-root"),
    ("cache-dir", str, "folder of the disk cache (default .imgopt-cache)"),
    ("cache-size", _size, "disk cache bound in bytes, K/M/G suffixes allowed (default 1G; 0 = no cache)"),
    ("memory-cache-size", _size, "hot cache entries kept in memory, in bytes (default 64M; 0 = none)"),
    ("resized-cache-size", _size, "recently resized originals kept in memory for their other formats, in bytes (default 128M; 0 = none)"),
    ("cache", _cache_backend, "disk (default), or a redis://host:port/db URL: one cache shared by all replicas"),
    ("cache-tier", _cache_tier, "with a Redis --cache: disk keeps a local first tier in --cache-dir, none (default) does not"),
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
    ("log-level", str, "debug, info, warning or error (default info)"),
]


def _env_name(flag: str) -> str:
    return "IMGOPT_" + flag.upper().replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgopt", description="Next.js-compatible image optimization service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the HTTP service")
    for flag, _type, help_text in OPTIONS:
        serve.add_argument(f"--{flag}", default=None, help=f"{help_text} [env {_env_name(flag)}]")
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
    for key in ("host", "port", "origin", "workers", "queue", "fetch_timeout", "transform_timeout", "max_input_pixels",
                "isolation", "worker_max_jobs", "worker_max_rss"):
        if key in values:
            kw[key] = values[key]
    if "local_root" in values:
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
    for key in ("cache", "cache_tier", "redis_timeout", "memory_cache_size", "resized_cache_size"):
        if key in values:
            kw[key] = values[key]
    return Settings(**kw)


def main(argv: Sequence[str] | None = None) -> int:
    malloc.tune()
    args = build_parser().parse_args(argv)
    try:
        values = resolve_options(args, dict(os.environ))
        settings = settings_from(values)
    except (ConfigError, UsageError) as e:
        print(f"imgopt: {e}", file=sys.stderr)
        return 2
    level = str(values.get("log_level", "info")).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    from .app import create_app

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
        log_level=level.lower() if level.lower() in ("debug", "info", "warning", "error") else "info",
        timeout_graceful_shutdown=20,
        access_log=False,
    )
    Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
