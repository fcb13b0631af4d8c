"""GET /_next/image/placeholder?url=… : ThumbHash, blur data URL, intrinsic size, dominant colour.

The ThumbHash is checked by decoding it here (a port of thumbHashToRGBA from Evan Wallace's
reference implementation, MIT) and comparing the picture with the original's colours.
"""

from __future__ import annotations

import base64
from array import array
import io
import json
import math
import re
from typing import Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from conftest import ImgoptServer
from imgopt import native

CONFIG = {"remotePatterns": [{"protocol": "http", "hostname": "127.0.0.1"}], "dangerouslyAllowLocalIP": True,
          "dangerouslyAllowSVG": False}


# -- a ThumbHash decoder (reference: thumbHashToRGBA) ----------------------------------------------


def thumbhash_to_rgba(h: bytes) -> tuple[int, int, list[tuple[float, float, float, float]]]:
    header24 = h[0] | h[1] << 8 | h[2] << 16
    header16 = h[3] | h[4] << 8
    l_dc = (header24 & 63) / 63
    p_dc = ((header24 >> 6) & 63) / 31.5 - 1
    q_dc = ((header24 >> 12) & 63) / 31.5 - 1
    l_scale = ((header24 >> 18) & 31) / 31
    has_alpha = header24 >> 23
    p_scale = ((header16 >> 3) & 63) / 63
    q_scale = ((header16 >> 9) & 63) / 63
    is_landscape = header16 >> 15
    lx = max(3, (5 if has_alpha else 7) if is_landscape else header16 & 7)
    ly = max(3, header16 & 7 if is_landscape else (5 if has_alpha else 7))
    a_dc = (h[5] & 15) / 15 if has_alpha else 1
    a_scale = (h[5] >> 4) / 15
    ac_start = 6 if has_alpha else 5
    index = [0]

    def channel(nx: int, ny: int, scale: float) -> list[float]:
        ac = []
        for cy in range(ny):
            cx = 0 if cy else 1
            while cx * ny < nx * (ny - cy):
                i = index[0]
                ac.append((((h[ac_start + (i >> 1)] >> ((i & 1) << 2)) & 15) / 7.5 - 1) * scale)
                index[0] += 1
                cx += 1
        return ac

    l_ac = channel(lx, ly, l_scale)
    p_ac = channel(3, 3, p_scale * 1.25)
    q_ac = channel(3, 3, q_scale * 1.25)
    a_ac = channel(5, 5, a_scale) if has_alpha else []
    ratio = approximate_aspect_ratio(h)
    w = round(32 if ratio > 1 else 32 * ratio)
    hh = round(32 / ratio if ratio > 1 else 32)
    out = []
    for y in range(hh):
        for x in range(w):
            l, p, q, a = l_dc, p_dc, q_dc, a_dc
            fx = [math.cos(math.pi / w * (x + 0.5) * cx) for cx in range(max(lx, 5 if has_alpha else 3))]
            fy = [math.cos(math.pi / hh * (y + 0.5) * cy) for cy in range(max(ly, 5 if has_alpha else 3))]
            j = 0
            for cy in range(ly):
                cx = 0 if cy else 1
                while cx * ly < lx * (ly - cy):
                    l += l_ac[j] * fx[cx] * fy[cy] * 2
                    j += 1
                    cx += 1
            j = 0
            for cy in range(3):
                for cx in range(0 if cy else 1, 3 - cy):
                    f = fx[cx] * fy[cy] * 2
                    p += p_ac[j] * f
                    q += q_ac[j] * f
                    j += 1
            if has_alpha:
                j = 0
                for cy in range(5):
                    for cx in range(0 if cy else 1, 5 - cy):
                        a += a_ac[j] * fx[cx] * fy[cy] * 2
                        j += 1
            b = l - 2 / 3 * p
            r = (3 * l - b + q) / 2
            g = r - q
            out.append(tuple(max(0.0, min(1.0, v)) * 255 for v in (r, g, b, a)))
    return w, hh, out


def approximate_aspect_ratio(h: bytes) -> float:
    has_alpha = h[2] & 0x80
    is_landscape = h[4] & 0x80
    lx = (5 if has_alpha else 7) if is_landscape else h[3] & 7
    ly = h[3] & 7 if is_landscape else (5 if has_alpha else 7)
    return lx / ly


def mean_rgb(pixels) -> tuple[float, float, float]:
    """Alpha-weighted mean colour of (r, g, b, a) pixels."""
    wsum = sum(p[3] for p in pixels) or 1
    return tuple(sum(p[c] * p[3] for p in pixels) / wsum for c in range(3))


def original_mean_rgb(path) -> tuple[float, float, float]:
    im = Image.open(path)
    if im.mode == "I;16":  # Pillow's conversion to RGB clips 16-bit values instead of scaling
        values = array("H", im.tobytes())
        v = sum(values) / len(values) / 257
        return (v, v, v)
    data = ImageOps.exif_transpose(im).convert("RGBA").tobytes()
    return mean_rgb(list(zip(data[0::4], data[1::4], data[2::4], data[3::4])))


# -- the endpoint ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(corpus, tmp_path_factory) -> Iterator[ImgoptServer]:
    srv = ImgoptServer(tmp_path_factory.mktemp("imgopt-ph"), CONFIG, "--local-root", str(corpus)).start()
    yield srv
    srv.stop()


def placeholder(server: ImgoptServer, url: str, **kw) -> httpx.Response:
    return httpx.get(server.url + "/_next/image/placeholder", params={"url": url}, timeout=30, **kw)


@pytest.mark.parametrize("name,size", [
    ("mountains.jpg", (1920, 1280)),
    ("exif-rotated.jpg", (200, 300)),  # stored 300x200, EXIF orientation 6
    ("alpha.png", (200, 200)),
    ("tall.png", (50, 2000)),
    ("animated.gif", (50, 50)),  # the first frame
    ("animated.webp", (400, 300)),
    ("cmyk.jpg", (400, 300)),
    ("gray16.png", (200, 150)),
    ("test.avif", (400, 300)),
    ("tiny.png", (1, 1)),
])
def test_placeholder_json(server, corpus, name, size):
    r = placeholder(server, f"/{name}")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "public, max-age=14400, must-revalidate"
    data = r.json()
    assert set(data) == {"thumbhash", "blurDataURL", "width", "height", "dominantColor"}
    assert (data["width"], data["height"]) == size
    assert re.fullmatch(r"#[0-9a-f]{6}", data["dominantColor"])

    # The blur image: a WebP data URL of at most 16x16 with the image's aspect ratio.
    prefix = "data:image/webp;base64,"
    assert data["blurDataURL"].startswith(prefix)
    blur = Image.open(io.BytesIO(base64.b64decode(data["blurDataURL"][len(prefix):])))
    assert blur.format == "WEBP" and max(blur.size) <= 16
    assert len(data["blurDataURL"]) < 1200
    if min(blur.size) >= 4:
        assert abs(blur.width / blur.height - size[0] / size[1]) < 0.35 * size[0] / size[1]

    # The ThumbHash decodes to a picture of the right shape and the original's colours.
    h = base64.b64decode(data["thumbhash"], validate=True)
    w, hh, pixels = thumbhash_to_rgba(h)
    ratio = size[0] / size[1]
    assert abs(math.log(approximate_aspect_ratio(h)) - math.log(min(max(ratio, 1 / 7), 7))) < 0.45
    if name != "cmyk.jpg":  # (Pillow ignores the embedded CMYK profile; libvips uses it)
        expected = original_mean_rgb(corpus / name)
        got = mean_rgb(pixels)
        assert max(abs(a - b) for a, b in zip(got, expected)) < 16, (got, expected)


def test_thumbhash_marks_transparency(server):
    h = base64.b64decode(placeholder(server, "/alpha.png").json()["thumbhash"])
    assert h[2] & 0x80  # has alpha
    _w, _h, pixels = thumbhash_to_rgba(h)
    assert min(p[3] for p in pixels) < 64  # the transparent corner survives
    h = base64.b64decode(placeholder(server, "/mountains.jpg").json()["thumbhash"])
    assert not h[2] & 0x80


def test_dominant_color_of_a_flat_image(server, corpus):
    data = placeholder(server, "/tiny.png").json()
    r, g, b = Image.open(corpus / "tiny.png").convert("RGB").getpixel((0, 0))
    assert data["dominantColor"] == f"#{r:02x}{g:02x}{b:02x}"


def test_remote_url_and_caching(server, origin):
    url = f"{origin.base_url}/test.jpg"
    a = placeholder(server, url)
    assert a.status_code == 200, a.text
    b = placeholder(server, url)
    assert b.headers["x-nextjs-cache"] == "HIT" and a.content == b.content
    etag = a.headers["etag"]
    c = placeholder(server, url, headers={"If-None-Match": etag})
    assert c.status_code == 304 and c.content == b""
    head = httpx.head(server.url + "/_next/image/placeholder", params={"url": url}, timeout=30)
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == etag


@pytest.mark.parametrize("query,status,message", [
    ("", 400, '"url" parameter is required'),
    ("url=//evil.test/a.png", 400, '"url" parameter cannot be a protocol-relative URL (//)'),
    ("url=https://not-allowed.test/a.png", 400, '"url" parameter is not allowed'),
    ("url=/_next/image%3Furl%3D%2Fa.png", 400, '"url" parameter cannot be recursive'),
    ("url=/missing.png", 404, '"url" parameter is valid but internal response is invalid'),
    ("url=/test.txt", 400, "The requested resource isn't a valid image."),
    ("url=/test.svg", 400, '"url" parameter is valid but image type is not allowed'),
    ("url=/bad/bomb.png", 400, "The requested image is too large"),
    ("url=/bad/html.png", 400, "The requested resource isn't a valid image."),
    ("url=/test.ico", 400, "The requested resource isn't a valid image."),
])
def test_validation_and_errors(server, query, status, message):
    r = httpx.get(f"{server.url}/_next/image/placeholder?{query}", timeout=30)
    assert r.status_code == status, r.text
    assert r.text.startswith(message)
    assert r.headers["cache-control"] == "no-store"


def test_no_width_or_quality_needed_and_ignored(server):
    a = placeholder(server, "/test.png")
    b = httpx.get(f"{server.url}/_next/image/placeholder?url=/test.png&w=1&q=1000", timeout=30)
    assert b.status_code == 200 and a.json() == b.json()


# -- the ThumbHash encoder against its decoder, on random flat colours ------------------------------


def average_rgb(h: bytes) -> tuple[float, float, float]:
    """thumbHashToAverageRGBA: the DC terms only."""
    header = h[0] | h[1] << 8 | h[2] << 16
    l, p, q = (header & 63) / 63, ((header >> 6) & 63) / 31.5 - 1, ((header >> 12) & 63) / 31.5 - 1
    b = l - 2 / 3 * p
    r = (3 * l - b + q) / 2
    return tuple(255 * max(0.0, min(1.0, v)) for v in (r, r - q, b))


@settings(max_examples=25, deadline=None)
@given(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)), st.integers(1, 40), st.integers(1, 40))
def test_flat_colour_round_trips(rgb, w, h):
    rgba = bytes((*rgb, 255)) * (w * h)
    hash_ = native.thumbhash_encode(rgba, w, h)
    # The mean colour is kept in 6-bit L, P and Q terms: a few percent off at most.
    assert max(abs(a - b) for a, b in zip(average_rgb(hash_), rgb)) < 12
    if w >= 7 and h >= 7:  # enough pixels for every DCT term (see placeholder.MIN_SIDE)
        got = mean_rgb(thumbhash_to_rgba(hash_)[2])
        assert max(abs(a - b) for a, b in zip(got, rgb)) < 12, (got, rgb)


def test_json_is_compact_and_stable(server):
    r = placeholder(server, "/test.jpg")
    assert json.loads(r.content) == r.json() and b" " not in r.content
