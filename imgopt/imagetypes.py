"""What the server knows of images without libvips: the types by magic bytes, what to do with an
original (reject, pass through, or the output type), the threads libvips may use, and what a
transform returns. imgopt/transform.py does the libvips work in a worker; the server process,
which only hands jobs to worker processes, never loads libvips (it would cost every server
its resident memory).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from .errors import NOT_AN_IMAGE, TYPE_NOT_ALLOWED, ImageError


def libvips_threads(workers: int, cpus: int | None = None) -> int:
    """Threads per libvips pipeline: the cores shared out among the workers (at least 1).

    With as many workers as cores (the default), each image runs on one libvips thread, as
    Next.js sets sharp's concurrency to cores/2 on a small machine. Measured on the cold job mix
    (benchmarks), 2 workers on 2 cores: 0.93x the CPU and lower peak RSS than libvips's
    default of one thread per core in every pipeline. libaom keeps its own threads for AVIF.
    """
    return max(1, (cpus or os.cpu_count() or 1) // max(1, workers))



_SAMPLE_BYTES = {"uchar": 1, "char": 1, "ushort": 2, "short": 2, "uint": 4, "int": 4, "float": 4}


def pixel_bytes(width: int, height: int, bands: int, fmt: str) -> int:
    """Bytes of an uncompressed image with samples of libvips format ``fmt``."""
    return width * height * bands * _SAMPLE_BYTES.get(fmt, 8)


# -- detection -------------------------------------------------------------------------------

JPEG, PNG, GIF, WEBP, AVIF = "image/jpeg", "image/png", "image/gif", "image/webp", "image/avif"
SVG, ICO, ICNS, TIFF, BMP = "image/svg+xml", "image/x-icon", "image/x-icns", "image/tiff", "image/bmp"
JXL, HEIC, JP2, PDF = "image/jxl", "image/heic", "image/jp2", "application/pdf"

# Types passed through unchanged (Next.js: SVG when allowed, ICO, ICNS, BMP, JXL, HEIC).
BYPASS = frozenset({SVG, ICO, ICNS, BMP, JXL, HEIC})

EXTENSIONS = {
    JPEG: "jpeg", PNG: "png", GIF: "gif", WEBP: "webp", AVIF: "avif", SVG: "svg", ICO: "ico",
    ICNS: "icns", TIFF: "tiff", BMP: "bmp", JXL: "jxl", HEIC: "heic", JP2: "jp2",
}


def _has(buf: bytes, sig: bytes, offset: int = 0) -> bool:
    return buf[offset : offset + len(sig)] == sig


def detect_type(buf: bytes) -> str | None:
    """The type from magic bytes (spec §3.2). The upstream Content-Type is never consulted."""
    if not buf:
        return None
    head = buf[:1024]
    if _has(head, b"\xff\xd8\xff"):
        return JPEG
    if _has(head, b"\x89PNG\r\n\x1a\n"):
        return PNG
    if _has(head, b"GIF8"):
        return GIF
    if _has(head, b"RIFF") and _has(head, b"WEBP", 8):
        return WEBP
    stripped = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    if stripped.startswith(b"<?xml") or stripped.startswith(b"<svg"):
        return SVG
    if _has(head, b"ftypavif", 4) or _has(head, b"ftypavis", 4):
        return AVIF
    if _has(head, b"\x00\x00\x01\x00"):
        return ICO
    if _has(head, b"icns"):
        return ICNS
    if _has(head, b"II*\x00") or _has(head, b"MM\x00*"):
        return TIFF
    if _has(head, b"BM"):
        return BMP
    if _has(head, b"\xff\x0a") or _has(head, b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return JXL
    if _has(head, b"ftypheic", 4):
        return HEIC
    if _has(head, b"%PDF-"):
        return PDF
    if _has(head, b"\x00\x00\x00\x0cjP  \r\n\x87\n"):
        return JP2
    if stripped[:1] == b"<" and b"<svg" in stripped[:1024]:
        return SVG  # an SVG after a comment or doctype
    return None


def _png_is_animated(buf: bytes) -> bool:
    pos = 8
    while pos + 8 <= len(buf):
        length, ctype = struct.unpack(">I4s", buf[pos : pos + 8])
        if ctype == b"acTL":
            return True
        if ctype == b"IDAT":
            return False
        pos += 12 + length
    return False


def _webp_is_animated(buf: bytes) -> bool:
    return _has(buf, b"VP8X", 12) and len(buf) > 20 and bool(buf[20] & 0x02)


def _gif_is_animated(buf: bytes) -> bool:
    """True when the GIF has more than one image descriptor (walks the block structure)."""
    if len(buf) < 13:
        return False
    pos = 13
    if buf[10] & 0x80:
        pos += 3 * (2 << (buf[10] & 7))
    frames = 0
    while pos < len(buf):
        block = buf[pos]
        if block == 0x2C:  # image descriptor
            frames += 1
            if frames > 1:
                return True
            if pos + 10 > len(buf):
                return False
            flags = buf[pos + 9]
            pos += 10
            if flags & 0x80:
                pos += 3 * (2 << (flags & 7))
            pos += 1  # LZW minimum code size
        elif block == 0x21:  # extension
            pos += 2
        elif block == 0x3B:
            return False
        else:
            return False
        while pos < len(buf):  # data sub-blocks
            size = buf[pos]
            pos += 1 + size
            if size == 0:
                break
    return False


def is_animated(buf: bytes, mime: str) -> bool:
    if mime == PNG:
        return _png_is_animated(buf)
    if mime == WEBP:
        return _webp_is_animated(buf)
    if mime == GIF:
        return _gif_is_animated(buf)
    return False


# -- decisions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to do with an original: pass it through, or transform it to `output`."""

    source: str  # detected type
    output: str  # type of the response body
    passthrough: bool


def plan(buf: bytes, negotiated: str, allow_svg: bool) -> Plan:
    """Spec §3.3 steps 1–5: reject, pass through, or pick the output type."""
    source = detect_type(buf)
    if source is None or not source.startswith("image/") or "," in source:
        raise ImageError(400, NOT_AN_IMAGE)
    if source.startswith("image/svg") and not allow_svg:
        raise ImageError(400, TYPE_NOT_ALLOWED)
    if source in BYPASS or is_animated(buf, source):
        return Plan(source, source, True)
    if negotiated:
        output = negotiated
    elif source in (WEBP, AVIF):
        output = JPEG  # an old browser that did not ask for them gets JPEG
    else:
        output = source
    return Plan(source, output, False)


class TransformTimeout(Exception):
    pass


@dataclass(frozen=True)
class Result:
    body: bytes
    mime: str
    kind: str  # 'optimized' | 'passthrough' | 'fallback'
