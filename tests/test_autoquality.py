"""Perceptual auto quality (imgopt/autoquality.py): q=<marker> gets the smallest encoding whose
SSIM against the resized image reaches the target.

Every auto-quality response is decoded with Pillow and its SSIM is computed here with the
pure-Python twin against the resized reference (made with imgopt's own libvips resize, the
only way to get the very same reference pixels).
"""

from __future__ import annotations

import io
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Iterator

import pytest
import pyvips
from PIL import Image

from conftest import ImgoptServer
from imgopt import autoquality, pykernels, transform
from imgopt.config import ConfigError, parse_images_config
from imgopt.extensions import AutoQuality, for_request
from imgopt.params import parse_request

TARGET = 0.93
CONFIG = {
    "qualities": [1, 50, 75],
    "formats": ["image/avif", "image/webp"],
    "deviceSizes": [640, 1080],
    "imageSizes": [128, 256],
    "autoQuality": {"target": TARGET},
}
MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


@pytest.fixture(scope="module")
def server(corpus, tmp_path_factory) -> Iterator[ImgoptServer]:
    srv = ImgoptServer(tmp_path_factory.mktemp("imgopt-aq"), CONFIG, "--local-root", str(corpus)).start()
    yield srv
    srv.stop()


def reference(buf: bytes, width: int, output: str) -> pyvips.Image:
    """The resized image the service encodes (JPEG: flattened on white), in memory."""
    job = transform.Job(buf, output, width, 75, 10**10, time.monotonic() + 60)
    return autoquality.flatten_for(output, transform._to_srgb8(transform._load(job))).copy_memory()


def pillow_ssim(body: bytes, ref: pyvips.Image) -> float:
    im = Image.open(io.BytesIO(body))
    im.load()
    im = im.convert(MODES[ref.bands])
    assert im.size == (ref.width, ref.height)
    return pykernels.ssim(ref.write_to_memory(), im.tobytes(), ref.width, ref.height, ref.bands)


CASES = [
    ("mountains.jpg", 640, "image/webp", "image/webp"),
    ("mountains.jpg", 640, "image/avif,image/webp", "image/avif"),
    ("mountains.jpg", 640, "image/jpeg", "image/jpeg"),
    ("test.jpg", 256, "image/webp", "image/webp"),
    ("exif-rotated.jpg", 128, "image/avif", "image/avif"),
    ("alpha.png", 256, "image/webp", "image/webp"),
    ("alpha.png", 128, "image/avif", "image/avif"),
    ("test.png", 256, "image/png", "image/png"),
    ("gray-alpha.png", 128, "image/webp", "image/webp"),
    ("cmyk.jpg", 256, "image/jpeg", "image/jpeg"),
]


@pytest.mark.parametrize("name,width,accept,ctype", CASES)
def test_auto_quality_output_reaches_the_target(server, corpus, name, width, accept, ctype):
    r = server.get(f"/{name}", width, 1, accept=accept)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == ctype
    ref = reference((corpus / name).read_bytes(), width, ctype)
    assert pillow_ssim(r.content, ref) >= TARGET
    # ... and it is not just the largest encoding: below the top of the range unless needed.
    top = transform.ENCODERS[ctype](ref, AutoQuality().max_quality)
    assert len(r.content) <= len(top)


def test_auto_quality_is_cached_per_format_and_apart_from_fixed_quality(server):
    a = server.get("/test.jpg", 256, 1, accept="image/webp")
    b = server.get("/test.jpg", 256, 1, accept="image/webp")
    assert a.headers["x-nextjs-cache"] in ("MISS", "HIT") and b.headers["x-nextjs-cache"] == "HIT"
    assert a.content == b.content and a.headers["etag"] == b.headers["etag"]
    fixed = server.get("/test.jpg", 256, 75, accept="image/webp")
    assert fixed.headers["content-type"] == "image/webp" and fixed.content != a.content
    avif = server.get("/test.jpg", 256, 1, accept="image/avif")
    assert avif.headers["content-type"] == "image/avif"


def test_smooth_image_gets_fewer_bytes_than_q75(server, corpus):
    """A flat graphic passes the target at the floor quality: far smaller than q=75."""
    auto = server.get("/alpha.png", 256, 1, accept="image/webp")
    fixed = server.get("/alpha.png", 256, 75, accept="image/webp")
    assert len(auto.content) < len(fixed.content)


# -- the search, in process ------------------------------------------------------------------------


def _search(buf: bytes, width: int, output: str, aq: AutoQuality, deadline: float = 60):
    img = autoquality.flatten_for(output, transform._to_srgb8(transform._load(
        transform.Job(buf, output, width, 75, 10**10, time.monotonic() + 60))))
    return autoquality.search(img, transform.ENCODERS[output], aq, time.monotonic() + deadline)


@pytest.mark.parametrize("output,target", [("image/webp", 0.94), ("image/jpeg", 0.95), ("image/webp", 0.9)])
def test_search_lands_next_to_the_smallest_passing_quality(corpus, output, target):
    """Against an exhaustive scan: within the bisection's resolution of the true answer."""
    aq = AutoQuality(target=target)
    buf = (corpus / "test.jpg").read_bytes()
    o = _search(buf, 256, output, aq)
    assert len(o.trials) <= aq.max_encodes
    assert o.ssim >= target
    ref = autoquality.Reference(reference(buf, 256, output))
    scan = {q: ref.ssim(transform.ENCODERS[output](ref.image, q)) for q in range(aq.min_quality, aq.max_quality + 1)}
    best = min(q for q, s in scan.items() if s >= target)
    assert best <= o.quality <= best + 3, (o.quality, best, [(t.quality, t.ssim) for t in o.trials])
    assert o.ssim == pytest.approx(scan[o.quality], abs=1e-12)


def test_unreachable_target_returns_the_best_trial_within_budget(corpus):
    aq = AutoQuality(target=0.99999)
    o = _search((corpus / "mountains.jpg").read_bytes(), 256, "image/webp", aq)
    assert len(o.trials) == aq.max_encodes
    assert o.ssim == max(t.ssim for t in o.trials) < aq.target
    assert o.quality == max(t.quality for t in o.trials)


def test_easy_image_jumps_to_the_floor(corpus):
    aq = AutoQuality(target=0.9)
    o = _search((corpus / "tall.png").read_bytes(), 48, "image/webp", aq)
    assert [t.quality for t in o.trials] == [(aq.min_quality + aq.max_quality) // 2, aq.min_quality]
    assert o.quality == aq.min_quality


def test_search_respects_the_deadline(corpus):
    o = _search((corpus / "mountains.jpg").read_bytes(), 256, "image/webp", AutoQuality(), deadline=-1)
    assert len(o.trials) == 1  # one encode is always made, then it stops


def test_slow_trials_stop_before_the_deadline(corpus, monkeypatch):
    """Trials that take 0.3 s each under a 1 s deadline: no trial starts that would end late.

    The search reads a clock that only the encoder moves on (0.3 s per trial), so the time a
    trial takes is exactly 0.3 s however busy the machine is.
    """
    buf = (corpus / "test.jpg").read_bytes()
    img = autoquality.flatten_for("image/webp", transform._to_srgb8(transform._load(
        transform.Job(buf, "image/webp", 128, 75, 10**10, time.monotonic() + 60))))
    now = [1000.0]
    clock = SimpleNamespace(monotonic=lambda: now[0])
    monkeypatch.setattr(autoquality, "time", clock)

    def slow(im, q):
        now[0] += 0.3
        return transform.ENCODERS["image/webp"](im, q)

    start = clock.monotonic()
    o = autoquality.search(img, slow, AutoQuality(target=0.99999), start + 1.0)
    assert 1 <= len(o.trials) <= 3
    assert clock.monotonic() - start < 1.0


def test_gif_and_tiff_use_the_fallback_quality(corpus):
    img = transform._to_srgb8(pyvips.Image.new_from_buffer((corpus / "test.gif").read_bytes(), ""))
    calls = []
    autoquality.encode(img, "image/gif", lambda im, q: calls.append(q) or b"x", AutoQuality(), time.monotonic() + 9)
    assert calls == [AutoQuality().fallback_quality]


# -- config and the marker ------------------------------------------------------------------------


def test_config_parsing():
    cfg = parse_images_config({"qualities": [1, 75], "autoQuality": True})
    assert cfg.auto_quality == AutoQuality()
    cfg = parse_images_config({"qualities": [5, 75], "autoQuality": {"target": 0.99, "marker": 5, "min": 30, "max": 95}})
    assert cfg.auto_quality == replace(AutoQuality(), target=0.99, marker=5, min_quality=30, max_quality=95)
    assert parse_images_config({"autoQuality": False}).auto_quality is None
    assert parse_images_config({}).auto_quality is None


@pytest.mark.parametrize("images,message", [
    ({"autoQuality": True}, "images.autoQuality: marker 1 is not in images.qualities [75]"),
    ({"qualities": [1], "autoQuality": {"target": 2}}, "images.autoQuality: target: must be between"),
    ({"qualities": [1], "autoQuality": {"target": "high"}}, "images.autoQuality: target: expected a number"),
    ({"qualities": [1], "autoQuality": {"min": 80, "max": 50}}, "images.autoQuality: min (80) is more than max (50)"),
    ({"qualities": [1], "autoQuality": {"tagret": 0.9}}, "images.autoQuality: tagret: unknown key"),
    ({"qualities": [1], "autoQuality": 0.9}, "images.autoQuality: expected true, false or an object"),
])
def test_config_errors(images, message):
    with pytest.raises(ConfigError) as e:
        parse_images_config(images)
    assert str(e.value).startswith(message)


def test_marker_means_auto_only_when_configured():
    on = parse_images_config({"qualities": [1, 75], "autoQuality": True})
    off = parse_images_config({"qualities": [1, 75]})
    req = parse_request("url=/a.png&w=640&q=1", "image/webp", on)
    assert for_request(on, req).auto_quality == on.auto_quality
    assert for_request(off, parse_request("url=/a.png&w=640&q=1", "image/webp", off)).auto_quality is None
    assert for_request(on, parse_request("url=/a.png&w=640&q=75", "image/webp", on)).auto_quality is None
