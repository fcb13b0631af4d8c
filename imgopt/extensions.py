"""imgopt's own keys in the ``images`` config object (not Next.js options).

Next.js rejects unknown keys in ``images``, so these only go in imgopt's JSON config:

``autoQuality``: ``true`` or ``{"target": 0.975, "marker": 1, "min": 40, "max": 90}``. A
request whose ``q`` is the marker gets the smallest encoding whose SSIM against the resized
image reaches ``target``, searched over qualities ``min``..``max`` (see imgopt/autoquality.py).
The marker must be one of ``qualities`` (so next/image and the loader can send it).

``animated``: ``true`` or ``{"maxFrames": 1000, "maxPixels": 100000000}``. Animated GIF, WebP
and APNG are resized and re-encoded as animated WebP when the client accepts WebP, within the
limits (frames, and frames x frame pixels); otherwise they pass through as in Next.js.

The parsers raise ValueError with a message that config.py prefixes with the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AutoQuality:
    target: float = 0.975
    marker: int = 1
    min_quality: int = 40  # a floor: SSIM barely sees banding in smooth gradients
    max_quality: int = 90
    max_encodes: int = 5
    #: used for the outputs that have no quality to search (GIF, TIFF) and for animations
    fallback_quality: int = 75


@dataclass(frozen=True)
class AnimatedLimits:
    max_frames: int = 1000
    max_pixels: int = 100_000_000  # frames x frame width x frame height


def _number(raw: Any, key: str, lo: float, hi: float, integer: bool) -> Any:
    ok = isinstance(raw, int) if integer else isinstance(raw, (int, float))
    if isinstance(raw, bool) or not ok:
        raise ValueError(f"{key}: expected {'an integer' if integer else 'a number'}, got {json.dumps(raw)}")
    if not lo <= raw <= hi:
        raise ValueError(f"{key}: must be between {lo} and {hi}, got {json.dumps(raw)}")
    return raw


def _object(raw: Any, name: str, known: set[str]) -> dict[str, Any] | None:
    if raw is False or raw is None:
        return None
    if raw is True:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"expected true, false or an object, got {json.dumps(raw)}")
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: unknown key (known: {', '.join(sorted(known))})")
    return raw


def parse_auto_quality(raw: Any, qualities: tuple[int, ...] | None) -> AutoQuality | None:
    obj = _object(raw, "autoQuality", {"target", "marker", "min", "max"})
    if obj is None:
        return None
    kw: dict[str, Any] = {}
    if "target" in obj:
        kw["target"] = float(_number(obj["target"], "target", 0.5, 1.0, False))
    if "marker" in obj:
        kw["marker"] = _number(obj["marker"], "marker", 1, 100, True)
    if "min" in obj:
        kw["min_quality"] = _number(obj["min"], "min", 1, 100, True)
    if "max" in obj:
        kw["max_quality"] = _number(obj["max"], "max", 1, 100, True)
    aq = AutoQuality(**kw)
    if aq.min_quality > aq.max_quality:
        raise ValueError(f"min ({aq.min_quality}) is more than max ({aq.max_quality})")
    if qualities is not None and aq.marker not in qualities:
        raise ValueError(
            f"marker {aq.marker} is not in images.qualities {list(qualities)}; add it there so "
            f"requests can carry it (q={aq.marker} then means 'auto')"
        )
    return aq


def parse_animated(raw: Any) -> AnimatedLimits | None:
    obj = _object(raw, "animated", {"maxFrames", "maxPixels"})
    if obj is None:
        return None
    kw: dict[str, Any] = {}
    if "maxFrames" in obj:
        kw["max_frames"] = _number(obj["maxFrames"], "maxFrames", 1, 100_000, True)
    if "maxPixels" in obj:
        kw["max_pixels"] = _number(obj["maxPixels"], "maxPixels", 1, 10**12, True)
    return AnimatedLimits(**kw)


@dataclass(frozen=True)
class Extras:
    """What one request asks of imgopt beyond Next.js; handed to transform.process."""

    auto_quality: AutoQuality | None = None  # set when the request's q is the auto marker
    animated: AnimatedLimits | None = None  # set when animations may be re-encoded
    animated_mime: str = ""  # the type an animation is re-encoded to ('' = pass through)
    placeholder: bool = False  # a /_next/image/placeholder request: JSON instead of an image


NONE = Extras()


def for_request(cfg: Any, req: Any) -> Extras:
    """The Extras for a validated ImageRequest under an ImagesConfig."""
    aq = cfg.auto_quality
    extras = Extras(
        auto_quality=aq if aq is not None and req.quality == aq.marker else None,
        animated=cfg.animated,
        animated_mime=req.animated_mime if cfg.animated is not None else "",
        placeholder=req.placeholder,
    )
    return NONE if extras == NONE else extras
