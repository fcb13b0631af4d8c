"""C kernels (imgopt._native) vs their pure-Python twins (imgopt/pykernels.py).

    make bench            # or: .venv/bin/python -m pytest benchmarks/bench_native.py --benchmark-enable

Each group times one kernel on one input both ways; the ratio of the means is the speed-up
(docs/extras.md has the table). The inputs are what the service really feeds the kernels:
SSIM on a resized photo vs its WebP q=50 decode (RGB, 3 bands), and ThumbHash on the 100-pixel
RGBA thumbnail of the placeholder endpoint. Inputs come from the test corpus generator, so
this needs no downloaded corpus. Without --benchmark-enable every bench runs once (smoke).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pyvips

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from imgopt import native, pykernels  # noqa: E402

pytestmark = pytest.mark.skipif(native.c_ssim is None, reason="imgopt._native is not built")


def _photo(width: int, height: int) -> pyvips.Image:
    from imagecorpus import _photo as photo

    im = photo(width, height, seed=11)
    return pyvips.Image.new_from_memory(im.tobytes(), width, height, 3, "uchar").copy(interpretation="srgb")


@pytest.fixture(scope="module", params=[(640, 427), (1920, 1280)], ids=["640x427", "1920x1280"])
def ssim_pair(request):
    w, h = request.param
    ref = _photo(w, h)
    cand = pyvips.Image.new_from_buffer(ref.webpsave_buffer(Q=50), "")
    return ref.write_to_memory(), cand.write_to_memory(), w, h


@pytest.fixture(scope="module")
def thumb():
    ref = _photo(400, 267).thumbnail_image(100, height=100).bandjoin(255)
    return ref.write_to_memory(), ref.width, ref.height


def _group(benchmark, name: str) -> None:
    benchmark.group = name


def test_ssim_c(benchmark, ssim_pair):
    a, b, w, h = ssim_pair
    _group(benchmark, f"ssim {w}x{h}")
    result = benchmark(native.c_ssim, a, b, w, h, 3)
    assert 0.5 < result < 1


def test_ssim_python(benchmark, ssim_pair):
    a, b, w, h = ssim_pair
    _group(benchmark, f"ssim {w}x{h}")
    result = benchmark.pedantic(pykernels.ssim, (a, b, w, h, 3), rounds=3 if w < 1000 else 1, iterations=1)
    assert result == native.c_ssim(a, b, w, h, 3)


def test_thumbhash_c(benchmark, thumb):
    rgba, w, h = thumb
    _group(benchmark, f"thumbhash {w}x{h}")
    assert len(benchmark(native.c_thumbhash_encode, rgba, w, h)) > 5


def test_thumbhash_python(benchmark, thumb):
    rgba, w, h = thumb
    _group(benchmark, f"thumbhash {w}x{h}")
    result = benchmark.pedantic(pykernels.thumbhash_encode, (rgba, w, h), rounds=3, iterations=1)
    assert result == native.c_thumbhash_encode(rgba, w, h)
