"""In-process transform cost: imgopt's transform step vs the raw-libvips floor, per format and width.

Each benchmark call transforms the whole photo set (PNG output: the PNG sources) once at q=75:

* ``raw-next``: ``pyvips.Image.thumbnail_buffer(buf, w, size="down")`` + save with the settings
  Next.js 16 passes to sharp (_common.NEXT_ENCODERS). No imgopt code at all.
* ``imgopt-next``: ``imgopt.transform.process`` (type detection, animation check, header pixel
  check, shrink-on-load thumbnail, sRGB, deadline watch, encode) with ENCODERS temporarily set to
  the same Next settings. imgopt-next / raw-next is the issue's "≤ 1.05 × raw libvips" ratio.
* ``imgopt-default``: ``process`` with imgopt's shipped ENCODERS (what the service really does).

Run by run_all.py with ``--benchmark-timer time.process_time``: the statistic is CPU seconds of
the process (all libvips threads), which stays comparable on a busy machine; wall time, bytes
and the machine's foreign CPU during the benchmark are stored in extra_info.
"""

from __future__ import annotations

import time

import pytest

import _common as C
from imgopt import transform as T

Q = 75
WIDTHS = (640, 1080, 1920)
FORMATS = ("webp", "avif", "jpeg", "png")
IMPLS = ("raw-next", "imgopt-next", "imgopt-default")
CASES = [(f, w, impl) for f in FORMATS for w in WIDTHS for impl in IMPLS]


def _negotiated(fmt: str) -> str:
    # what params.negotiate gives for the loadgen Accept headers: avif/webp, else '' (original type)
    return C.MIME[fmt] if fmt in ("webp", "avif") else ""


def _output_mime(img: C.Img, fmt: str) -> str:
    if fmt in ("webp", "avif"):
        return C.MIME[fmt]
    return "image/png" if img.format == "png" else "image/jpeg"


@pytest.fixture(scope="module", autouse=True)
def _libvips():
    T.configure_libvips()


@pytest.mark.parametrize("fmt,w,impl", CASES, ids=[f"{f}-{w}-{i}" for f, w, i in CASES])
def test_transform(benchmark, smoke, photos, pngs, fmt, w, impl):
    imgs = pngs if fmt == "png" else photos
    if smoke and w != 640:
        pytest.skip("smoke: 640 only")
    saved = dict(T.ENCODERS)
    if impl == "imgopt-next":
        T.ENCODERS.update(C.NEXT_ENCODERS)
    out = {"bytes": 0, "wall": [], "errors": 0}

    def run():
        t0 = time.perf_counter()
        total = 0
        for im in imgs:
            if impl == "raw-next":
                body = C.raw_transform(im.data, w, _output_mime(im, fmt), Q, C.NEXT_ENCODERS)
            else:
                r = T.process(im.data, _negotiated(fmt), False, w, Q, 268_402_689, time.monotonic() + 60)
                if r.kind != "optimized":
                    out["errors"] += 1
                body = r.body
            total += len(body)
        out["wall"].append(time.perf_counter() - t0)
        out["bytes"] = total

    n, warm = C.bench_rounds(smoke, 5)
    win = C.CpuWindow({})
    try:
        benchmark.pedantic(run, rounds=n, warmup_rounds=warm, iterations=1)
    finally:
        T.ENCODERS.clear()
        T.ENCODERS.update(saved)
    noise = win.stop()
    benchmark.extra_info.update({
        "kind": "transform", "fmt": fmt, "w": w, "impl": impl, "images": [i.name for i in imgs], "q": Q,
        "bytes": out["bytes"], "errors": out["errors"], "wall_median_s": C.median(out["wall"][warm:] or out["wall"]),
        "foreign_cores": noise["foreign_cores"],
    })
    assert out["errors"] == 0
