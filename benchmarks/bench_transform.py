"""In-process transform cost: imgopt's transform step vs the raw-libvips floor, per format and width.

Each benchmark call transforms the whole photo set (PNG output: the PNG sources) once at q=75:

* ``raw-next``: ``pyvips.Image.thumbnail_buffer(buf, w, height=10_000_000, size="down")`` + save with the settings
  Next.js 16 passes to sharp (_common.NEXT_ENCODERS). No imgopt code at all.
* ``imgopt-next``: ``imgopt.transform.process`` (type detection, animation check, header pixel
  check, shrink-on-load thumbnail, sRGB, deadline watch, encode) with ENCODERS temporarily set to
  the same Next settings. imgopt-next / raw-next is the "≤ 1.05 × raw libvips" ratio.
* ``imgopt-default``: ``process`` with imgopt's shipped ENCODERS (what the service really does).

Each round runs the three back to back (rotating the order) and the ratios are taken per round
(paired), then the median over rounds: CPU time on this VM drifts by 15-30 % between otherwise
identical runs, pairing cancels most of it. Run by run_all.py with ``--benchmark-timer
time.process_time`` (CPU seconds of the process, all libvips threads); per-implementation CPU,
wall time, bytes and the machine's foreign CPU are stored in extra_info.
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
CASES = [(f, w) for f in FORMATS for w in WIDTHS]


@pytest.fixture(scope="module", autouse=True)
def _libvips():
    T.configure_libvips()


@pytest.mark.parametrize("fmt,w", CASES, ids=[f"{f}-{w}" for f, w in CASES])
def test_transform(benchmark, smoke, photos, pngs, fmt, w):
    """One round = the three implementations back to back (rotating order), so the ratios are
    paired per round and slow drifts in the machine's speed cancel out."""
    imgs = pngs if fmt == "png" else photos
    if smoke and w != 640:
        pytest.skip("smoke: 640 only")
    shipped = dict(T.ENCODERS)
    samples = {impl: {"cpu": [], "wall": [], "bytes": 0, "errors": 0} for impl in IMPLS}
    rnd = [0]

    def run(impl: str) -> None:
        T.ENCODERS.clear()
        T.ENCODERS.update(shipped)
        if impl == "imgopt-next":
            T.ENCODERS.update(C.NEXT_ENCODERS)
        total = 0
        c0, t0 = time.process_time(), time.perf_counter()
        for im in imgs:
            if impl == "raw-next":
                body = C.raw_transform(im.data, w, C.output_mime(im, fmt), Q, C.NEXT_ENCODERS)
            else:
                r = T.process(im.data, C.negotiated(fmt), False, w, Q, 268_402_689, time.monotonic() + 60)
                if r.kind != "optimized":
                    samples[impl]["errors"] += 1
                body = r.body
            total += len(body)
        samples[impl]["cpu"].append(time.process_time() - c0)
        samples[impl]["wall"].append(time.perf_counter() - t0)
        samples[impl]["bytes"] = total

    def one_round() -> None:
        k = rnd[0] % len(IMPLS)
        rnd[0] += 1
        for impl in IMPLS[k:] + IMPLS[:k]:
            run(impl)

    n, warm = C.bench_rounds(smoke, 5)
    win = C.CpuWindow({})
    try:
        benchmark.pedantic(one_round, rounds=n, warmup_rounds=warm, iterations=1)
    finally:
        T.ENCODERS.clear()
        T.ENCODERS.update(shipped)
    noise = win.stop()
    for v in samples.values():  # drop the warm-up rounds
        v["cpu"], v["wall"] = v["cpu"][warm:], v["wall"][warm:]
    raw = samples["raw-next"]["cpu"]

    def paired(impl: str) -> float | None:
        return C.median([a / b for a, b in zip(samples[impl]["cpu"], raw) if b])

    benchmark.extra_info.update({
        "kind": "transform", "fmt": fmt, "w": w, "q": Q, "images": [i.name for i in imgs], "rounds": len(raw),
        "foreign_cores": noise["foreign_cores"],
        "ratio_next_vs_raw": paired("imgopt-next"), "ratio_default_vs_raw": paired("imgopt-default"),
        **{f"{impl}": {"cpu_median_s": C.median(v["cpu"]), "cpu_all_s": [round(x, 4) for x in v["cpu"]],
                       "wall_median_s": C.median(v["wall"]), "bytes": v["bytes"], "errors": v["errors"]}
           for impl, v in samples.items()},
    })
    assert not any(v["errors"] for v in samples.values())
