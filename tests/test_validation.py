"""Spec §6.1: parameter validation over real HTTP, exact status and message, in Next's order."""

from __future__ import annotations

import pytest

W, Q = 384, 75  # profile D

CASES = [
    (f"w={W}&q={Q}", '"url" parameter is required'),
    (f"url=&w={W}&q={Q}", '"url" parameter is required'),
    (f"url=/test.png&q={Q}", '"w" parameter (width) is required'),
    (f"url=/test.png&w={W}", '"q" parameter (quality) is required'),
    (f"url=/test.png&w={W}&q=101", '"q" parameter (quality) must be an integer between 1 and 100'),
    (f"url=/test.png&w={W}&q=0", '"q" parameter (quality) must be an integer between 1 and 100'),
    (f"url=/test.png&w={W}&q=foo", '"q" parameter (quality) must be an integer between 1 and 100'),
    (f"url=/test.png&w={W}&q=99.9", '"q" parameter (quality) must be an integer between 1 and 100'),
    (f"url=/test.png&w=0&q={Q}", '"w" parameter (width) must be an integer greater than 0'),
    (f"url=/test.png&w=000&q={Q}", '"w" parameter (width) must be an integer greater than 0'),
    (f"url=/test.png&w=-100&q={Q}", '"w" parameter (width) must be an integer greater than 0'),
    (f"url=/test.png&w=foo&q={Q}", '"w" parameter (width) must be an integer greater than 0'),
    (f"url=/test.png&w=99.9&q={Q}", '"w" parameter (width) must be an integer greater than 0'),
    (f"url=/test.png&w=1000&q={Q}", '"w" parameter (width) of 1000 is not allowed'),
    (f"url=/test.png&w={W}&q=13", '"q" parameter (quality) of 13 is not allowed'),
    (f"url=/test.png&w={W}&q=013", '"q" parameter (quality) of 013 is not allowed'),
    (f"url=/test.png&w=8&q=70", '"w" parameter (width) of 8 is not allowed'),
    (f"url=/test.png&w=3&q={Q}", '"w" parameter (width) of 3 is not allowed'),
    (f"url=/{'a' * 4000}&w={W}&q={Q}", '"url" parameter is too long'),
    (f"url=//example.vercel.sh&w={W}&q={Q}", '"url" parameter cannot be a protocol-relative URL (//)'),
    (f"url=file://example.vercel.sh:1234/test.png&w={W}&q={Q}", '"url" parameter is invalid'),
    (f"url=ftp://example.vercel.sh:1234/test.png&w={W}&q={Q}", '"url" parameter is invalid'),
    (f"url=%2F_next%2Fimage%3Furl%3Dtest.pngw%3D1%26q%3D75&w={W}&q={Q}", '"url" parameter cannot be recursive'),
    (f"url=%252F_next%252Fimage%253Furl%253Dtest.pngw%253D1%2526q%253D1&w={W}&q={Q}", '"url" parameter is invalid'),
    (f"url=/assets/_next/image%3Furl%3D%252Ftest.png%26w%3D128%26q%3D75&w={W}&q={Q}", '"url" parameter cannot be recursive'),
    (f"url=/foo/%2e%2e/_next/image&w={W}&q={Q}", '"url" parameter cannot be recursive'),
    (f"url=/foo/..%5C_next/image&w={W}&q={Q}", '"url" parameter cannot be recursive'),
    (f"url=/_next%252Fimage&w={W}&q={Q}", '"url" parameter cannot be recursive'),
    (f"url=http://vercel.com/button&w={W}&q={Q}", '"url" parameter is not allowed'),
    (f"url=https://image-optimization-test.vercel.app/_next/image%3Furl%3D%252Ffrog.jpg&w={W}&q={Q}", '"url" parameter is not allowed'),
    (f"url=/test.png%3Fv%3D1&w={W}&q={Q}", '"url" parameter is not allowed'),
    (f"url=a&url=b&w={W}&q={Q}", '"url" parameter cannot be an array'),
    (f"url=/test.png&w={W}&w={W}&q={Q}", '"w" parameter (width) cannot be an array'),
    (f"url=/test.png&w={W}&q={Q}&q={Q}", '"q" parameter (quality) cannot be an array'),
    ("url=/test.png&w=0&q=foo", '"q" parameter (quality) must be an integer between 1 and 100'),
    (f"url=/test.png&w=1000&q=101", '"w" parameter (width) of 1000 is not allowed'),
    (f"url=/a%ZZb.png&w={W}&q={Q}", '"url" parameter is invalid'),
    (f"url=http://user:pw@example.com/a.png&w={W}&q={Q}", '"url" parameter is not allowed'),
    (f"url=http://exa mple.com/a.png&w={W}&q={Q}", '"url" parameter is invalid'),
    (f"url=notaurl&w={W}&q={Q}", '"url" parameter is invalid'),
    # The width in the message is String(parseInt(w)) in JavaScript (checked against next start).
    (f"url=/test.png&w=99999999999999999999999&q={Q}", '"w" parameter (width) of 1e+23 is not allowed'),
    (f"url=/test.png&w=12345678901234567890&q={Q}", '"w" parameter (width) of 12345678901234567000 is not allowed'),
    (f"url=/test.png&w=1{'0' * 400}&q={Q}", '"w" parameter (width) of Infinity is not allowed'),
    (f"url=/test.png&w=0384000&q={Q}", '"w" parameter (width) of 384000 is not allowed'),
    # WHATWG reads a backslash as "/": Next fetches //host/x.png from its own router (a 500).
    (f"url=/%5Cexample.com/x.png&w={W}&q={Q}", '"url" parameter is invalid'),
    (f"url=/a%5Cb.png&w={W}&q={Q}", '"url" parameter is invalid'),
]


@pytest.mark.parametrize("query,message", CASES)
def test_rejections_are_400_with_nexts_message(server_d, query, message):
    r = server_d.raw(query)
    assert r.status_code == 400, (query, r.status_code, r.text)
    assert r.text == message
    assert r.headers["content-type"].startswith("text/plain")


def test_leading_zeros_are_accepted(server_d):
    r = server_d.raw("url=/test.png&w=0384&q=075", headers={"Accept": "image/webp"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/webp"


def test_extra_params_are_ignored(server_d):
    a = server_d.raw(f"url=/test.png&w={W}&q={Q}&dpl=abc", headers={"Accept": "image/webp"})
    b = server_d.raw(f"url=/test.png&w={W}&q={Q}&dpl=xyz", headers={"Accept": "image/webp"})
    assert a.status_code == b.status_code == 200
    assert a.headers["etag"] == b.headers["etag"]
    assert b.headers["x-nextjs-cache"] == "HIT"


def test_route_level(server_d):
    import httpx

    assert httpx.get(server_d.url + "/healthz").status_code == 200
    r = httpx.post(server_d.url + f"/_next/image?url=/test.png&w={W}&q={Q}")
    assert r.status_code == 405
    assert "GET" in r.headers["allow"]
    assert httpx.get(server_d.url + "/nope").status_code == 404
    r = httpx.get(server_d.url + f"/_next/image/?url=/test.png&w={W}&q={Q}", headers={"Accept": "image/webp"})
    assert r.status_code == 308  # Next's trailing-slash redirect (compared with next start in test_next_parity)
    assert r.headers["location"] == f"/_next/image?url=/test.png&w={W}&q={Q}"
    assert r.headers["refresh"] == f"0;url=/_next/image?url=/test.png&w={W}&q={Q}"
    assert "content-type" not in r.headers
    r = httpx.get(server_d.url + f"/_next/image/?url=/test.png&w={W}&q={Q}", headers={"Accept": "image/webp"},
                  follow_redirects=True)
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"


def test_trailing_slash_config_serves_the_slashed_path(make_server, corpus):
    """Spec 6.2 case 29: with trailingSlash: true, /_next/image/?url=… is a 200."""
    import httpx

    srv = make_server({"trailingSlash": True}, "--local-root", str(corpus))
    for route in ("/_next/image/", "/_next/image"):
        r = httpx.get(srv.url + f"{route}?url=/test.png&w={W}&q={Q}", headers={"Accept": "image/webp"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/webp", route


def test_relative_url_without_root_or_origin_is_a_clear_400(make_server):
    srv = make_server(None)
    r = srv.get("/test.png", W, Q)
    assert r.status_code == 400
    assert "--local-root" in r.text and "--origin" in r.text


# -- hypothesis over real HTTP: odd keys, repeats, unicode, huge values, raw escapes -------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_piece = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["/test.png", "/test.jpg", "/mountains.jpg", "//x", "/_next/image", "http://127.0.0.1/x.png",
                     "384", "0384", "75", "075", "99999999999999999999999", "-1", "%", "%zz", "%00", "/a%2F..%2Fb",
                     "/\u00e4\u00f6\u00fc.png", "/bad/zero.png", "/bad/bomb.png", "/test.svg", "\\\\x"]),
)
_query = st.lists(
    st.tuples(st.sampled_from(["url", "w", "q", "u", "", "url[]", "W", "q\u00e4"]), _piece), max_size=6
)


@given(params=_query, accept=st.sampled_from(["", "image/webp", "*/*", "image/avif,image/webp", "\u00e4/\u00f6"]),
       raw=st.booleans())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_query_fuzz_never_5xx(server_d, params, accept, raw):
    import httpx
    from urllib.parse import quote, urlencode

    if raw:  # keys and values only lightly escaped: stray '%', '+', unicode go through as they are
        qs = "&".join(f"{quote(k, safe='%+[]')}={quote(v, safe='%+/:')}" for k, v in params)
    else:
        qs = urlencode(params)
    r = httpx.get(f"{server_d.url}/_next/image?{qs}", headers={"Accept": accept.encode("utf-8")}, timeout=30)
    assert r.status_code < 500, (qs, r.status_code, r.text)
    if r.status_code != 200:
        assert r.text and r.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("images", [
    {"unoptimized": True},
    {"loader": "cloudinary", "path": "https://res.cloudinary.com/demo/image/upload/"},
    {"loader": "imgix", "path": "https://example.imgix.net/"},
])
def test_optimizer_off_is_404_as_in_next(make_server, corpus, images):
    """Spec 6.2 cases 27/28: next start answers 404 when images.unoptimized is true or the
    loader is not the default one; imgopt does too (but serves `custom`, its own loader)."""
    srv = make_server(images, "--local-root", str(corpus))
    for r in (srv.get("/test.png", W, Q), srv.get("/test.png", 1000, 13), srv.raw("", method="HEAD")):
        assert r.status_code == 404
    assert "image optimization is off" in srv.get("/test.png", W, Q).text


def test_custom_loader_is_served(make_server, corpus):
    srv = make_server({"loader": "custom", "loaderFile": "./imgopt-loader.js"}, "--local-root", str(corpus))
    r = srv.get("/test.png", W, Q)
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
