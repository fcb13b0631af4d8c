"""Tests for imgopt.patterns.

The remote and local tables are ported from vercel/next.js
``test/unit/image-optimizer/match-remote-pattern.test.ts``,
``match-remote-pattern-with-url.test.ts`` and ``match-local-pattern.test.ts``.
The ``PICOMATCH_PATH_CASES`` results were checked against the picomatch copy
that Next ships (``next/dist/compiled/picomatch``, ``makeRe(p, {dot: true})``).
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgopt.patterns import (
    NEXT16_DEFAULT_LOCAL_PATTERNS,
    GlobMatcher,
    STATIC_MEDIA_LOCAL_PATTERNS,
    LocalPattern,
    ParsedURL,
    PatternError,
    RemotePattern,
    default_local_patterns,
    has_local_match,
    has_remote_match,
    hostname_matcher,
    local_pathname_and_search,
    local_patterns_from_config,
    match_local_pattern,
    match_remote_pattern,
    parse_url,
    pathname_matcher,
    remote_patterns_from_config,
)

T, F = True, False

# ---------------------------------------------------------------------------------------
# match-remote-pattern.test.ts (object patterns)
# ---------------------------------------------------------------------------------------

LITERAL_HOSTNAME = [
    ("https://example.com", T),
    ("https://example.com.uk", F),
    ("https://example.net", F),
    ("https://sub.example.com", F),
    ("https://com", F),
    ("https://example.com/path", T),
    ("https://example.com/path/to", T),
    ("https://example.com/path/to/file", T),
    ("https://example.com:81/path/to/file", T),
    ("https://example.com:81/path/to/file?q=1", T),
    ("http://example.com:81/path/to/file", T),
]

LITERAL_PROTOCOL_HOSTNAME = [
    ("https://example.com", T),
    ("https://example.com.uk", F),
    ("https://sub.example.com", F),
    ("https://com", F),
    ("https://example.com/path/to", T),
    ("https://example.com/path/to/file", T),
    ("https://example.com:81/path/to/file", T),
    ("https://example.com:81/path/to/file?q=1", T),
    ("http://example.com:81/path/to/file", F),
    ("ftp://example.com:81/path/to/file", F),
]

NO_PORT = [
    ("https://example.com", T),
    ("https://example.com.uk", F),
    ("https://sub.example.com", F),
    ("https://com", F),
    ("https://example.com/path/to/file", T),
    ("https://example.com/path/to/file?q=1", T),
    ("http://example.com/path/to/file", F),
    ("ftp://example.com/path/to/file", F),
    ("https://example.com:81/path/to/file", F),
    ("https://example.com:81/path/to/file?q=1", F),
    ("http://example.com:81/path/to/file", F),
]

NO_PORT_NO_SEARCH = [(u, F if u.endswith("?q=1") else e) for u, e in NO_PORT]

PORT_42 = [
    ("https://example.com:42", T),
    ("https://example.com.uk:42", F),
    ("https://sub.example.com:42", F),
    ("https://com:42", F),
    ("https://example.com:42/path/to/file", T),
    ("https://example.com:42/path/to/file?q=1", T),
    ("http://example.com:42/path/to/file", F),
    ("ftp://example.com:42/path/to/file", F),
    ("https://example.com", F),
    ("https://example.com.uk", F),
    ("https://sub.example.com", F),
    ("https://com", F),
    ("https://example.com/path/to/file", F),
    ("https://example.com/path/to/file?q=1", F),
    ("http://example.com/path/to/file", F),
    ("ftp://example.com/path/to/file", F),
    ("https://example.com:81", F),
    ("https://example.com:81/path/to/file", F),
    ("https://example.com:81/path/to/file?q=1", F),
]

PORT_42_PATHNAME = [
    ("https://example.com:42", F),
    ("https://example.com.uk:42", F),
    ("https://sub.example.com:42", F),
    ("https://example.com:42/path", F),
    ("https://example.com:42/path/to", F),
    ("https://example.com:42/file", F),
    ("https://example.com:42/path/to/file", T),
    ("https://example.com:42/path/to/file?q=1", T),
    ("http://example.com:42/path/to/file", F),
    ("ftp://example.com:42/path/to/file", F),
    ("https://example.com", F),
    ("https://example.com.uk", F),
    ("https://sub.example.com", F),
    ("https://example.com/path", F),
    ("https://example.com/path/to", F),
    ("https://example.com/path/to/file", F),
    ("https://example.com/path/to/file?q=1", F),
    ("http://example.com/path/to/file", F),
    ("ftp://example.com/path/to/file", F),
    ("https://example.com:81/path/to/file", F),
    ("https://example.com:81/path/to/file?q=1", F),
]

SEARCH = "?q=1&a=two&s=!@$^&-_+/()[]{};:~"
PORT_42_PATHNAME_SEARCH = [(u, F) for u, _ in PORT_42_PATHNAME] + [
    ("https://example.com:42/path/to/file?q=1&a=two", F),
    ("https://example.com:42/path/to/file?q=1&a=two&s", F),
    ("https://example.com:42/path/to/file?q=1&a=two&s=", F),
    ("https://example.com:42/path/to/file?q=1&a=two&s=!@", F),
    ("https://example.com:42/path/to/file" + SEARCH, T),
    ("https://example.com:42/path/to/file?q=1&s=!@$^&-_+/()[]{};:~&a=two", F),
    ("https://example.com:42/path/to/file?a=two&q=1&s=!@$^&-_+/()[]{};:~", F),
]

HOST_COMMON_MISSES = [
    ("https://com", F),
    ("https://example.com", F),
    ("https://sub.example.com", F),
    ("https://example.com.uk", F),
    ("https://sub.example.com.uk", F),
    ("https://avatars.example.com", F),
]

HOST_STAR_ALONE = HOST_COMMON_MISSES + [
    ("https://avatars.sfo1.example.com", T),
    ("https://avatars.iad1.example.com", T),
    ("https://more.avatars.iad1.example.com", F),
]

HOST_STAR_BEGINNING = HOST_COMMON_MISSES + [
    ("https://avatars.sfo1.example.com", T),
    ("https://avatars.iad1.example.com", T),
    ("https://more.avatars.iad1.example.com", F),
    ("https://avatars.sfo2.example.com", F),
    ("https://avatars.iad2.example.com", F),
    ("https://avatars.1.example.com", T),
]

HOST_STAR_MIDDLE = HOST_COMMON_MISSES + [
    ("https://avatars.sfo1.example.com", F),
    ("https://avatars.iad1.example.com", T),
    ("https://more.avatars.iad1.example.com", F),
    ("https://avatars.sfo2.example.com", F),
    ("https://avatars.iad2.example.com", T),
    ("https://avatars.a.example.com", T),
]

HOST_STAR_END = HOST_COMMON_MISSES + [
    ("https://avatars.sfo1.example.com", F),
    ("https://avatars.iad1.example.com", T),
    ("https://more.avatars.iad1.example.com", F),
    ("https://avatars.sfo2.example.com", F),
    ("https://avatars.iad2.example.com", T),
    ("https://avatars.ia.example.com", T),
]

HOST_DOUBLE_STAR = [
    ("https://com", F),
    ("https://example.com", F),
    ("https://sub.example.com", T),
    ("https://deep.sub.example.com", T),
    ("https://example.com.uk", F),
    ("https://sub.example.com.uk", F),
    ("https://avatars.example.com", T),
    ("https://avatars.sfo1.example.com", T),
    ("https://avatars.iad1.example.com", T),
    ("https://more.avatars.iad1.example.com", T),
]

PATH_MISSES = [
    ("https://com", F),
    ("https://example.com", F),
    ("https://sub.example.com", F),
    ("https://example.com.uk", F),
]

PATH_STAR_ALONE = PATH_MISSES + [
    ("https://example.com/act123", F),
    ("https://example.com/act123/usr4", F),
    ("https://example.com/act123/usr4/pic", F),
    ("https://example.com/act123/usr4/picsjpg", F),
    ("https://example.com/act123/usr4/pic.jpg", T),
    ("https://example.com/act123/usr5/pic.jpg", T),
    ("https://example.com/act123/usr6/pic.jpg", T),
    ("https://example.com/act123/team/pic.jpg", T),
    ("https://example.com/act456/team/pic.jpg", F),
    ("https://example.com/act123/.a/pic.jpg", T),
    ("https://example.com/act123/team/usr4/pic.jpg", F),
    ("https://example.com/team/pic.jpg", F),
]

PATH_STAR_BEGINNING = PATH_MISSES + [
    ("https://example.com/act123", F),
    ("https://example.com/act123/usr4", F),
    ("https://example.com/act123/usr4/pic", F),
    ("https://example.com/act123/usr4/picsjpg", F),
    ("https://example.com/act123/usr4/pic.jpg", T),
    ("https://example.com/act123/usr5/pic.jpg", F),
    ("https://example.com/act123/team4/pic.jpg", T),
    ("https://example.com/act456/team5/pic.jpg", F),
    ("https://example.com/team/pic.jpg", F),
    ("https://example.com/act123/4/pic.jpg", T),
]

PATH_STAR_MIDDLE = PATH_MISSES + [
    ("https://example.com/act123", F),
    ("https://example.com/act123/usr4", F),
    ("https://example.com/act123/usr4/pic", F),
    ("https://example.com/act123/usr4/picsjpg", F),
    ("https://example.com/act123/usr4/pic.jpg", T),
    ("https://example.com/act123/usr5/pic.jpg", T),
    ("https://example.com/act123/.sr6/pic.jpg", T),
    ("https://example.com/act123/team4/pic.jpg", F),
    ("https://example.com/act123/team5/pic.jpg", F),
    ("https://example.com/team/pic.jpg", F),
    ("https://example.com/act123/sr/pic.jpg", T),
]

PATH_STAR_END = PATH_MISSES + [
    ("https://example.com/act123", F),
    ("https://example.com/act123/usr4", F),
    ("https://example.com/act123/usr4/pic", F),
    ("https://example.com/act123/usr4/picsjpg", F),
    ("https://example.com/act123/usr4/pic.jpg", T),
    ("https://example.com/act123/usr5/pic.jpg", T),
    ("https://example.com/act123/usr/pic.jpg", T),
    ("https://example.com/act123/team4/pic.jpg", F),
    ("https://example.com/act456/team5/pic.jpg", F),
    ("https://example.com/team/pic.jpg", F),
    ("https://sub.example.com/act123/usr6/pic.jpg", F),
]

PATH_DOUBLE_STAR = PATH_MISSES + [
    ("https://example.com/act123", T),
    ("https://example.com/act123/usr4", T),
    ("https://example.com/act123/usr4/pic", T),
    ("https://example.com/act123/usr4/picsjpg", T),
    ("https://example.com/act123/usr4/pic.jpg", T),
    ("https://example.com/act123/usr5/pic.jpg", T),
    ("https://example.com/act123/usr6/pic.jpg", T),
    ("https://example.com/act123/team/pic.jpg", T),
    ("https://example.com/act123/.a/pic.jpg", T),
    ("https://example.com/act123/team/.pic.jpg", T),
    ("https://example.com/act456/team/pic.jpg", F),
    ("https://example.com/team/pic.jpg", F),
    ("https://sub.example.com/act123/team/pic.jpg", F),
]

OBJECT_TABLES = [
    ({"hostname": "example.com"}, LITERAL_HOSTNAME),
    ({"protocol": "https", "hostname": "example.com"}, LITERAL_PROTOCOL_HOSTNAME),
    ({"protocol": "https", "hostname": "example.com", "port": ""}, NO_PORT),
    ({"protocol": "https", "hostname": "example.com", "port": "", "search": ""}, NO_PORT_NO_SEARCH),
    ({"protocol": "https", "hostname": "example.com", "port": "42"}, PORT_42),
    (
        {"protocol": "https", "hostname": "example.com", "port": "42", "pathname": "/path/to/file"},
        PORT_42_PATHNAME,
    ),
    (
        {
            "protocol": "https",
            "hostname": "example.com",
            "port": "42",
            "pathname": "/path/to/file",
            "search": SEARCH,
        },
        PORT_42_PATHNAME_SEARCH,
    ),
    ({"hostname": "avatars.*.example.com"}, HOST_STAR_ALONE),
    ({"hostname": "avatars.*1.example.com"}, HOST_STAR_BEGINNING),
    ({"hostname": "avatars.*a*.example.com"}, HOST_STAR_MIDDLE),
    ({"hostname": "avatars.ia*.example.com"}, HOST_STAR_END),
    ({"hostname": "**.example.com"}, HOST_DOUBLE_STAR),
    ({"hostname": "example.com", "pathname": "/act123/*/pic.jpg"}, PATH_STAR_ALONE),
    ({"hostname": "example.com", "pathname": "/act123/*4/pic.jpg"}, PATH_STAR_BEGINNING),
    ({"hostname": "example.com", "pathname": "/act123/*sr*/pic.jpg"}, PATH_STAR_MIDDLE),
    ({"hostname": "example.com", "pathname": "/act123/usr*/pic.jpg"}, PATH_STAR_END),
    ({"hostname": "example.com", "pathname": "/act123/**"}, PATH_DOUBLE_STAR),
]


def _no_query(table):
    """URL-form patterns carry ``search: ''``, so any query string is refused."""
    return [(u, F if "?" in u else e) for u, e in table]


URL_TABLES = [
    ("https://example.com/**", NO_PORT_NO_SEARCH),
    ("https://example.com:42/**", _no_query(PORT_42)),
    ("https://example.com:42/path/to/file", _no_query(PORT_42_PATHNAME)),
    ("https://example.com:42/path/to/file" + SEARCH, PORT_42_PATHNAME_SEARCH),
    ("https://avatars.*.example.com", HOST_STAR_ALONE),
    ("https://avatars.*1.example.com", HOST_STAR_BEGINNING),
    ("https://avatars.*a*.example.com", HOST_STAR_MIDDLE),
    ("https://avatars.ia*.example.com", HOST_STAR_END),
    ("https://**.example.com", HOST_DOUBLE_STAR),
    ("https://example.com/act123/*/pic.jpg", PATH_STAR_ALONE),
    ("https://example.com/act123/*4/pic.jpg", PATH_STAR_BEGINNING),
    ("https://example.com/act123/*sr*/pic.jpg", PATH_STAR_MIDDLE),
    ("https://example.com/act123/usr*/pic.jpg", PATH_STAR_END),
    ("https://example.com/act123/**", PATH_DOUBLE_STAR),
]


def _flatten(tables):
    return [
        pytest.param(pattern, url, expected, id=f"{pattern}|{url}")
        for pattern, rows in tables
        for url, expected in rows
    ]


@pytest.mark.parametrize("pattern,url,expected", _flatten(OBJECT_TABLES))
def test_match_remote_pattern_object_tables(pattern, url, expected):
    p = RemotePattern.from_config(pattern)
    assert match_remote_pattern(p, url) is expected
    # the same answer whether the URL comes as a string, a SplitResult or a ParsedURL
    assert match_remote_pattern(p, urlsplit(url)) is expected
    assert match_remote_pattern(p, parse_url(url)) is expected


@pytest.mark.parametrize("pattern,url,expected", _flatten(URL_TABLES))
def test_match_remote_pattern_url_tables(pattern, url, expected):
    assert match_remote_pattern(RemotePattern.from_config(pattern), url) is expected


def test_url_pattern_rejects_query_even_with_wildcard_path():
    # vercel/next.js PR #80428 proposed accepting ?v=4 here; it was closed unmerged.
    p = RemotePattern.from_config("https://example.com/act123/**")
    assert p.search == "" and p.port == ""
    assert match_remote_pattern(p, "https://example.com/act123/usr4") is True
    assert match_remote_pattern(p, "https://example.com/act123/usr4?v=4") is False


def test_url_pattern_fields():
    assert RemotePattern.from_config("https://example.com/account123/**") == RemotePattern(
        hostname="example.com", protocol="https", port="", pathname="/account123/**", search=""
    )
    # explicit default port is dropped by the URL parser; other ports are kept
    assert RemotePattern.from_config("https://example.com:443/x").port == ""
    assert RemotePattern.from_config("http://example.com:8080/x").port == "8080"
    # no path in the URL means pathname "/" (only the root matches)
    p = RemotePattern.from_config("https://cdn.example.com")
    assert p.pathname == "/"
    assert match_remote_pattern(p, "https://cdn.example.com/") is True
    assert match_remote_pattern(p, "https://cdn.example.com/a.png") is False
    # hostnames are lower-cased by the URL parser
    assert RemotePattern.from_config("https://CDN.Example.COM/**").hostname == "cdn.example.com"
    # like new URL(): braces in the path are percent-encoded, so they are no longer globs
    assert RemotePattern.from_config("https://e.com/{a,b}/x").pathname == "/%7Ba,b%7D/x"


def test_url_pattern_must_be_http_or_https():
    with pytest.raises(PatternError) as exc:
        RemotePattern.from_config("ftp://example.com/**")
    assert str(exc.value) == 'Specified images.remotePatterns must have protocol "http" or "https" received "ftp".'
    with pytest.raises(PatternError, match="Invalid images.remotePatterns URL"):
        RemotePattern.from_config("example.com/**")
    with pytest.raises(PatternError, match="Invalid images.remotePatterns URL"):
        RemotePattern.from_config("https://exa mple.com/**")


def test_missing_hostname_message():
    with pytest.raises(PatternError) as exc:
        RemotePattern.from_config({"protocol": "https"})
    assert str(exc.value) == 'Pattern should define hostname but found\n{"protocol":"https"}'


REMOTE_HAS_MATCH = [
    ([], [], F),
    (["foo.com"], [], F),
    (["example.com"], [], T),
    (["**.example.com"], [], F),
    (["*.example.com"], [], F),
    ([], [{"hostname": "foo.com"}], F),
    ([], [{"hostname": "foo.com"}, {"hostname": "example.com"}], T),
    ([], [{"hostname": "example.com", "pathname": "/act123/**"}], F),
    (["example.com"], [{"hostname": "example.com", "pathname": "/act123/**"}], T),
    ([], [{"protocol": "https", "hostname": "example.com"}], T),
    ([], [{"protocol": "http", "hostname": "example.com"}], F),
    (["example.com"], [{"protocol": "http", "hostname": "example.com"}], T),
    (["foo.com"], [{"protocol": "http", "hostname": "example.com"}], F),
]


@pytest.mark.parametrize("domains,patterns,expected", REMOTE_HAS_MATCH)
def test_has_remote_match(domains, patterns, expected):
    url = "https://example.com"
    assert has_remote_match(domains, [RemotePattern.from_config(p) for p in patterns], url) is expected
    # plain config dicts are accepted too
    assert has_remote_match(domains, patterns, url) is expected


def test_has_remote_match_domains_ignore_case_and_bad_urls_never_match():
    assert has_remote_match(["Example.COM"], [], "https://EXAMPLE.com/x") is True
    assert has_remote_match([], [{"hostname": "**"}], "https://") is False
    assert has_remote_match([], [{"hostname": "**"}], "not a url") is False
    assert match_remote_pattern({"hostname": "**"}, "https://exa mple.com/") is False


# ---------------------------------------------------------------------------------------
# remote pattern config validation
# ---------------------------------------------------------------------------------------


def test_remote_from_config_protocol():
    assert RemotePattern.from_config({"hostname": "a.com", "protocol": "https:"}).protocol == "https"
    with pytest.raises(PatternError) as exc:
        RemotePattern.from_config({"hostname": "a.com", "protocol": "ftp"})
    assert str(exc.value) == 'Specified images.remotePatterns must have protocol "http" or "https" received "ftp".'
    with pytest.raises(PatternError, match='received "ws"'):
        RemotePattern(hostname="a.com", protocol="ws:")


def test_remote_from_config_rejects_unknown_keys_bad_types_and_long_ports():
    with pytest.raises(PatternError, match="Unrecognized key\\(s\\) in object: 'path'"):
        RemotePattern.from_config({"hostname": "a.com", "path": "/x"})
    with pytest.raises(PatternError, match="at most 5 character"):
        RemotePattern.from_config({"hostname": "a.com", "port": "123456"})
    with pytest.raises(PatternError, match="Expected string, received int"):
        RemotePattern.from_config({"hostname": "a.com", "port": 8080})
    with pytest.raises(PatternError, match="Expected string"):
        RemotePattern.from_config({"hostname": ["a.com"]})
    with pytest.raises(PatternError, match="objects or URL strings"):
        RemotePattern.from_config(42)  # type: ignore[arg-type]
    with pytest.raises(PatternError, match="non-empty"):
        RemotePattern.from_config({"hostname": ""})
    with pytest.raises(PatternError, match="non-empty"):
        RemotePattern.from_config({"hostname": "a.com", "pathname": ""})
    assert RemotePattern.from_config({"hostname": "a.com", "port": "65535"}).port == "65535"


def test_remote_patterns_from_config_names_the_index():
    good = remote_patterns_from_config([{"hostname": "a.com"}, "https://b.com/**"])
    assert [p.hostname for p in good] == ["a.com", "b.com"]
    assert remote_patterns_from_config(None) == ()
    with pytest.raises(PatternError, match=r"images\.remotePatterns\[1\]"):
        remote_patterns_from_config([{"hostname": "a.com"}, {"protocol": "https"}])
    with pytest.raises(PatternError, match="should be an Array"):
        remote_patterns_from_config("https://a.com")  # type: ignore[arg-type]


def test_patterns_are_frozen_and_hashable():
    p = RemotePattern.from_config({"hostname": "a.com"})
    with pytest.raises(AttributeError):
        p.hostname = "b.com"  # type: ignore[misc]
    assert len({p, RemotePattern(hostname="a.com")}) == 1
    assert len({LocalPattern("**", ""), LocalPattern(pathname="**", search="")}) == 1


# ---------------------------------------------------------------------------------------
# match-local-pattern.test.ts
# ---------------------------------------------------------------------------------------

LOCAL_URLS = [
    "/",
    "/path",
    "/path/to",
    "/path/to/file",
    "/path/to/file.txt",
    "/path/to/file?q=1",
    "/path/to/file?q=1&a=two",
    "/path/to/file.txt?q=1&a=two",
]

LOCAL_TABLES = [
    ({}, [T, T, T, T, T, T, T, T]),
    ({"search": ""}, [T, T, T, T, T, F, F, F]),
    ({"pathname": "/path/to/file"}, [F, F, F, T, F, T, T, F]),
    ({"pathname": "/path/to/**"}, [F, F, T, T, T, T, T, T]),
]


@pytest.mark.parametrize(
    "pattern,url,expected",
    [
        pytest.param(p, u, e, id=f"{p}|{u}")
        for p, results in LOCAL_TABLES
        for u, e in zip(LOCAL_URLS, results)
    ],
)
def test_match_local_pattern_tables(pattern, url, expected):
    assert match_local_pattern(LocalPattern.from_config(pattern), url) is expected


LOCAL_HAS_MATCH = [
    (None, T),
    ([], F),
    ([{"pathname": "/path"}], F),
    ([{"pathname": "/path/to"}], F),
    ([{"pathname": "/path/to/file"}], T),
    ([{"pathname": "/path/to/file", "search": ""}], F),
    ([{"pathname": "/path/to/file", "search": "?q=1"}], F),
    ([{"pathname": "/path/to/file", "search": "?q=1&a=two"}], T),
    ([{"pathname": "/path/**"}], T),
    ([{"pathname": "/path/to/**"}], T),
    ([{"pathname": "/path/to/f*"}], T),
    ([{"pathname": "/path/to/*le"}], T),
    ([{"pathname": "/path/*/file"}], T),
    ([{"pathname": "/*/to/file"}], T),
    ([{"pathname": "/foo"}, {"pathname": "/bar"}], F),
    ([{"pathname": "/foo"}, {"pathname": "/bar"}, {"pathname": "/path/**"}], T),
]


@pytest.mark.parametrize("patterns,expected", LOCAL_HAS_MATCH)
def test_has_local_match(patterns, expected):
    url = "/path/to/file?q=1&a=two"
    converted = None if patterns is None else [LocalPattern.from_config(p) for p in patterns]
    assert has_local_match(converted, url) is expected
    assert has_local_match(patterns, url) is expected


def test_local_search_is_exact_and_bare_question_mark_is_empty():
    assert has_local_match([{"search": ""}], "/a.png?") is True  # WHATWG: search is ''
    assert has_local_match([{"search": "?v=1"}], "/a.png?v=1") is True
    assert has_local_match([{"search": "?v=1"}], "/a.png?v=1&x") is False
    assert has_local_match([{"search": ""}], "/a.png#frag") is True
    assert has_local_match([{"search": "?v=1"}], "/a.png?v=1#frag") is True


def test_local_pathname_is_the_whatwg_pathname():
    # not percent-decoded; spaces and non-ASCII are encoded; dot segments resolved
    assert has_local_match([{"pathname": "/a%20b.png"}], "/a b.png") is True
    assert has_local_match([{"pathname": "/a b.png"}], "/a b.png") is False
    assert has_local_match([{"pathname": "/%C3%A9.png"}], "/é.png") is True
    assert has_local_match([{"pathname": "/a%2Fb.png"}], "/a%2Fb.png") is True
    assert has_local_match([{"pathname": "/a/b.png"}], "/a%2Fb.png") is False
    assert has_local_match([{"pathname": "/public/**"}], "/public/../secret.png") is False
    assert has_local_match([{"pathname": "/secret.png"}], "/public/%2e%2E/secret.png") is True
    assert has_local_match([{"pathname": "/a/b.png"}], "/a\\b.png") is True
    assert has_local_match([{"pathname": "/a/b.png"}], "/a/\tb.png") is True


def test_default_local_patterns_next16():
    assert default_local_patterns(None) == (LocalPattern(pathname="**", search=""),)
    assert default_local_patterns(None) == NEXT16_DEFAULT_LOCAL_PATTERNS
    d = default_local_patterns(None)
    assert has_local_match(d, "/test.png") is True
    assert has_local_match(d, "/test.png?v=1") is False
    assert has_local_match(d, "/deep/.hidden/test.png") is True
    assert has_local_match(d, "/_next/static/media/test.fab2915d.jpg") is True


def test_default_local_patterns_appends_static_media():
    media, immutable = STATIC_MEDIA_LOCAL_PATTERNS
    assert media == LocalPattern("/_next/static/media/**", "")
    assert immutable == LocalPattern("/_next/static/immutable/media/**", "")
    got = default_local_patterns([{"pathname": "/images/**"}])
    assert got == (LocalPattern(pathname="/images/**"), media, immutable)
    assert has_local_match(got, "/_next/static/media/a.123.png") is True
    assert has_local_match(got, "/_next/static/immutable/media/a.123.png") is True
    assert has_local_match(got, "/_next/static/media/a.123.png?x=1") is False
    assert has_local_match(got, "/_next/static/immutable/media/a.123.png?x=1") is False
    assert has_local_match(got, "/_next/static/chunks/a.js") is False
    assert has_local_match(got, "/images/a.png?x=1") is True
    assert has_local_match(got, "/other.png") is False
    # not appended twice when the identical entry is present (each checked on its own) ...
    same = default_local_patterns([{"pathname": "/_next/static/media/**", "search": ""}])
    assert same == (media, immutable)
    both = default_local_patterns([{"pathname": "/_next/static/immutable/media/**", "search": ""},
                                   {"pathname": "/_next/static/media/**", "search": ""}])
    assert both == (immutable, media)
    # ... but appended when only a looser one (no search) is present, like config.ts
    looser = default_local_patterns([{"pathname": "/_next/static/media/**"}])
    assert looser == (LocalPattern("/_next/static/media/**"), media, immutable)
    # [] is a user list too: only static imports stay allowed
    assert default_local_patterns([]) == (media, immutable)


def test_local_from_config_validation():
    with pytest.raises(PatternError, match="Unrecognized key"):
        LocalPattern.from_config({"pathname": "/a", "hostname": "x"})
    with pytest.raises(PatternError, match="Expected string"):
        LocalPattern.from_config({"search": 1})
    with pytest.raises(PatternError, match="must be objects"):
        LocalPattern.from_config("/a/**")  # type: ignore[arg-type]
    with pytest.raises(PatternError, match=r"images\.localPatterns\[0\]"):
        local_patterns_from_config([{"pathname": ""}])
    with pytest.raises(PatternError, match="should be an Array"):
        default_local_patterns("/a")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# picomatch behaviour for pathnames (dot: true), checked against Next's picomatch
# ---------------------------------------------------------------------------------------

PICOMATCH_PATH_CASES = [
    # * stays inside one segment
    ("/*.png", "/a.png", T),
    ("/*.png", "/a/b.png", F),
    ("/*.png", "/.png", T),
    ("/*", "/", F),
    ("/a/*", "/a/", F),
    ("/a/*", "/a/b", T),
    ("/a/*", "/a/b/", T),  # a trailing star also accepts one trailing slash
    ("/a/*", "/a/b/c", F),
    ("/a/*/b", "/a//b", T),
    ("/*", "/.hidden", T),  # dot: true
    ("/*", "/..", F),
    ("/a/*", "/a/.", F),
    # ** spans segments
    ("**", "/", T),
    ("**", "/a/b/c.png", T),
    ("**", "/.well-known/.x", T),
    ("**", "/a/../b", F),
    ("/**", "/", T),
    ("/**", "/a/b", T),
    ("/a/**", "/a", T),
    ("/a/**", "/a/", T),
    ("/a/**", "/a/b/c", T),
    ("/a/**", "/ab", F),
    ("/a/**", "/a/./b", F),
    ("/a/**/b", "/a/b", T),
    ("/a/**/b", "/a/x/y/b", T),
    ("/a/**/b", "/a/x/y/c", F),
    ("/**/*.png", "/a/b.png", T),
    ("/**/*.png", "/a.png", F),
    ("**/*.png", "/a.png", T),
    ("**/*.png", "/a/b/c.png", T),
    ("**.png", "/a/b.png", T),
    ("/a**", "/ab", T),
    ("/a**", "/a/b", F),
    ("/a*/**", "/ab", F),
    ("/a*/**", "/ab/", T),
    ("/a/**/**/b", "/a/b", T),
    ("/x/***", "/x/", T),
    # ?
    ("/?.png", "/a.png", T),
    ("/?.png", "/ab.png", F),
    ("/a?b", "/a/b", F),
    # character classes
    ("/[abc].png", "/b.png", T),
    ("/[abc].png", "/d.png", F),
    ("/[abc].png", "/[abc].png", T),
    ("/[a-c].png", "/[a-c].png", F),
    ("/[a-c].png", "/b.png", T),
    ("/[^a].png", "/b.png", T),
    ("/[^a].png", "/a.png", F),
    ("/x[^a]y", "/x/y", F),
    ("/[!a].png", "/!.png", T),
    ("/[!a].png", "/b.png", F),
    ("/[[:digit:]].png", "/7.png", T),
    ("/[[:digit:]].png", "/x.png", F),
    ("/[c-a]", "/b", F),
    ("/a[", "/a[", T),
    ("/a]", "/a]", T),
    # braces
    ("/{a,b}/x.png", "/a/x.png", T),
    ("/{a,b}/x.png", "/b/x.png", T),
    ("/{a,b}/x.png", "/c/x.png", F),
    ("/img.{png,jpg}", "/img.jpg", T),
    ("/{a,{b,c}}", "/c", T),
    ("/{a,*.png}", "/q.png", T),
    ("/{a}/x", "/{a}/x", T),
    ("/{a}/x", "/a/x", F),
    ("/{1..3}.png", "/2.png", T),
    ("/{1..3}.png", "/4.png", F),
    ("/{a,b", "/a", F),
    ("/{a,b", "/{a,b", F),
    # escapes and literal text
    ("/a\\*b", "/a*b", T),
    ("/a\\*b", "/axb", F),
    ("/a.b", "/aXb", F),
    ("/a+b$", "/a+b$", T),
    ("./a", "a", T),
]


def _automaton(m: GlobMatcher) -> GlobMatcher:
    return GlobMatcher(m.pattern, m.source, m.flags, force_automaton=True)


@pytest.mark.parametrize("pattern,subject,expected", PICOMATCH_PATH_CASES)
def test_pathname_matcher_matches_picomatch(pattern, subject, expected):
    m = pathname_matcher(pattern)
    assert m.matches(subject) is expected
    assert (m.regex.match(subject) is not None) is expected
    assert _automaton(m).matches(subject) is expected


def test_pathname_parens_and_pipes_are_literal():
    # Deliberate difference: picomatch would treat "(1)" as a regex group and "|" as alternation.
    assert pathname_matcher("/img(1).png").matches("/img(1).png")
    assert not pathname_matcher("/img(1).png").matches("/img1.png")
    assert pathname_matcher("/a|b").matches("/a|b")
    assert not pathname_matcher("/a|b").matches("/a")
    assert pathname_matcher("!/a").matches("!/a")  # no negation
    assert not pathname_matcher("/+(a|b)").matches("/a")  # no extglobs


def test_compiled_matchers_are_cached():
    assert pathname_matcher("/cache/**") is pathname_matcher("/cache/**")
    assert hostname_matcher("**.cache.test") is hostname_matcher("**.cache.test")
    with pytest.raises(PatternError):
        pathname_matcher("")
    with pytest.raises(PatternError):
        hostname_matcher("")


@pytest.mark.parametrize(
    "pattern,subject",
    [
        ("/img/*-*-*.png", "/img/" + "-" * 3000),
        ("/*a*a*a*a*a*b", "/" + "a" * 3000),
        ("/**/a/**/b/*.png", "/a/b" * 750),
        ("/**/*.png", "/" + ("a" * 50 + "/") * 58 + ".jpg"),
        ("/{a,b}*{a,b}*{a,b}*x", "/" + "ab" * 1500),
    ],
)
def test_no_catastrophic_backtracking(pattern, subject):
    # The plain backtracking regex needs seconds to minutes for these; the matcher is linear.
    m = pathname_matcher(pattern)
    start = time.perf_counter()
    assert m.matches(subject) is False
    assert time.perf_counter() - start < 2.0


def test_hostname_no_catastrophic_backtracking():
    m = hostname_matcher("*a*a*a*a*b.**.example.com")
    start = time.perf_counter()
    assert m.matches("a" * 3000 + ".example.com") is False
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------------------------------
# hostname globs
# ---------------------------------------------------------------------------------------

HOSTNAME_CASES = [
    ("*.example.com", "a.example.com", T),
    ("*.example.com", "example.com", F),
    ("*.example.com", "a.b.example.com", F),  # one label (picomatch would say true)
    ("**.example.com", "a.b.example.com", T),
    ("**.example.com", "example.com", F),
    ("*", "localhost", T),
    ("*", "example.com", F),
    ("**", "example.com", T),
    ("**", "a.b.c.d", T),
    ("cdn.**", "cdn.a.b", T),
    ("cdn.**", "cdn", F),
    ("a.**.example.com", "a.x.y.example.com", T),
    ("a.**.example.com", "a.example.com", F),
    ("s3.*.amazonaws.com", "s3.us-east-1.amazonaws.com", T),
    ("s3.*.amazonaws.com", "s3.amazonaws.com", F),
    ("img?.example.com", "img1.example.com", T),
    ("img?.example.com", "img.example.com", F),
    ("img[0-9].example.com", "img7.example.com", T),
    ("img[^0-9].example.com", "img..example.com", F),
    ("{cdn,img}.example.com", "img.example.com", T),
    ("{cdn,img}.example.com", "www.example.com", F),
    ("{*,cdn.x}.example.com", "q.example.com", T),
    ("{*,cdn.x}.example.com", "cdn.x.example.com", T),
    ("{a,b.example.com", "a", F),
    ("CDN.Example.com", "cdn.example.com", T),
    ("example.com", "EXAMPLE.COM", T),
    ("[::1]", "[::1]", T),
    ("127.0.0.1", "127.0.0.1", T),
    ("127.0.0.1", "127a0b0c1", F),
    ("exa\\*mple.com", "exa*mple.com", T),
]


@pytest.mark.parametrize("pattern,hostname,expected", HOSTNAME_CASES)
def test_hostname_matcher(pattern, hostname, expected):
    m = hostname_matcher(pattern)
    assert m.matches(hostname) is expected
    assert (m.regex.match(hostname) is not None) is expected
    assert _automaton(m).matches(hostname) is expected


def test_hostname_pattern_ignores_case_through_match_remote_pattern():
    assert match_remote_pattern({"hostname": "CDN.Example.com"}, "https://cdn.example.com/a.png")
    assert match_remote_pattern({"hostname": "cdn.example.com"}, "https://CDN.EXAMPLE.COM/a.png")
    # Unicode hosts are matched in punycode, as Node's URL writes them (UTS 46, not IDNA 2003)
    assert match_remote_pattern({"hostname": "xn--r8jz45g.jp"}, "https://例え.jp/a")
    assert match_remote_pattern({"hostname": "xn--fa-hia.de"}, "https://faß.de/a")
    assert not match_remote_pattern({"hostname": "fass.de"}, "https://faß.de/a")


# ---------------------------------------------------------------------------------------
# WHATWG URL emulation (expected values taken from Node's URL)
# ---------------------------------------------------------------------------------------

PARSE_URL_CASES = [
    ("https://Example.COM:443/x?", ParsedURL("https:", "example.com", "", "/x", "")),
    ("http://example.com:80/", ParsedURL("http:", "example.com", "", "/", "")),
    ("https://example.com:080/", ParsedURL("https:", "example.com", "80", "/", "")),
    ("https://example.com", ParsedURL("https:", "example.com", "", "/", "")),
    ("http://EX%41MPLE.com/", ParsedURL("http:", "example.com", "", "/", "")),
    ("https://1.2.3/", ParsedURL("https:", "1.2.0.3", "", "/", "")),
    ("https://0x7f.1/", ParsedURL("https:", "127.0.0.1", "", "/", "")),
    ("https://[0:0::1]:8080/x", ParsedURL("https:", "[::1]", "8080", "/x", "")),
    ("https://u:p@h.com/", ParsedURL("https:", "h.com", "", "/", "")),
    ("https://h.com./x", ParsedURL("https:", "h.com.", "", "/x", "")),
    ("https://avatars.*.example.com", ParsedURL("https:", "avatars.*.example.com", "", "/", "")),
    ("  https:\\\\h.com\\a\\..\\b?x y#f", ParsedURL("https:", "h.com", "", "/b", "?x%20y")),
    (
        "https://h.com/a^b c{}|`<>\"é'[]!$&()*+,;=:@~",
        ParsedURL("https:", "h.com", "", "/a^b%20c%7B%7D|%60%3C%3E%22%C3%A9'[]!$&()*+,;=:@~", ""),
    ),
    ("https://h.com/a?q= 1'\"<>`é^{}|", ParsedURL("https:", "h.com", "", "/a", "?q=%201%27%22%3C%3E`%C3%A9^{}|")),
]


@pytest.mark.parametrize("url,expected", PARSE_URL_CASES)
def test_parse_url(url, expected):
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    "url",
    ["example.com", "https://", "https://h.com:65536/", "https://h.com:8a/", "https://a b.com/", "https://256.1.1.1/",
     "https://1.2.3.4.5/", "https://[1:2]/", "http://xn--zz/", "http://xn--a.xn--b/", "http://[fe80::1%25eth0]/"],
)
def test_parse_url_rejects(url):
    with pytest.raises(ValueError):
        parse_url(url)


def test_parse_url_other_schemes_never_match():
    # new URL() accepts them; a pattern allows only http(s), and no host means no match
    assert parse_url("file:///etc/passwd").protocol == "file:"
    assert parse_url("javascript:alert(1)").protocol == "javascript:"
    assert not has_remote_match(None, [{"hostname": "**"}], "file:///etc/passwd")
    with pytest.raises(PatternError):
        RemotePattern.from_config("file:///etc/passwd")


LOCAL_PARSE_CASES = [
    ("/a/%2e%2E/b", ("/b", "")),
    ("/a/.%2e", ("/", "")),
    ("/a/./b/.", ("/a/b/", "")),
    ("/a\\b\\..\\c", ("/a/c", "")),
    (" /a\n/b ", ("/a/b", "")),
    ("/a?", ("/a", "")),
    ("/a?#x", ("/a", "")),
    ("/a#x?y", ("/a", "")),
    ("/%zz/%41", ("/%zz/%41", "")),
    ("foo/bar", ("/foo/bar", "")),
    ("/..", ("/", "")),
    ("/x/%2e%2e%2f", ("/x/%2e%2e%2f", "")),
    # scheme-relative once tabs are removed / backslashes count as slashes
    ("/\t/evil/x", ("/x", "")),
    ("/\\evil/x", ("/x", "")),
    ("///&+/:]\"", ("/:]%22", "")),
]


@pytest.mark.parametrize("url,expected", LOCAL_PARSE_CASES)
def test_local_pathname_and_search(url, expected):
    assert local_pathname_and_search(url) == expected


def test_local_unparsable_never_matches():
    for bad in ("/\\bad host/x", "//", "/\\", "///"):  # new URL(bad, 'http://n') throws
        with pytest.raises(ValueError):
            local_pathname_and_search(bad)
    assert has_local_match([{"pathname": "**"}], "/\\bad host/x") is False
    assert match_local_pattern({}, "/\\bad host/x") is False


# ---------------------------------------------------------------------------------------
# property tests
# ---------------------------------------------------------------------------------------

# No glob characters (* ? [ ] { }), no backslash and no NUL; plenty of regex metacharacters.
_LITERAL_ALPHABET = st.sampled_from(list("ab/.-_~%:@!$&'()+,;=|^\n é") + ["0", "9", "Z", "😀"])
_literal = st.text(_LITERAL_ALPHABET, min_size=1, max_size=12).filter(lambda s: not s.startswith("./"))


@settings(max_examples=150, deadline=None)
@given(pattern=_literal, others=st.lists(st.text(_LITERAL_ALPHABET, max_size=12), max_size=10))
def test_literal_pathname_pattern_matches_only_itself(pattern, others):
    m = pathname_matcher(pattern)
    auto = _automaton(m)
    assert m.matches(pattern) and auto.matches(pattern)
    for s in others + [pattern + "/", pattern + "x", "/" + pattern, pattern[:-1], pattern + "\n"]:
        assert m.matches(s) == (s == pattern)
        assert auto.matches(s) == (s == pattern)


_HOST_ALPHABET = st.sampled_from(list("abcXYZ019.-_+$^()|"))


@settings(max_examples=150, deadline=None)
@given(pattern=st.text(_HOST_ALPHABET, min_size=1, max_size=12), others=st.lists(st.text(_HOST_ALPHABET, max_size=12)))
def test_literal_hostname_pattern_matches_only_itself_ignoring_case(pattern, others):
    m = hostname_matcher(pattern)
    assert m.matches(pattern) and m.matches(pattern.swapcase())
    for s in others + [pattern + ".x", "x." + pattern, pattern + "\n"]:
        assert m.matches(s) == (s.lower() == pattern.lower())


_GLOB_PIECES = st.sampled_from(
    ["/", "/", "a", "b", ".", "*", "**", "?", "[ab]", "[^a]", "[a-c]", "{a,b}", "{a,*}", "{x}", "\\*", "-", "[[:digit:]]"]
)
_SUBJECT_CHARS = st.sampled_from(list("/ab.c-1*") + ["..", "/."])


@settings(max_examples=150, deadline=None)
@given(
    pattern=st.lists(_GLOB_PIECES, min_size=1, max_size=8).map("".join),
    subjects=st.lists(st.lists(_SUBJECT_CHARS, max_size=12).map("".join), min_size=1, max_size=8),
)
def test_automaton_agrees_with_backtracking_regex(pattern, subjects):
    """The linear-time automaton and Python's re give the same answers (short inputs)."""
    for compile_ in (pathname_matcher, hostname_matcher):
        m = compile_(pattern)
        auto = _automaton(m)
        for s in subjects:
            expected = m.regex.match(s) is not None
            assert auto.matches(s) is expected, (pattern, s, m.source)
            assert m.matches(s) is expected


_PATH_CHARS = st.sampled_from(list("ab./%2eE\\?#é ") + ["%2e", ".."])


@settings(max_examples=150, deadline=None)
@given(st.lists(_PATH_CHARS, max_size=15).map("".join).filter(lambda t: t[:1] not in ("/", "\\")))
def test_parsed_pathname_has_no_dot_segments_and_no_raw_unsafe_chars(tail):
    # ("//..." would be scheme-relative; those inputs are covered by LOCAL_PARSE_CASES)
    pathname, search = local_pathname_and_search("/" + tail)
    assert pathname.startswith("/")
    segments = pathname.split("/")[1:]
    assert not any(seg.lower() in (".", "..", "%2e", ".%2e", "%2e.", "%2e%2e") for seg in segments)
    assert not re.search(r"[ \\?#é]", pathname)
    assert search == "" or search.startswith("?") and len(search) > 1
