"""``images.localPatterns`` / ``images.remotePatterns`` matching, Next.js style.

Pure (URLs are parsed by ada, see below). What it mirrors:

* ``hasLocalMatch`` / ``matchLocalPattern`` (``next/dist/shared/lib/match-local-pattern``)
* ``hasRemoteMatch`` / ``matchRemotePattern`` (``next/dist/shared/lib/match-remote-pattern``)
* the ``images`` normalisation in ``next/dist/server/config`` (remote-pattern
  protocol check, URL-string patterns, the Next 16 ``localPatterns`` default and
  the ``/_next/static/media/**`` entry that is appended)

Glob semantics
--------------
*Pathnames* use ``picomatch.makeRe(pattern, {dot: true})``, as Next does.
:func:`pathname_matcher` is a port of picomatch's parser (the copy Next ships as
``next/dist/compiled/picomatch``) for this subset:

``*``
    Any run of characters inside one segment. When the star is a whole segment it
    needs at least one character. A pattern that ends in ``*`` (or ``[...]``) also
    accepts one trailing ``/``.
``**``
    When it is a whole segment: any number of segments. ``/a/**`` matches ``/a``,
    ``/a/`` and ``/a/x/y``. ``/a/**/b`` matches ``/a/b``. A pattern that *starts*
    with ``/**/`` needs at least one segment there, so ``/**/*.png`` does not match
    ``/a.png`` (``**/*.png`` does). When it is part of a segment (``a**``) it acts
    like ``*``. ``**`` on its own matches every path.
``?``
    One character other than ``/``.
``[abc]``, ``[a-z]``, ``[^abc]``, ``[[:alpha:]]``
    Character classes. ``[^...]`` never matches ``/``. As in picomatch, ``[!a]``
    is *not* a negation (it matches ``!`` or ``a``). A class whose body has no
    regex-special characters also matches its own literal text (``[abc]``
    matches the string ``[abc]``).
``{a,b}``
    Alternatives, which may be nested and may contain globs. ``{1..3}`` is a
    character range. ``{abc}`` with no comma is literal text. An unclosed ``{``
    makes the pattern match nothing, as it does in Next.
``\\x``
    The character ``x`` taken literally.

Dot segments (``.`` and ``..``) are never matched by ``*`` or ``**``. The WHATWG
parser removes them from URLs anyway.

Deliberate differences from picomatch. In each case a pattern here matches what
it literally says:

* No extglobs (``+(a|b)``, ``@(..)``, ``!(..)``, ``*(..)``, ``?(..)``), no leading
  ``!`` negation and no ``"quoting"``. ``( ) | + @ ! " $ ^`` are always
  literal characters. In picomatch a bare ``(x)`` is a regex group and ``|``
  splits the whole regex, so ``/img(1).png`` would not match ``/img(1).png``.
  Here it does.
* ``\\d``, ``\\w`` and similar escapes mean the letter itself, not a regex class.
* A ``[`` that never closes (``/a[]b``, ``/x[^]``) makes the rest of the pattern
  literal text. Picomatch pastes the rest into the regex unescaped.

Matching time is linear in the subject's length. See :class:`GlobMatcher`: the
equivalent backtracking regex can take minutes on a hostile URL.

*Hostnames* do not use picomatch's rules here. Picomatch splits on ``/``, so in
Next ``*`` can cover several labels (``*.example.com`` matches ``a.b.example.com``,
and ``*`` on its own matches every host). This module treats ``.`` as the
separator, as the Next docs describe:

* ``*`` as a whole label matches exactly one label. Inside a label
  (``ia*``, ``*1``) it matches any run of characters within that label.
* ``**`` as a whole label matches one or more labels. So ``**.example.com``
  does not match ``example.com``, and ``**`` on its own matches every host.
* ``?`` matches one character that is not ``.``. ``[...]`` and ``{a,b}`` work
  as they do for paths.
* Matching ignores case, like newer Next (``CDN.Example.com`` is allowed).

URLs
----
Next matches the WHATWG-parsed ``URL``, and so does this module: :func:`parse_url` and
:func:`local_pathname_and_search` read the parts from ada (the ``ada-url`` package), the
URL parser Node itself bundles, so hosts, paths and queries are exactly what Next sees
(IDNA/punycode hosts, IPv4 shorthands, IPv6 compression, percent-encoding, dot segments).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import SplitResult

import ada_url

__all__ = [
    "PatternError",
    "ParsedURL",
    "RemotePattern",
    "LocalPattern",
    "parse_url",
    "to_usv",
    "local_pathname_and_search",
    "GlobMatcher",
    "pathname_matcher",
    "hostname_matcher",
    "match_remote_pattern",
    "has_remote_match",
    "match_local_pattern",
    "has_local_match",
    "default_local_patterns",
    "remote_patterns_from_config",
    "local_patterns_from_config",
    "STATIC_MEDIA_LOCAL_PATTERNS",
    "NEXT16_DEFAULT_LOCAL_PATTERNS",
]


class PatternError(ValueError):
    """An ``images.remotePatterns`` / ``images.localPatterns`` entry is invalid."""


# --------------------------------------------------------------------------------------
# URLs, as WHATWG (ada) parses them
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedURL:
    """The parts of a WHATWG ``URL`` that the matchers look at.

    ``protocol`` ends with ``:`` (``'https:'``). ``port`` is ``''`` for the default
    port. ``pathname`` always starts with ``/``. ``search`` is ``'?...'`` or ``''``.
    """

    protocol: str
    hostname: str
    port: str
    pathname: str
    search: str


def to_usv(s: str) -> str:
    """The string as JavaScript hands it to ``new URL()``: a lone surrogate becomes U+FFFD."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


_PARTS = ("protocol", "hostname", "port", "pathname", "search")


def parse_url(url: str) -> ParsedURL:
    """``new URL(url)``: the parts, or ``ValueError`` where it would throw."""
    u = ada_url.parse_url(to_usv(url), _PARTS)
    return ParsedURL(u["protocol"], u["hostname"], u["port"], u["pathname"], u["search"])


def local_pathname_and_search(url_path_and_query: str) -> tuple[str, str]:
    """``(pathname, search)`` of ``new URL(url_path_and_query, 'http://n')``.

    Raises ``ValueError`` where ``new URL`` would throw.
    """
    u = ada_url.URL(to_usv(url_path_and_query), "http://n")
    return u.pathname, u.search


# --------------------------------------------------------------------------------------
# picomatch port for pathnames ({dot: true})
# --------------------------------------------------------------------------------------

_DOT_LITERAL = r"\."
_ONE_CHAR = "(?=.)"
_QMARK = "[^/]"
_END_ANCHOR = r"(?:/|\Z)"
_DOTS_SLASH = r"\.{1,2}" + _END_ANCHOR
_NO_DOTS = "(?!(?:^|/)" + _DOTS_SLASH + ")"
_NO_DOT_SLASH = r"(?!\.{0,1}" + _END_ANCHOR + ")"
_NO_DOTS_SLASH = "(?!" + _DOTS_SLASH + ")"
_STAR = "[^/]*?"
_GLOBSTAR = "(?:(?:(?!(?:^|/)" + _DOTS_SLASH + ").)*?)"
_NEVER = "(?!)"

_REPLACEMENTS = {"***": "*", "**/**": "**", "**/**/**": "**"}
_REGEX_SPECIAL = frozenset("-*+?.^${}(|)[]")
_FASTPATH_EXT_RE = re.compile(r"([^\n\r\u2028\u2029]*?)\.(\w+)", re.ASCII)

# picomatch POSIX_REGEX_SOURCE, as inclusive code point ranges
_POSIX_CLASSES: dict[str, tuple[tuple[int, int], ...]] = {
    "alnum": ((0x61, 0x7A), (0x41, 0x5A), (0x30, 0x39)),
    "alpha": ((0x61, 0x7A), (0x41, 0x5A)),
    "ascii": ((0x00, 0x7F),),
    "blank": ((0x20, 0x20), (0x09, 0x09)),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": ((0x30, 0x39),),
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": tuple((ord(c), ord(c)) for c in "-!\"#$%&'()*+,./:;<=>?@[\\]^_`{|}~"),
    "space": tuple((ord(c), ord(c)) for c in " \t\r\n\v\f"),
    "upper": ((0x41, 0x5A),),
    "word": ((0x41, 0x5A), (0x61, 0x7A), (0x30, 0x39), (0x5F, 0x5F)),
    "xdigit": ((0x41, 0x46), (0x61, 0x66), (0x30, 0x39)),
}


def _class_char(c: str) -> str:
    if c in "\\]^-[&~|":
        return "\\" + c
    return c


def _class_source(items: list[str], separator: str, posix: bool) -> str | None:
    """Regex class for the body of ``[...]``.

    ``items`` holds the body as typed: single characters, ``'\\' + c`` for an
    escaped character and ``'[:name:]'`` for a POSIX class. Returns ``None`` for an
    invalid class (such as a reversed range), which in picomatch makes the whole
    pattern match nothing.
    """
    negated = bool(items) and items[0] == "^"
    body = items[1:] if negated else items
    ranges: list[tuple[int, int]] = []
    k = 0
    while k < len(body):
        item = body[k]
        if len(item) > 2:  # [:name:]
            ranges.extend(_POSIX_CLASSES[item[2:-2]])
            k += 1
            continue
        if k + 2 < len(body) and body[k + 1] == "-" and len(body[k + 2]) <= 2:
            lo, hi = ord(item[-1]), ord(body[k + 2][-1])
            if lo > hi:
                return None
            ranges.append((lo, hi))
            k += 3
            continue
        ranges.append((ord(item[-1]), ord(item[-1])))
        k += 1
    parts = []
    for lo, hi in ranges:
        if lo == hi:
            parts.append(_class_char(chr(lo)))
        else:
            parts.append(f"{_class_char(chr(lo))}-{_class_char(chr(hi))}")
    # picomatch adds the separator to a negated class, except when it holds a POSIX class
    if negated and not posix and not any(lo <= ord(separator) <= hi for lo, hi in ranges):
        parts.append(_class_char(separator))
    if not parts:
        return None
    return ("[^" if negated else "[") + "".join(parts) + "]"


def _bracket_output(items: list[str], separator: str) -> str:
    posix = any(len(i) > 2 for i in items)
    source = _class_source(items, separator, posix)
    if source is None:
        return _NEVER
    if posix or any(i[-1] in _REGEX_SPECIAL for i in items):
        return source
    # picomatch: a class with no regex-special characters also matches its own text
    literal_text = "[" + "".join(i[-1] for i in items) + "]"
    return "(?:" + re.escape(literal_text) + "|" + source + ")"


def _posix_item(items: list[str]) -> str | None:
    """At a ``:`` inside brackets: the ``[:name:]`` item that ends here, if any."""
    for k in range(len(items) - 1, -1, -1):
        if items[k] == "[":
            if k + 1 < len(items) and items[k + 1] == ":":
                name = "".join(items[k + 2 :])
                if name in _POSIX_CLASSES:
                    del items[k:]
                    return f"[:{name}:]"
            return None
    return None


class _Tok:
    __slots__ = ("type", "value", "output", "prev", "star", "items", "comma", "dots")

    def __init__(self, type_: str, value: str, output: str) -> None:
        self.type = type_
        self.value = value
        self.output = output
        self.prev: _Tok | None = None
        self.star = False
        self.items: list[str] | None = None
        self.comma = False
        self.dots = False


class _PathGlobParser:
    """picomatch ``parse()`` with ``{dot: true}``, minus extglobs, negation and quotes."""

    def __init__(self, pattern: str) -> None:
        self.t = pattern
        self.n = len(pattern)
        self.index = -1
        self.start = 0
        self.brackets = 0
        self.braces = 0
        self.bos = _Tok("bos", "", "")
        self.toks: list[_Tok] = [self.bos]
        self.prev = self.bos
        self.brace_stack: list[_Tok] = []
        self.kinds: list[str] = []

    def peek(self, k: int = 1) -> str | None:
        i = self.index + k
        return self.t[i] if i < self.n else None

    def eos(self) -> bool:
        return self.index == self.n - 1

    def push(self, tok: _Tok) -> None:
        b = self.prev
        if b.type == "globstar":
            brace_sep = self.braces > 0 and tok.type in ("comma", "brace")
            if tok.type not in ("slash", "paren") and not brace_sep:
                b.type, b.value, b.output = "star", "*", _STAR
        if b.type == "text" and tok.type == "text":
            b.output += tok.output
            b.value += tok.value
            return
        tok.prev = b
        self.toks.append(tok)
        self.prev = tok

    def text(self, ch: str) -> None:
        self.push(_Tok("text", ch, re.escape(ch)))

    def parse(self) -> str:
        t, n = self.t, self.n
        while self.index < n - 1:
            self.index += 1
            g = t[self.index]
            b = self.prev
            if g == "\0":
                continue
            if g == "\\":
                nxt = self.peek()
                if nxt in ("/", ".", ";"):
                    continue
                if nxt is None:
                    self.text("\\")
                    continue
                self.index += 1
                if self.brackets == 0:
                    self.text(nxt)
                    continue
                g = "\\" + nxt
            if self.brackets > 0 and (g != "]" or b.value in ("[", "[^")):
                assert b.items is not None
                if g == ":":
                    posix = _posix_item(b.items)
                    if posix is not None:  # picomatch also swallows the next character (the "]")
                        b.items.append(posix)
                        b.value += g
                        self.index += 1
                        continue
                b.value += g
                b.items.append(g)
                continue
            if g == "[":
                if "]" not in t[self.index + 1 :]:
                    self.push(_Tok("bracket", "\\[", r"\["))
                    continue
                self.brackets += 1
                self.kinds.append("brackets")
                tok = _Tok("bracket", "[", "")
                tok.items = []
                self.push(tok)
                continue
            if g == "]":
                if self.brackets == 0:
                    self.text("]")
                    continue
                self.brackets -= 1
                if self.kinds:
                    self.kinds.pop()
                assert b.items is not None
                b.value += "]"
                b.output = _bracket_output(b.items, "/")
                b.items = None
                continue
            if g == "{":
                self.braces += 1
                self.kinds.append("braces")
                tok = _Tok("brace", "{", "(")
                self.brace_stack.append(tok)
                self.push(tok)
                continue
            if g == "}":
                if not self.brace_stack:
                    self.text("}")
                    continue
                brace = self.brace_stack[-1]
                out = ")"
                if brace.dots:
                    values: list[str] = []
                    while self.toks:
                        tk = self.toks.pop()
                        if tk.type == "brace":
                            break
                        if tk.type != "dots":
                            values.insert(0, tk.value)
                    out = _expand_range(values)
                elif not brace.comma:
                    brace.value = brace.output = r"\{"
                    g = out = r"\}"
                self.push(_Tok("brace", g, out))
                self.braces -= 1
                if self.kinds:
                    self.kinds.pop()
                self.brace_stack.pop()
                continue
            if g == ",":
                out = ","
                if self.brace_stack and self.kinds and self.kinds[-1] == "braces":
                    self.brace_stack[-1].comma = True
                    out = "|"
                self.push(_Tok("comma", ",", out))
                continue
            if g == "/":
                if b.type == "dot" and self.index == self.start + 1:
                    self.start = self.index + 1
                    self.toks.pop()
                    self.prev = self.bos
                    continue
                self.push(_Tok("slash", "/", "/"))
                continue
            if g == ".":
                if self.braces > 0 and b.type == "dot":
                    b.type = "dots"
                    b.value += "."
                    self.brace_stack[-1].dots = True
                    continue
                if self.braces == 0 and b.type not in ("bos", "slash"):
                    self.push(_Tok("text", ".", _DOT_LITERAL))
                    continue
                self.push(_Tok("dot", ".", _DOT_LITERAL))
                continue
            if g == "?":
                self.push(_Tok("qmark", "?", _QMARK))
                continue
            if g != "*":
                self.text(g)
                continue
            self.star()
        if self.braces > 0:
            return _NEVER
        for tk in self.toks:
            if tk.items is not None:  # unclosed bracket: literal text
                tk.output = re.escape("[" + "".join(i if len(i) > 2 else i[-1] for i in tk.items))
                tk.items = None
        if self.prev.type in ("star", "bracket"):
            self.push(_Tok("maybe_slash", "", "/?"))
        return "".join(tk.output for tk in self.toks)

    def star(self) -> None:
        b = self.prev
        if b.type == "globstar" or b.star:
            b.type, b.star, b.output = "star", True, _STAR
            b.value += "*"
            return
        rest = self.t[self.index + 1 :]
        if b.type == "star":
            u = b.prev
            assert u is not None
            o = u.prev
            whole_segment = u.type in ("slash", "bos")
            after_star = o is not None and o.type in ("star", "globstar")
            brace_start = self.braces > 0 and u.type in ("comma", "brace")
            if not whole_segment and not brace_start:
                self.push(_Tok("star", "*", ""))
                return
            while rest[:3] == "/**":
                after = self.peek(4)
                if after and after != "/":
                    break
                rest = rest[3:]
                self.index += 3
            b.value += "*"
            if u.type == "bos" and self.eos():
                u.output = ""
                b.type, b.output = "globstar", _GLOBSTAR
                return
            if u.type == "slash" and u.prev is not None and u.prev.type != "bos":
                if not after_star and self.eos():
                    u.output = "(?:" + u.output
                    b.type, b.output = "globstar", _GLOBSTAR + r"|\Z)"
                    return
                if rest[:1] == "/":
                    tail = r"|\Z" if len(rest) > 1 else ""
                    u.output = "(?:" + u.output
                    b.type, b.output = "globstar", _GLOBSTAR + "/|/" + tail + ")"
                    self.index += 1
                    self.push(_Tok("slash", "/", ""))
                    return
            if u.type == "bos" and rest[:1] == "/":
                u.output = ""
                b.type, b.output = "globstar", "(?:^|/|" + _GLOBSTAR + "/)"
                self.index += 1
                self.push(_Tok("slash", "/", ""))
                return
            b.type, b.output = "globstar", _GLOBSTAR
            return
        tok = _Tok("star", "*", _STAR)
        if self.index == self.start or b.type in ("slash", "dot"):
            b.output += _NO_DOT_SLASH if b.type == "dot" else _NO_DOTS_SLASH
            if self.peek() != "*":
                b.output += _ONE_CHAR
        self.push(tok)


def _expand_range(values: list[str]) -> str:
    values = sorted(values)
    source = "[" + "-".join(values) + "]"
    try:
        re.compile(source)
    except re.error:
        return r"\.\.".join(re.escape(v) for v in values)
    return source


def _fastpath(pattern: str) -> str | None:
    """picomatch ``parse.fastpaths`` with ``{dot: true}``."""

    def create(s: str) -> str | None:
        if s == "*":
            return _NO_DOTS + _ONE_CHAR + _STAR
        if s == ".*":
            return _DOT_LITERAL + _ONE_CHAR + _STAR
        if s == "*.*":
            return _NO_DOTS + _STAR + _DOT_LITERAL + _ONE_CHAR + _STAR
        if s == "*/*":
            return _NO_DOTS + _STAR + "/" + _ONE_CHAR + _NO_DOTS_SLASH + _STAR
        if s == "**":
            return _NO_DOTS + _GLOBSTAR
        if s == "**/*":
            return "(?:" + _NO_DOTS + _GLOBSTAR + "/)?" + _NO_DOTS_SLASH + _ONE_CHAR + _STAR
        if s == "**/*.*":
            return (
                "(?:" + _NO_DOTS + _GLOBSTAR + "/)?" + _NO_DOTS_SLASH + _STAR + _DOT_LITERAL + _ONE_CHAR + _STAR
            )
        if s == "**/.*":
            return "(?:" + _NO_DOTS + _GLOBSTAR + "/)?" + _DOT_LITERAL + _ONE_CHAR + _STAR
        m = _FASTPATH_EXT_RE.fullmatch(s)
        if not m:
            return None
        head = create(m.group(1))
        if head is None:
            return None
        return head + _DOT_LITERAL + m.group(2)

    pattern = _REPLACEMENTS.get(pattern, pattern)
    if pattern.startswith("./"):
        pattern = pattern[2:]
    out = create(pattern)
    return None if out is None else out + "/?"


def _pathname_source(pattern: str) -> str:
    if pattern[0] in ".*":
        fast = _fastpath(pattern)
        if fast:
            return fast
    pattern = _REPLACEMENTS.get(pattern, pattern)
    if pattern.startswith("./"):
        pattern = pattern[2:]
    return _PathGlobParser(pattern).parse()


@functools.lru_cache(maxsize=2048)
def pathname_matcher(pattern: str) -> GlobMatcher:
    """Matcher equivalent to ``picomatch.makeRe(pattern, {dot: true})`` (see module doc)."""
    if not isinstance(pattern, str) or not pattern:
        raise PatternError("pathname pattern must be a non-empty string")
    return GlobMatcher(pattern, "^(?:" + _pathname_source(pattern) + r")\Z", 0)


# --------------------------------------------------------------------------------------
# hostname globs ('.' is the separator)
# --------------------------------------------------------------------------------------


class _UnclosedBrace(Exception):
    pass


class _HostGlobCompiler:
    def __init__(self, pattern: str) -> None:
        self.t = pattern
        self.i = 0

    def compile(self) -> str:
        try:
            out, _ = self.seq(top=True)
        except _UnclosedBrace:  # picomatch: the regex is invalid and never matches
            return _NEVER
        return out

    def seq(self, top: bool) -> tuple[str, str | None]:
        """Compile up to the end, or up to ``,``/``}`` when inside braces."""
        t = self.t
        parts: list[str] = []
        while self.i < len(t):
            c = t[self.i]
            if not top and c in ",}":
                return "".join(parts), c
            if c == "*":
                j = self.i
                while j < len(t) and t[j] == "*":
                    j += 1
                before = t[self.i - 1] if self.i > 0 else None
                after = t[j] if j < len(t) else None
                whole = before in (None, ".", "{", ",") and after in (None, ".", "}", ",")
                if whole and j - self.i >= 2:
                    parts.append(r"[^.]+(?:\.[^.]+)*")
                elif whole:
                    parts.append("[^.]+")
                else:
                    parts.append("[^.]*")
                self.i = j
            elif c == "?":
                parts.append("[^.]")
                self.i += 1
            elif c == "\\":
                if self.i + 1 < len(t):
                    parts.append(re.escape(t[self.i + 1]))
                    self.i += 2
                else:
                    parts.append(re.escape("\\"))
                    self.i += 1
            elif c == "[" and "]" in t[self.i + 1 :]:
                parts.append(self.bracket())
            elif c == "{":
                parts.append(self.brace())
            else:
                parts.append(re.escape(c))
                self.i += 1
        return "".join(parts), None

    def bracket(self) -> str:
        t = self.t
        self.i += 1
        items: list[str] = []
        while self.i < len(t):
            c = t[self.i]
            if c == "]" and items and items != ["^"]:
                self.i += 1
                return _bracket_output(items, ".")
            if c == "\\" and self.i + 1 < len(t):
                items.append("\\" + t[self.i + 1])
                self.i += 2
                continue
            if c == ":":
                posix = _posix_item(items)
                if posix is not None:
                    items.append(posix)
                    self.i += 2
                    continue
            items.append(c)
            self.i += 1
        return re.escape("[" + "".join(i if len(i) > 2 else i[-1] for i in items))  # unterminated: literal

    def brace(self) -> str:
        self.i += 1
        alternatives = []
        while True:
            part, stop = self.seq(top=False)
            alternatives.append(part)
            if stop is None:
                raise _UnclosedBrace
            self.i += 1
            if stop == "}":
                break
        if len(alternatives) == 1:
            return r"\{" + alternatives[0] + r"\}"
        return "(?:" + "|".join(alternatives) + ")"


@functools.lru_cache(maxsize=2048)
def hostname_matcher(pattern: str) -> GlobMatcher:
    """Matcher for a hostname glob (see module doc). Ignores ASCII case."""
    if not isinstance(pattern, str) or not pattern:
        raise PatternError("hostname pattern must be a non-empty string")
    source = "^(?:" + _HostGlobCompiler(pattern).compile() + r")\Z"
    return GlobMatcher(pattern, source, re.IGNORECASE | re.ASCII)


# --------------------------------------------------------------------------------------
# linear-time matching of the generated regexes
# --------------------------------------------------------------------------------------
#
# The regexes above are what picomatch would build, but Python's backtracking engine
# can take polynomial time on them: "/img/*-*-*.png" against a 3000-character
# segment, or "/**/a/**/b/*.png" against "/a/b/a/b/...". The subject is the
# attacker's URL and ``re`` holds the GIL. So GlobMatcher runs ``re`` only when
# that cannot happen (at most one unbounded loop, and its body is a single
# character). Otherwise it parses the regex (only the small subset generated here)
# into a Thompson NFA and simulates it as a lazily built DFA. That costs O(len(s))
# per match once the transition cache is warm, and O(len(s) * NFA size) at worst.
# The only lookaheads generated look at most a few characters ahead, so their
# results are cached per (at start?, next few characters).

_CHAR, _SPLIT, _ASSERT, _MATCH = 0, 1, 2, 3
_CACHE_LIMIT = 50_000


class _RegexSubsetParser:
    """Parses the regex subset emitted by this module into a small AST.

    Nodes: ``("char", source)``, ``("cat", [..])``, ``("alt", [..])``,
    ``("rep", node, lo, hi_or_None)``, ``("assert", kind, data)``, where kind is
    ``"bol"``, ``"eos"`` or ``"look"`` and data is ``(inner_source, positive, inner_node)``.
    """

    def __init__(self, source: str) -> None:
        self.s = source
        self.i = 0

    def parse(self) -> tuple:
        node = self.alt()
        if self.i != len(self.s):
            raise ValueError(f"unexpected {self.s[self.i]!r} at {self.i} in {self.s!r}")
        return node

    def alt(self) -> tuple:
        branches = [self.cat()]
        while self.i < len(self.s) and self.s[self.i] == "|":
            self.i += 1
            branches.append(self.cat())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def cat(self) -> tuple:
        items = []
        while self.i < len(self.s) and self.s[self.i] not in "|)":
            items.append(self.repeat())
        return items[0] if len(items) == 1 else ("cat", items)

    def repeat(self) -> tuple:
        node = self.atom()
        s = self.s
        while self.i < len(s) and s[self.i] in "*+?{":
            c = s[self.i]
            if c == "{":
                m = re.compile(r"\{(\d+),(\d+)\}").match(s, self.i)
                if not m:
                    raise ValueError(f"unsupported quantifier at {self.i} in {s!r}")
                lo: int
                hi: int | None
                lo, hi = int(m.group(1)), int(m.group(2))
                self.i = m.end()
            else:
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
                self.i += 1
            if self.i < len(s) and s[self.i] == "?":  # lazy: irrelevant for a yes/no answer
                self.i += 1
            node = ("rep", node, lo, hi)
        return node

    def atom(self) -> tuple:
        s, i = self.s, self.i
        c = s[i]
        if c == "(":
            kind = "group"
            if s.startswith("(?:", i):
                self.i += 3
            elif s.startswith("(?=", i) or s.startswith("(?!", i):
                kind = "look"
                self.i += 3
            else:
                self.i += 1
            start = self.i
            inner = self.alt() if self.i < len(s) and s[self.i] != ")" else ("cat", [])
            if self.i >= len(s) or s[self.i] != ")":
                raise ValueError(f"unbalanced group in {s!r}")
            inner_source = s[start : self.i]
            self.i += 1
            if kind == "look":
                return ("assert", "look", (inner_source, s[i + 2] == "=", inner))
            return inner
        if c == "[":
            j = i + 1
            if j < len(s) and s[j] == "^":
                j += 1
            while j < len(s) and s[j] != "]":
                j += 2 if s[j] == "\\" else 1
            if j >= len(s):
                raise ValueError(f"unterminated class in {s!r}")
            self.i = j + 1
            return ("char", s[i : j + 1])
        if c == "^":
            self.i += 1
            return ("assert", "bol", None)
        if c == "\\":
            self.i += 2
            if s[i + 1] == "Z":
                return ("assert", "eos", None)
            return ("char", s[i : i + 2])
        if c in "*+?{)|":
            raise ValueError(f"unexpected {c!r} at {i} in {s!r}")
        self.i += 1
        return ("char", c)


def _max_width(node: tuple) -> float:
    kind = node[0]
    if kind == "char":
        return 1
    if kind == "cat":
        return sum(_max_width(n) for n in node[1])
    if kind == "alt":
        return max(_max_width(n) for n in node[1])
    if kind == "rep":
        if node[3] is None:
            return 0 if _max_width(node[1]) == 0 else float("inf")
        return node[3] * _max_width(node[1])
    return 0  # assertions


def _backtracking_is_safe(node: tuple) -> bool:
    """True when ``re`` runs in linear time: one unbounded loop at most, over one char."""
    loops: list[tuple] = []
    alt_paths = [1]

    def walk(n: tuple) -> None:
        kind = n[0]
        if kind in ("cat", "alt"):
            if kind == "alt":
                alt_paths[0] *= len(n[1])
            for child in n[1]:
                walk(child)
        elif kind == "rep":
            if n[3] is None:
                loops.append(n)
            walk(n[1])
        # lookahead bodies are bounded by construction and not walked

    def one_char(n: tuple) -> bool:  # a char, optionally guarded by assertions
        if n[0] == "char":
            return True
        if n[0] != "cat":
            return False
        kinds = [c[0] for c in n[1]]
        return kinds.count("char") == 1 and all(k in ("char", "assert") for k in kinds)

    walk(node)
    return alt_paths[0] <= 64 and (not loops or (len(loops) == 1 and one_char(loops[0][1])))


class GlobMatcher:
    """A compiled glob. ``matches(s)`` runs in time linear in ``len(s)``.

    ``source`` is the equivalent Python regex (anchored). ``regex`` compiles it for
    inspection. Don't run ``regex`` on untrusted input: it can backtrack for a
    very long time.
    """

    __slots__ = (
        "pattern", "source", "flags", "regex", "_use_re", "_states", "_start", "_asserts",
        "_window", "_ctx_cache", "_closure_cache", "_step_cache", "_match_bit",
    )

    def __init__(self, pattern: str, source: str, flags: int, *, force_automaton: bool = False) -> None:
        self.pattern = pattern
        self.source = source
        self.flags = flags
        try:
            self.regex = re.compile(source, flags)
            ast = _RegexSubsetParser(source).parse()
        except (re.error, ValueError):  # picomatch: an invalid regex never matches
            self.source = _NEVER
            self.regex = re.compile(_NEVER)
            ast = _RegexSubsetParser(_NEVER).parse()
        self._use_re = not force_automaton and _backtracking_is_safe(ast)
        self._ctx_cache: dict[tuple[bool, str], int] = {}
        self._closure_cache: dict[tuple[int, int], int] = {}
        self._step_cache: dict[tuple[int, str], int] = {}
        if not self._use_re:
            self._compile(ast)

    def __repr__(self) -> str:
        return f"GlobMatcher({self.pattern!r}, {self.source!r})"

    # -- NFA construction -------------------------------------------------------------

    def _compile(self, ast: tuple) -> None:
        states: list[list[Any]] = []
        asserts: list[tuple[str, Any]] = []
        assert_ids: dict[tuple[str, Any], int] = {}
        widths: list[float] = []

        def new(*state: Any) -> int:
            states.append(list(state))
            return len(states) - 1

        def build(node: tuple, nxt: int) -> int:
            kind = node[0]
            if kind == "char":
                return new(_CHAR, re.compile(node[1], self.flags).fullmatch, nxt)
            if kind == "cat":
                for child in reversed(node[1]):
                    nxt = build(child, nxt)
                return nxt
            if kind == "alt":
                return new(_SPLIT, [build(child, nxt) for child in node[1]])
            if kind == "rep":
                _, body, lo, hi = node
                if hi is None:
                    loop = new(_SPLIT, [])
                    states[loop][1] = [build(body, loop), nxt]
                    head = loop
                else:  # hi - lo optional copies, each either taken or skipped to nxt
                    head = nxt
                    for _ in range(hi - lo):
                        head = new(_SPLIT, [build(body, head), nxt])
                for _ in range(lo):
                    head = build(body, head)
                return head
            # assertion
            _, akind, data = node
            key = (akind, None if data is None else (data[0], data[1]))
            if key not in assert_ids:
                assert_ids[key] = len(asserts)
                if akind == "look":
                    inner_source, positive, inner = data
                    asserts.append(("look", (re.compile(inner_source, self.flags).match, positive)))
                    widths.append(_max_width(inner))
                else:
                    asserts.append((akind, None))
            return new(_ASSERT, assert_ids[key], nxt)

        match = new(_MATCH)
        self._start = build(ast, match)
        self._states = states
        self._asserts = asserts
        self._match_bit = 1 << match
        worst = max(widths, default=0)
        self._window = None if worst == float("inf") else int(worst) + 1

    # -- simulation ---------------------------------------------------------------------

    def _context(self, s: str, pos: int) -> int:
        window = self._window
        if window is not None:
            key = (pos == 0, s[pos : pos + window])
            ctx = self._ctx_cache.get(key)
            if ctx is not None:
                return ctx
        ctx = 0
        for k, (kind, data) in enumerate(self._asserts):
            if kind == "bol":
                ok = pos == 0
            elif kind == "eos":
                ok = pos == len(s)
            else:
                fn, positive = data
                ok = (fn(s, pos) is not None) == positive
            if ok:
                ctx |= 1 << k
        if window is not None:
            if len(self._ctx_cache) > _CACHE_LIMIT:
                self._ctx_cache.clear()
            self._ctx_cache[key] = ctx
        return ctx

    def _closure(self, bits: int, ctx: int) -> int:
        key = (bits, ctx)
        cached = self._closure_cache.get(key)
        if cached is not None:
            return cached
        states = self._states
        out = 0
        seen = 0
        stack = []
        while bits:
            low = bits & -bits
            stack.append(low.bit_length() - 1)
            bits ^= low
        while stack:
            i = stack.pop()
            if seen >> i & 1:
                continue
            seen |= 1 << i
            st = states[i]
            op = st[0]
            if op == _SPLIT:
                stack.extend(st[1])
            elif op == _ASSERT:
                if ctx >> st[1] & 1:
                    stack.append(st[2])
            else:
                out |= 1 << i
        if len(self._closure_cache) > _CACHE_LIMIT:
            self._closure_cache.clear()
        self._closure_cache[key] = out
        return out

    def _step(self, bits: int, ch: str) -> int:
        key = (bits, ch)
        cached = self._step_cache.get(key)
        if cached is not None:
            return cached
        states = self._states
        out = 0
        x = bits
        while x:
            low = x & -x
            st = states[low.bit_length() - 1]
            if st[0] == _CHAR and st[1](ch) is not None:
                out |= 1 << st[2]
            x ^= low
        if len(self._step_cache) > _CACHE_LIMIT:
            self._step_cache.clear()
        self._step_cache[key] = out
        return out

    def matches(self, s: str) -> bool:
        if self._use_re:
            return self.regex.match(s) is not None
        current = self._closure(1 << self._start, self._context(s, 0))
        for pos, ch in enumerate(s, 1):
            current = self._step(current, ch)
            if not current:
                return False
            current = self._closure(current, self._context(s, pos))
        return bool(current & self._match_bit)


# --------------------------------------------------------------------------------------
# pattern objects
# --------------------------------------------------------------------------------------

_PROTOCOL_ERROR = 'Specified images.remotePatterns must have protocol "http" or "https" received "{}".'
_REMOTE_KEYS = ("protocol", "hostname", "port", "pathname", "search")
_LOCAL_KEYS = ("pathname", "search")


def _json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)


def _check_keys(obj: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        keys = ", ".join(f"'{k}'" for k in unknown)
        raise PatternError(
            f"Unrecognized key(s) in object: {keys} at \"{where}\" (allowed: {', '.join(allowed)})"
        )


def _optional_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise PatternError(
        f'Expected string, received {type(value).__name__} at "{where}.{key}" (value: {_json(value)})'
    )


@dataclass(frozen=True)
class RemotePattern:
    """One ``images.remotePatterns`` entry. ``None`` means the field was not given.

    ``protocol`` is stored without the trailing ``:``. ``port=''`` means "default
    port only". ``search=''`` means "no query string".
    """

    hostname: str
    protocol: str | None = None
    port: str | None = None
    pathname: str | None = None
    search: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.hostname, str) or not self.hostname:
            given = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
            if given.get("hostname") == "":
                raise PatternError(
                    'images.remotePatterns hostname must be a non-empty string (use "**" to allow every host)'
                )
            raise PatternError("Pattern should define hostname but found\n" + _json(given))
        for name in ("protocol", "port", "pathname", "search"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise PatternError(f'Expected string, received {type(value).__name__} at "images.remotePatterns.{name}"')
        if self.protocol is not None:
            proto = self.protocol[:-1] if self.protocol.endswith(":") else self.protocol
            if proto not in ("http", "https"):
                raise PatternError(_PROTOCOL_ERROR.format(proto))
            object.__setattr__(self, "protocol", proto)
        if self.port is not None and len(self.port) > 5:
            raise PatternError(
                f'String must contain at most 5 character(s) at "images.remotePatterns.port" (received "{self.port}")'
            )
        if self.pathname == "":
            raise PatternError('images.remotePatterns pathname must be a non-empty string (use "/**" or omit it)')
        hostname_matcher(self.hostname)
        if self.pathname is not None:
            pathname_matcher(self.pathname)

    @classmethod
    def from_config(cls, obj: Mapping[str, Any] | str | RemotePattern) -> RemotePattern:
        """Build from a next.config-style object or from a URL string.

        A URL string (``'https://example.com/account123/**'``) behaves like Next's
        ``new URL(...)`` entries. Every part is taken from the parsed URL, so the
        pattern allows only the URL's own port (the default port when none is
        written), no query string unless the URL has one, and pathname ``/`` when
        the URL has no path.
        """
        if isinstance(obj, RemotePattern):
            return obj
        if isinstance(obj, str):
            try:
                parsed = parse_url(obj)
            except ValueError as exc:
                raise PatternError(f"Invalid images.remotePatterns URL {obj!r}: {exc}") from None
            proto = parsed.protocol[:-1]
            if proto not in ("http", "https"):
                raise PatternError(_PROTOCOL_ERROR.format(proto))
            return cls(
                hostname=parsed.hostname,
                protocol=proto,
                port=parsed.port,
                pathname=parsed.pathname,
                search=parsed.search,
            )
        if not isinstance(obj, Mapping):
            raise PatternError(
                "images.remotePatterns entries must be objects or URL strings, "
                f"received {type(obj).__name__}: {_json(obj)}"
            )
        where = "images.remotePatterns"
        _check_keys(obj, _REMOTE_KEYS, where)
        hostname = obj.get("hostname")
        if hostname is None:
            raise PatternError("Pattern should define hostname but found\n" + _json(dict(obj)))
        if not isinstance(hostname, str):
            raise PatternError(f'Expected string, received {type(hostname).__name__} at "{where}.hostname"')
        return cls(
            hostname=hostname,
            protocol=_optional_str(obj, "protocol", where),
            port=_optional_str(obj, "port", where),
            pathname=_optional_str(obj, "pathname", where),
            search=_optional_str(obj, "search", where),
        )


@dataclass(frozen=True)
class LocalPattern:
    """One ``images.localPatterns`` entry. ``None`` means the field was not given."""

    pathname: str | None = None
    search: str | None = None

    def __post_init__(self) -> None:
        for name in ("pathname", "search"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise PatternError(f'Expected string, received {type(value).__name__} at "images.localPatterns.{name}"')
        if self.pathname == "":
            raise PatternError('images.localPatterns pathname must be a non-empty string (use "**" or omit it)')
        if self.pathname is not None:
            pathname_matcher(self.pathname)

    @classmethod
    def from_config(cls, obj: Mapping[str, Any] | LocalPattern) -> LocalPattern:
        if isinstance(obj, LocalPattern):
            return obj
        if not isinstance(obj, Mapping):
            raise PatternError(
                f"images.localPatterns entries must be objects, received {type(obj).__name__}: {_json(obj)}"
            )
        where = "images.localPatterns"
        _check_keys(obj, _LOCAL_KEYS, where)
        return cls(pathname=_optional_str(obj, "pathname", where), search=_optional_str(obj, "search", where))


STATIC_MEDIA_LOCAL_PATTERNS: tuple[LocalPattern, ...] = (
    LocalPattern(pathname="/_next/static/media/**", search=""),
    LocalPattern(pathname="/_next/static/immutable/media/**", search=""),
)
NEXT16_DEFAULT_LOCAL_PATTERNS: tuple[LocalPattern, ...] = (LocalPattern(pathname="**", search=""),)


def remote_patterns_from_config(entries: Sequence[Any] | None) -> tuple[RemotePattern, ...]:
    """Convert a whole ``images.remotePatterns`` list. Errors name the failing index."""
    if entries is None:
        return ()
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
        raise PatternError(
            f"Specified images.remotePatterns should be an Array received {type(entries).__name__}."
        )
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(RemotePattern.from_config(entry))
        except PatternError as exc:
            raise PatternError(f"{exc} (images.remotePatterns[{i}])") from None
    return tuple(out)


def local_patterns_from_config(entries: Sequence[Any]) -> tuple[LocalPattern, ...]:
    """Convert a user ``images.localPatterns`` list as-is (no defaults added)."""
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
        raise PatternError(
            f"Specified images.localPatterns should be an Array received {type(entries).__name__}."
        )
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(LocalPattern.from_config(entry))
        except PatternError as exc:
            raise PatternError(f"{exc} (images.localPatterns[{i}])") from None
    return tuple(out)


def default_local_patterns(user: Sequence[Any] | None) -> tuple[LocalPattern, ...]:
    """The ``localPatterns`` Next 16 actually uses.

    ``None`` (not configured) gives ``({pathname: '**', search: ''},)``, so every
    local path is allowed but no query string is. A user list (even ``[]``) is kept
    and ``{pathname: '/_next/static/media/**', search: ''}`` and
    ``{pathname: '/_next/static/immutable/media/**', search: ''}`` (static imports) are
    appended, each unless an identical entry is already there, as Next 16.5's config.ts does.
    """
    if user is None:
        return NEXT16_DEFAULT_LOCAL_PATTERNS
    patterns = list(local_patterns_from_config(user))
    for static in STATIC_MEDIA_LOCAL_PATTERNS:
        if not any(p.pathname == static.pathname and p.search == "" for p in patterns):
            patterns.append(static)
    return tuple(patterns)


# --------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------

URLLike = ParsedURL | SplitResult | str


def _coerce_url(url: Any) -> ParsedURL | None:
    """``ParsedURL`` for ``url``, or ``None`` when it is not a valid URL."""
    if isinstance(url, ParsedURL):
        return url
    if isinstance(url, SplitResult):
        url = url.geturl()
    if isinstance(url, str):
        try:
            return parse_url(url)
        except ValueError:
            return None
    attrs = ("protocol", "hostname", "port", "pathname", "search")
    if all(hasattr(url, a) for a in attrs):
        return ParsedURL(*(str(getattr(url, a)) for a in attrs))
    raise TypeError(f"expected a URL string, SplitResult or ParsedURL, got {type(url).__name__}")


def _match_parsed(p: RemotePattern, u: ParsedURL) -> bool:
    if p.protocol is not None and p.protocol != u.protocol.removesuffix(":"):
        return False
    if p.port is not None and p.port != u.port:
        return False
    if not hostname_matcher(p.hostname).matches(u.hostname):
        return False
    if p.search is not None and p.search != u.search:
        return False
    return pathname_matcher("**" if p.pathname is None else p.pathname).matches(u.pathname)


def match_remote_pattern(p: RemotePattern | Mapping[str, Any] | str, url: URLLike) -> bool:
    """``matchRemotePattern``. A URL that does not parse never matches."""
    pattern = p if isinstance(p, RemotePattern) else RemotePattern.from_config(p)
    u = _coerce_url(url)
    return u is not None and _match_parsed(pattern, u)


def has_remote_match(
    domains: Sequence[str] | None,
    patterns: Sequence[RemotePattern | Mapping[str, Any] | str] | None,
    url: URLLike,
) -> bool:
    """``hasRemoteMatch``. ``domains`` entries are exact hostnames (case-insensitive)."""
    u = _coerce_url(url)
    if u is None:
        return False
    if any(u.hostname == d.lower() for d in domains or ()):
        return True
    return any(
        _match_parsed(p if isinstance(p, RemotePattern) else RemotePattern.from_config(p), u)
        for p in patterns or ()
    )


def _match_local_parts(p: LocalPattern, pathname: str, search: str) -> bool:
    if p.search is not None and p.search != search:
        return False
    return pathname_matcher("**" if p.pathname is None else p.pathname).matches(pathname)


def match_local_pattern(p: LocalPattern | Mapping[str, Any], url_path_and_query: str) -> bool:
    """``matchLocalPattern(p, new URL(url_path_and_query, 'http://n'))``."""
    pattern = p if isinstance(p, LocalPattern) else LocalPattern.from_config(p)
    try:
        pathname, search = local_pathname_and_search(url_path_and_query)
    except ValueError:
        return False
    return _match_local_parts(pattern, pathname, search)


def has_local_match(
    patterns: Sequence[LocalPattern | Mapping[str, Any]] | None, url_path_and_query: str
) -> bool:
    """``hasLocalMatch``: ``None`` allows everything; ``[]`` allows nothing.

    A URL that ``new URL`` would reject never matches.
    """
    if patterns is None:
        return True
    if not patterns:
        return False
    try:
        pathname, search = local_pathname_and_search(url_path_and_query)
    except ValueError:
        return False
    return any(
        _match_local_parts(p if isinstance(p, LocalPattern) else LocalPattern.from_config(p), pathname, search)
        for p in patterns
    )
