"""Animated GIF, WebP and APNG: resized and re-encoded as animated WebP (an imgopt extension).

Next.js passes animations through untouched. With ``animated`` in the config, an animation is
resized to the requested width and re-encoded as animated WebP when the client accepts WebP,
keeping each frame's delay and the loop count. libvips (8.18) cannot write animated AVIF (its
heifsave stores the frames as separate still images), so a client that negotiated AVIF gets
animated WebP when it also accepts WebP (the cache key tells the two apart), else the original.

The loop count keeps the number of plays: GIF's NETSCAPE count is repeats after the first
play while WebP's is plays, so libvips turns a GIF that repeats 3 times into WebP loop 4.

Limits, checked from the headers before any frame is decoded: at most ``maxFrames`` frames and
``maxPixels`` frames x frame pixels; over them, or when anything fails to decode, the original
passes through as in Next.js. The original is also served when the WebP is not smaller (tiny
flat-colour animations can grow when resampling adds anti-aliased colours). Frames from GIF and
APNG are encoded with libwebp's ``mixed`` mode (lossless or lossy, whichever is smaller per
frame), frames from WebP lossy.

GIF and WebP are decoded by libvips (``n=-1`` loads every frame as one tall image with a
``page-height``; ``thumbnail`` resizes it page by page). libvips' PNG loader does not decode
APNG frames, so APNG is decoded with Pillow when it is installed (frames composited to full
RGBA canvases, one at a time, each resized at once so only one full-size frame is in memory);
without Pillow, APNG passes through.
"""

from __future__ import annotations

import io
import struct
import time

import pyvips

GIF, PNG, WEBP = "image/gif", "image/png", "image/webp"
VIPS_MAX_COORD = 10_000_000
WEBP_EFFORT = 4


class Skip(Exception):
    """Not re-encoded (over a limit, or not decodable): the original passes through."""


def _apng_header(buf: bytes) -> tuple[int, int, int]:
    """(frames, width, height) from IHDR and acTL, without decoding anything."""
    if len(buf) < 33 or buf[12:16] != b"IHDR":
        raise Skip("no IHDR")
    width, height = struct.unpack(">II", buf[16:24])
    pos = 8
    while pos + 8 <= len(buf):
        length, ctype = struct.unpack(">I4s", buf[pos : pos + 8])
        if ctype == b"acTL" and length >= 8 and pos + 16 <= len(buf):
            (frames,) = struct.unpack(">I", buf[pos + 8 : pos + 12])
            return frames, width, height
        if ctype == b"IDAT":
            break
        pos += 12 + length
    raise Skip("no acTL")


def probe(buf: bytes, mime: str) -> tuple[int, int, int]:
    """(frames, frame width, frame height) of an animation, from its headers."""
    if mime == PNG:
        return _apng_header(buf)
    try:
        head = pyvips.Image.new_from_buffer(buf, "", n=-1, access="sequential")
    except pyvips.Error as e:
        raise Skip(str(e)) from None
    fields = head.get_fields()
    frames = head.get("n-pages") if "n-pages" in fields else 1
    page_height = head.get("page-height") if "page-height" in fields else head.height
    return frames, head.width, page_height


def check_limits(frames: int, width: int, height: int, max_frames: int, max_pixels: int,
                 max_input_pixels: int) -> None:
    if frames < 2:
        raise Skip("not animated")
    if frames > max_frames:
        raise Skip(f"{frames} frames, over the limit of {max_frames}")
    if width * height > max_input_pixels:
        raise Skip(f"a {width}x{height} frame is over the input pixel limit")
    if frames * width * height > max_pixels:
        raise Skip(f"{frames} x {width}x{height} pixels, over the limit of {max_pixels}")


def _to_srgb8(img: pyvips.Image) -> pyvips.Image:
    if img.interpretation not in ("srgb",) or img.format != "uchar":
        img = img.colourspace("srgb")
        if img.format != "uchar":
            img = img.cast("uchar")
    return img


def _load_vips(buf: bytes, width: int) -> pyvips.Image:
    img = pyvips.Image.thumbnail_buffer(
        buf, width, height=VIPS_MAX_COORD, size="down", option_string="n=-1,access=sequential"
    )
    return _to_srgb8(img)


def _load_apng(buf: bytes, width: int, frames: int) -> pyvips.Image:
    try:
        from PIL import Image
    except ImportError:
        raise Skip("APNG needs Pillow") from None
    try:
        im = Image.open(io.BytesIO(buf))
        if getattr(im, "n_frames", 1) < 2:
            raise Skip("not animated")
        loop = int(im.info.get("loop", 0))
        parts, delays = [], []
        fw = fh = 0
        for i in range(min(getattr(im, "n_frames", 1), frames)):
            im.seek(i)
            rgba = im.convert("RGBA")
            delays.append(int(round(float(im.info.get("duration", 0) or 0))))
            frame = pyvips.Image.new_from_memory(rgba.tobytes(), rgba.width, rgba.height, 4, "uchar")
            small = frame.copy(interpretation="srgb").thumbnail_image(width, height=VIPS_MAX_COORD, size="down")
            fw, fh = small.width, small.height
            parts.append(small.write_to_memory())
    except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError) as e:
        raise Skip(f"APNG decode failed: {e}") from None
    strip = pyvips.Image.new_from_memory(b"".join(parts), fw, fh * len(parts), 4, "uchar")
    strip = strip.copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", fh)
    strip.set_type(pyvips.GValue.gint_type, "n-pages", len(parts))
    strip.set_type(pyvips.GValue.array_int_type, "delay", delays)
    strip.set_type(pyvips.GValue.gint_type, "loop", loop)
    return strip


def reencode(buf: bytes, mime: str, width: int, quality: int, max_frames: int, max_pixels: int,
             max_input_pixels: int, deadline: float, watch=None) -> bytes | None:
    """The animation as resized animated WebP, or None to pass the original through.

    Raises TimeoutError when the deadline passes while encoding.
    """
    try:
        frames, fw, fh = probe(buf, mime)
        check_limits(frames, fw, fh, max_frames, max_pixels, max_input_pixels)
        img = _load_apng(buf, width, frames) if mime == PNG else _load_vips(buf, width)
        if watch is not None:
            watch(img, deadline)
        # GIF and APNG are mostly graphics: let libwebp pick lossless or lossy per frame.
        out = img.webpsave_buffer(Q=quality, effort=WEBP_EFFORT, keep="none", mixed=mime != WEBP)
    except Skip:
        return None
    except pyvips.Error:
        if time.monotonic() > deadline:
            raise TimeoutError() from None
        return None
    if time.monotonic() > deadline:
        raise TimeoutError()
    return out if len(out) < len(buf) else None
