"""imgopt's encoder settings against Next.js's, on a synthetic photo.

The corpus-wide measurements are in benchmarks/FRONTIER.md; these tests pin the properties the
defaults were chosen for, so a change of libvips or of ENCODERS that loses them fails here.
"""

from __future__ import annotations

import io

import pytest
import pyvips

from imgopt import transform

from tests.imagecorpus import _graphic, _photo


def _ssim_y(ref: pyvips.Image, body: bytes) -> float:
    out = pyvips.Image.new_from_buffer(body, "").colourspace("srgb")[0:3].cast("float")
    a = ref.colourspace("b-w")[0].cast("float")
    b = out.colourspace("b-w")[0].cast("float")
    blur = lambda im: im.gaussblur(1.5, precision="float")  # noqa: E731
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma * ma, blur(b * b) - mb * mb, blur(a * b) - ma * mb
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return ((2 * ma * mb + c1) * (2 * cov + c2) / ((ma * ma + mb * mb + c1) * (va + vb + c2))).avg()


@pytest.fixture(scope="module")
def photo() -> pyvips.Image:
    buf = io.BytesIO()
    _photo(960, 640, seed=7).save(buf, "PNG")
    return pyvips.Image.new_from_buffer(buf.getvalue(), "").copy_memory()


def _next_avif(img: pyvips.Image, Q: int) -> bytes:
    # What Next.js 16 asks of sharp 0.35 (at Q=round(q*5/8)): effort 3, 4:4:4, libvips's default tune.
    return img.heifsave_buffer(Q=Q, effort=3, compression="av1", subsample_mode="off", keep="none")


@pytest.mark.parametrize("q", [60, 75])
def test_avif_beats_nexts_settings_at_equal_bytes(photo, q):
    """Rate-distortion: Next's settings, at the largest quality whose output is no larger than
    imgopt's, give no better SSIM than imgopt's. (On this grainy synthetic photo imgopt's output
    is also ~15% smaller than Next's at the same q; on the real photo corpus it is 4% smaller at
    SSIM-Y +0.002, benchmarks/FRONTIER.md.)"""
    ours = transform.ENCODERS[transform.AVIF](photo, q)
    Q = transform._avif_quality(q)
    assert len(ours) <= len(_next_avif(photo, Q))
    while Q > 1 and len(_next_avif(photo, Q)) > len(ours):
        Q -= 1
    theirs = _next_avif(photo, Q)
    assert len(theirs) <= len(ours)
    assert _ssim_y(photo, ours) >= _ssim_y(photo, theirs)


def test_avif_tune_is_applied_when_libvips_has_it(photo):
    if not transform._heif_tune_supported("ssim"):
        pytest.fail("the bundled libvips lacks heifsave tune (libvips >= 8.18 expected by pyvips-binary)")
    assert transform._AVIF_EXTRA == {"tune": transform.AVIF_TUNE}
    default_tune = photo.heifsave_buffer(Q=transform._avif_quality(75), effort=3, compression="av1",
                                          subsample_mode="on", keep="none")
    assert transform.ENCODERS[transform.AVIF](photo, 75) != default_tune


def test_an_unknown_tune_is_refused_not_used():
    assert not transform._heif_tune_supported("no-such-tune")


@pytest.fixture(scope="module")
def graphic() -> pyvips.Image:
    buf = io.BytesIO()
    _graphic(960, 640, seed=7).save(buf, "PNG")
    return pyvips.Image.new_from_buffer(buf.getvalue(), "").copy_memory()


def _next_png(img: pyvips.Image) -> bytes:
    """Next.js: sharp png({quality}) = palette, effort 7, dither 1.0."""
    return img.pngsave_buffer(palette=True, Q=75, effort=7, compression=6, keep="none")


def test_palette_png_dominates_nexts_on_graphics(graphic):
    ours = transform.ENCODERS[transform.PNG](graphic, 75)
    theirs = _next_png(graphic)
    assert pyvips.Image.new_from_buffer(ours, "").get("palette-bit-depth") <= 8
    assert len(ours) <= len(theirs)
    assert _ssim_y(graphic, ours) >= _ssim_y(graphic, theirs)


def test_palette_png_on_grainy_photos_is_within_the_issue_bar():
    """Effort 5 (libimagequant speed 6) is about half the quantiser CPU of effort 6 on real
    photos, where it is also smaller than Next's at higher SSIM (ladybird-alpha.png 0.96-0.99x
    at 640-2560 px). On grainy synthetic noise, palette quantisation is jumpy from image to image
    (effort 6 too: 0.99-1.06x Next's bytes over 12 seeds at 960x640, effort 5 0.98-1.18x, each at
    higher SSIM), so this holds the aggregate over several: bytes within 3% of Next's, mean SSIM
    no lower, and no image below the quality bar (Next - 0.005). benchmarks/FRONTIER.md."""
    ours_bytes = theirs_bytes = 0
    deltas = []
    for seed in range(1, 9):
        buf = io.BytesIO()
        _photo(640, 427, seed=seed).save(buf, "PNG")
        img = pyvips.Image.new_from_buffer(buf.getvalue(), "").copy_memory()
        ours, theirs = transform.ENCODERS[transform.PNG](img, 75), _next_png(img)
        assert pyvips.Image.new_from_buffer(ours, "").get("palette-bit-depth") <= 8
        ours_bytes, theirs_bytes = ours_bytes + len(ours), theirs_bytes + len(theirs)
        deltas.append(_ssim_y(img, ours) - _ssim_y(img, theirs))
    assert ours_bytes <= theirs_bytes * 1.03
    assert sum(deltas) / len(deltas) >= 0
    assert min(deltas) >= -0.005


@pytest.mark.parametrize("workers,cpus,threads", [(2, 2, 1), (1, 2, 2), (1, 8, 8), (3, 8, 2), (16, 2, 1), (0, 4, 4)])
def test_libvips_threads_share_the_cores_among_workers(workers, cpus, threads):
    assert transform.libvips_threads(workers, cpus) == threads


def test_libvips_threads_are_set_unless_the_operator_did(monkeypatch):
    before = pyvips.concurrency_get()
    try:
        monkeypatch.delenv("VIPS_CONCURRENCY", raising=False)
        transform.set_libvips_threads(10_000)
        assert pyvips.concurrency_get() == 1
        monkeypatch.setenv("VIPS_CONCURRENCY", "3")
        pyvips.concurrency_set(2)
        transform.set_libvips_threads(10_000)
        assert pyvips.concurrency_get() == 2  # left as the operator's variable made it
    finally:
        pyvips.concurrency_set(before)


# -- ResizedMemo: the formats of one original share its decode and resize ----------------------


def _png_bytes(pil_image) -> bytes:
    buf = io.BytesIO()
    pil_image.save(buf, "PNG")
    return buf.getvalue()


def test_resized_memo_shares_the_resize_and_gives_identical_output():
    import time

    src = _png_bytes(_photo(900, 600, seed=5))
    memo = transform.ResizedMemo(64 << 20)
    far = time.monotonic() + 60
    alone = {m: transform.process(src, m, False, 320, 75, 10**8, far).body for m in ("image/webp", "image/avif", "")}
    shared = {m: transform.process(src, m, False, 320, 75, 10**8, far, memo=memo, source_id="a").body
              for m in ("image/webp", "image/avif", "")}
    assert shared == alone
    assert (memo.hits, memo.misses) == (2, 1)
    transform.process(src, "image/webp", False, 640, 75, 10**8, far, memo=memo, source_id="a")
    transform.process(src, "image/webp", False, 320, 75, 10**8, far, memo=memo, source_id="b")
    assert (memo.hits, memo.misses) == (2, 3)  # other width, other original: new resizes


def test_resized_memo_hit_is_not_killed_by_an_earlier_requests_deadline():
    import time

    src = _png_bytes(_photo(900, 600, seed=6))
    memo = transform.ResizedMemo(64 << 20)
    deadline = time.monotonic() + 2.0
    transform.process(src, "image/webp", False, 320, 75, 10**8, deadline, memo=memo, source_id="x")
    time.sleep(max(0.0, deadline - time.monotonic()) + 0.1)  # the first request's deadline has passed
    r = transform.process(src, "image/avif", False, 320, 75, 10**8, time.monotonic() + 60, memo=memo, source_id="x")
    assert r.kind == "optimized" and r.mime == "image/avif" and memo.hits == 1


def test_resized_memo_is_bounded_and_skips_oversized_images():
    memo = transform.ResizedMemo(4 * 100 * 100 * 3)
    imgs = [(pyvips.Image.black(100, 100, bands=3) + i).cast("uchar") for i in range(6)]
    for i, im in enumerate(imgs):
        memo.put((str(i), 100), im)
    assert memo.bytes <= memo.max_bytes and memo.get(("0", 100)) is None and memo.get(("5", 100)) is not None
    memo.put(("big", 1), pyvips.Image.black(200, 200, bands=3))  # over a quarter of the budget
    assert memo.get(("big", 1)) is None


def test_source_id_names_exact_bytes_only():
    from imgopt.fetch import Original
    from imgopt.params import parse_request
    from imgopt.config import ImagesConfig
    from imgopt.service import _source_id

    req = parse_request("url=/a.jpg&w=640&q=75", "image/webp", ImagesConfig())
    strong = Original(b"abc", "image/jpeg", None, "ZXRhZw")
    assert _source_id(req, strong) != _source_id(req, Original(b"abcd", "image/jpeg", None, "ZXRhZw"))
    assert _source_id(req, Original(b"abc", "image/jpeg", None, "ZXRhZw", weak_etag=True)) is None


def test_resized_memo_never_decodes_a_huge_canvas_up_front():
    """Regression (fuzzer case): a 42-byte PNG whose header claims a tall canvas. Without the
    memo the encode budget refuses it at once (original served); the memo must not first
    decode it all into memory (that took 44 s and ended in a 504)."""
    import struct
    import time
    import zlib

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100, 2_000_000, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(b"\x00" * 301)) + chunk(b"IEND", b"")
    memo = transform.ResizedMemo(64 << 20)
    t0 = time.monotonic()
    r = transform.process(png, "image/avif", False, 640, 75, 268_402_689, t0 + 60, memo=memo, source_id="tall")
    assert r.kind == "fallback" and r.body == png
    assert time.monotonic() - t0 < 5
    assert memo.bytes == 0
