"""Transforming: detect the type from the bytes, then resize and encode with libvips.

``process`` is the whole step and runs in a worker process (imgopt/workers.py) or thread. It is a short list of small steps
in the style of imgproxy's pipeline: decide (reject / pass through / transform), check the
pixel count from the header, load with shrink-on-load, normalise colour, encode.

Encoder settings (start from Next.js's, so output is comparable; see benchmarks/FRONTIER.md for tuning):
* AVIF: quality ``round(q*50/80)`` and effort 3, exactly Next's mapping, with 4:2:0 chroma and
  libaom tuned for SSIM (see ``ENCODERS``). Effort 4 (libvips's default) costs ~3.5x the CPU.
* WebP: quality q, effort 4, libvips defaults as in sharp.
* JPEG: mozjpeg-style (trellis quantisation, overshoot deringing, optimised progressive scans,
  quant table 3), which is what sharp's ``mozjpeg: true`` sets; the pyvips-binary wheel ships
  mozjpeg, so these really apply (~30% smaller than plain libjpeg-turbo at the same Q).
* PNG: palette quantisation at quality q (as sharp's ``png({quality})``), lighter effort and dithering.
* Metadata is stripped (``keep='none'``) after converting to sRGB, so no ICC/EXIF leaks out.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyvips

from . import vipslog  # before libvips starts: see vipslog
from .errors import ImageError
from .extensions import NONE as NO_EXTRAS
from .extensions import AutoQuality, Extras

# What needs no libvips lives in imagetypes (the server's side); these are the names used here
# and, through imgopt.transform, by the other image steps and the tests.
from .imagetypes import (  # noqa: F401
    AVIF,
    GIF,
    JPEG,
    PNG,
    SVG,
    TIFF,
    WEBP,
    Result,
    TransformTimeout,
    detect_type,
    is_animated,
    libvips_threads,
    pixel_bytes,
    plan,
)
from .lru import BytesLRU

VIPS_MAX_COORD = 10_000_000

# Only these loaders may touch untrusted bytes (the same set Next.js allows sharp to use).
_ALLOWED_LOADERS = (
    "VipsForeignLoadJpeg", "VipsForeignLoadPng", "VipsForeignLoadWebp", "VipsForeignLoadGif",
    "VipsForeignLoadNsgif", "VipsForeignLoadTiff", "VipsForeignLoadHeif",
)


def set_libvips_threads(workers: int) -> None:
    """libvips threads per pipeline for this worker count, unless the operator set VIPS_CONCURRENCY."""
    if not os.environ.get("VIPS_CONCURRENCY"):
        pyvips.concurrency_set(libvips_threads(workers))


def configure_libvips(workers: int | None = None) -> None:
    """Process-wide libvips settings: no operation cache, only the loaders we trust, and (given
    the worker count) the threads per pipeline."""
    if workers is not None:
        set_libvips_threads(workers)
    vipslog.install()
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.operation_block_set("VipsForeignLoad", True)
    for name in _ALLOWED_LOADERS:
        pyvips.operation_block_set(name, False)


# -- the libvips pipeline --------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    buf: bytes
    output: str
    width: int
    quality: int
    max_input_pixels: int
    deadline: float  # time.monotonic() after which the work is killed
    auto: AutoQuality | None = None  # search the quality for an SSIM target (autoquality.py)


def _check_pixels(job: Job) -> None:
    """Reject an image with too many pixels from its header, before any decoding."""
    try:
        header = pyvips.Image.new_from_buffer(job.buf, "", access="sequential")
    except pyvips.Error as e:
        raise _DecodeFailed(str(e)) from None
    pixels = header.width * header.height
    if pixels > job.max_input_pixels:
        raise ImageError(
            400,
            f"The requested image is too large: {header.width}x{header.height} is "
            f"{pixels} pixels, over the limit of {job.max_input_pixels}",
        )


class _DecodeFailed(Exception):
    """libvips could not read the image; the caller falls back to the original bytes."""


# fail_on=truncated: an original that ends early (a JPEG or PNG cut short) fails to decode
# instead of being re-encoded with its missing part baked in as grey, and is then served as
# its own bytes with minimumCacheTTL, as Next.js does (spec 3.3 step 7). sharp's default is
# stricter (`failOn: 'warning'`): Next also serves the original of an image whose decoder only
# warned (say a camera JPEG with stray bytes before a marker) that browsers show fine, often a
# large file; imgopt still optimizes those.
LOAD_OPTIONS = "access=sequential,fail_on=truncated"


def _load(job: Job) -> pyvips.Image:
    # thumbnail_buffer: shrink-on-load (JPEG DCT scaling, WebP scale), EXIF auto-rotation,
    # never enlarging (size="down"), and ICC-aware conversion to sRGB (CMYK uses the
    # embedded profile, or libvips's built-in CMYK profile when there is none).
    return pyvips.Image.thumbnail_buffer(
        job.buf, job.width, height=VIPS_MAX_COORD, size="down", intent="perceptual",
        option_string=LOAD_OPTIONS,
    )


def _to_srgb8(img: pyvips.Image) -> pyvips.Image:
    if img.interpretation in ("b-w", "grey16"):
        return img.colourspace("b-w") if img.format != "uchar" or img.interpretation != "b-w" else img
    if img.interpretation != "srgb" or img.format != "uchar":
        return img.colourspace("srgb")
    return img


def _flatten_for_jpeg(img: pyvips.Image) -> pyvips.Image:
    return img.flatten(background=[255] * (img.bands - 1)) if img.hasalpha() else img


def _avif_quality(q: int) -> int:
    return max(int(q * 50 / 80 + 0.5), 1)  # JavaScript Math.round, as Next does


def _matched_quality(q: int) -> int:
    """WebP/JPEG quality one below the request (q 2..99; 1 and 100 unchanged).

    imgopt's resize (libvips thumbnail: at least a 2x Lanczos reduce after shrink-on-load) keeps
    more detail than sharp's fast shrink-on-load, so at Next's quality value the output is
    0.3-1.5 % larger with +0.001 SSIM. One step down gives back those bytes: against Next.js's
    own outputs at q=75 (every corpus image x 640/1080/1920, benchmarks/FRONTIER.md, "imgopt vs
    Next's actual outputs") WebP bytes 1.006 -> 0.992 and JPEG 1.003 -> 0.998 of Next's, mean
    SSIM still above Next's (+0.0002 / +0.0003); at q=50 and q=90 SSIM stays within 0.001 of Next.
    """
    return q - 1 if 1 < q < 100 else q


def _heif_tune_supported(tune: str) -> bool:
    """libvips >= 8.18 has heifsave's ``tune``; an older libvips (or a bad value) is refused."""
    try:
        pyvips.Image.black(16, 16, bands=3).heifsave_buffer(Q=30, effort=0, compression="av1", tune=tune)
        return True
    except pyvips.Error:
        return False


# AVIF encoder tuning (libaom): "ssim" rather than libvips's and sharp's default "iq". Measured
# on the photo corpus x 640/1080/1920 against Next's exact settings (Q=round(q*5/8), effort 3,
# 4:4:4, tune iq), at Next's quantizer, with 4:2:0 (benchmarks/FRONTIER.md, "AVIF tune"):
#   q=75: bytes 0.956, encode CPU 0.65, SSIM-Y +0.0017, SSIM-RGB -0.0040
#   q=60: 0.963, 0.66, +0.0021, -0.0034;  q=50: 0.924, 0.66, -0.0004, -0.0059;
#   q=90: 0.902, 0.67, +0.0004, -0.0052
# ("iq" with 4:2:0, imgopt's previous default: bytes 0.96-0.97, CPU 0.84-0.89, SSIM-Y +0.000,
# SSIM-RGB -0.003 to -0.004). libaom's authors report "iq" as perceptually better on some
# metrics (SSIMULACRA 2, Butteraugli); the quality bar is SSIM, and AVIF is most of the CPU
# of a cold run, so imgopt takes "ssim". IMGOPT_AVIF_TUNE=iq restores the libvips default.
AVIF_TUNE = os.environ.get("IMGOPT_AVIF_TUNE", "ssim")
_AVIF_EXTRA: dict[str, str] = {"tune": AVIF_TUNE} if AVIF_TUNE and _heif_tune_supported(AVIF_TUNE) else {}


ENCODERS: dict[str, Callable[[pyvips.Image, int], bytes]] = {
    # AVIF: Next's quality mapping and effort (effort 2 loses 0.006 SSIM, effort 4 costs 4x
    # CPU), 4:2:0 chroma (Next/sharp: 4:4:4) and tune as above (benchmarks/FRONTIER.md).
    AVIF: lambda img, q: img.heifsave_buffer(Q=_avif_quality(q), effort=3, compression="av1",
                                             subsample_mode="on", keep="none", **_AVIF_EXTRA),
    WEBP: lambda img, q: img.webpsave_buffer(Q=_matched_quality(q), effort=4, keep="none"),
    # JPEG: subsample_mode="on" = sharp's chromaSubsampling '4:2:0' at every quality. libvips's
    # default (auto) switches to 4:4:4 at Q >= 90, which made q=90 outputs 1.44x Next's bytes
    # (benchmarks/FRONTIER.md); below 90 the output is unchanged.
    JPEG: lambda img, q: _flatten_for_jpeg(img).jpegsave_buffer(
        Q=_matched_quality(q), optimize_coding=True, trellis_quant=True, overshoot_deringing=True,
        optimize_scans=True, quant_table=3, interlace=True, subsample_mode="on", keep="none",
    ),
    # PNG: palette at quality q like sharp's png({quality}), with quantiser effort 5 and a quarter
    # of Floyd-Steinberg dithering where sharp uses effort 7 and full dithering. Dithering adds
    # noise that costs bytes and SSIM. Against Next's settings at q=75 (benchmarks/FRONTIER.md,
    # "PNG"; `python benchmarks/png_palette.py --zlib`): ladybird-alpha.png (a real photo)
    # 0.96-0.99x bytes at SSIM-Y +0.000 to +0.004 from 640 to 2560 px, calla.png 0.26-0.36x
    # (+0.03), synthetic graphics 0.55x (+0.043), a smooth gradient 0.40x (+0.057); encode CPU
    # about half of effort 6's on the photos (the palette PNGs were ~15% of a cold run's CPU).
    # On grainy synthetic noise it is 0.98-1.18x Next's bytes image by image (1.01x over a set),
    # at higher SSIM: effort 6 held Next's bytes there a little better (0.99-1.06x) at twice the
    # CPU on real photos. Dither 0.5 was larger with lower SSIM on every set.
    PNG: lambda img, q: img.pngsave_buffer(palette=True, Q=q, effort=5, dither=0.25, compression=6, keep="none"),
    GIF: lambda img, q: img.gifsave_buffer(keep="none"),
    # Security fix: compressed. Uncompressed, a tall flat TIFF of a few hundred KB
    # within the pixel limit (1000x268000) came back as a 268-800 MB buffer per request.
    TIFF: lambda img, q: img.tiffsave_buffer(keep="none", compression="deflate", predictor="horizontal"),
}


def _watch(img: pyvips.Image, deadline: float) -> None:
    """Kill the computation when the deadline passes, so the worker is freed."""
    img.set_progress(True)

    def on_eval(image: pyvips.Image, _progress: object) -> None:
        if time.monotonic() > deadline:
            image.set_kill(True)

    img.signal_connect("eval", on_eval)


# Security fix: the deadline kill (_watch) only acts while libvips computes pixels.
# These encoders first collect the whole image and then make one long library call (libaom,
# libwebp, libimagequant, cgif) that nothing can interrupt, so a tall input within the pixel
# limit (say 1000x60000 to AVIF: ~25 s here) would hold a worker far past the deadline. Before
# encoding, the cost is estimated from the output pixel count at conservative rates (about
# 1.5x what a 2-core test box measures single-threaded). When it cannot finish in the time
# left, nothing is encoded and the original bytes are served instead, which is what Next.js
# does when sharp fails or times out (spec 3.3 step 7); as the deadline starts when a worker
# picks the job up, this is a fixed output-size limit per format (at 7 s: AVIF ~12.7 Mpx,
# palette PNG ~17 Mpx, GIF ~7 Mpx, WebP ~46 Mpx but 16383 px a side), not a matter of load.
# JPEG and TIFF stream (killable), so they have no entry. Measured: AVIF effort 3 ~0.37 us/px,
# WebP ~0.09, palette PNG ~0.25, GIF ~0.68.
ENCODE_SECONDS_PER_PIXEL = {AVIF: 0.55e-6, WEBP: 0.15e-6, PNG: 0.4e-6, GIF: 1.0e-6}


def _check_encode_budget(img: pyvips.Image, job: Job) -> None:
    rate = ENCODE_SECONDS_PER_PIXEL.get(job.output)
    if job.output == WEBP and max(img.width, img.height) > 16383:
        return  # over libwebp's size limit: webpsave refuses before computing a pixel (fallback)
    if rate is not None and img.width * img.height * rate > job.deadline - time.monotonic():
        raise _DecodeFailed(f"a {img.width}x{img.height} {job.output} would not be encoded in time")


class ResizedMemo(BytesLRU[tuple[str, int], pyvips.Image]):
    """Recently resized originals (8-bit sRGB pixels in memory), bounded by bytes, LRU.

    One original at one width is wanted in several formats (AVIF, WebP, the original type): a
    CDN that varies on Accept asks for each. Decoding and resizing is about 30% of a cold
    transform's CPU, so the resized pixels are kept and the next format of the same
    original and width only encodes. Keyed by the caller's id of the exact original bytes (the
    url and the upstream ETag or content hash) and the width; shared by the worker threads
    (worker processes share one too, workerproc.SharedResized, with the pixels in memfds).
    On the cold benchmark mix (`benchmarks/job_mix.py --memo N`, 60 possible reuses): 64 MB
    reused 37 resizes, 128 MB (the default) 59.
    """

    max_share = 4

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.hits = self.misses = 0
        self._lock = threading.Lock()

    def size_of(self, img: pyvips.Image) -> int:
        return pixel_bytes(img.width, img.height, img.bands, img.format)

    def get(self, key: tuple[str, int]) -> pyvips.Image | None:
        with self._lock:
            img = super().get(key)
            if img is None:
                self.misses += 1
            else:
                self.hits += 1
            return img

    def put(self, key: tuple[str, int], img: pyvips.Image) -> None:
        with self._lock:
            super().put(key, img)

    def keep(self, key: tuple[str, int], img: pyvips.Image) -> pyvips.Image:
        """Decode and resize ``img`` now (killable: it carries the job's deadline watch), keep
        the pixels, and return an image over them for this job to encode."""
        shared = img.copy_memory()
        self.put(key, shared)
        return shared.copy()


def _resized(job: Job, memo: ResizedMemo | None, source_id: str | None) -> pyvips.Image:
    """The original decoded and resized to the job's width, from the memo when it has it."""
    key = (source_id, job.width) if memo is not None and memo.max_bytes and source_id else None
    if key is not None:
        shared = memo.get(key)  # type: ignore[union-attr]
        if shared is not None:
            # A new image over the shared pixels: the caller's deadline watch and kill flag go
            # on it, never on the shared one (whose other users have other deadlines).
            return shared.copy()
    img = _to_srgb8(_load(job))
    if key is None or not memo.fits(img):  # type: ignore[union-attr]
        return img  # streamed: decoded, resized and encoded in one pass, as without a memo
    _check_encode_budget(img, job)  # before decoding it all, not after
    _watch(img, job.deadline)
    return memo.keep(key, img)  # type: ignore[union-attr]


def transform(job: Job, memo: ResizedMemo | None = None, source_id: str | None = None) -> bytes:
    """Resize and encode. Raises ImageError (4xx), TransformTimeout or _DecodeFailed."""
    encoder = ENCODERS.get(job.output)
    if encoder is None:
        raise _DecodeFailed(f"no encoder for {job.output}")
    _check_pixels(job)
    try:
        img = _resized(job, memo, source_id)
        _watch(img, job.deadline)
        _check_encode_budget(img, job)
        if job.auto is not None:
            from . import autoquality

            out = autoquality.encode(img, job.output, encoder, job.auto, job.deadline, _watch)
        else:
            out = encoder(img, job.quality)
    except pyvips.Error as e:
        if time.monotonic() > job.deadline:
            raise TransformTimeout() from None
        raise _DecodeFailed(str(e)) from None
    if time.monotonic() > job.deadline:
        raise TransformTimeout()
    return out


def optimize(job: Job, memo: ResizedMemo | None = None, source_id: str | None = None) -> tuple[bytes, str] | None:
    """Transform, or None when libvips cannot (the caller then serves the original, as Next)."""
    try:
        return transform(job, memo, source_id), job.output
    except _DecodeFailed:
        return None


def process(buf: bytes, negotiated: str, allow_svg: bool, width: int, quality: int,
            max_input_pixels: int, deadline: float, extras: Extras = NO_EXTRAS,
            memo: ResizedMemo | None = None, source_id: str | None = None) -> Result:
    """The whole transform step for one original (runs on a worker process or thread).

    `extras` carries imgopt's features beyond Next.js (imgopt/extensions.py): auto quality and
    animated re-encoding (placeholders are placeholder.process). `memo` and `source_id`
    (an id of these exact original bytes) let the formats of one original share its resize.
    libvips's messages about the image are bounded (imgopt/vipslog.py).
    """
    with vipslog.job():
        return _process(buf, negotiated, allow_svg, width, quality, max_input_pixels, deadline, extras, memo, source_id)


def _process(buf: bytes, negotiated: str, allow_svg: bool, width: int, quality: int,
             max_input_pixels: int, deadline: float, extras: Extras,
             memo: ResizedMemo | None, source_id: str | None) -> Result:
    p = plan(buf, negotiated, allow_svg)
    if p.passthrough:
        if extras.animated is not None and extras.animated_mime and is_animated(buf, p.source):
            from . import animated

            q = extras.auto_quality.fallback_quality if extras.auto_quality else quality
            try:
                body = animated.reencode(buf, p.source, width, q, extras.animated.max_frames,
                                         extras.animated.max_pixels, max_input_pixels, deadline, _watch)
            except TimeoutError:
                raise TransformTimeout() from None
            if body is not None:
                return Result(body, extras.animated_mime, "optimized")
        return Result(buf, p.source, "passthrough")
    done = optimize(Job(buf, p.output, width, quality, max_input_pixels, deadline, extras.auto_quality),
                    memo, source_id)
    if done is None:
        return Result(buf, p.source, "fallback")
    return Result(done[0], done[1], "optimized")
