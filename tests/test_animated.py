"""Animated GIF, WebP and APNG re-encoded as resized animated WebP (imgopt/animated.py).

Outputs are decoded with Pillow: the frame count, every frame's duration and the loop count
must be kept, and the frames must look like the source's (composited) frames.
"""

from __future__ import annotations

import io
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image, ImageSequence

from conftest import ImgoptServer
from imgopt import animated
from imgopt.config import ConfigError, parse_images_config
from imgopt.extensions import AnimatedLimits

BASE = {"formats": ["image/avif", "image/webp"], "qualities": [1, 75], "autoQuality": True,
        "imageSizes": [48, 64, 128, 256]}
PAN_DURATIONS = [40, 80, 120, 60, 100, 70, 90, 50, 110, 40, 80, 130]


def pan_frames(w: int = 320, h: int = 200, n: int = 12) -> list[Image.Image]:
    """A camera pan across a photo-like landscape (the corpus generator's), one frame per step."""
    from imagecorpus import _photo

    scene = _photo(w * 2, h, seed=7, grain=3)
    return [scene.crop((i * w // n, 0, i * w // n + w, h)) for i in range(n)]


def make_animations(root: Path) -> dict[str, bytes]:
    """Realistic animations: a dithered 256-colour GIF (what GIF clips look like), the same as
    APNG, and as lossy animated WebP."""
    frames = pan_frames()
    out: dict[str, bytes] = {}
    gif = [f.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG) for f in frames]
    for name, imgs, fmt, kw in (
        ("pan.gif", gif, "GIF", {"loop": 0, "disposal": 1}),
        ("pan.png", frames, "PNG", {"loop": 0}),
        ("pan.webp", frames, "WEBP", {"loop": 0, "quality": 90}),
        ("pan-loop3.gif", gif[:4], "GIF", {"loop": 3}),
    ):
        buf = io.BytesIO()
        durations = PAN_DURATIONS[: len(imgs)]
        imgs[0].save(buf, fmt, save_all=True, append_images=imgs[1:], duration=durations, **kw)
        out[name] = buf.getvalue()
        (root / name).write_bytes(out[name])
    return out


@pytest.fixture(scope="module")
def media(corpus, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("animations")
    make_animations(root)
    for name in ("animated.gif", "animated.png", "animated.webp", "animated-odd.gif", "animated2.png", "test.png"):
        shutil.copy(corpus / name, root / name)
    (root / "bad").mkdir()
    shutil.copy(corpus / "bad" / "many-frames.gif", root / "bad" / "many-frames.gif")
    return root


@pytest.fixture(scope="module")
def server(media, tmp_path_factory) -> Iterator[ImgoptServer]:
    srv = ImgoptServer(tmp_path_factory.mktemp("imgopt-anim"), {**BASE, "animated": True},
                       "--local-root", str(media)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def limited(media, tmp_path_factory) -> Iterator[ImgoptServer]:
    srv = ImgoptServer(tmp_path_factory.mktemp("imgopt-anim-lim"),
                       {**BASE, "animated": {"maxFrames": 10, "maxPixels": 200_000}},
                       "--local-root", str(media)).start()
    yield srv
    srv.stop()


def frames_info(body: bytes) -> tuple[str, int, list[int], int | None, tuple[int, int]]:
    im = Image.open(io.BytesIO(body))
    durations = []
    for frame in ImageSequence.Iterator(im):
        frame.load()
        durations.append(int(frame.info.get("duration", 0)))
    return im.format, len(durations), durations, im.info.get("loop"), im.size


def composited(body: bytes, size: tuple[int, int]) -> list[Image.Image]:
    im = Image.open(io.BytesIO(body))
    return [f.convert("RGBA").resize(size, Image.Resampling.BOX) for f in ImageSequence.Iterator(im)]


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    # compare over white, so colour under transparency does not count
    def flat(im: Image.Image) -> bytes:
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB").tobytes()

    x, y = flat(a), flat(b)
    return sum(abs(p - q) for p, q in zip(x, y)) / len(x)


@pytest.mark.parametrize("name,width", [
    ("pan.gif", 128), ("pan.png", 128), ("pan.webp", 256), ("animated-odd.gif", 64), ("pan-loop3.gif", 64),
])
def test_animation_is_resized_and_reencoded_as_webp(server, media, name, width):
    original = (media / name).read_bytes()
    r = server.get(f"/{name}", width, 75, accept="image/webp")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/webp"
    assert r.headers["content-disposition"].endswith(f'.webp"')
    assert len(r.content) < len(original)
    src_fmt, src_n, src_durations, src_loop, src_size = frames_info(original)
    fmt, n, durations, loop, size = frames_info(r.content)
    assert fmt == "WEBP"
    assert n == src_n and durations == src_durations
    # GIF's NETSCAPE count is repeats after the first play, WebP's is plays: 3 repeats = 4 plays.
    assert loop == (src_loop + 1 if src_fmt == "GIF" and src_loop else src_loop or 0)
    assert size == (width, round(width * src_size[1] / src_size[0]))
    # Every frame looks like the source's frame (disposal, offsets and blending included).
    for i, (a, b) in enumerate(zip(composited(original, size), composited(r.content, size))):
        assert mean_abs_diff(a, b) < 12, f"frame {i}"


def test_avif_clients_get_animated_webp_when_they_accept_it(server, media):
    both = server.get("/pan.gif", 128, 75, accept="image/avif,image/webp,*/*")
    assert both.headers["content-type"] == "image/webp"
    avif_only = server.get("/pan.gif", 128, 75, accept="image/avif")  # a separate cache entry
    assert avif_only.headers["content-type"] == "image/gif"
    assert avif_only.content == (media / "pan.gif").read_bytes()
    again = server.get("/pan.gif", 128, 75, accept="image/avif,image/webp")
    assert again.headers["x-nextjs-cache"] == "HIT" and again.content == both.content


@pytest.mark.parametrize("name,accept,ctype", [
    ("pan.gif", "image/png,image/*", "image/gif"),  # no WebP: passed through as in Next.js
    ("pan.png", "", "image/png"),
    ("bad/many-frames.gif", "image/webp", "image/gif"),  # 2000 frames > maxFrames 1000
    ("animated.gif", "image/webp", "image/gif"),  # 608 bytes: the WebP would be larger
])
def test_passed_through(server, media, name, accept, ctype):
    r = server.get(f"/{name}", 48, 75, accept=accept)
    assert r.status_code == 200 and r.headers["content-type"] == ctype
    assert r.content == (media / name).read_bytes()


@pytest.mark.parametrize("name,reencoded", [
    ("pan.gif", False),  # 12 frames > maxFrames 10
    ("pan-loop3.gif", False),  # 4 x 320x200 = 256,000 pixels > maxPixels 200,000
    ("animated-odd.gif", True),  # 5 x 120x90: within both
])
def test_limits(limited, media, name, reencoded):
    r = limited.get(f"/{name}", 64, 75, accept="image/webp")
    assert r.status_code == 200
    assert (r.headers["content-type"] == "image/webp") is reencoded
    if not reencoded:
        assert r.content == (media / name).read_bytes()


def test_auto_quality_marker_uses_the_fallback_quality(server):
    auto = server.get("/pan.webp", 128, 1, accept="image/webp")
    fixed = server.get("/pan.webp", 128, 75, accept="image/webp")
    assert auto.headers["content-type"] == "image/webp" and auto.content == fixed.content


def test_still_images_are_unaffected(server):
    r = server.get("/test.png", 128, 75, accept="image/webp")
    assert r.headers["content-type"] == "image/webp"
    assert frames_info(r.content)[1] == 1


# -- in process --------------------------------------------------------------------------------


def test_probe_reads_headers_only(media):
    assert animated.probe((media / "pan.gif").read_bytes(), "image/gif") == (12, 320, 200)
    assert animated.probe((media / "pan.webp").read_bytes(), "image/webp") == (12, 320, 200)
    assert animated.probe((media / "pan.png").read_bytes(), "image/png") == (12, 320, 200)
    assert animated.probe((media / "animated-odd.gif").read_bytes(), "image/gif") == (5, 120, 90)
    t = time.perf_counter()
    assert animated.probe((media / "bad" / "many-frames.gif").read_bytes(), "image/gif")[0] == 2000
    assert time.perf_counter() - t < 1


def test_apng_without_pillow_passes_through(media, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    buf = (media / "pan.png").read_bytes()
    assert animated.reencode(buf, "image/png", 128, 75, 1000, 10**8, 10**9, time.monotonic() + 30) is None
    # GIF does not need Pillow
    gif = (media / "pan.gif").read_bytes()
    assert animated.reencode(gif, "image/gif", 128, 75, 1000, 10**8, 10**9, time.monotonic() + 30)


def test_input_pixel_limit_and_deadline(media):
    gif = (media / "pan.gif").read_bytes()
    assert animated.reencode(gif, "image/gif", 128, 75, 1000, 10**8, 320 * 200 - 1, time.monotonic() + 30) is None
    with pytest.raises(TimeoutError):
        animated.reencode(gif, "image/gif", 128, 75, 1000, 10**8, 10**9, time.monotonic() - 1)


def test_truncated_animation_passes_through(media):
    for name, mime in (("pan.gif", "image/gif"), ("pan.png", "image/png"), ("pan.webp", "image/webp")):
        buf = (media / name).read_bytes()
        cut = buf[: len(buf) // 3]
        out = animated.reencode(cut, mime, 128, 75, 1000, 10**8, 10**9, time.monotonic() + 30)
        if out is not None:  # a decoder may salvage the frames it has; it must still be an animation
            assert frames_info(out)[0] == "WEBP"


def test_config():
    assert parse_images_config({"animated": True}).animated == AnimatedLimits()
    assert parse_images_config({"animated": {"maxFrames": 5}}).animated == AnimatedLimits(max_frames=5)
    assert parse_images_config({}).animated is None
    for bad, msg in (({"maxFrames": 0}, "maxFrames: must be between"), ({"frames": 3}, "frames: unknown key"),
                     ("yes", "expected true, false or an object")):
        with pytest.raises(ConfigError, match=f"images.animated: {msg}"):
            parse_images_config({"animated": bad})
