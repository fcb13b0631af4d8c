"""`imgopt warm`: fill the cache from a built site before traffic arrives.

It collects every ``/_next/image?…`` URL a site uses and asks for each one once per output
format, so the first real visitor gets a HIT. Sources:

* a folder (a static export): every ``*.html`` file's ``<img src/srcset>``, ``<source srcset>``
  and ``<link rel=preload imagesrcset>``, and the image URLs in the RSC payloads (inline
  ``self.__next_f.push`` scripts and the ``*.txt`` files next to the pages);
* a ``sitemap.xml`` (a file or an http(s) URL): every ``<loc>`` page is fetched and scanned;
* an http(s) page URL: fetched and scanned.

With ``--server URL`` the requests go to a running imgopt (any basePath; the host of the image
URLs is replaced by the server's). Without it the work is done in this process, by the same
application ``imgopt serve`` runs, with the same flags, so it writes the same cache (disk,
Redis). Either way the service's own checks apply (widths, qualities, allowed hosts), entries
that are already fresh are HITs and cost nothing (so a second run resumes), and bodies are
dropped as they arrive (memory stays bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from .config import DEFAULT_IMAGE_PATH, FORMATS

#: The Accept header of a browser that gets each output format (the service negotiates as for
#: that browser: a server without AVIF answers the first one with what such a browser gets).
FORMAT_ACCEPT = {
    "avif": "image/avif,image/webp,*/*",
    "webp": "image/webp,*/*",
    "original": "",
}
FORMAT_MIME = {"image/avif": "avif", "image/webp": "webp"}
#: A variant the server refuses as busy (503 with Retry-After: its workers and queue are full,
#: from this run or from live traffic) is asked again after that many seconds (at most
#: BUSY_WAIT_MAX each time), for up to BUSY_RETRY_SECONDS in all; then it counts as failed.
BUSY_RETRY_SECONDS = 120.0
BUSY_WAIT_MAX = 10.0

# An image URL inside text (RSC payloads, scripts): optional scheme://host, optional basePath,
# /_next/image (with Next's trailing slash under `trailingSlash: true`), a query. Loader URLs
# never hold a raw space, quote, comma or angle bracket.
_IN_TEXT = re.compile(r"""(?:https?://[^\s"'<>\\,]+?)?(?:/[^\s"'<>\\?,]*?)?/_next/image/?\?[^\s"'<>\\,]+""")
_JSON_ESCAPES = re.compile(r"\\u0026|\\u003[cCeE]|\\/")


@functools.lru_cache(maxsize=4)
def _custom_in_text(path: str) -> re.Pattern[str]:
    """Image URLs at a custom ``images.path`` inside text (a query that starts with url=, as the
    default loader writes it)."""
    spellings = "|".join(re.escape(p.rstrip("/")) for p in dict.fromkeys((path, unquote(path))))  # as written or encoded
    return re.compile(r"""(?:https?://[^\s"'<>\\,/]+)?(?:""" + spellings + r""")/?\?url=[^\s"'<>\\,]+""")


@dataclass(frozen=True)
class Variant:
    path: str    # path and query of the image URL, e.g. /shop/_next/image?url=%2Fa.jpg&w=640&q=75
    fmt: str     # avif | webp | original


@dataclass
class Outcome:
    variant: Variant
    status: int
    nbytes: int = 0
    cache: str = ""
    message: str = ""
    busy: int = 0  # 503s (server busy) before this answer


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200]

    def text(self) -> str:
        ok = [o for o in self.outcomes if o.status == 200]
        by_state: dict[str, int] = {}
        for o in ok:
            by_state[o.cache or "?"] = by_state.get(o.cache or "?", 0) + 1
        states = ", ".join(f"{n} {s}" for s, n in sorted(by_state.items()))
        busy = sum(o.busy for o in self.outcomes)
        lines = [f"imgopt warm: {len(self.outcomes)} variants, {len(ok)} ok ({states or 'none'}), "
                 f"{sum(o.nbytes for o in ok):,} bytes, {len(self.failures)} failed, {self.seconds:.1f} s"
                 + (f" ({busy} asked again after the server said it was busy)" if busy else "")]
        for o in self.failures:
            lines.append(f"  FAILED {o.status} {o.variant.fmt} {o.variant.path}: {o.message}")
        return "\n".join(lines)


# -- collecting image URLs -------------------------------------------------------------------

def image_path(url: str, path: str = DEFAULT_IMAGE_PATH) -> str | None:
    """The path and query of an image URL (any host, any basePath, or at ``images.path``), or
    None if it is not one. With `trailingSlash: true` Next's default loader writes
    ``/_next/image/?…``; it is kept so."""
    url = html.unescape(url.strip())
    parts = urlsplit(url)
    if not parts.query:
        return None
    at_custom = (path != DEFAULT_IMAGE_PATH and parts.query.startswith("url=")
                 and (unquote(parts.path).rstrip("/") or "/") == unquote(path))
    if at_custom:  # one spelling (encoded, as the browser sends it), the trailing slash kept
        slash = "/" if path != "/" and parts.path.endswith("/") else ""
        return f"{path}{slash}?{parts.query}"
    if not parts.path.endswith(("/_next/image", "/_next/image/")):
        return None
    return f"{parts.path}?{parts.query}"


def _srcset_urls(srcset: str) -> list[str]:
    # Next's srcset entries are "URL 640w" joined by ", "; loader URLs contain no raw spaces.
    return [item.strip().split(" ", 1)[0] for item in srcset.split(",") if item.strip()]


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.urls.append(a.get("src", ""))
            self.urls += _srcset_urls(a.get("srcset", ""))
        elif tag == "source":
            self.urls += _srcset_urls(a.get("srcset", ""))
        elif tag == "link" and a.get("rel", "").lower() == "preload":
            self.urls.append(a.get("href", ""))
            self.urls += _srcset_urls(a.get("imagesrcset", ""))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def urls_in_text(text: str, path: str = DEFAULT_IMAGE_PATH) -> list[str]:
    """Image URLs in an RSC payload or a script (JSON-escaped or not)."""
    unescaped = _JSON_ESCAPES.sub(lambda m: {"\\u0026": "&", "\\/": "/"}.get(m.group(0), ""), text)
    found = _IN_TEXT.findall(unescaped)
    if path != DEFAULT_IMAGE_PATH:
        found += _custom_in_text(path).findall(unescaped)
    return found


def urls_in_html(text: str, path: str = DEFAULT_IMAGE_PATH) -> list[str]:
    c = _Collector()
    c.feed(text)
    c.close()
    found = list(c.urls)
    for script in c.scripts:
        found += urls_in_text(script, path)
    return found


def page_links(sitemap_xml: str) -> list[str]:
    """The <loc> pages of a sitemap (a sitemap index's <loc>s are sitemaps: returned too)."""
    root = ET.fromstring(sitemap_xml)
    return [el.text.strip() for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "loc" and el.text]


async def collect(sources: Iterable[str], client: httpx.AsyncClient, path: str = DEFAULT_IMAGE_PATH) -> list[str]:
    """Every distinct image path+query the sources use, in the order first seen (``path``: the
    config's ``images.path``, looked for besides /_next/image)."""
    found: dict[str, None] = {}

    def add(urls: Iterable[str], base: str = "") -> None:
        for u in urls:
            p = image_path(urljoin(base, u) if base else u, path)
            if p:
                found.setdefault(p, None)

    async def fetch_text(url: str) -> str:
        r = await client.get(url, follow_redirects=True)
        if r.status_code != 200:
            raise WarmError(f"{url}: HTTP {r.status_code}")
        return r.text

    async def scan_page(url: str) -> None:
        add(urls_in_html(await fetch_text(url), path), url)

    async def scan_sitemap(text: str, depth: int = 0) -> None:
        for loc in page_links(text):
            if loc.endswith(".xml") and depth < 2:
                await scan_sitemap(await fetch_text(loc), depth + 1)
            else:
                await scan_page(loc)

    for source in sources:
        if source.startswith(("http://", "https://")):
            if urlsplit(source).path.endswith(".xml"):
                await scan_sitemap(await fetch_text(source))
            else:
                await scan_page(source)
            continue
        local = Path(source)
        if local.is_dir():
            for f in sorted(local.rglob("*")):
                if f.suffix == ".html" and f.is_file():
                    add(urls_in_html(f.read_text(errors="replace"), path))
                elif f.suffix == ".txt" and f.is_file():
                    add(urls_in_text(f.read_text(errors="replace"), path))
        elif local.is_file() and local.suffix == ".xml":
            await scan_sitemap(local.read_text(errors="replace"))
        elif local.is_file():
            add(urls_in_html(local.read_text(errors="replace"), path))
        else:
            raise WarmError(f"{source}: not a folder, a file or an http(s) URL")
    return list(found)


class WarmError(Exception):
    pass


# -- asking for every variant ----------------------------------------------------------------

def formats_for(config_formats: Iterable[str], wanted: Iterable[str] | None) -> list[str]:
    """The output formats to produce: by default those the config can negotiate (its
    `formats`), which is what browsers get; `original` adds the source type (clients that
    accept neither)."""
    negotiable = [FORMAT_MIME[m] for m in config_formats if m in FORMAT_MIME]
    if wanted is None:
        return negotiable
    out = []
    for f in wanted:
        f = f.strip().lower()
        if f not in FORMAT_ACCEPT:
            raise WarmError(f"--formats: unknown format {f!r} (avif, webp, original)")
        if f != "original" and f not in negotiable:
            raise WarmError(f"--formats: {f} is not in the config's images.formats {list(config_formats)}")
        out.append(f)
    return list(dict.fromkeys(out))


async def request_variant(client: httpx.AsyncClient, v: Variant) -> Outcome:
    outcome, deferred = await _ask(client, v, FORMAT_ACCEPT[v.fmt])
    if deferred:
        # A server with --fast-first answered a browser with the WebP and makes this format
        # later: ask as a client that takes only that format, which waits for it now.
        outcome, _ = await _ask(client, v, deferred)
    return outcome


async def _ask(client: httpx.AsyncClient, v: Variant, accept: str) -> tuple[Outcome, str]:
    """One variant, asked again while the server answers 503 with Retry-After."""
    give_up = time.monotonic() + BUSY_RETRY_SECONDS
    busy = 0
    while True:
        outcome, deferred, retry_after = await _request(client, v, accept)
        if outcome.status != 503 or retry_after is None or time.monotonic() + retry_after > give_up:
            outcome.busy = busy
            return outcome, deferred
        busy += 1
        await asyncio.sleep(retry_after)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (at most BUSY_WAIT_MAX), or None when absent or a date."""
    try:
        return min(max(float(value or ""), 0.0), BUSY_WAIT_MAX)
    except ValueError:
        return None


async def _request(client: httpx.AsyncClient, v: Variant, accept: str) -> tuple[Outcome, str, float | None]:
    """One variant asked with this Accept; the format an early answer stands in for, or '';
    and a 503's Retry-After."""
    headers = {"Accept": accept} if accept else {}
    try:
        async with client.stream("GET", v.path, headers=headers) as r:
            n, head = 0, b""
            async for chunk in r.aiter_raw():  # counted and dropped: memory stays bounded
                n += len(chunk)
                if r.status_code != 200 and len(head) < 300:
                    head += chunk[:300]
            message = head[:300].decode("utf-8", "replace") if r.status_code != 200 else ""
            deferred = r.headers.get("x-imgopt-deferred", "") if r.status_code == 200 else ""
            deferred = deferred if deferred in FORMAT_MIME else ""
            retry_after = _retry_after(r.headers.get("retry-after")) if r.status_code == 503 else None
            return Outcome(v, r.status_code, n, r.headers.get("x-nextjs-cache", ""), message), deferred, retry_after
    except httpx.HTTPError as e:
        return Outcome(v, 0, message=f"{type(e).__name__}: {e}"), "", None


async def run(variants: list[Variant], client: httpx.AsyncClient, concurrency: int,
              progress: Any = None) -> Summary:
    t0 = time.monotonic()
    summary = Summary()
    queue: asyncio.Queue[Variant] = asyncio.Queue()
    for v in variants:
        queue.put_nowait(v)

    async def worker() -> None:
        while True:
            try:
                v = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            outcome = await request_variant(client, v)
            summary.outcomes.append(outcome)
            if progress is not None:
                progress.update(1)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    summary.seconds = time.monotonic() - t0
    return summary


@contextlib.asynccontextmanager
async def in_process_client(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client wired to the app `imgopt serve` runs, in this process (lifespan too)."""
    from .app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://imgopt.warm", timeout=None) as client:
            yield client


def progress_bar(total: int) -> Any:
    """A progress bar on a terminal (stderr), nothing otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="variant", file=sys.stderr, dynamic_ncols=True)


async def warm(sources: list[str], *, settings: Any, server: str | None, formats: list[str] | None,
               concurrency: int, dry_run: bool, out: Any = sys.stdout, config_given: bool = True) -> int:
    """The whole command; returns the exit status (1 when any variant failed).

    ``config_given``: the images settings came from --config/--next-config. Without them a
    ``--server`` is asked for every format Next can negotiate (AVIF and WebP) as browsers ask,
    and it answers with what it negotiates;
    in this process the defaults are the config, as for ``serve``."""
    async with httpx.AsyncClient(timeout=60) as fetcher:
        paths = await collect(sources, fetcher, settings.images.path)  # without a config: the default
    fmts = formats_for(settings.images.formats if config_given or not server else FORMATS, formats)
    variants = [Variant(p, f) for p in paths for f in fmts]
    if not paths:  # a wrong folder or build, or a site whose images do not go through /_next/image
        print(f"imgopt warm: no /_next/image URLs found in {', '.join(sources)}", file=sys.stderr)
        if not dry_run:
            return 1
    if dry_run:
        for v in variants:
            print(f"{v.fmt}\t{v.path}", file=out)
        print(f"imgopt warm: {len(paths)} image URLs x {len(fmts)} formats = {len(variants)} variants (dry run)",
              file=out)
        return 0
    bar = progress_bar(len(variants))
    try:
        if server:
            base = server.rstrip("/")
            async with httpx.AsyncClient(base_url=base, timeout=None) as client:
                summary = await run(variants, client, concurrency, bar)
        else:
            # every variant now: --fast-first would defer the AVIFs past the end of the run
            async with in_process_client(settings.with_(fast_first=False)) as client:
                summary = await run(variants, client, concurrency, bar)
    finally:
        if bar is not None:
            bar.close()
    print(summary.text(), file=out)
    return 1 if summary.failures else 0

