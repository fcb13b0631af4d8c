"""The C kernels (imgopt._native) against their pure-Python twins (imgopt/pykernels.py).

The twins define the results; the C code must give exactly the same numbers (bit for bit)
on random images (hypothesis) and real ones. Also: an independent brute-force SSIM, the
zero-copy path from libvips to C, argument checks, and the fallback when C is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import pyvips
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgopt import autoquality, native, pykernels, transform

ROOT = Path(__file__).resolve().parent.parent
FORCED_PYTHON = os.environ.get("IMGOPT_NATIVE", "").lower() in ("0", "false", "no", "off", "python")
needs_c = pytest.mark.skipif(native.c_ssim is None, reason="imgopt._native is not built")


def test_native_module_is_built():
    """`pip install` (make test) must have compiled native/; only IMGOPT_NATIVE=0 may turn it off."""
    if FORCED_PYTHON:
        assert native.IMPLEMENTATION == "python"
    else:
        assert native.IMPLEMENTATION == "c", "imgopt._native is missing: run `pip install -e .` with a C compiler"
        assert native.ssim is native.c_ssim and native.thumbhash_encode is native.c_thumbhash_encode


# -- SSIM ----------------------------------------------------------------------------------------


@st.composite
def image_pairs(draw, max_side: int = 40):
    w = draw(st.integers(1, max_side))
    h = draw(st.integers(1, max_side))
    bands = draw(st.integers(1, 4))
    n = w * h * bands
    a = draw(st.binary(min_size=n, max_size=n))
    how = draw(st.sampled_from(["random", "noisy", "same", "flat"]))
    if how == "random":
        b = draw(st.binary(min_size=n, max_size=n))
    elif how == "noisy":
        noise = draw(st.lists(st.integers(-12, 12), min_size=n, max_size=n))
        b = bytes(min(255, max(0, x + d)) for x, d in zip(a, noise))
    elif how == "same":
        b = a
    else:
        b = bytes([draw(st.integers(0, 255))]) * n
    return a, b, w, h, bands


def brute_force_ssim(a: bytes, b: bytes, w: int, h: int, bands: int) -> float:
    """The documented definition, pixel by pixel: luma, windows of min(8, side), stride 4."""
    ya, yb = pykernels._luma(a, bands), pykernels._luma(b, bands)
    ww, wh = min(8, w), min(8, h)
    xs = range(0, (w // 4 - 1) * 4, 4) if w >= 8 else [0]
    ys = range(0, (h // 4 - 1) * 4, 4) if h >= 8 else [0]
    total, count = 0.0, 0
    for y0 in ys:
        for x0 in xs:
            px = [(ya[y * w + x], yb[y * w + x]) for y in range(y0, y0 + wh) for x in range(x0, x0 + ww)]
            n = len(px)
            ma = sum(p for p, _ in px) / n
            mb = sum(q for _, q in px) / n
            va = sum((p - ma) ** 2 for p, _ in px) / n
            vb = sum((q - mb) ** 2 for _, q in px) / n
            cov = sum((p - ma) * (q - mb) for p, q in px) / n
            c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
            total += (2 * ma * mb + c1) * (2 * cov + c2) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
            count += 1
    return total / count


@needs_c
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(image_pairs())
def test_ssim_c_equals_python_on_random_images(pair):
    a, b, w, h, bands = pair
    assert native.c_ssim(a, b, w, h, bands) == pykernels.ssim(a, b, w, h, bands)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(image_pairs(max_side=24))
def test_ssim_matches_the_definition(pair):
    a, b, w, h, bands = pair
    assert pykernels.ssim(a, b, w, h, bands) == pytest.approx(brute_force_ssim(a, b, w, h, bands), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(image_pairs(max_side=24))
def test_ssim_properties(pair):
    a, b, w, h, bands = pair
    s = native.ssim(a, b, w, h, bands)
    assert -1.0 <= s <= 1.0 + 1e-12
    assert native.ssim(b, a, w, h, bands) == s  # symmetric
    assert native.ssim(a, a, w, h, bands) == pytest.approx(1.0, abs=1e-12)


def _resized(buf: bytes, width: int) -> pyvips.Image:
    img = transform._to_srgb8(pyvips.Image.thumbnail_buffer(buf, width, height=10_000_000, size="down"))
    return img.copy_memory()


@needs_c
@pytest.mark.parametrize("name,fmt,q", [
    ("mountains.jpg", "webp", 50), ("test.jpg", "jpeg", 30), ("alpha.png", "webp", 60),
    ("gray-alpha.png", "webp", 40), ("test.png", "avif", 50), ("tall.png", "jpeg", 20), ("tiny.png", "png", 50),
])
def test_ssim_c_equals_python_on_real_images(corpus, name, fmt, q):
    ref = _resized((corpus / name).read_bytes(), 200)
    if fmt == "jpeg":
        ref = ref.flatten(background=[255] * (ref.bands - 1)) if ref.hasalpha() else ref
    body = transform.ENCODERS[f"image/{fmt}"](ref, q)
    cand = autoquality.Reference(ref)._match(pyvips.Image.new_from_buffer(body, ""))
    a, b = ref.write_to_memory(), cand.write_to_memory()
    c = native.c_ssim(a, b, ref.width, ref.height, ref.bands)
    assert c == pykernels.ssim(a, b, ref.width, ref.height, ref.bands)
    assert 0.3 < c <= 1.0


@needs_c
def test_pixels_reach_c_without_a_copy(corpus):
    """write_to_memory() hands out libvips' own memory; the kernel reads that very address."""
    img = _resized((corpus / "test.jpg").read_bytes(), 100)
    buf = img.write_to_memory()
    address = int(pyvips.ffi.cast("uintptr_t", pyvips.ffi.from_buffer(buf)))
    assert native.buffer_address(buf) == address
    assert native.buffer_address(memoryview(buf)) == address
    wrapped = pyvips.Image.new_from_memory(buf, img.width, img.height, img.bands, "uchar")
    assert wrapped.avg() == img.avg()  # the same pixels, seen by libvips again without a copy


@pytest.mark.parametrize("kernel", [k for k in (native.c_ssim, pykernels.ssim) if k is not None])
def test_ssim_rejects_bad_arguments(kernel):
    with pytest.raises(ValueError):
        kernel(b"\0" * 12, b"\0" * 12, 2, 2, 2)  # 8 bytes expected
    with pytest.raises(ValueError):
        kernel(b"\0" * 4, b"\0" * 3, 2, 2, 1)
    with pytest.raises(ValueError):
        kernel(b"", b"", 0, 1, 1)
    with pytest.raises(ValueError):
        kernel(b"\0" * 5, b"\0" * 5, 1, 1, 5)


# -- ThumbHash -----------------------------------------------------------------------------------


@st.composite
def rgba_images(draw, max_side: int = 24):
    w = draw(st.integers(1, max_side))
    h = draw(st.integers(1, max_side))
    alpha = draw(st.sampled_from(["opaque", "random", "holes"]))
    px = bytearray(draw(st.binary(min_size=w * h * 4, max_size=w * h * 4)))
    if alpha == "opaque":
        px[3::4] = b"\xff" * (w * h)
    elif alpha == "holes":
        px[3::4] = bytes(0 if i % 5 == 0 else 255 for i in range(w * h))
    return bytes(px), w, h


@needs_c
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rgba_images())
def test_thumbhash_c_equals_python_on_random_images(img):
    rgba, w, h = img
    assert native.c_thumbhash_encode(rgba, w, h) == pykernels.thumbhash_encode(rgba, w, h)


@needs_c
@pytest.mark.parametrize("name", ["mountains.jpg", "alpha.png", "exif-rotated.jpg", "palette.png", "tall.png",
                                  "gray-alpha.png", "tiny.png", "cmyk.jpg"])
def test_thumbhash_c_equals_python_on_real_images(corpus, name):
    from imgopt.placeholder import rgba_thumbnail

    thumb, pixels = rgba_thumbnail((corpus / name).read_bytes())
    c = native.c_thumbhash_encode(pixels, thumb.width, thumb.height)
    assert c == pykernels.thumbhash_encode(pixels, thumb.width, thumb.height)
    assert 5 <= len(c) <= 25




def test_thumbhash_known_values():
    # A solid colour has no AC energy; DC carries the colour, the header its aspect ratio.
    red = bytes((255, 0, 0, 255)) * 6
    h = native.thumbhash_encode(red, 3, 2)
    assert h == pykernels.thumbhash_encode(red, 3, 2)
    header24 = h[0] | h[1] << 8 | h[2] << 16
    assert header24 & 63 == round(63 * (255 / 255) / 3)  # l_dc = (r+g+b)/3
    assert header24 >> 23 == 0  # opaque
    assert (h[3] | h[4] << 8) >> 15 == 1  # landscape
    clear = bytes((0, 0, 0, 0)) * 4
    assert native.thumbhash_encode(clear, 2, 2)[2] >> 7 == 1  # has alpha


@pytest.mark.parametrize("kernel", [k for k in (native.c_thumbhash_encode, pykernels.thumbhash_encode) if k])
def test_thumbhash_rejects_bad_arguments(kernel):
    with pytest.raises(ValueError):
        kernel(b"\0" * 404, 101, 1)
    with pytest.raises(ValueError):
        kernel(b"\0" * 15, 2, 2)
    with pytest.raises(ValueError):
        kernel(b"", 0, 0)


# -- fallback ------------------------------------------------------------------------------------


def test_without_the_extension_the_twins_are_used_with_a_warning():
    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "import imgopt.native as n\n"
        "print(n.IMPLEMENTATION, n.ssim is n.py_ssim, n.thumbhash_encode is n.py_thumbhash_encode)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "IMGOPT_NATIVE": "0"}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["python", "True", "True"]
    assert "pure-Python pixel kernels" in r.stderr
