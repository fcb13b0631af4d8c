"""Placeholders: ``GET /_next/image/placeholder?url=…`` answers JSON for a blur-up placeholder.

    {"thumbhash": "<base64>", "blurDataURL": "data:image/webp;base64,…",
     "width": 1920, "height": 1280, "dominantColor": "#6f86a5"}

* ``thumbhash``: the ThumbHash (https://evanw.github.io/thumbhash/) of the image scaled to fit
  100x100, standard base64; computed by the C kernel in native/ (or its Python twin).
* ``blurDataURL``: the image scaled to fit 16x16 and lightly blurred, as a WebP data URL
  (a few hundred bytes), ready for next/image's ``placeholder="blur"``.
* ``width``/``height``: the intrinsic size after EXIF rotation (the first frame of an animation).
* ``dominantColor``: the mean colour of the most common 4-bit-per-channel colour bin, weighted
  by alpha.

The url is validated, fetched and cached exactly as for images (the cache key has width 0 and
type application/json). Types libvips does not read here (SVG, ICO, ICNS, BMP, ...) get 400.
"""

from __future__ import annotations

import base64
import json
import time

import pyvips

from . import native, vipslog
from .errors import NOT_AN_IMAGE, TYPE_NOT_ALLOWED, ImageError
from .transform import SVG, VIPS_MAX_COORD, Result, TransformTimeout, detect_type

THUMB_SIZE = 100  # ThumbHash's limit
MIN_SIDE = 7  # ThumbHash's most DCT terms per axis
BLUR_SIZE = 16
BLUR_SIGMA = 0.6
BLUR_QUALITY = 50
JSON_TYPE = "application/json"


def intrinsic_size(buf: bytes) -> tuple[int, int, pyvips.Image]:
    try:
        head = pyvips.Image.new_from_buffer(buf, "", access="sequential")
    except pyvips.Error:
        raise ImageError(400, NOT_AN_IMAGE) from None
    w, h = head.width, head.height
    if "page-height" in head.get_fields():
        h = head.get("page-height")
    orientation = head.get("orientation") if "orientation" in head.get_fields() else 1
    return (h, w, head) if orientation in (5, 6, 7, 8) else (w, h, head)


def rgba_thumbnail(buf: bytes) -> tuple[pyvips.Image, object]:
    """The image scaled to fit 100x100 (EXIF-rotated, sRGB, RGBA), rendered once.

    Small images are scaled *up* to the box, and a side under 7 pixels is stretched to 7:
    ThumbHash's DCT has up to 7 terms per axis and aliases on fewer pixels than that (a 1x1
    image would decode as a pattern, not a flat colour).
    """
    thumb = pyvips.Image.thumbnail_buffer(buf, THUMB_SIZE, height=THUMB_SIZE, size="both", intent="perceptual")
    if thumb.width < MIN_SIDE or thumb.height < MIN_SIDE:
        thumb = thumb.resize(max(1.0, MIN_SIDE / thumb.width), vscale=max(1.0, MIN_SIDE / thumb.height),
                             kernel="nearest")
    if thumb.interpretation != "srgb" or thumb.format != "uchar":
        thumb = thumb.colourspace("srgb")
        if thumb.format != "uchar":
            thumb = thumb.cast("uchar")
    if thumb.bands == 3:
        thumb = thumb.bandjoin(255)
    pixels = thumb.write_to_memory()
    image = pyvips.Image.new_from_memory(pixels, thumb.width, thumb.height, 4, "uchar")
    return image.copy(interpretation="srgb"), pixels


def dominant_color(rgba: bytes) -> str:
    """Mean colour of the fullest 4-bit-per-channel bin, weighted by alpha ("#rrggbb")."""
    bins: dict[int, list[int]] = {}
    for r, g, b, a in zip(rgba[0::4], rgba[1::4], rgba[2::4], rgba[3::4]):
        acc = bins.get((r >> 4) << 8 | (g >> 4) << 4 | (b >> 4))
        if acc is None:
            acc = bins[(r >> 4) << 8 | (g >> 4) << 4 | (b >> 4)] = [0, 0, 0, 0, 0, 0, 0, 0]
        acc[0] += a
        acc[1] += r * a
        acc[2] += g * a
        acc[3] += b * a
        acc[4] += 1  # unweighted, for a fully transparent image
        acc[5] += r
        acc[6] += g
        acc[7] += b
    if not bins:
        return "#000000"
    best = max(bins.values(), key=lambda v: (v[0], v[4]))
    if best[0]:
        r, g, b = (round(best[i] / best[0]) for i in (1, 2, 3))
    else:
        r, g, b = (round(best[i] / best[4]) for i in (5, 6, 7))
    return f"#{r:02x}{g:02x}{b:02x}"


def blur_data_url(thumb: pyvips.Image) -> str:
    tiny = thumb.thumbnail_image(BLUR_SIZE, height=BLUR_SIZE, size="down")
    if BLUR_SIGMA:
        tiny = tiny.gaussblur(BLUR_SIGMA, min_ampl=0.1, precision="float").cast("uchar")
    body = tiny.webpsave_buffer(Q=BLUR_QUALITY, effort=6, keep="none")
    return "data:image/webp;base64," + base64.b64encode(body).decode("ascii")


def placeholder(buf: bytes, max_input_pixels: int = VIPS_MAX_COORD**2) -> dict[str, object]:
    width, height, head = intrinsic_size(buf)
    if head.width * head.height > max_input_pixels:
        raise ImageError(
            400,
            f"The requested image is too large: {head.width}x{head.height} is "
            f"{head.width * head.height} pixels, over the limit of {max_input_pixels}",
        )
    try:
        thumb, pixels = rgba_thumbnail(buf)
        blur = blur_data_url(thumb)
    except pyvips.Error:
        raise ImageError(400, NOT_AN_IMAGE) from None
    rgba = bytes(pixels)  # type: ignore[call-overload]  # libvips memory: a buffer
    return {
        "thumbhash": base64.b64encode(native.thumbhash_encode(pixels, thumb.width, thumb.height)).decode("ascii"),  # type: ignore[arg-type]
        "blurDataURL": blur,
        "width": width,
        "height": height,
        "dominantColor": dominant_color(rgba),
    }


def process(buf: bytes, _negotiated: str, allow_svg: bool, _width: int, _quality: int,
            max_input_pixels: int, deadline: float, *_extras: object) -> Result:
    """The placeholder step for one original (runs on a worker process or thread), called as
    ``transform.process`` is."""
    with vipslog.job():
        source = detect_type(buf)
        if source is None or not source.startswith("image/"):
            raise ImageError(400, NOT_AN_IMAGE)
        if source == SVG:
            if not allow_svg:
                raise ImageError(400, TYPE_NOT_ALLOWED)
            raise ImageError(400, "No placeholder for SVG images: imgopt does not rasterize SVG")
        data = placeholder(buf, max_input_pixels)
        if time.monotonic() > deadline:
            raise TransformTimeout()
        return Result(json.dumps(data, separators=(",", ":")).encode(), JSON_TYPE, "optimized")
