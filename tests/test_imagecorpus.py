"""Tests for the deterministic image corpus (tests/imagecorpus.py)."""

from __future__ import annotations

import io
import struct
import time

import pytest
import pyvips
from PIL import Image, ImageCms, ImageOps

from tests import imagecorpus as ic
from tests.imagecorpus import GOOD, MALFORMED, MALFORMED_INFO, FixtureInfo, build_corpus

# Formats Pillow cannot open at all (checked with pyvips or by bytes instead).
PILLOW_UNSUPPORTED = {"test.svg", "test.pdf", "test.txt"}
# Formats the bundled libvips can load (header read checked for these).
VIPS_LOADERS = {"image/jpeg", "image/png", "image/webp", "image/avif", "image/gif", "image/tiff", "image/svg+xml"}


# ---------------------------------------------------------------------------
# A small reference implementation of Next.js' detectContentType (spec 3.2),
# used to check that FixtureInfo.mime matches the bytes.
# ---------------------------------------------------------------------------

def detect_content_type(buf: bytes) -> str | None:
    if not buf:
        return None
    table = [
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"GIF8", "image/gif"),
        (b"<?xml", "image/svg+xml"),
        (b"<svg", "image/svg+xml"),
        (b"\x00\x00\x01\x00", "image/x-icon"),
        (b"icns", "image/x-icns"),
        (b"II*\x00", "image/tiff"),
        (b"BM", "image/bmp"),
        (b"\xff\x0a", "image/jxl"),
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "image/jxl"),
        (b"%PDF-", "application/pdf"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "image/jp2"),
    ]
    if buf[:4] == b"RIFF" and buf[8:12] == b"WEBP":
        return "image/webp"
    for sig, mime in table[:5]:
        if buf.startswith(sig):
            return mime
    if buf[4:12] == b"ftypavif":
        return "image/avif"
    for sig, mime in table[5:]:
        if buf.startswith(sig):
            return mime
    if buf[4:12] == b"ftypheic":
        return "image/heic"
    # fallback (image-detector on the first 1024 bytes) -- only the SVG case matters here
    head = buf[:1024].lstrip(b" \t\r\n")
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "image/svg+xml"
    return None


# ---------------------------------------------------------------------------
# Minimal GIF block walker (frame rectangles, delays, disposal, loop)
# ---------------------------------------------------------------------------

def gif_frames(data: bytes) -> dict:
    assert data[:6] in (b"GIF87a", b"GIF89a")
    w, h, packed = struct.unpack("<HHB", data[6:11])
    pos = 13
    if packed & 0x80:
        pos += 3 * (2 << (packed & 7))
    frames, loop, gce = [], None, {}
    while pos < len(data):
        b = data[pos]
        if b == 0x3B:
            break
        if b == 0x21:
            label = data[pos + 1]
            pos += 2
            blocks = []
            while data[pos]:
                blocks.append(data[pos + 1:pos + 1 + data[pos]])
                pos += 1 + data[pos]
            pos += 1
            if label == 0xF9:
                p, delay, _t = struct.unpack("<BHB", blocks[0])
                gce = {"delay": delay, "disposal": (p >> 2) & 7, "transparent": bool(p & 1)}
            elif label == 0xFF and blocks[0] == b"NETSCAPE2.0":
                loop = struct.unpack("<H", blocks[1][1:3])[0]
            continue
        assert b == 0x2C, (pos, b)
        x, y, fw, fh, fp = struct.unpack("<HHHHB", data[pos + 1:pos + 10])
        pos += 10
        if fp & 0x80:
            pos += 3 * (2 << (fp & 7))
        pos += 1  # LZW min code size
        while data[pos]:
            pos += 1 + data[pos]
        pos += 1
        frames.append({"rect": (x, y, fw, fh), **gce})
        gce = {}
    return {"size": (w, h), "frames": frames, "loop": loop, "end": pos}


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    assert data[:2] == b"\xff\xd8"
    pos, segs = 2, []
    while pos < len(data):
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        segs.append((marker, data[pos + 4:pos + 2 + length]))
        if marker == 0xDA:
            break
        pos += 2 + length
    return segs


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    t0 = time.perf_counter()
    paths = build_corpus(root)
    elapsed = time.perf_counter() - t0
    return root, paths, elapsed


def _read(corpus, name: str) -> bytes:
    return corpus[1][name].read_bytes()


# ---------------------------------------------------------------------------
# Shape of the API
# ---------------------------------------------------------------------------

def test_api_shape(corpus):
    root, paths, _ = corpus
    assert set(paths) == set(GOOD) | set(MALFORMED)
    assert not set(GOOD) & set(MALFORMED)
    assert MALFORMED == list(MALFORMED_INFO)
    for name, path in paths.items():
        assert path == root / name
        assert path.is_file(), name
    assert all(n.startswith("bad/") for n in MALFORMED)
    assert all(isinstance(v, FixtureInfo) for v in (*GOOD.values(), *MALFORMED_INFO.values()))
    with pytest.raises(Exception):
        GOOD["test.png"].width = 1  # frozen


def test_budget(corpus):
    _, paths, elapsed = corpus
    total = sum(p.stat().st_size for p in paths.values())
    assert total < 15_000_000, total
    assert elapsed < 15, elapsed  # ~2.5 s on the dev box; generous for slow CI


def test_fixture_info_helpers():
    assert GOOD["test.jpg"].kind == "jpeg"
    assert not GOOD["test.jpg"].animated
    assert GOOD["animated.gif"].animated and GOOD["animated.png"].animated and GOOD["animated.webp"].animated
    assert not GOOD["multipage.tiff"].animated
    assert GOOD["exif-rotated.jpg"].display_size == (200, 300)
    assert GOOD["test.txt"].kind is None


# ---------------------------------------------------------------------------
# Good fixtures
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_mime_detection(corpus, name):
    assert detect_content_type(_read(corpus, name)) == GOOD[name].mime


@pytest.mark.parametrize("name", sorted(set(GOOD) - PILLOW_UNSUPPORTED))
def test_good_opens_with_pillow(corpus, name):
    info = GOOD[name]
    with Image.open(corpus[1][name]) as im:
        assert im.size == (info.width, info.height)
        assert getattr(im, "n_frames", 1) == info.frames
        if info.mode is not None:
            assert im.mode == info.mode
        im.load()
        if info.frames > 1:  # every frame decodes
            for i in range(info.frames):
                im.seek(i)
                im.load()


@pytest.mark.parametrize("name", sorted(n for n, i in GOOD.items() if i.mime in VIPS_LOADERS))
def test_good_header_with_pyvips(corpus, name):
    info = GOOD[name]
    im = pyvips.Image.new_from_file(str(corpus[1][name]), access="sequential")
    assert (im.width, im.height) == (info.width, info.height)
    if info.frames > 1 and info.mime != "image/png":  # libvips' pngload ignores APNG frames
        assert im.get("n-pages") == info.frames


def test_not_images(corpus):
    assert _read(corpus, "test.txt").startswith(b"This is a plain text file")
    pdf = _read(corpus, "test.pdf")
    assert pdf.startswith(b"%PDF-1.4\n") and pdf.rstrip().endswith(b"%%EOF")
    # xref offsets point at the objects
    xref = int(pdf.rsplit(b"startxref\n", 1)[1].split()[0])
    assert pdf[xref:xref + 4] == b"xref"
    rows = pdf[xref:].split(b"\n")[3:8]
    for i, row in enumerate(rows, 1):
        off = int(row[:10])
        assert pdf[off:].startswith(b"%d 0 obj" % i)


def test_svg(corpus):
    data = _read(corpus, "test.svg")
    assert len(data) == 603  # same size as Next's fixture
    im = pyvips.Image.new_from_buffer(data, "")
    assert (im.width, im.height) == (400, 400)
    assert im.avg() > 0


def test_exif_rotated(corpus):
    with Image.open(corpus[1]["exif-rotated.jpg"]) as im:
        assert im.size == (300, 200)
        assert im.getexif()[0x0112] == 6
        assert im.getpixel((5, 5))[0] > 200 and im.getpixel((5, 5))[1] < 60  # red at stored top-left
        up = ImageOps.exif_transpose(im)
    assert up.size == (200, 300) == GOOD["exif-rotated.jpg"].display_size
    r, g, b = up.getpixel((up.width - 6, 5))  # displayed top-right
    assert r > 200 and g < 60 and b < 60
    for x, y in [(5, 5), (5, up.height - 6), (up.width - 6, up.height - 6)]:
        r, g, b = up.getpixel((x, y))
        assert not (r > 200 and g < 60 and b < 60)
    # libvips sees the same tag and autorot gives the displayed size
    v = pyvips.Image.new_from_file(str(corpus[1]["exif-rotated.jpg"]))
    assert v.get("orientation") == 6
    assert (v.autorot().width, v.autorot().height) == (200, 300)


def test_cmyk(corpus):
    with Image.open(corpus[1]["cmyk.jpg"]) as im:
        assert im.mode == "CMYK"
        icc = im.info["icc_profile"]
        prof = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        assert prof.profile.xcolor_space.strip() == "CMYK"
        rgb = ImageCms.profileToProfile(im, prof, ImageCms.createProfile("sRGB"), outputMode="RGB")
        assert rgb.size == (400, 300)
        assert max(im.getchannel("K").getextrema()) > 0  # real black generation
    assert any(m == 0xEE and p.startswith(b"Adobe") for m, p in jpeg_segments(_read(corpus, "cmyk.jpg")))
    v = pyvips.Image.new_from_file(str(corpus[1]["cmyk.jpg"]))
    assert v.interpretation == "cmyk" and v.bands == 4
    srgb = v.icc_transform("srgb")
    assert srgb.bands == 3


def test_rgb16(corpus):
    v = pyvips.Image.new_from_file(str(corpus[1]["rgb16.png"]))
    assert v.format == "ushort" and v.bands == 3 and (v.width, v.height) == (200, 150)
    assert v.max() > 255
    assert (v % 257).max() > 0  # not just 8-bit data scaled up
    g = pyvips.Image.new_from_file(str(corpus[1]["gray16.png"]))
    assert g.format == "ushort" and g.bands == 1


def test_alpha_variants(corpus):
    with Image.open(corpus[1]["alpha.png"]) as im:
        a = im.getchannel("A")
        assert a.getpixel((10, 10)) == 0 and a.getpixel((150, 50)) == 255
        assert len(a.crop((0, 150, 200, 200)).getcolors(256)) > 20  # soft gradient
    with Image.open(corpus[1]["gray-alpha.png"]) as im:
        assert im.getchannel("A").getextrema() == (0, 255)
    with Image.open(corpus[1]["palette.png"]) as im:
        assert im.info["transparency"][:2] == b"\x00\x80"
        assert im.convert("RGBA").getchannel("A").getextrema() == (0, 255)


def test_progressive_and_interlaced(corpus):
    with Image.open(corpus[1]["progressive.jpg"]) as im:
        assert im.info.get("progressive")
    assert any(m == 0xC2 for m, _ in jpeg_segments(_read(corpus, "progressive.jpg")))
    assert not any(m == 0xC2 for m, _ in jpeg_segments(_read(corpus, "test.jpg")))
    with Image.open(corpus[1]["interlaced.png"]) as im:
        assert im.info.get("interlace") == 1
        assert im.tobytes() == ic._graphic(256, 192, seed=256).tobytes()  # Adam7 writer is lossless
    v = pyvips.Image.new_from_file(str(corpus[1]["interlaced.png"]))
    assert v.get("interlaced") == 1


def test_animations(corpus):
    g = gif_frames(_read(corpus, "animated.gif"))
    assert g["loop"] == 0 and len(g["frames"]) == 3
    assert [f["delay"] for f in g["frames"]] == [10, 20, 30]

    odd = gif_frames(_read(corpus, "animated-odd.gif"))
    assert odd["size"] == (120, 90) and odd["loop"] == 0
    assert [f["rect"] for f in odd["frames"]] == [(0, 0, 120, 90), (10, 20, 40, 30), (50, 60, 60, 20),
                                                 (85, 10, 30, 70), (119, 89, 1, 1)]
    assert [f["delay"] for f in odd["frames"]] == [5, 10, 15, 20, 25]
    assert [f["disposal"] for f in odd["frames"]] == [1, 1, 2, 3, 1]
    with Image.open(corpus[1]["animated-odd.gif"]) as im:
        im.seek(1)
        assert im.convert("RGB").getpixel((20, 30)) == (0, 0, 255)  # blue box of frame 2

    with Image.open(corpus[1]["animated.png"]) as im:
        assert im.info["loop"] == 0
        durs = []
        for i in range(im.n_frames):
            im.seek(i)
            durs.append(im.info["duration"])
        assert durs == [100, 150, 200]
    with Image.open(corpus[1]["animated.webp"]) as im:
        assert im.is_animated and im.info["loop"] == 0
        durs = []
        for i in range(im.n_frames):
            im.seek(i)
            im.load()
            durs.append(im.info["duration"])
        assert durs == [100, 200, 300]


def test_containers(corpus):
    assert _read(corpus, "test.tiff")[:4] == b"II*\x00"
    assert _read(corpus, "multipage.tiff")[:4] == b"II*\x00"
    with Image.open(corpus[1]["test.ico"]) as im:
        assert im.info["sizes"] == {(32, 32), (16, 16)}
    icns = _read(corpus, "test.icns")
    assert icns[:4] == b"icns" and struct.unpack(">I", icns[4:8])[0] == len(icns)
    assert b"ic07" in icns and b"ic08" in icns
    assert _read(corpus, "test.jp2")[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    assert _read(corpus, "test.avif")[4:12] == b"ftypavif"
    with Image.open(corpus[1]["test.gif"]) as im:
        assert not getattr(im, "is_animated", False)


def test_photo_like_content(corpus):
    """Photo fixtures must make encoders work: many distinct colours, not flat."""
    for name in ["test.jpg", "mountains.jpg"]:
        with Image.open(corpus[1][name]) as im:
            small = im.convert("RGB").resize((200, 133))
            assert len(small.getcolors(200 * 133)) > 5000, name
    size = corpus[1]["large.jpg"].stat().st_size
    assert 700_000 < size < 2_500_000, size


# ---------------------------------------------------------------------------
# Malformed fixtures
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_exists_and_detects(corpus, name):
    p = corpus[1][name]
    assert p.is_file() and p.parent.name == "bad"
    assert detect_content_type(p.read_bytes()) == MALFORMED_INFO[name].mime


def test_bomb_png(corpus):
    data = _read(corpus, "bad/bomb.png")
    assert len(data) < 50_000
    v = pyvips.Image.new_from_buffer(data, "", access="sequential")  # header only, no decode
    assert (v.width, v.height) == (40000, 40000)
    assert struct.unpack(">II", data[16:24]) == (40000, 40000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))


def test_bomb_gif(corpus):
    data = _read(corpus, "bad/bomb-gif.gif")
    assert len(data) < 100
    g = gif_frames(data)
    assert g["size"] == (65535, 65535) and g["frames"][0]["rect"] == (0, 0, 65535, 65535)


def test_truncated_and_corrupt(corpus):
    jpg, png = _read(corpus, "test.jpg"), _read(corpus, "test.png")
    assert _read(corpus, "bad/truncated.jpg") == jpg[: len(jpg) * 4 // 10]
    assert _read(corpus, "bad/truncated.png") == png[: len(png) * 4 // 10]
    assert _read(corpus, "bad/zero.png") == b""
    assert _read(corpus, "bad/magic-only.png") == b"\x89PNG\r\n\x1a\n"
    assert _read(corpus, "bad/wrong-magic.png") == jpg
    corrupt = _read(corpus, "bad/corrupt.jpg")
    start = ic._jpeg_scan_start(jpg)
    assert len(corrupt) == len(jpg) and corrupt[:start] == jpg[:start] and corrupt != jpg
    assert corrupt.endswith(b"\xff\xd9") and sorted(corrupt[start:-2]) == sorted(jpg[start:-2])
    with pytest.raises(Exception):
        with Image.open(corpus[1]["bad/truncated.jpg"]) as im:
            im.load()


def test_polyglot_and_html(corpus):
    poly = _read(corpus, "bad/polyglot.gif")
    g = gif_frames(poly)
    assert g["size"] == (1, 1) and len(g["frames"]) == 1
    assert b"<script>" in poly[g["end"]:]
    with Image.open(io.BytesIO(poly)) as im:
        assert im.size == (1, 1)
    assert _read(corpus, "bad/html.png").startswith(b"<!DOCTYPE html>")


def test_jpeg_metadata_abuse(corpus):
    segs = jpeg_segments(_read(corpus, "bad/huge-icc.jpg"))
    icc = [p for m, p in segs if m == 0xE2 and p.startswith(b"ICC_PROFILE\0")]
    assert len(icc) == 17 and sum(len(p) - 14 for p in icc) == 1 << 20
    segs = jpeg_segments(_read(corpus, "bad/many-exif.jpg"))
    app1 = [p for m, p in segs if m == 0xE1]
    assert len(app1) == 301 and sum(map(len, app1)) > 300_000
    assert struct.unpack("<H", app1[0][14:16])[0] == 5000  # IFD0 entry count
    for name in ["bad/huge-icc.jpg", "bad/many-exif.jpg"]:
        with Image.open(corpus[1][name]) as im:
            assert im.size == (64, 64)
            im.load()


def test_hostile_svgs(corpus):
    assert b"<script" in _read(corpus, "bad/svg-script.svg")
    xxe = _read(corpus, "bad/svg-xxe.svg")
    assert b'<!ENTITY xxe SYSTEM "file:///etc/passwd">' in xxe and b"&xxe;" in xxe
    assert b'href="http://127.0.0.1:1/x.png"' in _read(corpus, "bad/svg-external-href.svg")
    bl = _read(corpus, "bad/svg-billion-laughs.svg")
    assert bl.count(b"<!ENTITY") == 10 and b"&lol9;" in bl and len(bl) < 2000
    huge = _read(corpus, "bad/svg-huge.svg")
    assert b"width='100000'" in huge and b"height='100000'" in huge
    ls = _read(corpus, "bad/leading-space.svg")
    assert ls[:1].isspace() and b"\n" in ls[:5] and b"\t" in ls[:5]
    v = pyvips.Image.new_from_buffer(ls, "")
    assert (v.width, v.height) == (100, 100)
    xml = _read(corpus, "bad/xml-not-svg.xml")
    assert xml.startswith(b"<?xml") and b"<svg" not in xml


def test_many_frames_gif(corpus):
    g = gif_frames(_read(corpus, "bad/many-frames.gif"))
    assert len(g["frames"]) == 2000 and g["size"] == (32, 32)


# ---------------------------------------------------------------------------
# Determinism / idempotency
# ---------------------------------------------------------------------------

def test_deterministic(corpus, tmp_path):
    """A second, independent build yields byte-identical files (AVIF and WebP included:
    the AVIF encoder runs with max_threads=1)."""
    paths2 = build_corpus(tmp_path / "again")
    diff = [n for n, p in corpus[1].items() if p.read_bytes() != paths2[n].read_bytes()]
    assert diff == []


def test_idempotent_rebuild_in_place(corpus):
    root, paths, _ = corpus
    before = {n: p.read_bytes() for n, p in paths.items()}
    again = build_corpus(root)
    assert again == paths
    assert {n: p.read_bytes() for n, p in again.items()} == before
