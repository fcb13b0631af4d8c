"""Resource limits, against a real imgopt process and the hostile origin.

* The input pixel limit is checked from the header, before anything is decoded: a few-KB
  40000x40000 PNG (and JPEG, GIF, TIFF equivalents) gets a 400 well under a second, and the
  server's peak RSS (VmHWM) does not move.
* Multi-page inputs: only the first page is ever decoded, and the check is on that page.
  Animations pass through without any decoding (as in Next.js); the frames x pixels cap
  applies where frames are decoded (the opt-in ``animated`` re-encoding).
* Deadlines: a transform past ``--transform-timeout`` gets 504 and the worker is free right
  after (the next request on a one-worker server is served at once); an encoder that cannot be
  interrupted is not started when it cannot finish in time (the original is served, as Next
  does when sharp gives up); a fetch past
  ``--fetch-timeout`` gets 504 and gives its place back.
* ``maximumResponseBody`` counts decoded bytes: gzip/deflate bombs (single, nested, chunked,
  with a lying Content-Length) stop at the limit with a 413, without a memory spike.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import io
import shutil
import struct
import time
import zlib
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from PIL import Image

from cluster import metric
from conftest import ImgoptServer, wait_for
from origin import _gzip_bomb

TIMED_OUT = "The image transform timed out"
UPSTREAM_TIMEOUT = '"url" parameter is valid but upstream response timed out'
UPSTREAM_INVALID = '"url" parameter is valid but upstream response is invalid'


def proc_kb(srv: ImgoptServer, field: str) -> int:
    assert srv.proc is not None
    text = Path(f"/proc/{srv.proc.pid}/status").read_text()
    return int(text.split(f"{field}:")[1].split()[0])


# -- hostile files ------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def flat_png(w: int, h: int) -> bytes:
    """A w x h 8-bit grey PNG of zeros: tiny on disk, w*h pixels to decode."""
    comp = zlib.compressobj(9)
    row = b"\x00" + bytes(w)
    body = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b""))


def jpeg_with_size(w: int, h: int) -> bytes:
    """A real 16x16 JPEG whose SOF0 claims w x h."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 99, 199)).save(buf, "JPEG", quality=80)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, h, w)
    return bytes(data)


def tiff_with_size(w: int, h: int) -> bytes:
    """A little-endian TIFF header claiming w x h 8-bit grey, with one tiny strip."""
    strip = bytes(64)
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, h), (279, 4, 1, len(strip))]
    ifd_at = 8
    data_at = ifd_at + 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_at) + struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        if tag == 273:
            value = data_at
        packed = struct.pack("<H", value) + b"\x00\x00" if typ == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, count) + packed
    return bytes(out + struct.pack("<I", 0) + strip)


def endless_tiff(width: int, height: int, rows_per_strip: int = 1024) -> bytes:
    """A width x height 8-bit grey deflate TIFF that is slow to transform by construction.

    Every strip offset points at the same compressed strip of zeros, so the file is a few
    dozen KB (mostly the strip tables) while decoding it means inflating and resizing
    width x height pixels: at 10000 x 10,000,000 that is 10^11 pixels, about 9 minutes
    of work here (1 Gpx of it, 10000 x 100000, took 5.3 s), so any deadline of a few seconds is reached on
    any machine. Its width needs only a light resize, so the work is killable at fine steps."""
    comp = zlib.compressobj(9)
    strip = b"".join(comp.compress(bytes(width)) for _ in range(rows_per_strip)) + comp.flush()
    n = -(-height // rows_per_strip)
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1),
               (273, 4, n, 0), (277, 3, 1, 1), (278, 4, 1, rows_per_strip), (279, 4, n, 0), (284, 3, 1, 1)]
    offsets_at = 8 + 2 + 12 * len(entries) + 4
    counts_at = offsets_at + 4 * n
    strip_at = counts_at + 4 * n
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        value = {273: offsets_at, 279: counts_at}.get(tag, value)
        packed = struct.pack("<H", value) + b"\x00\x00" if typ == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, count) + packed
    out += struct.pack("<I", 0) + struct.pack(f"<{n}I", *[strip_at] * n) + struct.pack(f"<{n}I", *[len(strip)] * n)
    return bytes(out + strip)


def two_page_tiff(first: tuple[int, int], second: tuple[int, int]) -> bytes:
    pages = [Image.new("RGB", first, (255, 0, 0)), Image.new("RGB", second, (0, 0, 255))]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    return buf.getvalue()


def animated_gif_huge_screen() -> bytes:
    """2 frames of 1x1 on a 65535x65535 logical screen: Next passes it through untouched."""
    frame = b"\x21\xf9\x04\x00\x0a\x00\x00\x00" + b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00\x02\x02\x44\x01\x00"
    return (b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
            + b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00" + frame * 2 + b"\x3b")


@pytest.fixture(scope="module")
def lim_root(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("limits-root")
    shutil.copy(corpus / "bad" / "bomb.png", root / "bomb.png")  # 40000x40000, a few KB
    shutil.copy(corpus / "bad" / "bomb-gif.gif", root / "bomb.gif")  # 65535x65535
    shutil.copy(corpus / "bad" / "many-frames.gif", root / "many-frames.gif")
    for name in ("tiny.png", "test.jpg", "multipage.tiff", "mountains.jpg"):
        shutil.copy(corpus / name, root / name)
    (root / "bomb.jpg").write_bytes(jpeg_with_size(65000, 65000))
    (root / "bomb.tif").write_bytes(tiff_with_size(100_000, 100_000))
    (root / "wide.png").write_bytes(flat_png(20_000, 16))  # 320k px: fine, a control
    (root / "anim-screen.gif").write_bytes(animated_gif_huge_screen())
    (root / "two-pages.tiff").write_bytes(two_page_tiff((300, 200), (20, 20)))
    (root / "tall.png").write_bytes(flat_png(1000, 60_000))  # 60 Mpx: under the limit
    (root / "endless.tif").write_bytes(endless_tiff(*ENDLESS))  # 10^11 px in ~90 KB
    return root


@pytest.fixture(scope="module")
def lim(lim_root: Path, origin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImgoptServer]:
    """One worker, one queue place, 0.5 s transform deadline, 1.5 s fetch deadline."""
    images = {"dangerouslyAllowLocalIP": True, "domains": ["127.0.0.1"],
              "formats": ["image/avif", "image/webp"]}
    srv = ImgoptServer(tmp_path_factory.mktemp("imgopt-limits"), images, "--local-root", str(lim_root),
                       "--workers", "1", "--queue", "1", "--transform-timeout", "0.5",
                       "--fetch-timeout", "1.5").start()
    yield srv
    srv.stop()


ENDLESS = (10_000, 10_000_000)
# Long enough for a test to see (on /metrics) that a job is on the worker or waiting for it.
DEADLINE = 2.0


@pytest.fixture(scope="module")
def deadlines(lim_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImgoptServer]:
    """One worker, two queue places, a 2 s transform deadline, and a pixel limit that lets
    endless.tif (10^11 px) in, so that its transform is cut by the deadline, not refused."""
    srv = ImgoptServer(tmp_path_factory.mktemp("imgopt-deadlines"), None, "--local-root", str(lim_root),
                       "--workers", "1", "--queue", "2", "--transform-timeout", str(DEADLINE),
                       "--max-input-pixels", str(10**12)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as c:
        yield c


def get(client: httpx.Client, srv: ImgoptServer, url: str, w: int = 640, q: int = 75,
        accept: str = "image/webp") -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = client.get(srv.url + "/_next/image", params={"url": url, "w": str(w), "q": str(q)},
                   headers={"Accept": accept})
    return r, time.monotonic() - t0


# -- pixel limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name,dims", [
    ("bomb.png", "40000x40000"), ("bomb.gif", "65535x65535"), ("bomb.jpg", "65000x65000"),
    ("bomb.tif", "100000x100000"),
])
def test_pixel_bomb_is_refused_from_the_header(lim, client, name, dims):
    peak_before = proc_kb(lim, "VmHWM")
    r, took = get(client, lim, f"/{name}")
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.text.startswith(f"The requested image is too large: {dims}")
    assert took < 1.0
    # Decoding any of these would need 1.6-10 GB; the peak must not even move by 64 MB.
    assert proc_kb(lim, "VmHWM") - peak_before < 64_000


def test_limit_is_configurable_and_per_decoded_page(make_server, lim_root, client):
    srv = make_server(None, "--local-root", str(lim_root), "--max-input-pixels", "40000")
    r, _ = get(client, srv, "/mountains.jpg")  # 1920x1280
    assert r.status_code == 400 and "over the limit of 40000" in r.text
    r, _ = get(client, srv, "/two-pages.tiff", accept="image/png")  # first page 300x200 = 60000
    assert r.status_code == 400 and "300x200" in r.text
    # Three 200x150 pages (90000 px together): only page 1 (30000) is decoded, so it is fine,
    # and the output is one page (aspect 4:3), not a 200x450 strip of all three.
    r, _ = get(client, srv, "/multipage.tiff", w=128, accept="image/png")
    assert r.status_code == 200
    im = Image.open(io.BytesIO(r.content))
    assert im.size == (128, 96)
    assert im.convert("RGB").getpixel((64, 48))[0] > 200  # the red first page
    r, _ = get(client, srv, "/wide.png", accept="image/png")  # 20000x16 = 320000 > 40000
    assert r.status_code == 400


def test_animations_pass_through_without_decoding(lim, lim_root, client):
    peak_before = proc_kb(lim, "VmHWM")
    for name in ("many-frames.gif", "anim-screen.gif"):
        r, took = get(client, lim, f"/{name}")
        assert r.status_code == 200, (name, r.text)
        assert r.headers["content-type"] == "image/gif"
        assert r.content == (lim_root / name).read_bytes()
        assert took < 1.0
    # 2000 frames, and a 65535x65535 canvas (4.3 Gpx per frame): nothing was decoded.
    assert proc_kb(lim, "VmHWM") - peak_before < 64_000


def test_animated_reencoding_caps_frames_times_pixels(make_server, lim_root, client, corpus):
    """With imgopt's opt-in ``animated`` re-encoding, frames are decoded, so the cap applies:
    over maxFrames or frames x pixels, the original passes through untouched."""
    srv = make_server({"animated": {"maxFrames": 100, "maxPixels": 60_000}},
                      "--local-root", str(corpus))
    r, _ = get(client, srv, "/bad/many-frames.gif", w=32)  # 2000 frames > 100
    assert r.status_code == 200 and r.content == (corpus / "bad/many-frames.gif").read_bytes()
    r, _ = get(client, srv, "/animated.webp", w=32)  # 3 x 400x300 = 360000 px > 60000
    assert r.status_code == 200 and r.content == (corpus / "animated.webp").read_bytes()
    r, _ = get(client, srv, "/animated-odd.gif", w=64)  # 5 x 120x90 = 54000: within, re-encoded
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(r.content)).n_frames == 5


# -- deadlines --------------------------------------------------------------------------------------


def test_transform_deadline_kills_the_work_and_frees_the_worker(deadlines, client):
    # endless.tif to TIFF at 3840 wide: minutes of streaming work, cut at the deadline.
    r, took = get(client, deadlines, "/endless.tif", w=3840, accept="*/*")
    assert r.status_code == 504 and r.text == TIMED_OUT
    assert took >= DEADLINE  # the deadline starts when the worker picks the job up
    # One worker: were it still busy with the rest of those minutes, this would not be answered
    # before the client gives up (60 s).
    r, _ = get(client, deadlines, "/tiny.png", w=32)
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"


def test_uninterruptible_encoder_is_not_started_when_it_cannot_finish(lim, lim_root, client):
    # 1000x60000 to AVIF: libaom would need ~25 s in one call nothing can interrupt. imgopt
    # does not start it and serves the original bytes at once (Next's answer when sharp fails
    # or times out); the one worker is free for the next request straight away.
    peak_before = proc_kb(lim, "VmHWM")
    r, took = get(client, lim, "/tall.png", w=1080, accept="image/avif")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (lim_root / "tall.png").read_bytes()
    assert took < 1.5
    r, took = get(client, lim, "/tiny.png", w=48)
    assert r.status_code == 200 and took < 1.0
    assert proc_kb(lim, "VmHWM") - peak_before < 300_000


def _wait_for_metric(srv: ImgoptServer, name: str, value: float) -> None:
    deadline = time.monotonic() + 30
    while metric(srv.url, name) != value:
        assert time.monotonic() < deadline, f"{name} never reached {value}"
        time.sleep(0.01)


def test_time_spent_queued_does_not_count_against_the_transform(deadlines, client):
    """Two transforms that each run into the deadline T, then a small one behind them on the one
    worker: it waits at least T for the worker, and still has its whole T when it starts (a
    deadline counted from the queue would have passed before it started)."""
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        first = ex.submit(get, client, deadlines, "/endless.tif", 3840, 75, "*/*")
        _wait_for_metric(deadlines, "imgopt_pool_running", 1)
        second = ex.submit(get, client, deadlines, "/endless.tif", 2048, 75, "*/*")
        _wait_for_metric(deadlines, "imgopt_pool_admitted", 2)
        small = ex.submit(get, client, deadlines, "/tiny.png", 64, 75, "image/webp")
        results = [f.result() for f in (first, second, small)]
    assert [r.status_code for r, _ in results] == [504, 504, 200], [r.text for r, _ in results]
    assert results[2][1] > DEADLINE  # it really waited for the worker longer than T


def test_timeouts_are_not_cached(deadlines, client):
    a, _ = get(client, deadlines, "/endless.tif", w=3840, accept="*/*")
    b, _ = get(client, deadlines, "/endless.tif", w=3840, accept="*/*")
    assert (a.status_code, b.status_code) == (504, 504), (a.headers, b.headers, a.text, b.text)  # tried again, not cached
    assert a.headers["cache-control"] == b.headers["cache-control"] == "no-store"


def test_fetch_deadline_gives_the_place_back(lim, origin, client):
    """/hang never answers. Both places (1 worker + 1 queue) are held while fetching, so a
    third request is refused at once; after the deadline both places are free again."""
    origin.reset_counters()
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        futs = [ex.submit(get, client, lim, f"{origin.base_url}/hang?n={i}") for i in range(2)]
        wait_for(lambda: origin.hits["/hang"] >= 2, "the two requests to reach the origin")
        busy, _ = get(client, lim, f"{origin.base_url}/test.png?busy")
        refused_while_held = not any(f.done() for f in futs)  # refused at once, not after the deadline
        results = [f.result() for f in futs]
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and refused_while_held
    for r, took in results:
        assert r.status_code == 504 and r.text == UPSTREAM_TIMEOUT
        assert took > 1.3  # held until the fetch deadline
    r, _ = get(client, lim, f"{origin.base_url}/test.png?after-hang")
    assert r.status_code == 200  # both places were given back


def test_infinite_body_stops_at_the_size_limit(small_limit, origin, client):
    """A body that never ends is cut at maximumResponseBody (1 MB here) with a 413, long before
    the fetch deadline, and without buffering more than the limit."""
    peak_before = proc_kb(small_limit, "VmHWM")
    r, _ = get(client, small_limit, f"{origin.base_url}/infinite")
    assert r.status_code == 413 and r.text == UPSTREAM_INVALID
    assert proc_kb(small_limit, "VmHWM") - peak_before < 64_000


# -- decoded body limit -------------------------------------------------------------------------------

LIMIT = 1_000_000


def zlib_bomb(size: int, raw: bool = False) -> bytes:
    """A deflate stream of `size` zero bytes, zlib-wrapped unless raw (built in segments)."""
    gz = _gzip_bomb(size)
    body = gz[10:-8]  # the raw deflate data inside the gzip member
    if raw:
        return body
    adler = 1
    block = bytes(1 << 20)
    for _ in range(size >> 20):
        adler = zlib.adler32(block, adler)
    adler = zlib.adler32(bytes(size & ((1 << 20) - 1)), adler)
    return b"\x78\xda" + body + struct.pack(">I", adler)


@pytest.fixture(scope="module")
def bombs(origin, corpus):
    png = (corpus / "test.png").read_bytes()
    bmp = (corpus / "test.bmp").read_bytes()  # uncompressed: gzip makes it much smaller
    gz1g = _gzip_bomb(1_000_000_000)
    files = {
        "/bombs/exact.bmp": (gzip.compress(bmp), "gzip", len(bmp)),
        "/bombs/gzip": (gz1g, "gzip", None),
        "/bombs/gzip-gzip": (gzip.compress(gz1g), "gzip, gzip", None),
        "/bombs/deflate": (zlib_bomb(1_000_000_000), "deflate", None),
        "/bombs/raw-deflate": (zlib_bomb(1_000_000_000, raw=True), "deflate", None),
        "/bombs/x-gzip": (gz1g, "x-gzip", None),
        "/bombs/six-codings": (gzip.compress(png), "gzip, identity, identity, gzip, gzip, gzip, gzip, gzip", None),
        "/bombs/bad-gzip": (b"\x1f\x8b\x08\x00" + bytes(40), "gzip", None),
    }
    try:
        import brotli

        files["/bombs/br"] = (brotli.compress(bytes(200_000_000), quality=1), "br", None)
    except ImportError:  # pragma: no cover - brotli is a test dependency
        pass
    for path, (body, coding, _) in files.items():
        origin.add_file(path, body, "image/png")
        origin.set_headers(path, {"Content-Encoding": coding})
    return files


@pytest.fixture(scope="module")
def small_limit(origin, tmp_path_factory) -> Iterator[ImgoptServer]:
    images = {"dangerouslyAllowLocalIP": True, "domains": ["127.0.0.1"], "maximumResponseBody": LIMIT}
    srv = ImgoptServer(tmp_path_factory.mktemp("imgopt-small-limit"), images).start()
    yield srv
    srv.stop()


def test_limit_counts_decoded_bytes(make_server, origin, bombs, client):
    body, _coding, decoded = bombs["/bombs/exact.bmp"]
    assert len(body) < decoded  # compressed it would fit under decoded-1; decoded it does not
    exact = make_server({"dangerouslyAllowLocalIP": True, "domains": ["127.0.0.1"], "maximumResponseBody": decoded})
    r, _ = get(client, exact, f"{origin.base_url}/bombs/exact.bmp")
    assert r.status_code == 200
    under = make_server({"dangerouslyAllowLocalIP": True, "domains": ["127.0.0.1"],
                         "maximumResponseBody": decoded - 1})
    r, _ = get(client, under, f"{origin.base_url}/bombs/exact.bmp")
    assert r.status_code == 413 and r.text == UPSTREAM_INVALID


@pytest.mark.parametrize("path", [
    "/bombs/gzip", "/bombs/gzip-gzip", "/bombs/deflate", "/bombs/raw-deflate", "/bombs/x-gzip",
    "/chunked/bombs/gzip", "/chunked/bombs/gzip-gzip",
    "/lying-length/bombs/gzip?claim=300000",  # Content-Length says 300 KB (inflates to ~300 MB)
    "/lying-length/bombs/gzip-gzip?claim=900",
])
def test_compression_bombs_stop_at_the_limit(small_limit, origin, bombs, client, path):
    peak_before = proc_kb(small_limit, "VmHWM")
    r, took = get(client, small_limit, origin.base_url + path)
    assert r.status_code == 413, (r.status_code, r.text)
    assert r.text == UPSTREAM_INVALID
    assert took < 2.0
    # 1 GB inflated would be ~1 GB of RSS; decoding stops at 1 MB (+64 KiB steps).
    assert proc_kb(small_limit, "VmHWM") - peak_before < 64_000


@pytest.mark.parametrize("path,status", [
    ("/bombs/br", 400),  # not decoded (imgopt only asks for gzip/deflate): 400 not an image
    ("/bombs/six-codings", 400),  # more than 5 codings
    ("/bombs/bad-gzip", 502),  # a broken gzip stream is an upstream fault
])
def test_other_encodings_are_bounded(small_limit, origin, bombs, client, path, status):
    if path not in bombs:
        pytest.skip("brotli not installed")
    peak_before = proc_kb(small_limit, "VmHWM")
    r, took = get(client, small_limit, origin.base_url + path)
    assert r.status_code == status, (r.status_code, r.text)
    assert took < 2.0
    assert proc_kb(small_limit, "VmHWM") - peak_before < 64_000
