"""Request parsing: the query string of ``/_next/image`` and the Accept header.

``parse_request`` checks the parameters in exactly the order Next.js does (spec §1.2), with
the same status codes and messages, and returns a typed :class:`ImageRequest`.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

import ada_url

from .config import ImagesConfig
from .errors import ImageError
from .patterns import ParsedURL, has_local_match, has_remote_match, to_usv

MAX_URL_LENGTH = 3072
_DIGITS = re.compile(r"[0-9]+")
_RECURSIVE = re.compile(r"/_next/image($|/)")
_STATIC_PREFIXES = ("/_next/static/media", "/_next/static/immutable/media")


@dataclass(frozen=True)
class RemoteURL(ParsedURL):
    """An absolute http(s) URL as ``new URL()`` (ada) parses it: the parts the matchers look at,
    and ``href``, what is fetched and keyed (without the fragment, which is never sent)."""

    href: str

    def __str__(self) -> str:
        return self.href


@dataclass(frozen=True)
class ImageRequest:
    """A validated request for one variant of one image."""

    href: str  # what is fetched and keyed: the raw relative url, or the normalised absolute one
    remote: RemoteURL | None  # set for absolute urls
    width: int
    quality: int
    mime: str  # negotiated output type ('' = keep the source's type)
    is_static: bool
    # imgopt extensions (docs/extras.md): the type an animation may be re-encoded to
    # ('' = pass it through), and whether this is a /_next/image/placeholder request.
    animated_mime: str = ""
    placeholder: bool = False
    # --fast-first: when ``mime`` is AVIF, the type the client accepts without it (WebP), or ''.
    fast_mime: str = ""

    @property
    def is_local(self) -> bool:
        return self.remote is None

    @property
    def cache_mime(self) -> str:
        """The negotiated type as the cache key sees it (AVIF clients differ in WebP support)."""
        if self.animated_mime and self.animated_mime != self.mime:
            return f"{self.mime};animated={self.animated_mime}"
        return self.mime


def _bad(message: str) -> ImageError:
    return ImageError(400, message)


def parse_query(raw_query: str) -> dict[str, list[str]]:
    """Parse a query string the way Node does: '+' is a space, repeated keys collect."""
    out: dict[str, list[str]] = {}
    for k, v in parse_qsl(raw_query, keep_blank_values=True, errors="replace"):
        out.setdefault(k, []).append(v)
    return out


def js_int_string(digits: str) -> str:
    """``String(parseInt(digits))`` in JavaScript, for the width in Next's error message.

    parseInt gives a double: past 2**53 digits are lost, from 1e21 JavaScript writes an
    exponent ("1e+23"), and past the double range it is "Infinity".
    """
    try:
        f = float(int(digits))
    except OverflowError:
        return "Infinity"
    if f < 1e21:
        return str(int(f)) if f < 2**53 else _js_digits(f)
    mantissa, _, exp = repr(f).partition("e")
    return f"{mantissa.removesuffix('.0')}e+{int(exp)}"


def _js_digits(f: float) -> str:
    """An integral double below 1e21 the way JavaScript prints it: the shortest round-trip
    digits, then zeros (Python's int(f) would print the exact binary value instead)."""
    mantissa, _, exp = repr(f).partition("e")
    digits = mantissa.replace(".", "").rstrip("0") or "0"
    point = int(exp) + 1 if exp else len(mantissa.split(".")[0])
    return digits.ljust(point, "0")


def _js_length(s: str) -> int:
    """Length in UTF-16 code units, as JavaScript's String.length counts."""
    return len(s.encode("utf-16-le")) // 2


def _one(query: dict[str, list[str]], key: str) -> str | list[str]:
    vals = query.get(key, [])
    if len(vals) > 1:
        return vals
    return vals[0] if vals else ""


_DOT_SEGMENTS = {".", "%2e"}
_DOTDOT_SEGMENTS = {"..", ".%2e", "%2e.", "%2e%2e"}


def normalize_path(path: str) -> str:
    """Resolve a URL path like the WHATWG parser: '\\' is '/', '.', '..' and their %2e forms."""
    path = path.replace("\\", "/")
    out: list[str] = []
    segments = path.split("/")[1:] if path.startswith("/") else path.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        low = seg.lower()
        if low in _DOTDOT_SEGMENTS:
            if out:
                out.pop()
            if last:
                out.append("")
        elif low in _DOT_SEGMENTS:
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def strict_unquote(s: str) -> str:
    """decodeURIComponent: raises ValueError on a malformed escape or invalid UTF-8."""
    if re.search(r"%(?![0-9A-Fa-f]{2})", s):
        raise ValueError("malformed percent-escape")
    return unquote(s, errors="strict")


def split_local(url: str) -> tuple[str, str]:
    """Split a relative url into (normalised path, search) — search is '?…' or ''."""
    path, _, rest = url.partition("?")
    path = path.split("#", 1)[0]
    query = rest.split("#", 1)[0]
    return normalize_path(path), (f"?{query}" if query else "")


_REMOTE_PARTS = ("href", "username", "password", "protocol", "hostname", "port", "pathname", "search")


def parse_remote_url(url: str) -> RemoteURL:
    """``new URL(url)`` for an absolute http(s) url (ada, Node's own parser); ImageError 400
    'invalid' where it throws or for another scheme, 'not allowed' for a url with credentials."""
    try:
        u = ada_url.parse_url(to_usv(url), _REMOTE_PARTS)
    except ValueError:
        raise _bad('"url" parameter is invalid') from None
    if u["protocol"] not in ("http:", "https:"):
        raise _bad('"url" parameter is invalid')
    if u["username"] or u["password"]:
        raise _bad('"url" parameter is not allowed')
    href = u["href"].partition("#")[0]  # '#' is always escaped before the fragment
    return RemoteURL(u["protocol"], u["hostname"], u["port"], u["pathname"], u["search"], href)


def negotiate(accept: str, formats: tuple[str, ...]) -> str:
    """The output type Next.js picks from `formats` for this Accept header; '' keeps the source's.

    Next asks @hapi/accept's ``mediaType(accept, formats)`` and keeps the answer only if
    ``accept.includes(answer)``: a type named literally (so ``image/*`` or ``*/*`` never picks
    AVIF/WebP, which an old browser may not decode). hapi ranks the header's entries by q, then,
    at equal q, by type and subtype *alphabetically* (wildcards last), then by how many
    parameters they carry, then by position; neither the header's order nor `formats`' order
    decides a tie, so ``image/webp,image/avif`` gets AVIF whatever `formats` says. Held against
    hapi itself in tests/test_next_parity.py.
    """
    if not formats:
        return ""
    entries: dict[str, _AcceptEntry] = {}
    ranked: list[_AcceptEntry] = []
    for pos, item in enumerate(re.sub(r"[ \t]", "", accept or "*/*").split(",")):
        if not item:
            continue
        token, *params = item.split(";")
        token = token.lower()
        if not _HAPI_MEDIA.search(token):
            continue
        q, original, before_q = 1.0, "", True
        for param in params:
            name, sep, value = param.partition("=")
            if not sep or not value or "=" in value:
                return ""  # hapi throws 'Invalid accept header' (a 500 in Next): keep the source type
            if name in ("q", "Q"):
                before_q = False
                q = js_parse_float(value)
                if not math.isfinite(q) or q > 1 or (q < 0.001 and q != 0):
                    q = 1.0
            elif before_q:
                original += f";{name}={value}"
        kind, _, sub = token.partition("/")
        entry = _AcceptEntry(token, kind, sub, q, original, original.count(";"), pos)
        entries[token] = entry
        if q:
            ranked.append(entry)
    ranked.sort(key=functools.cmp_to_key(_hapi_order))
    chosen = _hapi_pick(ranked, entries, formats)
    if not chosen or chosen not in (accept or ""):
        return ""
    # hapi appends the entry's parameters ("image/webp;level=1"), which Next then uses as an
    # unknown type; the type itself is what is meant.
    return chosen.split(";", 1)[0]


@dataclass(frozen=True)
class _AcceptEntry:
    token: str
    kind: str
    sub: str
    q: float
    original: str  # the parameters before q, as ';k=v' (hapi appends them to the answer)
    specificity: int
    pos: int


# hapi's validMediaRx, with its alternation as written (only the first branch is anchored).
_HAPI_MEDIA = re.compile(
    r"^(?:\*/\*)|(?:[\w!#$%&'*+\-.^`|~]+/\*)|(?:[\w!#$%&'*+\-.^`|~]+/[\w!#$%&'*+\-.^`|~]+)$"
)
# JavaScript's parseFloat: leading JS whitespace, then the longest numeric prefix
_JS_FLOAT = re.compile(
    r"[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]*"
    r"([+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))"
)


def js_parse_float(text: str | None) -> float:
    """JavaScript's parseFloat (NaN where it finds no number, and for undefined)."""
    m = _JS_FLOAT.match(text) if text is not None else None
    return float(m.group(1).replace("Infinity", "inf")) if m else math.nan


def _hapi_order(a: _AcceptEntry, b: _AcceptEntry) -> int:
    if a.q != b.q:
        return -1 if a.q > b.q else 1
    for x, y in ((a.kind, b.kind), (a.sub, b.sub)):
        if x != y:
            if x == "*":
                return 1
            if y == "*":
                return -1
            return -1 if x < y else 1
    if a.specificity != b.specificity:
        return b.specificity - a.specificity
    return a.pos - b.pos


def _hapi_pick(ranked: list[_AcceptEntry], entries: dict[str, _AcceptEntry], formats: tuple[str, ...]) -> str:
    """hapi's preferences(): the first ranked entry that names or covers one of `formats`."""
    prefs = [f.lower() for f in formats]
    for e in ranked:
        if e.kind == "*":  # */*: the formats the header does not name itself, in their order
            for p in prefs:
                if p not in entries:
                    return p
        elif e.sub != "*":
            if e.token in prefs:
                return e.token + e.original
        else:  # type/*
            for p in prefs:
                if p.split("/", 1)[0] == e.kind and p not in entries:
                    return p
    return ""


def _parse_url(query: dict[str, list[str]], cfg: ImagesConfig) -> tuple[str, str, RemoteURL | None]:
    """The `url` parameter checked as Next.js does: (raw url, href, remote or None)."""
    url = _one(query, "url")
    if not url:
        raise _bad('"url" parameter is required')
    if isinstance(url, list):
        raise _bad('"url" parameter cannot be an array')
    if _js_length(url) > MAX_URL_LENGTH:
        raise _bad('"url" parameter is too long')
    if url.startswith("//"):
        raise _bad('"url" parameter cannot be a protocol-relative URL (//)')

    remote: RemoteURL | None = None
    if url.startswith("/"):
        # Next resolves a relative url with WHATWG URL parsing, which drops trailing spaces
        # ("/a.png " fetches /a.png); so does imgopt. Control characters are refused.
        url = url.rstrip(" ")
        if any(ord(c) < 0x20 or c == "\x7f" for c in url):
            raise _bad('"url" parameter is invalid')
        path, search = split_local(url)
        try:
            decoded = strict_unquote(path)
        except ValueError:
            raise _bad('"url" parameter is invalid') from None
        if _RECURSIVE.search(decoded):
            raise _bad('"url" parameter cannot be recursive')
        if not has_local_match(cfg.local_patterns, path + search):  # it applies WHATWG encoding
            raise _bad('"url" parameter is not allowed')
        if "\\" in url:  # WHATWG reads it as "/": "/\\host/x" is //host/x, a 500 in Next
            raise _bad('"url" parameter is invalid')
        href = url
    else:
        remote = parse_remote_url(url)
        if not has_remote_match(cfg.domains, cfg.remote_patterns, remote):
            raise _bad('"url" parameter is not allowed')
        href = remote.href
    return url, href, remote


def parse_request(raw_query: str, accept: str, cfg: ImagesConfig) -> ImageRequest:
    """Validate the query in Next.js's order (spec §1.2); raise ImageError(400, message)."""
    query = parse_query(raw_query)
    w = _one(query, "w")
    q = _one(query, "q")
    url, href, remote = _parse_url(query, cfg)

    if not w:
        raise _bad('"w" parameter (width) is required')
    if isinstance(w, list):
        raise _bad('"w" parameter (width) cannot be an array')
    if not _DIGITS.fullmatch(w):
        raise _bad('"w" parameter (width) must be an integer greater than 0')
    if not q:
        raise _bad('"q" parameter (quality) is required')
    if isinstance(q, list):
        raise _bad('"q" parameter (quality) cannot be an array')
    if not _DIGITS.fullmatch(q):
        raise _bad('"q" parameter (quality) must be an integer between 1 and 100')
    width = int(w)
    if width <= 0:
        raise _bad('"w" parameter (width) must be an integer greater than 0')
    if width not in cfg.widths:
        raise _bad(f'"w" parameter (width) of {js_int_string(w)} is not allowed')
    quality = int(q)
    if quality < 1 or quality > 100:
        raise _bad('"q" parameter (quality) must be an integer between 1 and 100')
    if cfg.qualities is not None and quality not in cfg.qualities:
        raise _bad(f'"q" parameter (quality) of {q} is not allowed')

    is_static = remote is None and url.startswith(tuple(cfg.base_path + p for p in _STATIC_PREFIXES))
    mime = negotiate(accept, cfg.formats)
    return ImageRequest(
        href=href,
        remote=remote,
        width=width,
        quality=quality,
        mime=mime,
        is_static=is_static,
        animated_mime=negotiate(accept, tuple(f for f in cfg.formats if f == "image/webp")) if cfg.animated else "",
        fast_mime=negotiate(accept, tuple(f for f in cfg.formats if f != "image/avif")) if mime == "image/avif" else "",
    )


def parse_placeholder_request(raw_query: str, cfg: ImagesConfig) -> ImageRequest:
    """`/_next/image/placeholder?url=…`: the url checked exactly as for images; no w or q."""
    _url, href, remote = _parse_url(parse_query(raw_query), cfg)
    return ImageRequest(href=href, remote=remote, width=0, quality=0, mime="application/json",
                        is_static=False, placeholder=True)


class RequestMemo:
    """``parse_request`` remembered for repeated (query, Accept) pairs.

    Validation is a pure function of the query, the Accept header and the config, and it is
    the costliest step of a cache hit (~160 us with remotePatterns), so a hot URL is
    parsed once. Only valid requests are kept (errors are parsed each time), inputs longer than
    a normal URL are never kept, and the memo holds at most ``size`` entries (oldest dropped).
    """

    MAX_KEY = 4096

    def __init__(self, cfg: ImagesConfig, size: int = 4096) -> None:
        self.cfg = cfg
        self.size = size
        self._memo: dict[tuple[str, str], ImageRequest] = {}

    def parse(self, raw_query: str, accept: str) -> ImageRequest:
        key = (raw_query, accept)
        req = self._memo.get(key)
        if req is not None:
            return req
        req = parse_request(raw_query, accept, self.cfg)
        if self.size and len(raw_query) + len(accept) <= self.MAX_KEY:
            if len(self._memo) >= self.size:
                del self._memo[next(iter(self._memo))]  # insertion order: the oldest
            self._memo[key] = req
        return req
