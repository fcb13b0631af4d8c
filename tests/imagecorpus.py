"""Deterministic test-image corpus generator for imgopt.

Every fixture is generated in code (Pillow, plus hand-written PNG / GIF / ICNS /
ICC / PDF bytes where Pillow cannot produce what we need).  Nothing is
downloaded.  All randomness comes from fixed-seed ``random.Random`` instances,
so two builds on the same machine produce byte-identical files.

Usage::

    from tests.imagecorpus import build_corpus, GOOD, MALFORMED, MALFORMED_INFO
    paths = build_corpus(tmp_path)          # name -> pathlib.Path
    info = GOOD["test.jpg"]                 # FixtureInfo(mime='image/jpeg', width=400, ...)

Fixture *names* are POSIX paths relative to the corpus root, e.g. ``"test.png"``,
``"dir with space/photo.jpg"`` and ``"bad/zero.png"``; ``root / name`` is always
the file.  ``GOOD`` maps names of well-formed fixtures to the facts a test can
rely on; ``MALFORMED`` lists the hostile / malformed fixtures (all under
``bad/``) and ``MALFORMED_INFO`` gives what is known about them (detected mime
per the Next.js magic-byte rules, declared header size, ...).

``FixtureInfo.mime`` is the type Next.js' ``detectContentType`` would report
for the bytes (spec section 3.2): e.g. ``test.txt`` -> ``None``,
``test.pdf`` -> ``application/pdf``, ``bad/xml-not-svg.xml`` -> ``image/svg+xml``
(Next treats *any* ``<?xml`` document as SVG).

``width``/``height`` are the *stored* pixel dimensions as Pillow reports them
(for multi-image containers such as ICO/ICNS: the largest entry; for GIF: the
logical screen).  For ``exif-rotated.jpg`` the displayed size is
``FixtureInfo.display_size`` (orientation applied).

Not produced: ``test.jxl`` (no JPEG XL encoder in Pillow or in the bundled
libvips) and ``test.heic`` (libvips' heifsave only has the AV1 encoder, no HEVC).
"""

from __future__ import annotations

import io
import math
import pathlib
import random
import struct
import zlib
from array import array
from dataclasses import dataclass
from typing import Callable

from PIL import Image, ImageChops, ImageCms, ImageDraw, ImageFilter, ImageOps

__all__ = [
    "FixtureInfo",
    "GOOD",
    "MALFORMED",
    "MALFORMED_INFO",
    "NOT_PRODUCED",
    "build_corpus",
    "cmyk_icc_profile",
]


# ---------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------

_ANIMATABLE = {"image/gif", "image/png", "image/webp"}


@dataclass(frozen=True)
class FixtureInfo:
    """Expected facts about one fixture.

    mime:   type detected from the bytes as Next.js does (None = not detected).
    width/height: stored pixel size as Pillow reports it (None if not an image).
    frames: number of frames/pages (Pillow ``n_frames``).
    note:   free text.
    mode:   Pillow mode after ``Image.open`` (None = not checked / not Pillow).
    orientation: EXIF orientation tag value (1 = none/normal).
    """

    mime: str | None
    width: int | None = None
    height: int | None = None
    frames: int = 1
    note: str = ""
    mode: str | None = None
    orientation: int = 1

    @property
    def kind(self) -> str | None:
        """Short type name: 'jpeg', 'png', 'svg+xml', 'x-icon', 'pdf', ..."""
        return self.mime.split("/", 1)[1] if self.mime else None

    @property
    def animated(self) -> bool:
        """True for animated GIF/APNG/WebP (what Next's is-animated detects).

        Multi-page TIFF has frames > 1 but is *not* animated."""
        return self.frames > 1 and self.mime in _ANIMATABLE

    @property
    def display_size(self) -> tuple[int | None, int | None]:
        """(width, height) after applying the EXIF orientation."""
        if self.orientation in (5, 6, 7, 8):
            return (self.height, self.width)
        return (self.width, self.height)


GOOD: dict[str, FixtureInfo] = {
    "test.png": FixtureInfo("image/png", 400, 400, mode="RGB", note="RGB graphic with gradients, shapes and a checkerboard"),
    "test.jpg": FixtureInfo("image/jpeg", 400, 300, mode="RGB", note="photo-like (gradients, ridges, grain), q85 baseline"),
    "test.webp": FixtureInfo("image/webp", 400, 300, mode="RGB", note="lossy VP8, same picture as test.jpg"),
    "test.avif": FixtureInfo("image/avif", 400, 300, mode="RGB", note="AVIF (libaom via Pillow), same picture as test.jpg"),
    "test.gif": FixtureInfo("image/gif", 400, 300, mode="P", note="static GIF89a, 1 frame"),
    "test.tiff": FixtureInfo("image/tiff", 400, 300, mode="RGB", note="little-endian (II*\\0), LZW"),
    "test.bmp": FixtureInfo("image/bmp", 400, 300, mode="RGB", note="24-bit BI_RGB"),
    "test.ico": FixtureInfo("image/x-icon", 32, 32, mode="RGBA", note="ICO with two entries: 32x32 and 16x16 (PNG-compressed)"),
    "test.icns": FixtureInfo("image/x-icns", 256, 256, mode="RGBA", note="hand-written ICNS: ic07 (128 PNG) + ic08 (256 PNG); largest is 256"),
    "test.jp2": FixtureInfo("image/jp2", 1, 1, mode="RGB", note="JPEG 2000 (JP2 box format), 1x1 like Next's fixture"),
    "test.svg": FixtureInfo("image/svg+xml", 400, 400, note="603 bytes exactly, like Next's fixture; width/height attributes"),
    "test.pdf": FixtureInfo("application/pdf", None, None, 0, note="minimal one-page PDF, starts with %PDF-"),
    "test.txt": FixtureInfo(None, None, None, 0, note="plain text, not an image"),
    "animated.gif": FixtureInfo("image/gif", 50, 50, 3, mode="P", note="loop=0, durations 100/200/300 ms"),
    "animated.png": FixtureInfo("image/png", 100, 100, 3, mode="RGBA", note="APNG, loop=0, durations 100/150/200 ms"),
    "animated2.png": FixtureInfo("image/png", 1105, 100, 2, mode="RGB", note="APNG 1105 px wide (Next's animated2.png width), durations 200/200 ms"),
    "animated.webp": FixtureInfo("image/webp", 400, 300, 3, mode="RGBA", note="animated WebP (VP8X anim+alpha flags, as Pillow's anim encoder writes), loop=0, durations 100/200/300 ms"),
    "mountains.jpg": FixtureInfo("image/jpeg", 1920, 1280, mode="RGB", note="photo-like landscape, q90, 4:2:0"),
    "äöüščří.png": FixtureInfo("image/png", 100, 100, mode="RGB", note="unicode file name (NFC)"),
    "dir with space/photo.jpg": FixtureInfo("image/jpeg", 320, 240, mode="RGB", note="path contains a space"),
    "exif-rotated.jpg": FixtureInfo(
        "image/jpeg", 300, 200, mode="RGB", orientation=6,
        note="stored 300x200, EXIF Orientation=6 -> displayed 200x300; a 40x40 pure-red marker sits at the "
        "stored top-left, i.e. the displayed TOP-RIGHT corner after auto-orient",
    ),
    "cmyk.jpg": FixtureInfo("image/jpeg", 400, 300, mode="CMYK", note="CMYK (Adobe APP14) with an embedded generated CMYK ICC profile (v2 prtr, Lab PCS, lut8 A2B0/B2A0)"),
    "rgb16.png": FixtureInfo("image/png", 200, 150, mode="RGB", note="16-bit/channel RGB PNG (hand-written; libvips format 'ushort'); Pillow reduces it to 8-bit RGB"),
    "gray16.png": FixtureInfo("image/png", 200, 150, mode="I;16", note="16-bit grayscale PNG"),
    "gray-alpha.png": FixtureInfo("image/png", 200, 200, mode="LA", note="8-bit gray + alpha, transparent left quarter"),
    "palette.png": FixtureInfo("image/png", 200, 200, mode="P", note="palette PNG with tRNS (index 0 fully transparent, index 1 half transparent)"),
    "alpha.png": FixtureInfo("image/png", 200, 200, mode="RGBA", note="RGBA; top-left 100x100 fully transparent (alpha 0), soft alpha gradient at the bottom"),
    "progressive.jpg": FixtureInfo("image/jpeg", 400, 300, mode="RGB", note="progressive JPEG (SOF2)"),
    "interlaced.png": FixtureInfo("image/png", 256, 192, mode="RGB", note="Adam7-interlaced PNG (hand-written)"),
    "multipage.tiff": FixtureInfo("image/tiff", 200, 150, 3, mode="RGB", note="3-page little-endian TIFF (red/green/blue pages); not 'animated'"),
    "animated-odd.gif": FixtureInfo(
        "image/gif", 120, 90, 5, mode="P",
        note="hand-written; frames 120x90@0,0 / 40x30@10,20 / 60x20@50,60 (disposal 2, transparent) / "
        "30x70@85,10 (disposal 3) / 1x1@119,89; durations 50/100/150/200/250 ms; loop=0",
    ),
    "large.jpg": FixtureInfo("image/jpeg", 3000, 2000, mode="RGB", note="photo-like landscape for resize/perf tests, q90"),
    "tiny.png": FixtureInfo("image/png", 1, 1, mode="RGB", note="1x1"),
    "tall.png": FixtureInfo("image/png", 50, 2000, mode="RGB", note="50x2000 stripes"),
}

MALFORMED_INFO: dict[str, FixtureInfo] = {
    "bad/zero.png": FixtureInfo(None, None, None, 0, note="0 bytes"),
    "bad/truncated.jpg": FixtureInfo("image/jpeg", 400, 300, note="first 40% of test.jpg (header intact, no EOI)"),
    "bad/truncated.png": FixtureInfo("image/png", 400, 400, note="first 40% of test.png (IHDR intact, IDAT cut, no IEND)"),
    "bad/corrupt.jpg": FixtureInfo("image/jpeg", 400, 300, note="test.jpg headers intact; entropy-coded data after SOS shuffled (deterministically); EOI kept"),
    "bad/wrong-magic.png": FixtureInfo("image/jpeg", 400, 300, note="JPEG bytes with a .png name"),
    "bad/magic-only.png": FixtureInfo("image/png", None, None, 0, note="only the 8-byte PNG signature"),
    "bad/polyglot.gif": FixtureInfo("image/gif", 1, 1, note="valid 1x1 GIF, <script> in a comment extension, and HTML/JS appended after the trailer"),
    "bad/html.png": FixtureInfo(None, None, None, 0, note="HTML document named .png"),
    "bad/bomb.png": FixtureInfo("image/png", 40000, 40000, note="IHDR 40000x40000 8-bit gray (1.6 Gpx); IDAT holds only 100 zero rows; a few KB"),
    "bad/bomb-gif.gif": FixtureInfo("image/gif", 65535, 65535, note="logical screen and image descriptor 65535x65535, LZW data for a single pixel"),
    "bad/huge-icc.jpg": FixtureInfo("image/jpeg", 64, 64, note="~1 MiB junk ICC profile split over 17 APP2 ICC_PROFILE segments"),
    "bad/many-exif.jpg": FixtureInfo("image/jpeg", 64, 64, note="1 big EXIF APP1 (5000 IFD entries) + 300 more APP1 segments (contradictory Exif Orientation=8, XMP)"),
    "bad/svg-script.svg": FixtureInfo("image/svg+xml", 200, 200, note="<script> element and onload handler"),
    "bad/svg-xxe.svg": FixtureInfo("image/svg+xml", 200, 200, note="DOCTYPE with external entity SYSTEM 'file:///etc/passwd'"),
    "bad/svg-external-href.svg": FixtureInfo("image/svg+xml", 200, 200, note="<image href='http://127.0.0.1:1/x.png'> (and xlink:href)"),
    "bad/svg-billion-laughs.svg": FixtureInfo("image/svg+xml", 200, 200, note="entity-expansion bomb, 10 levels x 10 (1e9 'lol')"),
    "bad/svg-huge.svg": FixtureInfo("image/svg+xml", 100000, 100000, note="width='100000' height='100000'"),
    "bad/leading-space.svg": FixtureInfo("image/svg+xml", 100, 100, note="well-formed SVG preceded by spaces, \\n and \\t; Next still detects SVG"),
    "bad/many-frames.gif": FixtureInfo("image/gif", 32, 32, 2000, note="2000 1x1 frames on a 32x32 canvas, 20 ms each"),
    "bad/xml-not-svg.xml": FixtureInfo("image/svg+xml", None, None, 0, note="generic XML (<note/>); Next's '<?xml' rule calls it SVG anyway"),
}

MALFORMED: list[str] = list(MALFORMED_INFO)

NOT_PRODUCED: dict[str, str] = {
    "test.jxl": "no JPEG XL encoder available (Pillow has none; the bundled libvips lacks jxlsave)",
    "test.heic": "no HEVC encoder available (bundled libvips heifsave supports AV1 only)",
}


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _vgrad(w: int, h: int) -> Image.Image:
    """'L' image: 0 at the top to 255 at the bottom."""
    return Image.linear_gradient("L").resize((w, h), Image.Resampling.BILINEAR)


def _hgrad(w: int, h: int) -> Image.Image:
    return Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).transpose(
        Image.Transpose.FLIP_LEFT_RIGHT).resize((w, h), Image.Resampling.BILINEAR)


def _noise_layer(rng: random.Random, w: int, h: int, scale: float) -> Image.Image:
    cx = max(2, round(w / scale))
    cy = max(2, round(h / scale))
    small = Image.frombytes("L", (cx, cy), rng.randbytes(cx * cy))
    return small.resize((w, h), Image.Resampling.BICUBIC)


def _fractal(rng: random.Random, w: int, h: int, octaves: int = 5, base: float | None = None) -> Image.Image:
    """Fractal value noise ('L', autocontrasted).

    Computed at most 1600 px wide/high and upscaled (keeps large images fast;
    the per-pixel grain supplies the finest detail)."""
    f = min(1.0, 1600 / max(w, h))
    if f < 1.0:
        sw, sh = max(2, round(w * f)), max(2, round(h * f))
        small = _fractal(rng, sw, sh, octaves, base * f if base else None)
        return small.resize((w, h), Image.Resampling.BICUBIC)
    scale = base or max(w, h) / 3.0
    img = _noise_layer(rng, w, h, scale)
    alpha = 0.45
    for _ in range(1, octaves):
        scale /= 2.3
        if scale < 1.5:
            break
        img = Image.blend(img, _noise_layer(rng, w, h, scale), alpha)
        alpha *= 0.8
    return ImageOps.autocontrast(img, cutoff=1)


def _grain(rng: random.Random, w: int, h: int, amp: int) -> Image.Image:
    """Per-pixel luminance grain as RGB centred on 128 (+-amp, triangular distribution)."""
    lut = [max(0, min(255, 128 + round((v - 127.5) * amp / 127.5))) for v in range(256)]
    a = Image.frombytes("L", (w, h), rng.randbytes(w * h))
    b = Image.frombytes("L", (w, h), rng.randbytes(w * h))
    g = Image.blend(a, b, 0.5).point(lut)
    return Image.merge("RGB", (g, g, g))


def _ridge(rng: random.Random, n_log2: int, rough: float) -> list[float]:
    """1-D midpoint displacement in [0, 1]-ish."""
    n = 1 << n_log2
    pts = [0.0] * (n + 1)
    pts[0] = rng.random()
    pts[n] = rng.random()
    step, amp = n, 1.0
    while step > 1:
        half = step // 2
        for i in range(half, n, step):
            pts[i] = (pts[i - half] + pts[i + half]) / 2 + (rng.random() - 0.5) * amp
        step, amp = half, amp * rough
    lo, hi = min(pts), max(pts)
    return [(p - lo) / (hi - lo or 1) for p in pts]


def _photo(w: int, h: int, seed: int, grain: int = 6) -> Image.Image:
    """A deterministic photo-like landscape: sky gradient, clouds, sun glow,
    three mountain ridges with snow, textured ground, trees, a few hard edges
    and per-pixel grain.  Scales to any size (cost is ~linear in pixels)."""
    rng = random.Random(seed)
    vg = _vgrad(w, h)
    img = ImageOps.colorize(vg, (38, 86, 168), (206, 222, 236))

    # sun glow (computed on a reduced canvas, then upscaled)
    sw, sh = max(8, w // 8), max(8, h // 8)
    glow = Image.new("L", (sw, sh), 0)
    sx, sy, sr = sw * 0.72, sh * 0.22, max(2.0, sw * 0.05)
    ImageDraw.Draw(glow).ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=255)
    glow = glow.filter(ImageFilter.GaussianBlur(sr * 1.6)).resize((w, h), Image.Resampling.BICUBIC)
    img.paste((255, 244, 214), (0, 0, w, h), glow)
    sun = Image.new("L", (w, h), 0)
    r = max(2, int(min(w, h) * 0.035))
    cx, cy = int(w * 0.72), int(h * 0.22)
    ImageDraw.Draw(sun).ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    img.paste((255, 252, 240), (0, 0, w, h), sun)

    # clouds
    cn = _fractal(rng, w, h, octaves=4)
    fade = vg.point(lambda v: max(0, 255 - v * 2))  # fewer clouds lower down
    cmask = ImageChops.multiply(cn.point(lambda v: 0 if v < 150 else min(220, (v - 150) * 2)), fade)
    img.paste((248, 249, 252), (0, 0, w, h), cmask)

    texture = _fractal(rng, w, h, octaves=7, base=max(w, h) / 6.0)
    layers = [  # (base y, amplitude, dark colour, light colour, snow)
        (0.50, 0.30, (78, 92, 120), (150, 160, 185), True),
        (0.60, 0.22, (52, 70, 72), (110, 128, 120), False),
        (0.74, 0.14, (40, 62, 30), (120, 140, 70), False),
    ]
    npts = 1 << 8
    for base_y, amp, dark, light, snow in layers:
        ridge = _ridge(rng, 8, 0.55)
        poly = [(i * (w - 1) / npts, h * (base_y - amp * ridge[i])) for i in range(npts + 1)]
        mask = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask).polygon(poly + [(w - 1, h - 1), (0, h - 1)], fill=255)
        shade = Image.blend(texture, vg.point(lambda v: 255 - v), 0.35)
        img.paste(ImageOps.colorize(shade, dark, light), (0, 0), mask)
        if snow:
            top = min(y for _, y in poly)
            snowline = top + (h * base_y - top) * 0.35
            band = ImageChops.add(vg, texture.point(lambda v: 128 + (v - 128) // 5), 1.0, -128)
            thr = int(snowline / h * 255)
            band = band.point(lambda v, t=thr: 255 if v < t else 0)
            smask = ImageChops.darker(mask, band)
            img.paste(ImageOps.colorize(texture, (200, 205, 215), (250, 250, 252)), (0, 0), smask)

    # foreground meadow
    fg_top = int(h * 0.82)
    fmask = Image.new("L", (w, h), 0)
    fridge = _ridge(rng, 6, 0.5)
    fpoly = [(i * (w - 1) / 64, fg_top - h * 0.03 * fridge[i]) for i in range(65)]
    ImageDraw.Draw(fmask).polygon(fpoly + [(w - 1, h - 1), (0, h - 1)], fill=255)
    grass = ImageOps.colorize(_fractal(rng, w, h, octaves=7, base=max(w, h) / 20.0), (34, 60, 18), (140, 160, 60))
    img.paste(grass, (0, 0), fmask)

    draw = ImageDraw.Draw(img)
    # trees: hard-edged dark triangles
    for _ in range(max(6, w // 40)):
        tx = rng.uniform(0, w)
        th = rng.uniform(0.05, 0.12) * h
        ty = rng.uniform(fg_top - h * 0.02, h * 0.97)
        tw = th * rng.uniform(0.25, 0.4)
        col = (rng.randrange(10, 30), rng.randrange(35, 60), rng.randrange(15, 30))
        draw.polygon([(tx, ty - th), (tx - tw, ty), (tx + tw, ty)], fill=col)
        draw.rectangle([tx - tw * 0.1, ty, tx + tw * 0.1, ty + th * 0.12], fill=(60, 40, 25))
    # a cabin and a power line: straight high-contrast edges
    bx, by, bw, bh = w * 0.18, h * 0.86, w * 0.08, h * 0.06
    draw.rectangle([bx, by, bx + bw, by + bh], fill=(150, 60, 40))
    draw.polygon([(bx - bw * 0.1, by), (bx + bw / 2, by - bh * 0.6), (bx + bw * 1.1, by)], fill=(70, 40, 35))
    draw.rectangle([bx + bw * 0.4, by + bh * 0.45, bx + bw * 0.6, by + bh], fill=(40, 25, 20))
    lw = max(1, w // 800)
    draw.line([(0, h * 0.66), (w, h * 0.70)], fill=(30, 30, 30), width=lw)
    draw.line([(0, h * 0.68), (w, h * 0.73)], fill=(30, 30, 30), width=lw)

    if grain:
        img = ImageChops.add(img, _grain(rng, w, h, grain), 1.0, -128)
    return img


def _graphic(w: int, h: int, seed: int) -> Image.Image:
    """An RGB 'graphic' (flat colours, gradients, shapes, checkerboard)."""
    rng = random.Random(seed)
    img = Image.merge("RGB", (_hgrad(w, h), _vgrad(w, h), Image.new("L", (w, h), 160)))
    d = ImageDraw.Draw(img)
    cell = max(4, w // 16)
    for y in range(0, h // 2, cell):
        for x in range(0, w // 2, cell):
            if (x // cell + y // cell) % 2 == 0:
                d.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(245, 245, 245))
    for _ in range(12):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(10, max(11, w // 3)), y0 + rng.randrange(10, max(11, h // 3))
        col = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            d.ellipse([x0, y0, x1, y1], fill=col, outline=(0, 0, 0), width=2)
        else:
            d.rectangle([x0, y0, x1, y1], fill=col)
    for i in range(0, w, max(2, w // 50)):
        d.line([(i, h - 1), (w - 1, h - 1 - i * h // w)], fill=(20, 20, 20))
    return img


# ---------------------------------------------------------------------------
# Hand-written PNG
# ---------------------------------------------------------------------------

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _chunk(typ: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + typ + data + struct.pack(">I", zlib.crc32(typ + data) & 0xFFFFFFFF)


def _png(w: int, h: int, depth: int, ctype: int, raw: bytes, interlace: int = 0, level: int = 9) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    return PNG_SIG + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, level)) + _chunk(b"IEND", b"")


_ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def _adam7_png(im: Image.Image) -> bytes:
    """Adam7-interlaced 8-bit RGB PNG (Pillow cannot write interlaced PNG)."""
    assert im.mode == "RGB"
    w, h = im.size
    data = im.tobytes()
    stride = w * 3
    out = bytearray()
    for x0, y0, dx, dy in _ADAM7:
        if x0 >= w or y0 >= h:
            continue
        for y in range(y0, h, dy):
            row = data[y * stride:(y + 1) * stride]
            chans = [row[x0 * 3 + c::dx * 3] for c in range(3)]
            px = bytearray(len(chans[0]) * 3)
            for c in range(3):
                px[c::3] = chans[c]
            out += b"\0" + px
    return _png(w, h, 8, 2, bytes(out), interlace=1)


def _rgb16_png(w: int, h: int) -> bytes:
    """16-bit RGB PNG with genuinely 16-bit data (smooth ramps + low bits)."""
    raw = bytearray()
    for y in range(h):
        row = array("H")
        g = (y * 65535) // max(1, h - 1)
        for x in range(w):
            r = (x * 65535) // max(1, w - 1)
            b = ((x * 977 + y * 1543) * 37) & 0xFFFF
            row.extend((r, g, b))
        row.byteswap()  # PNG is big-endian (array uses native little-endian here)
        raw += b"\0" + row.tobytes()
    if array("H", [1]).tobytes() == b"\x00\x01":  # big-endian host: undo the swap
        raise RuntimeError("big-endian host not supported")
    return _png(w, h, 16, 2, bytes(raw))


# ---------------------------------------------------------------------------
# Hand-written GIF
# ---------------------------------------------------------------------------

def _lzw(indices: bytes, mcs: int = 8) -> bytes:
    """GIF LZW encoding that never grows the code width: a clear code is sent
    every 2**mcs - 2 literals.  Valid for every conforming decoder."""
    clear, eoi, width = 1 << mcs, (1 << mcs) + 1, mcs + 1
    run = (1 << mcs) - 2
    acc = nbits = 0
    out = bytearray()

    def emit(code: int) -> None:
        nonlocal acc, nbits
        acc |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8

    for i, px in enumerate(indices):
        if i % run == 0:
            emit(clear)
        emit(px)
    emit(eoi)
    if nbits:
        out.append(acc & 0xFF)
    data = bytes(out)
    blocks = b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255))
    return bytes([mcs]) + blocks + b"\0"


def _gif_palette() -> bytes:
    pal = bytearray()
    for r in range(6):
        for g in range(6):
            for b in range(6):
                pal += bytes((r * 51, g * 51, b * 51))
    for i in range(40):
        v = 8 + i * 6
        pal += bytes((v, v, v))
    return bytes(pal)


def _gif_header(w: int, h: int, palette: bytes, loop: int | None = 0, bg: int = 0) -> bytes:
    n = len(palette) // 3
    size_bits = max(0, (n - 1).bit_length() - 1)
    assert 3 * (2 << size_bits) == len(palette)
    out = b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80 | 0x70 | size_bits, bg, 0) + palette
    if loop is not None:
        out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", loop) + b"\x00"
    return out


def _gif_frame(x: int, y: int, w: int, h: int, indices: bytes, delay_cs: int,
               disposal: int = 1, transparent: int | None = None, mcs: int = 8) -> bytes:
    packed = (disposal << 2) | (1 if transparent is not None else 0)
    gce = b"\x21\xf9\x04" + struct.pack("<BHB", packed, delay_cs, transparent or 0) + b"\x00"
    desc = b"\x2c" + struct.pack("<HHHHB", x, y, w, h, 0)
    return gce + desc + _lzw(indices, mcs)


def _animated_odd_gif() -> bytes:
    W, H = 120, 90
    out = bytearray(_gif_header(W, H, _gif_palette()))
    # frame 1: full canvas, colour-cube pattern
    f1 = bytes(((x // 20) * 36 + (y // 15) * 6 + ((x + y) // 40) % 6) % 216 for y in range(H) for x in range(W))
    out += _gif_frame(0, 0, W, H, f1, 5, disposal=1)
    out += _gif_frame(10, 20, 40, 30, bytes([5] * (40 * 30)), 10, disposal=1)  # blue box
    f3 = bytes((180 if (x + y) % 4 else 215) for y in range(20) for x in range(60))  # 215 = transparent
    out += _gif_frame(50, 60, 60, 20, f3, 15, disposal=2, transparent=215)
    f4 = bytes(30 + (i // 300) for i in range(30 * 70))  # 7 horizontal bands
    out += _gif_frame(85, 10, 30, 70, f4, 20, disposal=3)
    out += _gif_frame(119, 89, 1, 1, b"\x00", 25, disposal=1)
    out += b"\x3b"
    return bytes(out)


def _many_frames_gif(n: int = 2000) -> bytes:
    pal = bytes((0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0, 255))
    out = bytearray(_gif_header(32, 32, pal))
    for i in range(n):
        out += _gif_frame(i % 32, (i // 32) % 32, 1, 1, bytes([1 + i % 3]), 2, disposal=1, mcs=2)
    out += b"\x3b"
    return bytes(out)


def _tiny_gif(extra: bytes = b"") -> bytes:
    """1x1 GIF89a; *extra* (extension blocks) goes before the image."""
    return (b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\xff\x00\x00\x00\x00\x00"
            + extra + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00\x3b")


# ---------------------------------------------------------------------------
# ICC profile (CMYK, generated)
# ---------------------------------------------------------------------------

_D50 = (0.9642, 1.0, 0.8249)
_SRGB_D50 = ((0.4360747, 0.3850649, 0.1430804), (0.2225045, 0.7168786, 0.0606169), (0.0139322, 0.0971045, 0.7141733))
_SRGB_D50_INV = ((3.1338561, -1.6168667, -0.4906146), (-0.9787684, 1.9161415, 0.0334540), (0.0719453, -0.2289914, 1.4052427))


def _lin(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _delin(c: float) -> float:
    c = min(1.0, max(0.0, c))
    return 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055


def _rgb_to_lab(r: float, g: float, b: float) -> tuple[float, float, float]:
    rl, gl, bl = _lin(r), _lin(g), _lin(b)
    xyz = [m[0] * rl + m[1] * gl + m[2] * bl for m in _SRGB_D50]
    f = [(t / n) ** (1 / 3) if t / n > 216 / 24389 else (24389 / 27 * t / n + 16) / 116 for t, n in zip(xyz, _D50)]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def _lab_to_rgb(L: float, a: float, b: float) -> tuple[float, float, float]:
    fy = (L + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200

    def finv(t: float) -> float:
        return t ** 3 if t ** 3 > 216 / 24389 else (116 * t - 16) / (24389 / 27)

    xyz = (finv(fx) * _D50[0], finv(fy) * _D50[1], finv(fz) * _D50[2])
    return tuple(_delin(m[0] * xyz[0] + m[1] * xyz[1] + m[2] * xyz[2]) for m in _SRGB_D50_INV)  # type: ignore[return-value]


def _u8(v: float) -> int:
    return max(0, min(255, round(v)))


def _lut8(n_in: int, n_out: int, grid: int, fn: Callable[[tuple[float, ...]], tuple[int, ...]]) -> bytes:
    out = bytearray(b"mft1\0\0\0\0" + bytes((n_in, n_out, grid, 0)))
    for i in range(3):
        for j in range(3):
            out += struct.pack(">i", 0x10000 if i == j else 0)
    ident = bytes(range(256))
    out += ident * n_in
    total = grid ** n_in
    for idx in range(total):
        coords = []
        rem = idx
        for _ in range(n_in):
            coords.append(rem % grid)
            rem //= grid
        coords.reverse()  # first input channel varies slowest
        out += bytes(fn(tuple(c / (grid - 1) for c in coords)))
    out += ident * n_out
    return bytes(out)


def _cmyk_to_lab8(c: tuple[float, ...]) -> tuple[int, ...]:
    C, M, Y, K = c
    L, a, b = _rgb_to_lab((1 - C) * (1 - K), (1 - M) * (1 - K), (1 - Y) * (1 - K))
    return (_u8(L * 255 / 100), _u8(a + 128), _u8(b + 128))


def _lab8_to_cmyk(c: tuple[float, ...]) -> tuple[int, ...]:
    L, a, b = c[0] * 100, c[1] * 255 - 128, c[2] * 255 - 128
    r, g, bl = _lab_to_rgb(L, a, b)
    k = 1 - max(r, g, bl)
    if k >= 0.999:
        return (0, 0, 0, 255)
    return (_u8((1 - r - k) / (1 - k) * 255), _u8((1 - g - k) / (1 - k) * 255), _u8((1 - bl - k) / (1 - k) * 255), _u8(k * 255))


def cmyk_icc_profile() -> bytes:
    """A small but valid ICC v2.1 CMYK output ('prtr') profile with Lab PCS.

    A2B0 (CMYK->Lab, lut8, 5^4 grid) and B2A0 (Lab->CMYK, lut8, 9^3 grid) are
    computed from a naive CMYK<->sRGB model; LittleCMS accepts it."""
    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    desc_txt = b"imgopt test CMYK\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(desc_txt)) + desc_txt + b"\0" * 8 + b"\0\0\0" + b"\0" * 67
    tags = [
        (b"desc", desc),
        (b"cprt", b"text\0\0\0\0" + b"Public domain test profile\0"),
        (b"wtpt", b"XYZ \0\0\0\0" + s15(_D50[0]) + s15(_D50[1]) + s15(_D50[2])),
        (b"A2B0", _lut8(4, 3, 5, _cmyk_to_lab8)),
        (b"B2A0", _lut8(3, 4, 9, _lab8_to_cmyk)),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table = bytearray(struct.pack(">I", len(tags)))
    body = bytearray()
    for sig, data in tags:
        while (offset + len(body)) % 4:
            body += b"\0"
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    while len(body) % 4:
        body += b"\0"
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"\0\0\0\0" + struct.pack(">I", 0x02100000) + b"prtr" + b"CMYK" + b"Lab "
              + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 4 + b"\0" * 4 + b"\0" * 8 + b"\0" * 8
              + struct.pack(">I", 0) + s15(_D50[0]) + s15(_D50[1]) + s15(_D50[2]) + b"\0" * 4 + b"\0" * 16 + b"\0" * 28)
    assert len(header) == 128
    return header + bytes(table) + bytes(body)


# ---------------------------------------------------------------------------
# JPEG surgery
# ---------------------------------------------------------------------------

def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    assert len(payload) <= 65533
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _jpeg_insert_after_app0(jpeg: bytes, segments: bytes) -> bytes:
    assert jpeg[:2] == b"\xff\xd8"
    pos = 2
    if jpeg[2:4] == b"\xff\xe0":
        pos = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:pos] + segments + jpeg[pos:]


def _jpeg_scan_start(jpeg: bytes) -> int:
    """Offset of the first byte of entropy-coded data (after the SOS header)."""
    pos = 2
    while pos < len(jpeg):
        assert jpeg[pos] == 0xFF, pos
        marker = jpeg[pos + 1]
        length = struct.unpack(">H", jpeg[pos + 2:pos + 4])[0]
        if marker == 0xDA:
            return pos + 2 + length
        pos += 2 + length
    raise ValueError("no SOS")


def _tiff_ifd(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """Little-endian TIFF with a single IFD; entries: (tag, type, count, 4-byte value)."""
    entries = sorted(entries)
    out = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, typ, count, val in entries:
        out += struct.pack("<HHI", tag, typ, count) + val.ljust(4, b"\0")
    return out + struct.pack("<I", 0)


# ---------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------

_TEST_SVG_BODY = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="400" viewBox="0 0 400 400">\n'
    '  <rect width="400" height="400" fill="#2a6fdb"/>\n'
    '  <circle cx="200" cy="200" r="120" fill="#ffd23f" stroke="#1d1d1d" stroke-width="8"/>\n'
    '  <circle cx="160" cy="170" r="14" fill="#1d1d1d"/>\n'
    '  <circle cx="240" cy="170" r="14" fill="#1d1d1d"/>\n'
    '  <path d="M130 240 Q200 310 270 240" fill="none" stroke="#1d1d1d" stroke-width="10" stroke-linecap="round"/>\n'
    '  {pad}\n'
    '</svg>\n'
)


def _test_svg() -> bytes:
    base = _TEST_SVG_BODY.format(pad="<!---->").encode()
    missing = 603 - len(base)
    assert missing >= 0
    return _TEST_SVG_BODY.format(pad="<!--" + " " * missing + "-->").encode()


def _test_pdf() -> bytes:
    content = b"BT /F1 24 Tf 40 100 Td (imgopt test) Tj ET\n"
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"endstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def _icns(images: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(t + struct.pack(">I", len(d) + 8) + d for t, d in images)
    return b"icns" + struct.pack(">I", len(body) + 8) + body


class _Build:
    """One build; caches shared intermediates (never shared between builds)."""

    def __init__(self) -> None:
        self._cache: dict[str, object] = {}

    def _memo(self, key: str, fn: Callable[[], object]):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    # shared sources --------------------------------------------------------
    def photo400(self) -> Image.Image:
        return self._memo("photo400", lambda: _photo(400, 300, seed=400))  # type: ignore[return-value]

    def graphic400(self) -> Image.Image:
        return self._memo("graphic400", lambda: _graphic(400, 400, seed=7))  # type: ignore[return-value]

    def test_jpg(self) -> bytes:
        return self._memo("test.jpg", lambda: _save(self.photo400(), "JPEG", quality=85))  # type: ignore[return-value]

    def test_png(self) -> bytes:
        return self._memo("test.png", lambda: _save(self.graphic400(), "PNG", optimize=False, compress_level=9))  # type: ignore[return-value]

    def small_jpg(self) -> bytes:
        return self._memo("small", lambda: _save(_photo(64, 64, seed=64, grain=3), "JPEG", quality=80))  # type: ignore[return-value]

    # good fixtures -----------------------------------------------------------
    def good(self) -> dict[str, Callable[[], bytes]]:
        return {
            "test.png": self.test_png,
            "test.jpg": self.test_jpg,
            "test.webp": lambda: _save(self.photo400(), "WEBP", quality=80, method=4),
            "test.avif": lambda: _save(self.photo400(), "AVIF", quality=60, speed=8, max_threads=1),
            "test.gif": lambda: _save(_graphic(400, 300, seed=11).quantize(64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE), "GIF"),
            "test.tiff": lambda: _save(self.photo400(), "TIFF", compression="tiff_lzw"),
            "test.bmp": lambda: _save(self.photo400(), "BMP"),
            "test.ico": self._ico,
            "test.icns": self._icns,
            "test.jp2": lambda: _save(Image.new("RGB", (1, 1), (200, 30, 30)), "JPEG2000"),
            "test.svg": _test_svg,
            "test.pdf": _test_pdf,
            "test.txt": lambda: b"This is a plain text file, not an image.\n",
            "animated.gif": self._animated_gif,
            "animated.png": self._animated_png,
            "animated2.png": self._animated2_png,
            "animated.webp": self._animated_webp,
            "mountains.jpg": lambda: _save(_photo(1920, 1280, seed=1920, grain=5), "JPEG", quality=90),
            "äöüščří.png": lambda: _save(_graphic(100, 100, seed=3), "PNG"),
            "dir with space/photo.jpg": lambda: _save(_photo(320, 240, seed=320), "JPEG", quality=85),
            "exif-rotated.jpg": self._exif_rotated,
            "cmyk.jpg": self._cmyk,
            "rgb16.png": lambda: _rgb16_png(200, 150),
            "gray16.png": self._gray16,
            "gray-alpha.png": self._gray_alpha,
            "palette.png": self._palette,
            "alpha.png": self._alpha,
            "progressive.jpg": lambda: _save(self.photo400(), "JPEG", quality=85, progressive=True),
            "interlaced.png": lambda: _adam7_png(_graphic(256, 192, seed=256)),
            "multipage.tiff": self._multipage,
            "animated-odd.gif": _animated_odd_gif,
            "large.jpg": lambda: _save(_photo(3000, 2000, seed=3000, grain=6), "JPEG", quality=90),
            "tiny.png": lambda: _save(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"),
            "tall.png": self._tall,
        }

    def _ico(self) -> bytes:
        src = _graphic(64, 64, seed=64).convert("RGBA")
        return _save(src, "ICO", sizes=[(32, 32), (16, 16)])

    def _icns(self) -> bytes:
        src = _graphic(256, 256, seed=99).convert("RGBA")
        a = Image.new("L", (256, 256), 0)
        ImageDraw.Draw(a).rounded_rectangle([8, 8, 247, 247], radius=48, fill=255)
        src.putalpha(a)
        return _icns([(b"ic07", _save(src.resize((128, 128), Image.Resampling.LANCZOS), "PNG")),
                      (b"ic08", _save(src, "PNG"))])

    def _animated_gif(self) -> bytes:
        frames = []
        for i, col in enumerate([(220, 40, 40), (40, 180, 60), (40, 80, 220)]):
            im = Image.new("RGB", (50, 50), (250, 250, 250))
            d = ImageDraw.Draw(im)
            d.ellipse([5 + i * 8, 10, 25 + i * 8, 30], fill=col)
            d.rectangle([0, 45, 50, 50], fill=col)
            frames.append(im.convert("P", palette=Image.Palette.ADAPTIVE, colors=16))
        return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=[100, 200, 300], loop=0, disposal=1)

    def _animated_png(self) -> bytes:
        frames = []
        for i in range(3):
            im = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
            d = ImageDraw.Draw(im)
            d.rectangle([10 + i * 20, 10, 50 + i * 20, 50], fill=(200, 50 + i * 60, 40, 255))
            d.ellipse([20, 55 + i * 5, 80, 95], fill=(30, 90, 200, 160))
            frames.append(im)
        return _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=[100, 150, 200], loop=0)

    def _animated2_png(self) -> bytes:
        frames = []
        for i in range(2):
            im = Image.new("RGB", (1105, 100), (240, 240, 240))
            d = ImageDraw.Draw(im)
            for x in range(0, 1105, 85):
                d.rectangle([x + i * 40, 20, x + i * 40 + 40, 80], fill=(30 + (x // 85) * 15, 60, 150))
            frames.append(im)
        return _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=[200, 200], loop=0)

    def _animated_webp(self) -> bytes:
        base = self.photo400()
        frames = []
        for i in range(3):
            im = base.copy()
            ImageDraw.Draw(im).ellipse([40 + i * 110, 200, 120 + i * 110, 280], fill=(230, 40 + i * 80, 40))
            frames.append(im)
        return _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=[100, 200, 300],
                     loop=0, quality=75, method=4)

    def _exif_rotated(self) -> bytes:
        im = _photo(300, 200, seed=300)
        ImageDraw.Draw(im).rectangle([0, 0, 39, 39], fill=(255, 0, 0))
        exif = Image.Exif()
        exif[0x0112] = 6
        return _save(im, "JPEG", quality=92, exif=exif.tobytes())

    def _cmyk(self) -> bytes:
        icc = cmyk_icc_profile()
        srgb = ImageCms.createProfile("sRGB")
        cmyk = ImageCms.profileToProfile(self.photo400(), ImageCms.ImageCmsProfile(srgb),
                                         ImageCms.ImageCmsProfile(io.BytesIO(icc)), outputMode="CMYK")
        assert cmyk is not None
        return _save(cmyk, "JPEG", quality=90, icc_profile=icc)

    def _gray16(self) -> bytes:
        w, h = 200, 150
        vals = array("H", ((x * 65535 // (w - 1) + y * 97) & 0xFFFF for y in range(h) for x in range(w)))
        im = Image.frombytes("I;16", (w, h), vals.tobytes())
        return _save(im, "PNG")

    def _gray_alpha(self) -> bytes:
        l_ = _hgrad(200, 200)
        a = Image.new("L", (200, 200), 255)
        ImageDraw.Draw(a).rectangle([0, 0, 49, 199], fill=0)
        ImageDraw.Draw(a).ellipse([100, 100, 190, 190], fill=128)
        return _save(Image.merge("LA", (l_, a)), "PNG")

    def _palette(self) -> bytes:
        im = Image.new("P", (200, 200), 0)
        pal = [0, 0, 0, 255, 0, 0] + [v for i in range(2, 256) for v in (i, 255 - i, (i * 7) % 256)]
        im.putpalette(pal)
        d = ImageDraw.Draw(im)
        d.rectangle([20, 20, 180, 180], fill=1)
        for i in range(8):
            d.ellipse([30 + i * 15, 40 + i * 10, 90 + i * 15, 100 + i * 10], fill=2 + i * 30)
        trns = bytes([0, 128])  # tRNS: index 0 transparent, index 1 half; the rest opaque
        return _save(im, "PNG", transparency=trns)

    def _alpha(self) -> bytes:
        im = _graphic(200, 200, seed=21).convert("RGBA")
        a = Image.new("L", (200, 200), 255)
        ImageDraw.Draw(a).rectangle([0, 0, 99, 99], fill=0)
        a.paste(_hgrad(200, 50), (0, 150))
        im.putalpha(a)
        return _save(im, "PNG")

    def _multipage(self) -> bytes:
        pages = []
        for col in [(220, 30, 30), (30, 200, 60), (30, 60, 220)]:
            im = Image.new("RGB", (200, 150), col)
            ImageDraw.Draw(im).rectangle([50, 40, 150, 110], fill=(255, 255, 255))
            pages.append(im)
        return _save(pages[0], "TIFF", save_all=True, append_images=pages[1:], compression="tiff_lzw")

    def _tall(self) -> bytes:
        im = Image.new("RGB", (50, 2000), (255, 255, 255))
        d = ImageDraw.Draw(im)
        for y in range(0, 2000, 100):
            d.rectangle([0, y, 49, y + 49], fill=((y * 7) % 256, (y // 8) % 256, 200))
        return _save(im, "PNG")

    # malformed fixtures --------------------------------------------------------
    def bad(self) -> dict[str, Callable[[], bytes]]:
        return {
            "bad/zero.png": lambda: b"",
            "bad/truncated.jpg": lambda: self.test_jpg()[: len(self.test_jpg()) * 4 // 10],
            "bad/truncated.png": lambda: self.test_png()[: len(self.test_png()) * 4 // 10],
            "bad/corrupt.jpg": self._corrupt_jpg,
            "bad/wrong-magic.png": self.test_jpg,
            "bad/magic-only.png": lambda: PNG_SIG,
            "bad/polyglot.gif": self._polyglot,
            "bad/html.png": lambda: (b"<!DOCTYPE html>\n<html><head><title>not a png</title></head>"
                                     b"<body><h1>Hello</h1><script>alert(document.domain)</script></body></html>\n"),
            "bad/bomb.png": self._bomb_png,
            "bad/bomb-gif.gif": lambda: (b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
                                         + b"\x2c" + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0)
                                         + b"\x02\x02\x44\x01\x00\x3b"),
            "bad/huge-icc.jpg": self._huge_icc,
            "bad/many-exif.jpg": self._many_exif,
            "bad/svg-script.svg": lambda: (
                b'<svg xmlns="http://www.w3.org/2000/svg" width="200" height="200" onload="alert(1)">\n'
                b'  <script type="text/javascript">alert(document.cookie);fetch("http://127.0.0.1:1/steal")</script>\n'
                b'  <rect width="200" height="200" fill="red"/>\n</svg>\n'),
            "bad/svg-xxe.svg": lambda: (
                b'<?xml version="1.0" encoding="UTF-8"?>\n'
                b'<!DOCTYPE svg [\n  <!ENTITY xxe SYSTEM "file:///etc/passwd">\n]>\n'
                b'<svg xmlns="http://www.w3.org/2000/svg" width="200" height="200">\n'
                b'  <text x="10" y="20">&xxe;</text>\n</svg>\n'),
            "bad/svg-external-href.svg": lambda: (
                b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="200" height="200">\n'
                b'  <image href="http://127.0.0.1:1/x.png" x="0" y="0" width="100" height="100"/>\n'
                b'  <image xlink:href="http://127.0.0.1:1/y.png" x="100" y="100" width="100" height="100"/>\n'
                b'</svg>\n'),
            "bad/svg-billion-laughs.svg": self._billion_laughs,
            "bad/svg-huge.svg": lambda: (
                b"<svg xmlns='http://www.w3.org/2000/svg' width='100000' height='100000' viewBox='0 0 10 10'>"
                b"<rect width='10' height='10' fill='blue'/></svg>\n"),
            "bad/leading-space.svg": lambda: (
                b'  \n\t <svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
                b'<circle cx="50" cy="50" r="40" fill="green"/></svg>\n'),
            "bad/many-frames.gif": _many_frames_gif,
            "bad/xml-not-svg.xml": lambda: b'<?xml version="1.0" encoding="UTF-8"?>\n<note><to>you</to><body>hi</body></note>\n',
        }

    def _corrupt_jpg(self) -> bytes:
        data = self.test_jpg()
        start = _jpeg_scan_start(data)
        body = bytearray(data[start:-2])
        random.Random(1234).shuffle(body)
        return data[:start] + bytes(body) + b"\xff\xd9"

    def _polyglot(self) -> bytes:
        js = b"*/=1;alert(document.domain)//<script>alert(1)</script>"
        comment = b"\x21\xfe" + bytes([len(js)]) + js + b"\x00"
        return _tiny_gif(comment) + (b"\n<html><body><script>alert('GIFAR: '+document.domain)</script></body></html>\n"
                                     b"PK\x05\x06" + b"\0" * 18)

    def _bomb_png(self) -> bytes:
        w = h = 40000
        co = zlib.compressobj(9)
        row = b"\0" * (w + 1)
        idat = b"".join(co.compress(row) for _ in range(100)) + co.flush(zlib.Z_FINISH)
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
        return PNG_SIG + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")

    def _huge_icc(self) -> bytes:
        rng = random.Random(4242)
        size = 1 << 20
        header = (struct.pack(">I", size) + b"junk" + struct.pack(">I", 0x04300000) + b"mntr" + b"RGB " + b"XYZ "
                  + b"\0" * 12 + b"acsp" + b"\0" * 92)
        junk = header + struct.pack(">I", 100000) + rng.randbytes(size - len(header) - 4)
        return _save(Image.open(io.BytesIO(self.small_jpg())), "JPEG", quality=80, icc_profile=junk)

    def _many_exif(self) -> bytes:
        rng = random.Random(777)
        entries = [(0x0112, 3, 1, struct.pack("<H", 1))]
        entries += [(0xC000 + i, 3, 1, struct.pack("<H", i & 0xFFFF)) for i in range(4999)]
        big = _jpeg_segment(0xE1, b"Exif\0\0" + _tiff_ifd(entries))
        segs = [big]
        for i in range(300):
            if i % 2 == 0:
                tiff = _tiff_ifd([(0x0112, 3, 1, struct.pack("<H", 8)), (0x010E, 2, 4, b"abc\0")])
                segs.append(_jpeg_segment(0xE1, b"Exif\0\0" + tiff + rng.randbytes(1000)))
            else:
                xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                       + b"<rdf:Description>" + b"x" * 1000 + b"</rdf:Description></rdf:RDF></x:xmpmeta>")
                segs.append(_jpeg_segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + xmp))
        return _jpeg_insert_after_app0(self.small_jpg(), b"".join(segs))

    def _billion_laughs(self) -> bytes:
        lines = [b'<?xml version="1.0"?>', b"<!DOCTYPE svg [", b'  <!ENTITY lol0 "lol">']
        for i in range(1, 10):
            lines.append(b'  <!ENTITY lol%d "%s">' % (i, b"".join(b"&lol%d;" % (i - 1) for _ in range(10))))
        lines.append(b"]>")
        lines.append(b'<svg xmlns="http://www.w3.org/2000/svg" width="200" height="200"><text x="0" y="20">&lol9;</text></svg>')
        return b"\n".join(lines) + b"\n"


def build_corpus(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Write every fixture under *root* (creating subdirs) and return name -> path.

    Deterministic (fixed seeds, single-threaded encoders) and idempotent: files
    are simply rewritten with the same bytes."""
    root = pathlib.Path(root)
    b = _Build()
    builders = {**b.good(), **b.bad()}
    assert set(builders) == set(GOOD) | set(MALFORMED_INFO), set(builders) ^ (set(GOOD) | set(MALFORMED_INFO))
    out: dict[str, pathlib.Path] = {}
    for name, fn in builders.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fn())
        out[name] = path
    return out


if __name__ == "__main__":  # pragma: no cover - manual use: python -m tests.imagecorpus DIR
    import sys
    import time

    t0 = time.perf_counter()
    res = build_corpus(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "corpus"))
    total = sum(p.stat().st_size for p in res.values())
    print(f"{len(res)} files, {total / 1e6:.2f} MB, {time.perf_counter() - t0:.2f} s")
