"""Pure functions: negotiation, paths, TTLs, cache entries, file names, conditional requests."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from imgopt import encoding
from imgopt.app import content_disposition, file_name, is_fresh
from imgopt.cache import Entry, cache_key, decode_entry, encode_entry, get_max_age
from imgopt.config import ImagesConfig, parse_images_config
from imgopt.errors import ImageError
from imgopt.params import RequestMemo, js_int_string, negotiate, normalize_path, parse_request
from imgopt.transform import detect_type, is_animated

AVIF_WEBP = ("image/avif", "image/webp")


@pytest.mark.parametrize("accept,formats,expected", [
    ("image/webp,*/*", ("image/webp",), "image/webp"),
    ("image/png", ("image/webp",), ""),
    ("image/invalid", ("image/webp",), ""),
    ("*/*", AVIF_WEBP, ""),
    ("image/*", AVIF_WEBP, ""),
    ("", AVIF_WEBP, ""),
    ("image/avif,image/webp,image/apng,image/*,*/*;q=0.8", AVIF_WEBP, "image/avif"),
    ("image/avif,image/webp,image/apng,image/*,*/*;q=0.8", ("image/webp",), "image/webp"),
    ("image/avif;q=0.5,image/webp", AVIF_WEBP, "image/webp"),
    # equal q: hapi ranks by subtype alphabetically, not by the header's or formats' order
    ("image/webp,image/avif", AVIF_WEBP, "image/avif"),
    ("image/webp,image/avif", ("image/webp", "image/avif"), "image/avif"),
    ("image/avif;q=0", AVIF_WEBP, ""),
    ("IMAGE/WEBP", ("image/webp",), ""),  # Next's accept.includes('image/webp') is case-sensitive
    ("image/webp;level=1", ("image/webp",), "image/webp"),
    ("image/webp;foo", ("image/webp",), ""),  # hapi throws (a 500 in Next)
])
def test_negotiate(accept, formats, expected):
    assert negotiate(accept, formats) == expected


@pytest.mark.parametrize("raw,expected", [
    ("/a/b/../c", "/a/c"),
    ("/a/./b", "/a/b"),
    ("/a/%2e%2e/b", "/b"),
    ("/a/%2E/b", "/a/b"),
    ("/../../etc/passwd", "/etc/passwd"),
    ("/a\\..\\b", "/b"),
    ("/a/..", "/"),
    ("/a/b/", "/a/b/"),
])
def test_normalize_path(raw, expected):
    assert normalize_path(raw) == expected


@pytest.mark.parametrize("cc,expected", [
    (None, 0), ("", 0), ("max-age=foo", 0), ("no-cache", 0),
    ("max-age=9999", 9999), ("MAX-AGE=9999", 9999), ("s-maxage=9999", 9999), ("S-MAXAGE=9999", 9999),
    ("public, max-age=5555, s-maxage=9999", 9999), ("public,s-maxage=9999,max-age=5555", 9999),
    ('public, s-maxage="9999", max-age="5555"', 9999), ("max-age=12abc", 12),
])
def test_get_max_age(cc, expected):
    assert get_max_age(cc) == expected


def test_cache_key_separates_fields():
    assert cache_key("/a1", 2, 75, "") != cache_key("/a", 12, 75, "")
    assert cache_key("/a", 64, 75, "image/webp") != cache_key("/a", 64, 75, "image/avif")
    assert cache_key("/a", 64, 75, "") == cache_key("/a", 64, 75, "")


@given(body=st.binary(min_size=1, max_size=2000), flip=st.integers(min_value=0))
@settings(max_examples=200, deadline=None)
def test_entry_roundtrip_and_any_flip_is_detected(body, flip):
    e = Entry(body, "image/webp", '"abc"', "up", 60, 1e9)
    raw = encode_entry("k", e)
    assert decode_entry("k", raw) == e
    i = flip % len(raw)
    damaged = bytearray(raw)
    damaged[i] ^= 0x01
    assert decode_entry("k", bytes(damaged)) is None  # any flip: body, metadata or framing
    assert decode_entry("k", raw[:-1]) is None
    assert decode_entry("other", raw) is None  # stored under another key


@pytest.mark.parametrize("href,mime,expected", [
    ("/test.jpg", "image/jpeg", "test.jpeg"),
    ("/animated2.png", "image/png", "animated2.png"),
    ("/png-as-octet-stream", "image/webp", "png-as-octet-stream.webp"),
    ("/file.name.with.dots.gif", "image/webp", "file.webp"),
    ("https://x.com/a/b.png?x=1", "image/avif", "b.avif"),
    ("/dir/", "image/webp", "image.bin"),
    ("/a.png", "application/x-foo", "image.bin"),
])
def test_file_name(href, mime, expected):
    assert file_name(href, mime) == expected


@pytest.mark.parametrize("name,expected", [
    ("test.webp", 'attachment; filename="test.webp"'),
    ('a"b.webp', 'attachment; filename="a\\"b.webp"'),
    ("äöü.webp", 'attachment; filename="äöü.webp"'),
    ("äöüščří.webp", "attachment; filename=\"äöü???í.webp\"; filename*=UTF-8''%C3%A4%C3%B6%C3%BC%C5%A1%C4%8D%C5%99%C3%AD.webp"),
    ("100%41.webp", "attachment; filename=\"100%41.webp\"; filename*=UTF-8''100%2541.webp"),
])
def test_content_disposition(name, expected):
    assert content_disposition("attachment", name) == expected


def _req(headers: dict[str, str]) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [
        (k.lower().encode(), v.encode()) for k, v in headers.items()]})


@pytest.mark.parametrize("headers,fresh", [
    ({}, False),
    ({"If-None-Match": '"e"'}, True),
    ({"If-None-Match": 'W/"e"'}, True),
    ({"If-None-Match": '"x", "e"'}, True),
    ({"If-None-Match": "*"}, True),
    ({"If-None-Match": '"x"'}, False),
    ({"If-None-Match": '"e"', "Cache-Control": "no-cache"}, False),
    ({"If-None-Match": '"e"', "If-Modified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"}, False),
    ({"If-Modified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"}, False),
])
def test_is_fresh(headers, fresh):
    assert is_fresh(_req(headers), '"e"') is fresh


@pytest.mark.parametrize("data,mime", [
    (b"", None), (b"\x0a\x0b\x0c", None), (b"\xff\xd8\xff\xe0", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF89a", "image/gif"), (b"RIFF\0\0\0\0WEBPVP8 ", "image/webp"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"), (b"  \n\t<svg/>", "image/svg+xml"),
    (b"<?xml version='1.0'?><note/>", "image/svg+xml"), (b"\0\0\0\x1cftypavif", "image/avif"),
    (b"\0\0\x01\0", "image/x-icon"), (b"icns", "image/x-icns"), (b"II*\0", "image/tiff"), (b"MM\0*", "image/tiff"),
    (b"BM", "image/bmp"), (b"\xff\x0a", "image/jxl"), (b"\0\0\0\x18ftypheic", "image/heic"),
    (b"%PDF-1.4", "application/pdf"), (b"\0\0\0\x0cjP  \r\n\x87\n", "image/jp2"), (b"foo", None),
])
def test_detect_type(data, mime):
    assert detect_type(data) == mime


def test_animation_detection(corpus):
    assert is_animated((corpus / "animated.gif").read_bytes(), "image/gif")
    assert is_animated((corpus / "animated.png").read_bytes(), "image/png")
    assert is_animated((corpus / "animated.webp").read_bytes(), "image/webp")
    assert not is_animated((corpus / "test.gif").read_bytes(), "image/gif")
    assert not is_animated((corpus / "test.png").read_bytes(), "image/png")
    assert not is_animated((corpus / "test.webp").read_bytes(), "image/webp")


# -- the query string: whatever arrives, the answer is a 400 with a message or a valid request ---

_params = st.lists(
    st.tuples(
        st.sampled_from(["url", "w", "q", "URL", "x", "", "url[]", "w "]),
        st.one_of(
            st.text(max_size=40),
            st.sampled_from(["/test.png", "//x", "/_next/image", "http://a.b/c.png", "0384", "75",
                             "99999999999999999999", "-1", "1e3", "%", "/a%00b", "/\u00e4"]),
            st.integers(min_value=-10, max_value=10**30).map(str),
        ),
    ),
    max_size=6,
)


@given(params=_params, accept=st.text(max_size=60))
@settings(max_examples=1500, deadline=None)
def test_parse_request_never_crashes(params, accept):
    from urllib.parse import urlencode

    cfg = ImagesConfig()
    try:
        req = parse_request(urlencode(params), accept, cfg)
    except ImageError as e:
        assert e.status == 400 and e.message
    else:
        assert req.width in cfg.widths and req.quality in (cfg.qualities or range(1, 101))


def test_memory_tier_is_bounded_and_lru():
    from imgopt.stores.memory import MemoryTier

    def entry(n: int) -> Entry:
        return Entry(b"x" * n, "image/webp", '"e"', "u", 60, 1e12)

    tier = MemoryTier(1000)
    for i in range(5):
        tier.put(f"k{i}", entry(100))
    assert tier.get("k0") is not None  # k0 is now the most recently used
    for i in range(5, 12):
        tier.put(f"k{i}", entry(100))
    assert tier.bytes <= 1000
    assert tier.get("k0") is not None and tier.get("k1") is None
    tier.put("big", entry(200))  # over max/8: not kept
    assert tier.get("big") is None
    assert MemoryTier(0).get("k") is None
    off = MemoryTier(0)
    off.put("k", entry(1))
    assert off.get("k") is None and off.bytes == 0


# -- RequestMemo (a cache hit does not re-validate a hot URL) ------------------------

_MEMO_QUERIES = st.one_of(
    st.sampled_from(["url=/a.jpg&w=640&q=75", "url=/a.jpg&w=640&q=75&w=1", "url=/b.png&w=1080&q=75",
                     "url=/a.jpg&w=641&q=75", "url=%2Fa.jpg&w=640&q=75", "url=/a.jpg&w=640&q=101", "w=640&q=75"]),
    st.text(max_size=40),
)
_MEMO_ACCEPTS = st.sampled_from(["", "image/avif,image/webp,*/*", "image/webp", "text/html", "image/*"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_MEMO_QUERIES, _MEMO_ACCEPTS), min_size=1, max_size=30))
def test_request_memo_answers_exactly_as_parse_request(calls):
    cfg = ImagesConfig(formats=("image/avif", "image/webp"))
    memo = RequestMemo(cfg, size=4)  # small, so eviction is exercised too
    for query, accept in calls + calls:
        try:
            expected: object = parse_request(query, accept, cfg)
        except ImageError as e:
            expected = (e.status, e.message)
        try:
            got: object = memo.parse(query, accept)
        except ImageError as e:
            got = (e.status, e.message)
        assert got == expected
    assert len(memo._memo) <= 4


def test_request_memo_keeps_valid_short_requests_only():
    cfg = ImagesConfig()
    memo = RequestMemo(cfg, size=8)
    first = memo.parse("url=/a.jpg&w=640&q=75", "image/webp")
    assert memo.parse("url=/a.jpg&w=640&q=75", "image/webp") is first
    assert memo.parse("url=/a.jpg&w=640&q=75", "image/avif,image/webp").mime == "image/webp"
    with pytest.raises(ImageError):
        memo.parse("url=/a.jpg&w=641&q=75", "")
    memo.parse("url=/" + "a" * 3000 + ".jpg&w=640&q=75", "image/webp," * 200)  # valid, but too long to keep
    assert set(memo._memo) == {("url=/a.jpg&w=640&q=75", "image/webp"), ("url=/a.jpg&w=640&q=75", "image/avif,image/webp")}


def test_js_int_string_matches_node():
    """The width in '"w" parameter (width) of N is not allowed' is String(parseInt(w)) in
    Next; held against node itself over digit strings of every length up to 400."""
    rnd = random.Random(5)
    cases = ["0", "00", "384", "0384", "9007199254740991", "9007199254740993", "999999999999999999999",
             "100000000000000000000", "1" + "0" * 308, "17976931348623157" + "0" * 292, "1" + "0" * 309]
    for n in range(1, 401):
        cases.append("".join(rnd.choice("0123456789") for _ in range(n)))
        cases.append("9" * n)
    node = shutil.which("node")
    assert node, "node is needed (the loader's tests use it too)"
    script = "const a = JSON.parse(require('fs').readFileSync(0, 'utf8')); console.log(JSON.stringify(a.map(s => String(parseInt(s)))))"
    out = subprocess.run([node, "-e", script], input=json.dumps(cases), capture_output=True, text=True, check=True, timeout=60)
    expected = json.loads(out.stdout)
    assert [js_int_string(c) for c in cases] == expected


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(list("gzipdeflatbrIDENTY*xq=0.5;, \t-\x00é") + ["gzip", "deflate", ";q=", "identity"]),
                max_size=20).map("".join))
def test_content_coding_choice_never_fails(header):
    """Any Accept-Encoding header gets an answer; what it is, is checked against the package in test_next_parity."""
    assert encoding.choose(header) in ("gzip", "deflate", None)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_encoded_bodies_decode_to_the_original(coding):
    import gzip as gz
    import zlib

    body = bytes(range(256)) * 40
    out = encoding.encode(body, coding)
    assert len(out) < len(body)
    assert (gz.decompress(out) if coding == "gzip" else zlib.decompress(out)) == body


@pytest.mark.parametrize("url,href", [
    ("http://[0:0::1]:4000/a.png", "http://[::1]:4000/a.png"),
    ("http://[0000:0000:0000:0000:0000:0000:0000:0001]/a.png", "http://[::1]/a.png"),
    ("http://[::FFFF:127.0.0.1]/a.png", "http://[::ffff:7f00:1]/a.png"),
    ("http:/127.0.0.1:4000/a.png", "http://127.0.0.1:4000/a.png"),
    ("http:\\\\127.0.0.1:4000\\x\\..\\a.png", "http://127.0.0.1:4000/a.png"),
    ("http://127.0.0.1:4000/a\tb.png\n", "http://127.0.0.1:4000/ab.png"),
])
def test_remote_urls_are_read_as_new_url_reads_them(url, href):
    """One cache entry per resource, whatever the spelling (WHATWG's serialisation); compared
    with next start in test_next_parity."""
    cfg = parse_images_config({"remotePatterns": [{"protocol": "http", "hostname": "**"}], "dangerouslyAllowLocalIP": True})
    assert parse_request(f"url={quote(url, safe='')}&w=640&q=75", "image/webp", cfg).href == href
