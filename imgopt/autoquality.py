"""Perceptual auto quality: the smallest encoding whose SSIM reaches a target.

A request whose ``q`` is the configured marker (``autoQuality.marker``, 1 by default, which
must also be in ``qualities``) is encoded by a short bisection over quality instead of at a
fixed one. Each step encodes the resized image, decodes the result with libvips and compares
it with the resized image (SSIM, imgopt.native: luma, 8x8 windows on a stride of 4). The
answer is the smallest passing encoding; if none passes within the budget, the one with the
best SSIM. The search is per output format (the cache key holds the negotiated type) and is
cached like any variant.

Pixels and copies: the resized image is rendered once with ``write_to_memory()``, which
returns a cffi buffer over the memory libvips rendered into; ``new_from_memory`` wraps that
same memory as the encoders' input (so the resize runs once, not once per encode), and the C
kernel reads it through the buffer protocol. Each candidate is decoded straight into
libvips-owned memory the same way. No pixel is copied by Python.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyvips

from . import native
from .extensions import AutoQuality

log = logging.getLogger("imgopt")

JPEG, PNG, WEBP, AVIF = "image/jpeg", "image/png", "image/webp", "image/avif"
SEARCHABLE = frozenset({JPEG, PNG, WEBP, AVIF})

#: stop as soon as a candidate passes by less than this (it is close enough to the optimum)
SLACK = 0.002
#: a candidate that passes by this much means an easy image: the next probe is the floor
WIDE = 0.01

Encoder = Callable[[pyvips.Image, int], bytes]


@dataclass(frozen=True)
class Trial:
    quality: int
    body: bytes
    ssim: float


@dataclass(frozen=True)
class Outcome:
    body: bytes
    quality: int
    ssim: float
    trials: tuple[Trial, ...]


class Reference:
    """The resized image, rendered once, as pixels for SSIM and as the encoders' input."""

    def __init__(self, img: pyvips.Image) -> None:
        if img.format != "uchar":
            img = img.cast("uchar")
        self.width, self.height, self.bands = img.width, img.height, img.bands
        self.pixels = img.write_to_memory()  # the one render (cffi buffer over libvips memory)
        self.image = pyvips.Image.new_from_memory(
            self.pixels, self.width, self.height, self.bands, "uchar"
        ).copy(interpretation=img.interpretation)

    def _match(self, cand: pyvips.Image) -> pyvips.Image:
        """A decoded candidate in the reference's band layout (encoders may add or drop bands)."""
        if self.bands <= 2 and cand.bands >= 3:
            cand = cand.colourspace("b-w")
        elif self.bands >= 3 and cand.bands <= 2:
            cand = cand.colourspace("srgb")
        if cand.format != "uchar":
            cand = cand.cast("uchar")
        colour = 1 if self.bands <= 2 else 3
        has_alpha = self.bands in (2, 4)
        if cand.bands > colour and not has_alpha:
            cand = cand.extract_band(0, n=colour)
        elif cand.bands == colour and has_alpha:
            cand = cand.bandjoin(255)
        return cand

    def ssim(self, body: bytes) -> float:
        cand = self._match(pyvips.Image.new_from_buffer(body, "", access="sequential"))
        if (cand.width, cand.height, cand.bands) != (self.width, self.height, self.bands):
            raise ValueError(f"decoded {cand.width}x{cand.height}x{cand.bands}, expected "
                             f"{self.width}x{self.height}x{self.bands}")
        return native.ssim(self.pixels, cand.write_to_memory(), self.width, self.height, self.bands)


def search(img: pyvips.Image, encode: Encoder, aq: AutoQuality, deadline: float,
           watch: Callable[[pyvips.Image, float], None] | None = None) -> Outcome:
    """Bisection over [min, max] for the smallest quality that reaches the target.

    At most ``aq.max_encodes`` trials, and no trial that would likely end after `deadline`
    (the first one always runs): a slow machine, or the pure-Python SSIM, gets fewer trials
    and the best answer found so far instead of a timeout.
    """
    ref = Reference(img)
    if watch is not None:
        watch(ref.image, deadline)
    trials: list[Trial] = []
    slowest = 0.0

    def trial(q: int) -> Trial:
        nonlocal slowest
        start = time.monotonic()
        body = encode(ref.image, q)
        t = Trial(q, body, ref.ssim(body))
        trials.append(t)
        slowest = max(slowest, time.monotonic() - start)
        return t

    def time_for_another() -> bool:
        """Whether one more trial (as slow as the slowest so far) ends before the deadline."""
        return not trials or time.monotonic() + 1.25 * slowest < deadline

    lo, hi = aq.min_quality, aq.max_quality  # the answer is in [lo, hi] (if hi passes)
    q = (lo + hi) // 2
    while lo < hi and len(trials) < aq.max_encodes and time_for_another():
        t = trial(q)
        if t.ssim >= aq.target:
            hi = t.quality
            if t.ssim < aq.target + SLACK:
                break
            # An easy image (passes by a wide margin): try the floor at once, not by halves.
            q = lo if t.ssim >= aq.target + WIDE and lo not in {x.quality for x in trials} else (lo + hi) // 2
        else:
            lo = t.quality + 1
            q = (lo + hi) // 2
    passing = [t for t in trials if t.ssim >= aq.target]
    if not passing and len(trials) < aq.max_encodes and hi not in {t.quality for t in trials}:
        if time_for_another():
            t = trial(hi)
            if t.ssim >= aq.target:
                passing.append(t)
    if passing:
        best = min(passing, key=lambda t: (len(t.body), t.quality))
    else:  # the target is out of reach within [min, max]: the best we saw
        best = max(trials, key=lambda t: (t.ssim, -len(t.body)))
    log.debug("auto quality: q=%d ssim=%.5f after %d encodes %s", best.quality, best.ssim, len(trials),
              [(t.quality, round(t.ssim, 5), len(t.body)) for t in trials])
    return Outcome(best.body, best.quality, best.ssim, tuple(trials))


def flatten_for(output: str, img: pyvips.Image) -> pyvips.Image:
    """What the encoder for `output` really sees (JPEG has no alpha: flattened on white)."""
    if output == JPEG and img.hasalpha():
        return img.flatten(background=[255] * (img.bands - 1))
    return img


def encode(img: pyvips.Image, output: str, encoder: Encoder, aq: AutoQuality, deadline: float,
           watch: Callable[[pyvips.Image, float], None] | None = None) -> bytes:
    """The auto-quality encoding of `img` as `output` (fixed fallback quality if not searchable)."""
    if output not in SEARCHABLE:
        return encoder(img, aq.fallback_quality)
    return search(flatten_for(output, img), encoder, aq, deadline, watch).body
