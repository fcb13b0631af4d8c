#!/usr/bin/env python3
"""The benchmark corpus: 12 images generated in code, so that a fresh clone can build it anywhere.

    python benchmarks/make_corpus.py [DIR]          # build DIR (default $BENCH_CORPUS, else
                                                    # .bench-cache/corpus), unless already built
    python benchmarks/make_corpus.py --force [DIR]  # rebuild
    python benchmarks/make_corpus.py --index DIR    # your own images: write DIR/manifest.json for
                                                    # the image files in DIR, then BENCH_CORPUS=DIR

Nothing is downloaded: the photo-like and graphic content comes from the deterministic generators
of the test corpus (tests/imagecorpus.py: sky, clouds, textured mountain ridges, meadow, trees,
hard edges and per-pixel grain; flat colours, gradients and shapes), with fixed seeds. The mix
follows what an image optimizer meets on a site:

* 6 large JPEG photos, 1920 to 4000 px wide, one of them portrait (q85-92, 4:2:0 as cameras and
  CMSes store them);
* a PNG with a feathered alpha mask (product cut-out) and an RGBA illustration PNG;
* a small JPEG (480 px: never enlarged, so every width gives 480 px);
* a full-size WebP photo (q82, as a CMS stores a modern upload);
* a 12-frame animated GIF (480x320 pan across a photo);
* an SVG icon (both optimizers refuse SVG by default; compare_next.sh leaves it out).

manifest.json lists name, format, size, alpha, frames, bytes, and ``corpus_id``: the generator
version plus a hash of every file's bytes, which results quote so that runs on different corpora
are not compared by mistake (Pillow or libjpeg versions may change the bytes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import pyvips
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = "imgopt-bench-corpus-1"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".avif", ".gif", ".svg", ".tif", ".tiff", ".heic"}

# name, width, height, seed, grain, JPEG quality
PHOTOS = [
    ("photo1.jpg", 2560, 1600, 101, 6, 90),   # the warm-phase image (w=1080 webp)
    ("photo2.jpg", 4000, 2667, 102, 8, 92),   # a camera-sized upload
    ("photo3.jpg", 1920, 1280, 103, 4, 88),
    ("photo4.jpg", 3200, 1800, 104, 5, 90),
    ("photo5.jpg", 2048, 1536, 105, 7, 85),
    ("portrait.jpg", 1600, 2400, 106, 6, 90),
]

ICON_SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 256 256">
  <defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">
    <stop offset="0" stop-color="#2a6fdb"/><stop offset="1" stop-color="#7bc96f"/></linearGradient></defs>
  <rect x="16" y="16" width="224" height="224" rx="40" fill="url(#g)"/>
  <path d="M48 192 L104 104 L144 160 L168 128 L208 192 Z" fill="#fff" fill-opacity="0.9"/>
  <circle cx="176" cy="80" r="20" fill="#ffd84a"/>
</svg>
"""


def _generators():
    sys.path.insert(0, str(ROOT))
    from tests.imagecorpus import _graphic, _photo  # the project's deterministic generators

    return _photo, _graphic


def default_dir() -> Path:
    cache = Path(os.environ.get("BENCH_CACHE", ROOT / ".bench-cache"))
    return Path(os.environ.get("BENCH_CORPUS", cache / "corpus"))


def _record(path: Path, note: str) -> dict:
    source = GENERATOR if note else "user"
    try:
        im = pyvips.Image.new_from_file(str(path), access="sequential")
    except pyvips.Error:
        if path.suffix != ".svg":
            raise
        # a libvips without SVG support: the size our own icon declares
        return {"name": path.name, "format": "svg", "width": 256, "height": 256, "bands": 4, "has_alpha": True,
                "pages": 1, "bytes": path.stat().st_size, "source": source, "note": note}
    fmt = im.get("vips-loader").replace("load", "").replace("_source", "").replace("_buffer", "")
    fields = im.get_fields()
    return {
        "name": path.name,
        "format": "avif" if fmt == "heif" and path.suffix.lower() == ".avif" else fmt,
        "width": im.width,
        "height": im.get("page-height") if "page-height" in fields else im.height,
        "bands": im.bands,
        "has_alpha": bool(im.hasalpha()),
        "pages": im.get("n-pages") if "n-pages" in fields else 1,
        "bytes": path.stat().st_size,
        "source": source,
        "note": note,
    }


def _corpus_id(out: Path, names: list[str]) -> str:
    h = hashlib.sha256()
    for n in sorted(names):
        h.update(n.encode() + b"\0" + hashlib.sha256((out / n).read_bytes()).digest())
    return h.hexdigest()[:12]


def _write_manifest(out: Path, images: list[dict], generator: str) -> dict:
    manifest = {"generator": generator, "corpus_id": f"{generator}/{_corpus_id(out, [m['name'] for m in images])}",
                "images": images}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def build(out: Path) -> dict:
    """Generate the corpus into `out` (files this script owns are overwritten), write manifest.json."""
    _photo, _graphic = _generators()
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for name, w, h, seed, grain, q in PHOTOS:
        _photo(w, h, seed=seed, grain=grain).save(out / name, "JPEG", quality=q)
        images.append(_record(out / name, f"generated photo, seed {seed}, grain {grain}, q{q}"))

    # PNG with real alpha: a photo with a feathered elliptical mask (product cut-out style)
    im = pyvips.Image.new_from_memory(_photo(1600, 1067, seed=107, grain=5).tobytes(), 1600, 1067, 3, "uchar")
    w, h = im.width, im.height
    xy = pyvips.Image.xyz(w, h)
    dx = (xy[0] - w / 2) / (w * 0.45)
    dy = (xy[1] - h / 2) / (h * 0.45)
    d = (dx * dx + dy * dy) ** 0.5  # 0 at the centre, 1 at the ellipse's edge
    alpha = ((1.15 - d) / 0.15 * 255).cast("float")
    alpha = (alpha > 255).ifthenelse(255, (alpha < 0).ifthenelse(0, alpha)).cast("uchar")
    im.bandjoin(alpha).copy(interpretation="srgb").pngsave(str(out / "cutout-alpha.png"), compression=6)
    images.append(_record(out / "cutout-alpha.png", "generated photo + feathered elliptical alpha mask"))

    # RGBA illustration: flat colours, gradients, shapes, a transparent margin
    g = _graphic(2000, 1250, seed=108).convert("RGBA")
    mask = Image.new("L", g.size, 0)
    mask.paste(255, (60, 60, g.width - 60, g.height - 60))
    g.putalpha(mask)
    g.save(out / "graphic.png", "PNG", compress_level=6)
    images.append(_record(out / "graphic.png", "generated RGBA illustration"))

    # small JPEG (< 640 px: never enlarged)
    _photo(480, 320, seed=109, grain=3).save(out / "small.jpg", "JPEG", quality=85)
    images.append(_record(out / "small.jpg", "generated photo, 480 px, q85"))

    # full-size WebP photo
    p = _photo(2400, 1600, seed=110, grain=6)
    pyvips.Image.new_from_memory(p.tobytes(), p.width, p.height, 3, "uchar").webpsave(str(out / "photo.webp"), Q=82)
    images.append(_record(out / "photo.webp", "generated photo as WebP q82"))

    # animated GIF: 12 frames panning across a photo, 480x320
    base = _photo(1600, 1000, seed=111, grain=4)
    bw, bh = base.size
    cw, ch = int(bh * 1.5 * 0.8), int(bh * 0.8)
    frames = []
    for i in range(12):
        x = int((bw - cw) * i / 11)
        y = int((bh - ch) * (0.5 + 0.4 * ((i % 6) / 5 - 0.5)))
        frames.append(base.crop((x, y, x + cw, y + ch)).resize((480, 320), Image.Resampling.LANCZOS).quantize(colors=256))
    frames[0].save(out / "pan-anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    images.append(_record(out / "pan-anim.gif", "12-frame pan across a generated photo, 480x320"))

    (out / "icon.svg").write_text(ICON_SVG)
    images.append(_record(out / "icon.svg", "hand-written SVG icon"))
    return _write_manifest(out, images, GENERATOR)


def index(out: Path) -> dict:
    """manifest.json for the image files already in `out` (a corpus of your own)."""
    images = []
    for p in sorted(out.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            try:
                images.append(_record(p, ""))
            except pyvips.Error as e:
                print(f"skipped {p.name}: {str(e).splitlines()[0]}", file=sys.stderr)
    if not images:
        sys.exit(f"no readable images in {out}")
    return _write_manifest(out, images, "user")


def ensure(out: Path, force: bool = False) -> dict:
    """The corpus at `out`, built when missing or made by another generator version."""
    mf = out / "manifest.json"
    if not force and mf.is_file():
        manifest = json.loads(mf.read_text())
        if manifest.get("generator") in (GENERATOR, "user") or "generator" not in manifest:
            return manifest  # ours and current, a user's own (--index), or an older external corpus
    return build(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", type=Path, default=None)
    ap.add_argument("--force", action="store_true", help="rebuild even when manifest.json is current")
    ap.add_argument("--index", action="store_true", help="index your own images in DIR instead of generating")
    a = ap.parse_args()
    out = (a.dir or default_dir()).resolve()
    if a.index:
        manifest = index(out)
    else:
        before = (out / "manifest.json").is_file()
        manifest = ensure(out, a.force)
        if before and not a.force and manifest.get("generator") != GENERATOR:
            print(f"{out}: kept the existing corpus ({manifest.get('generator', 'no generator recorded')})")
    ims = manifest["images"]
    print(f"{'name':20} {'fmt':5} {'w x h':>11} {'pages':>5} {'bytes':>10}")
    for m in ims:
        print(f"{m['name']:20} {m['format']:5} {m['width']:>5}x{m['height']:<5} {m['pages']:>5} {m['bytes']:>10}")
    print(f"{len(ims)} images, {sum(m['bytes'] for m in ims)} bytes, corpus {manifest.get('corpus_id')} -> {out}")


if __name__ == "__main__":
    main()
