#!/usr/bin/env python3
"""Palette PNG settings vs Next.js's (sharp png({quality}): effort 7, dither 1.0).

Sets: the corpus PNGs x 640/1080/1920 (the cold run's widths), the test suite's synthetic photos and graphics
(tests/imagecorpus.py), and a smooth gradient. Bytes, encode CPU and SSIM-Y against the unquantised pixels.

  python benchmarks/png_palette.py
  python benchmarks/png_palette.py --sizes    # Next / effort 6 / effort 5 by output size
  python benchmarks/png_palette.py --zlib     # effort 5/6 with zlib level 9 instead of 6, every set
  python benchmarks/png_palette.py --effort   # efforts 3, 4 and 5 at dither 0.25, every set
"""

from __future__ import annotations

import io
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import _common as C  # noqa: E402
import pyvips  # noqa: E402

from tests.imagecorpus import _graphic, _photo  # noqa: E402
from tests.test_encoders import _ssim_y  # noqa: E402

VARIANTS = {
    "Next: effort 7, dither 1.0": dict(effort=7, dither=1.0),
    "effort 6, dither 0.25 (imgopt)": dict(effort=6, dither=0.25),
    "effort 6, dither 0.5 (imgopt before)": dict(effort=6, dither=0.5),
    "effort 7, dither 0.5": dict(effort=7, dither=0.5),
    "effort 7, dither 0.75": dict(effort=7, dither=0.75),
    "effort 6, dither 0.5, zlib 4": dict(effort=6, dither=0.5, compression=4),
    "effort 5, dither 0.5": dict(effort=5, dither=0.5),
    "effort 5, dither 0.25": dict(effort=5, dither=0.25),
    "effort 5, dither 0.15": dict(effort=5, dither=0.15),
    "effort 5, dither 0.1": dict(effort=5, dither=0.1),
    "effort 5, no dither": dict(effort=5, dither=0.0),
    "effort 4, dither 0.5": dict(effort=4, dither=0.5),
    "effort 4, dither 0.25": dict(effort=4, dither=0.25),
    "effort 4, no dither": dict(effort=4, dither=0.0),
}


def _pil(im) -> pyvips.Image:
    b = io.BytesIO()
    im.save(b, "PNG")
    return pyvips.Image.new_from_buffer(b.getvalue(), "").copy_memory()


def _gradient(w: int = 960, h: int = 640) -> pyvips.Image:
    """A smooth sky-like gradient with a vignette: where dithering should matter most."""
    x = pyvips.Image.xyz(w, h)
    fx, fy = x[0] / w, x[1] / h
    d = ((x[0] - w / 2) ** 2 + (x[1] - h / 2) ** 2) ** 0.5 / 600.0
    r = (fx * 60 + 90) * (1 - d * 0.3)
    g = (fy * 80 + 120) * (1 - d * 0.3)
    b = (255 - fy * 70 - fx * 20) * (1 - d * 0.2)
    return r.bandjoin([g, b]).cast("uchar").copy(interpretation="srgb").copy_memory()


SIZE_VARIANTS = {
    "Next: effort 7, dither 1.0": dict(effort=7, dither=1.0),
    "effort 6, dither 0.25 (imgopt)": dict(effort=6, dither=0.25),
    "effort 5, dither 0.25": dict(effort=5, dither=0.25),
}


ZLIB_VARIANTS = {
    "Next: effort 7, dither 1.0": dict(effort=7, dither=1.0),
    "effort 6, dither 0.25 (imgopt before)": dict(effort=6, dither=0.25),
    "effort 6, dither 0.25, zlib 9": dict(effort=6, dither=0.25, compression=9),
    "effort 5, dither 0.25": dict(effort=5, dither=0.25),
    "effort 5, dither 0.25, zlib 8": dict(effort=5, dither=0.25, compression=8),
    "effort 5, dither 0.25, zlib 9": dict(effort=5, dither=0.25, compression=9),
}


EFFORT_VARIANTS = {
    "Next: effort 7, dither 1.0": dict(effort=7, dither=1.0),
    "effort 5, dither 0.25 (imgopt)": dict(effort=5, dither=0.25),
    "effort 4, dither 0.25": dict(effort=4, dither=0.25),
    "effort 3, dither 0.25": dict(effort=3, dither=0.25),
    "effort 3, dither 0.1": dict(effort=3, dither=0.1),
    "effort 3, dither 0.25, Q-10": dict(effort=3, dither=0.25, Q=65),
    "effort 3, dither 0.25, Q-20": dict(effort=3, dither=0.25, Q=55),
    "effort 3, dither 0.5": dict(effort=3, dither=0.5),
    "effort 3, no dither": dict(effort=3, dither=0.0),
}


def _size_sets() -> dict[str, list[pyvips.Image]]:
    """Does effort 5 hold Next's bytes on large outputs, where the quantiser's CPU is?"""
    sets: dict[str, list[pyvips.Image]] = {}
    for w, h in ((960, 640), (1440, 960), (1680, 1120), (1920, 1280), (2560, 1707)):
        sets[f"synthetic photos {w}x{h}"] = [_pil(_photo(w, h, seed=s)) for s in (3, 7, 11)]
    for p in [p for p in C.load_corpus(["png"]) if p.format == "png"]:
        for w in (1080, 1440, 1920, 2560):
            sets[f"{p.name} w{w}"] = [C.raw_thumbnail(p.data, w).copy_memory()]
    return sets


def main() -> int:
    pyvips.cache_set_max(0)
    if "--sizes" in sys.argv[1:]:
        return _table(_size_sets(), SIZE_VARIANTS)
    if "--zlib" in sys.argv[1:]:
        return _table({**_main_sets(), **_size_sets()}, ZLIB_VARIANTS)
    if "--effort" in sys.argv[1:]:
        return _table({**_main_sets(), **_size_sets()}, EFFORT_VARIANTS)
    return _table(_main_sets(), VARIANTS)


def _main_sets() -> dict[str, list[pyvips.Image]]:
    sets: dict[str, list[pyvips.Image]] = {}
    for p in [p for p in C.load_corpus(["png"]) if p.format == "png"]:
        sets[p.name] = [C.raw_thumbnail(p.data, w).copy_memory() for w in (640, 1080, 1920)]
    sets["synthetic photos"] = [_pil(_photo(960, 640, seed=s)) for s in (3, 7, 11)]
    sets["synthetic graphics"] = [_pil(_graphic(960, 640, seed=s)) for s in (3, 7, 11)]
    sets["smooth gradient"] = [_gradient()]
    return sets


def _table(sets: dict[str, list[pyvips.Image]], variants: dict[str, dict]) -> int:
    print("| images | setting | bytes / Next | encode CPU / Next | ΔSSIM-Y |\n|---|---|---|---|---|")
    for name, ims in sets.items():
        base = None
        for k, kw in variants.items():
            b = c = y = 0.0
            for im in ims:
                t = time.process_time()
                out = im.pngsave_buffer(palette=True, keep="none", **{"Q": 75, "compression": 6, **kw})
                c += time.process_time() - t
                b += len(out)
                y += _ssim_y(im[0:3] if im.bands > 3 else im, out)
            y /= len(ims)
            if base is None:
                base = (b, c, y)
            print(f"| {name} | {k} | {b / base[0]:.3f} | {c / base[1]:.2f} | {y - base[2]:+.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
