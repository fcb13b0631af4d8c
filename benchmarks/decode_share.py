#!/usr/bin/env python3
"""How much of the cold pass's decoding could be shared between widths, deterministically.

A resize of (original, width) may reuse another width's decode only when both decode at the
same shrink-on-load factor, so the output never depends on which request came first: a PNG
(no shrink-on-load) decodes in full for every width; a JPEG decodes at 1/1, 1/2, 1/4 or 1/8
(libvips thumbnail keeps at least a 2x Lanczos reduce after it); a WebP decodes straight to
each width's scale, so never. For the corpus x 640/1080/1920 (one thread, min CPU of 2): the
whole thumbnail time and the decodes a second width at the same factor would not repeat.

  VIPS_CONCURRENCY=1 python benchmarks/decode_share.py
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import pyvips  # noqa: E402

WIDTHS = (640, 1080, 1920)


def _cpu(f: Callable[[], object], reps: int = 2) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.process_time()
        f()
        best = min(best, time.process_time() - t)
    return best


def _jpeg_shrink(src_width: int, width: int) -> int:
    r = src_width / width  # as libvips's vips_thumbnail_find_jpegshrink
    return 8 if r >= 16 else 4 if r >= 8 else 2 if r >= 4 else 1


def main() -> int:
    pyvips.cache_set_max(0)
    total = shareable = 0.0
    print("| original | width | thumbnail ms | decode key | decode ms | shared |\n|---|---|---|---|---|---|")
    for img in C.load_corpus(["photo", "png"]):
        seen: set[object] = set()
        for w in WIDTHS:
            th = _cpu(lambda: C.raw_thumbnail(img.data, w).copy_memory())
            if img.format == "jpeg":
                key: object = _jpeg_shrink(img.width, w)
                dec = _cpu(lambda: pyvips.Image.new_from_buffer(img.data, "", shrink=key,
                                                                access="sequential").copy_memory())
            elif img.format == "png":
                key = 1
                dec = _cpu(lambda: pyvips.Image.new_from_buffer(img.data, "", access="sequential").copy_memory())
            else:
                key, dec = f"scale for {w}", 0.0
            shared = key in seen
            seen.add(key)
            total += th
            shareable += dec if shared else 0.0
            print(f"| {img.name} | {w} | {th * 1000:.0f} | {key} | {dec * 1000:.0f} | {'yes' if shared else ''} |")
    print(f"\nthumbnail CPU for the {len(WIDTHS)} widths of every original: {total:.2f} s; "
          f"decodes that sharing would save: {shareable:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
