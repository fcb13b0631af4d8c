"""A real Next.js 16.5 site through imgopt, in every deployment shape, in a real browser.

The site is tests/e2e/site (app router, Next.js pinned in its package-lock.json), with
``deploymentId`` set as the Next.js self-hosting guide recommends. It is built once for each
shape of the matrix

    {static export + the imgopt loader, drop-in behind nginx} x {Turbopack, webpack}
    x {no basePath, basePath '/shop'}

* **export**: ``output: 'export'`` with ``images.loaderFile`` = loader/index.js and
  ``NEXT_PUBLIC_IMGOPT_URL`` pointing at imgopt. ``out/`` is served by a plain static server
  (under the basePath); imgopt reads local images from ``--local-root out``.
* **dropin**: ``next start`` with Next's default loader, behind nginx configured with the
  recipe in docs/nextjs.md, run as it is written there (only the ports change).
* **loader** (webpack, basePath): ``next start`` with no proxy and the imgopt loader, as in
  the export; imgopt reads local images from the Next server (``--origin``).
* **path** (Turbopack, basePath): ``next start`` with no proxy and Next's default loader sent
  to imgopt's own address by ``images.path`` (``http://127.0.0.1:PORT/optimize``); imgopt reads
  local images from the Next server (``--origin``).
* **standalone** (Turbopack, basePath): ``output: 'standalone'``, its folder copied away with
  ``public/`` and ``static/`` as Next's docs say and run by ``node server.js``, behind the same
  nginx; imgopt reads only the build (``--next-config`` the standalone folder), not the source.

imgopt reads its ``images`` settings from the site's own next.config.js (``--next-config``).
The pages use static imports with ``placeholder="blur"``, ``fill`` + ``sizes``, ``priority``, a
``public/`` path with a space, a remote image, ``quality`` with two allowed qualities,
``getImageProps()`` building a ``<picture>``, and SVGs with and without ``unoptimized``.
Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) opens every page at 375
and 1440 px wide with DPR 1 and 2 and checks that every image completed; that every optimized
image came from imgopt (``X-Request-Id``, which Next does not send), with 200 and AVIF by its
magic bytes; that the decoded width is min(the srcset candidate, the intrinsic width); that
the candidate is the one the ``sizes`` rule implies; that the blur placeholder is gone; that
``dpl`` travels as Next's own ``&dpl=`` parameter, never inside ``url=``; and that SVGs are
loaded as they are, never through imgopt. A screenshot and a JSON report of every visit go to
tests/e2e/artifacts/.

Nothing is skipped when a tool is missing: the tests fail and say what to install
(.ci/run installs chromium and nginx-light; the site's node modules come from ``npm ci``,
run here when node_modules is missing or older than package-lock.json).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import httpx
import pytest
from PIL import Image

from conftest import ROOT, ImgoptServer, free_port, nginx_conf
from imagecorpus import _graphic, _photo, _test_svg
from origin import Origin

SITE = ROOT / "tests" / "e2e" / "site"
ARTIFACTS = ROOT / "tests" / "e2e" / "artifacts"
NEXT_BIN = SITE / "node_modules" / "next" / "dist" / "bin" / "next"
DOCS_NEXTJS = ROOT / "docs" / "nextjs.md"
CHROMIUM = os.environ.get("IMGOPT_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
INSTALL_HINT = ("install it (.ci/run does: apt-get install chromium nginx-light; Next.js 16 also needs "
                "Node.js >= 20.9 with npm)")

# The site's settings (tests/e2e/site/next.config.js): Next 16's default sizes, two qualities.
DEVICE_SIZES = [640, 750, 828, 1080, 1200, 1920, 2048, 3840]
IMAGE_SIZES = [32, 48, 64, 96, 128, 256, 384]
ALL_WIDTHS = set(DEVICE_SIZES) | set(IMAGE_SIZES)
DEPLOYMENT_ID = "e2e-v1"
BASE_PATH = "/shop"  # the basePath of the docs' nginx recipe

# Generous limits: this proves correctness, and the box may be busy (AVIF encodes are slow).
IMGOPT_ARGS = ("--transform-timeout", "60", "--fetch-timeout", "30")

VIEWPORTS = {"375@1": (375, 800, 1), "375@2": (375, 800, 2), "1440@1": (1440, 900, 1), "1440@2": (1440, 900, 2)}


@dataclass(frozen=True)
class Shape:
    mode: str      # "export" | "loader" | "dropin" | "path" | "standalone"
    bundler: str   # "turbopack" | "webpack"
    base_path: str  # "" | "/shop"

    @property
    def id(self) -> str:
        return f"{self.mode}-{self.bundler}-{'basepath' if self.base_path else 'root'}"


SHAPES = [Shape(m, b, bp) for m in ("export", "dropin") for b in ("turbopack", "webpack") for bp in ("", BASE_PATH)]
# `next start` with no proxy, Next's default loader pointed at imgopt's own URL by images.path
SHAPES.append(Shape("path", "turbopack", BASE_PATH))
# `next start` with the imgopt loader (loaderFile, not an export), no proxy
SHAPES.append(Shape("loader", "webpack", BASE_PATH))
# `output: 'standalone'` behind the same nginx, imgopt reading only the build's resolved config
SHAPES.append(Shape("standalone", "turbopack", BASE_PATH))


def _jpeg(w: int, h: int, seed: int) -> Callable[[], bytes]:
    def make() -> bytes:
        out = io.BytesIO()
        _photo(w, h, seed=seed).save(out, "JPEG", quality=88)
        return out.getvalue()
    return make


def _png(w: int, h: int, seed: int) -> Callable[[], bytes]:
    def make() -> bytes:
        out = io.BytesIO()
        _graphic(w, h, seed=seed).save(out, "PNG")
        return out.getvalue()
    return make


# Site file -> (maker, intrinsic width). Generated, not committed (see site/.gitignore). The
# intrinsic widths are below the largest srcset candidates on purpose: imgopt never enlarges,
# so the decoded width is min(candidate, intrinsic).
SITE_IMAGES: dict[str, tuple[Callable[[], bytes], int]] = {
    "media/hero.jpg": (_jpeg(1600, 1067, 1600), 1600),
    "media/still.jpg": (_jpeg(1200, 800, 1200), 1200),
    "public/img/dir with space/photo.jpg": (_jpeg(900, 600, 900), 900),
    "public/img/photo.jpg": (_jpeg(700, 700, 700), 700),
    "public/img/wide.jpg": (_jpeg(1600, 500, 1601), 1600),
    "public/img/narrow.jpg": (_jpeg(800, 800, 800), 800),
    "public/img/tile.png": (_png(400, 400, 7), 400),
    "public/img/äöüščří.png": (_png(300, 300, 3), 300),
    "public/img/logo.svg": (_test_svg, 400),
}
REMOTE_IMAGES: dict[str, tuple[Callable[[], bytes], int]] = {"large.jpg": (_jpeg(1200, 800, 1201), 1200)}


@dataclass(frozen=True)
class Img:
    src: str            # what the page gave <Image>; {bp} = basePath, {remote} = remote origin
    width: int          # intrinsic width of the file
    quality: int = 75
    blur: bool = False  # placeholder="blur"
    svg: bool = False   # loaded as it is, never through imgopt
    prefix: bool = False  # a static import: src is a prefix (the file name has a hash)


# Page -> {img id: what it shows}.
PAGES: dict[str, dict[str, Img]] = {
    "/": {
        "hero": Img("{bp}/_next/static/media/hero.", 1600, blur=True, prefix=True),
        "fixed": Img("{bp}/img/dir with space/photo.jpg", 900),
        "q50": Img("{bp}/img/tile.png", 400, quality=50),
        "logo": Img("{bp}/img/logo.svg", 400, svg=True),
        "logo-unopt": Img("{bp}/img/logo.svg", 400, svg=True),
    },
    "/gallery": {
        "remote": Img("{remote}/large.jpg", 1200),
        "static": Img("{bp}/_next/static/media/still.", 1200, blur=True, prefix=True),
        "tile-png": Img("{bp}/img/tile.png", 400),
        "tile-unicode": Img("{bp}/img/äöüščří.png", 300),
        "tile-jpg": Img("{bp}/img/photo.jpg", 700),
        # <picture>: the <source> (wide.jpg) from 800 px up, the <img> (narrow.jpg) below.
        "picture": Img("{bp}/img/narrow.jpg", 800),
    },
}
PICTURE_WIDE = Img("{bp}/img/wide.jpg", 1600)

IMAGE_EXT = re.compile(r"\.(jpe?g|png|gif|webp|avif|svg|ico|bmp|tiff?)$", re.I)
CHROMIUM_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"


# -- tools and processes -----------------------------------------------------------------------

def need(path_or_name: str, what: str) -> str:
    found = shutil.which(path_or_name) or (path_or_name if os.access(path_or_name, os.X_OK) else None)
    if not found:
        for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
            if os.access(os.path.join(d, path_or_name), os.X_OK):
                return os.path.join(d, path_or_name)
        pytest.fail(f"{what} ({path_or_name}) is not installed; {INSTALL_HINT}", pytrace=False)
    return found


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_logged(argv: list[str], log: Path, *, cwd: Path, env: dict[str, str], timeout: float, what: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log, "wb") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            r = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{what} did not finish within {timeout:g} s; log {log}:\n{tail(log)}", pytrace=False)
        out.write(f"[{what}: exit {r.returncode} after {time.monotonic() - t0:.1f} s]\n".encode())
    if r.returncode != 0:
        pytest.fail(f"{what} failed (exit {r.returncode}); log {log}:\n{tail(log)}", pytrace=False)


class Proc:
    """A long-running child in its own process group; stop() ends exactly that group."""

    def __init__(self, argv: list[str], log: Path, *, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_http(self, url: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args[0]} exited with {self.proc.returncode}:\n{tail(self.log_path)}")
            try:
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"{url} did not answer within {timeout} s:\n{tail(self.log_path)}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class StaticServer:
    """out/ over HTTP on 127.0.0.1 under a basePath, like a plain static host: /gallery
    serves gallery.html; paths outside the basePath are 404."""

    def __init__(self, root: Path, base_path: str = "") -> None:
        self.root = root
        self.paths: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=str(root), **kw)

            def translate_path(self, path: str) -> str:
                server.paths.append(path)
                if base_path:
                    if path != base_path and not path.startswith(base_path + "/"):
                        return str(root / "does-not-exist")
                    path = path[len(base_path):] or "/"
                fs = super().translate_path(path)
                if not os.path.isfile(fs) and os.path.isfile(fs.rstrip("/") + ".html"):
                    return fs.rstrip("/") + ".html"
                return fs

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def docs_nginx_recipe() -> str:
    """The drop-in nginx recipe of docs/nextjs.md, exactly as a user copies it."""
    text = DOCS_NEXTJS.read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", text, re.S)
    recipes = [b for b in blocks if "upstream imgopt" in b and "upstream nextjs" in b]
    assert len(recipes) == 1, f"docs/nextjs.md should have one drop-in nginx recipe, found {len(recipes)}"
    return recipes[0]


def nginx_from_recipe(recipe: str, *, port: int, imgopt_port: int, next_port: int) -> str:
    for old in ("listen 80;", "127.0.0.1:3001", "127.0.0.1:3000"):
        assert recipe.count(old) == 1, f"the docs' nginx recipe no longer has exactly one {old!r}"
    return (recipe.replace("listen 80;", f"listen 127.0.0.1:{port};")
            .replace("127.0.0.1:3001", f"127.0.0.1:{imgopt_port}")
            .replace("127.0.0.1:3000", f"127.0.0.1:{next_port}"))


# -- the site: node modules, images, builds ----------------------------------------------------

def node_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXT_PUBLIC_IMGOPT_", "IMGOPT_E2E_"))}
    env.update(NEXT_TELEMETRY_DISABLED="1", **extra)
    env.pop("NODE_ENV", None)
    return env


def write_images(root: Path, images: dict[str, tuple[Callable[[], bytes], int]]) -> None:
    """Write generated images (only files whose bytes changed, so builds stay cached)."""
    for rel, (make, _width) in images.items():
        data = make()
        dest = root / rel
        if not dest.is_file() or dest.read_bytes() != data:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)


@pytest.fixture(scope="session")
def site_deps() -> Path:
    """node_modules from package-lock.json (`npm ci` when missing or stale) and the images."""
    need("node", "Node.js")
    npm = need("npm", "npm")
    lock = (SITE / "package-lock.json").read_bytes()
    stamp = SITE / "node_modules" / ".imgopt-e2e-lock.sha256"
    digest = hashlib.sha256(lock).hexdigest()
    if not NEXT_BIN.is_file() or not stamp.is_file() or stamp.read_text().strip() != digest:
        run_logged([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], ARTIFACTS / "npm-ci.log",
                   cwd=SITE, env=node_env(), timeout=900, what="npm ci (tests/e2e/site)")
        stamp.write_text(digest + "\n")
    write_images(SITE, SITE_IMAGES)
    return SITE


@pytest.fixture(scope="session")
def remote_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    """The remote image's origin (its own, so no other test's settings reach it)."""
    root = tmp_path_factory.mktemp("e2e-remote")
    write_images(root, REMOTE_IMAGES)
    with Origin(root=root) as o:
        yield o


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    need(CHROMIUM, "Chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=need(CHROMIUM, "Chromium"), headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@dataclass
class Stack:
    shape: Shape
    site_url: str           # where the browser opens pages (basePath included)
    site_origin: str        # scheme://host:port of the site
    image_endpoint: str     # every optimized image request starts with this + "?"
    imgopt: ImgoptServer
    origin: Origin          # the remote image's origin
    stop: Callable[[], None]
    extra: dict[str, Any] = field(default_factory=dict)


def shape_env(shape: Shape, remote: Origin) -> dict[str, str]:
    return {"IMGOPT_E2E_MODE": shape.mode, "IMGOPT_E2E_BASE_PATH": shape.base_path,
            "IMGOPT_E2E_DIST": f".next-{shape.id}", "IMGOPT_E2E_REMOTE_ORIGIN": remote.base_url,
            "IMGOPT_E2E_DEPLOYMENT_ID": DEPLOYMENT_ID}


def next_build(shape: Shape, env: dict[str, str]) -> float:
    argv = [need("node", "Node.js"), str(NEXT_BIN), "build"] + (["--webpack"] if shape.bundler == "webpack" else [])
    t0 = time.monotonic()
    run_logged(argv, ARTIFACTS / f"next-build-{shape.id}.log", cwd=SITE, env=node_env(**env), timeout=900,
               what=f"next build ({shape.id})")
    return time.monotonic() - t0


def start_export(shape: Shape, remote: Origin, tmp: Path) -> Stack:
    env = shape_env(shape, remote)
    out = tmp / "out"
    # The port is chosen before the build: NEXT_PUBLIC_IMGOPT_URL is baked into the pages.
    imgopt = ImgoptServer(tmp / "imgopt", None, "--next-config", str(SITE / "next.config.js"),
                          "--local-root", str(out), *IMGOPT_ARGS, env=env)
    for stale in (SITE / "out", SITE / env["IMGOPT_E2E_DIST"]):
        shutil.rmtree(stale, ignore_errors=True)
    build_s = next_build(shape, {**env, "NEXT_PUBLIC_IMGOPT_URL": imgopt.url})
    # An export lands in out/, or in distDir when one is set; copy it away from later builds.
    built = SITE / "out" if (SITE / "out" / "index.html").is_file() else SITE / env["IMGOPT_E2E_DIST"]
    shutil.copytree(built, out)
    imgopt.start()
    static = StaticServer(out, shape.base_path)

    def stop() -> None:
        static.stop()
        imgopt.stop()

    return Stack(shape, static.url + shape.base_path, static.url, imgopt.url + shape.base_path + "/_next/image",
                 imgopt, remote, stop, {"static": static, "build_s": build_s, "out": out})


def build_for_next_start(shape: Shape, env: dict[str, str], next_port: int) -> tuple[float, Path, list[str]]:
    """A fresh build of the site in the shape's distDir for `next start`: the build's seconds,
    Next's own image cache folder (emptied), and the command that serves it on next_port."""
    dist = SITE / env["IMGOPT_E2E_DIST"]
    shutil.rmtree(dist, ignore_errors=True)
    build_s = next_build(shape, env)
    next_images = dist / "cache" / "images"
    shutil.rmtree(next_images, ignore_errors=True)
    return build_s, next_images, [need("node", "Node.js"), str(NEXT_BIN), "start", "-H", "127.0.0.1", "-p", str(next_port)]


def start_dropin(shape: Shape, remote: Origin, tmp: Path) -> Stack:
    env = shape_env(shape, remote)
    next_port = free_port()
    build_s, next_images, server = build_for_next_start(shape, env, next_port)
    return behind_nginx(shape, remote, tmp, server, SITE, node_env(**env), next_port,
                        ["--next-config", str(SITE / "next.config.js")], env, next_images, build_s)


def start_images_path(shape: Shape, remote: Origin, tmp: Path) -> Stack:
    """`next start` with Next's default loader and `images.path` set to imgopt's own URL (the
    docs' set-up without a proxy): the browser asks imgopt at /optimize, imgopt reads local
    images from the Next server."""
    env = shape_env(shape, remote)
    next_port = free_port()
    # The port is chosen before the build: images.path is baked into the pages.
    imgopt = ImgoptServer(tmp / "imgopt", None, "--next-config", str(SITE / "next.config.js"),
                          "--origin", f"http://127.0.0.1:{next_port}", *IMGOPT_ARGS)
    env["IMGOPT_E2E_IMAGES_PATH"] = imgopt.url + "/optimize"
    imgopt.env.update(env)  # imgopt evaluates the same next.config.js, so it sees the same path
    return next_start_beside(shape, remote, env, imgopt, next_port, imgopt.url + "/optimize")


def start_loader(shape: Shape, remote: Origin, tmp: Path) -> Stack:
    """`next start` with the imgopt loader (`images.loaderFile`, as in the export, but served by
    Next): the browser asks imgopt at NEXT_PUBLIC_IMGOPT_URL, imgopt reads local images from
    the Next server."""
    env = shape_env(shape, remote)
    next_port = free_port()
    # The port is chosen before the build: NEXT_PUBLIC_IMGOPT_URL is baked into the pages.
    imgopt = ImgoptServer(tmp / "imgopt", None, "--next-config", str(SITE / "next.config.js"),
                          "--origin", f"http://127.0.0.1:{next_port}", *IMGOPT_ARGS)
    env["NEXT_PUBLIC_IMGOPT_URL"] = imgopt.url
    imgopt.env.update(env)
    return next_start_beside(shape, remote, env, imgopt, next_port, imgopt.url + shape.base_path + "/_next/image")


def next_start_beside(shape: Shape, remote: Origin, env: dict[str, str], imgopt: ImgoptServer, next_port: int,
                      image_endpoint: str) -> Stack:
    """The site built and served by `next start` on next_port, and imgopt (not started yet)
    beside it, the browser sending images to image_endpoint."""
    build_s, next_images, server = build_for_next_start(shape, env, next_port)
    nxt = Proc(server, ARTIFACTS / f"next-start-{shape.id}.log", cwd=SITE, env=node_env(**env))
    try:
        nxt.wait_http(f"http://127.0.0.1:{next_port}{shape.base_path}/")
        imgopt.start()
    except BaseException:
        nxt.stop()
        raise

    def stop() -> None:
        imgopt.stop()
        nxt.stop()

    site = f"http://127.0.0.1:{next_port}"
    return Stack(shape, site + shape.base_path, site, image_endpoint, imgopt, remote, stop,
                 {"next_images": next_images, "build_s": build_s, "seen": set()})


def start_standalone(shape: Shape, remote: Origin, tmp: Path) -> Stack:
    """`output: 'standalone'` deployed as Next's docs say: the standalone folder on its own, with
    public/ and the distDir's static/ copied in, run by `node server.js`. imgopt gets nothing of
    the site's source or environment, only the build (`--next-config <the standalone folder>`)."""
    env = shape_env(shape, remote)
    dist = SITE / env["IMGOPT_E2E_DIST"]
    shutil.rmtree(dist, ignore_errors=True)
    build_s = next_build(shape, env)
    root = tmp / "standalone"
    shutil.copytree(dist / "standalone", root, symlinks=True)
    app = root / SITE.relative_to(ROOT)  # the build traces from the repository root (outputFileTracingRoot)
    shutil.copytree(SITE / "public", app / "public", dirs_exist_ok=True)
    shutil.copytree(dist / "static", app / dist.name / "static")
    next_port = free_port()
    server = [need("node", "Node.js"), "server.js"]
    stack = behind_nginx(shape, remote, tmp, server, app, node_env(PORT=str(next_port), HOSTNAME="127.0.0.1"),
                        next_port, ["--next-config", str(app)], None, app / dist.name / "cache" / "images", build_s)
    stack.extra["build"] = app / dist.name
    return stack


def behind_nginx(shape: Shape, remote: Origin, tmp: Path, server: list[str], cwd: Path, server_env: dict[str, str],
                 next_port: int, config_args: list[str], imgopt_env: dict[str, str] | None, next_images: Path,
                 build_s: float) -> Stack:
    """The Next server, imgopt with `--origin` pointing at it, and nginx from the docs' recipe."""
    nginx = need("nginx", "nginx")
    started: list[Any] = []

    def stop() -> None:
        for p in reversed(started):
            p.stop()

    try:
        nxt = Proc(server, ARTIFACTS / f"next-start-{shape.id}.log", cwd=cwd, env=server_env)
        started.append(nxt)
        nxt.wait_http(f"http://127.0.0.1:{next_port}{shape.base_path}/")

        imgopt = ImgoptServer(tmp / "imgopt", None, *config_args,
                              "--origin", f"http://127.0.0.1:{next_port}", *IMGOPT_ARGS, env=imgopt_env).start()
        started.append(imgopt)

        ngx = tmp / "nginx"
        ngx.mkdir()
        port = free_port()
        conf = ngx / "nginx.conf"
        recipe = nginx_from_recipe(docs_nginx_recipe(), port=port, imgopt_port=imgopt.port, next_port=next_port)
        conf.write_text(nginx_conf(ngx, recipe, worker_connections=512))
        proxy = Proc([nginx, "-p", f"{ngx}/", "-e", str(ngx / "error.log"), "-c", str(conf), "-g", "daemon off;"],
                     ngx / "stdout.log", cwd=ngx)
        started.append(proxy)
        proxy.wait_http(f"http://127.0.0.1:{port}{shape.base_path}/")
    except BaseException:
        stop()
        raise
    site = f"http://127.0.0.1:{port}"
    return Stack(shape, site + shape.base_path, site, site + shape.base_path + "/_next/image", imgopt, remote, stop,
                 {"next_images": next_images, "build_s": build_s, "nginx_conf": conf, "seen": set()})


class Stacks:
    """One shape's stack at a time: built and started on first use, stopped when the next
    shape is asked for (the tests run shape by shape), so each shape is built once."""

    def __init__(self, remote: Origin, tmp: pytest.TempPathFactory) -> None:
        self.remote = remote
        self.tmp = tmp
        self.current: Stack | None = None
        self.failed: dict[Shape, str] = {}

    def get(self, shape: Shape) -> Stack:
        if self.current is not None and self.current.shape == shape:
            return self.current
        self.close()
        if shape in self.failed:
            pytest.fail(f"{shape.id} could not be started: {self.failed[shape]}", pytrace=False)
        start = {"export": start_export, "loader": start_loader, "dropin": start_dropin,
                 "path": start_images_path, "standalone": start_standalone}[shape.mode]
        try:
            self.current = start(shape, self.remote, self.tmp.mktemp(f"e2e-{shape.id}"))
        except BaseException as e:  # noqa: BLE001 - remembered, so the shape's other cases fail fast
            self.failed[shape] = str(e)[:2000]
            raise
        self.current.extra["origin_hits"] = self.remote.hits["/large.jpg"]
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None


@pytest.fixture(scope="module")
def stacks(site_deps: Path, remote_origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    s = Stacks(remote_origin, tmp_path_factory)
    try:
        yield s
    finally:
        s.close()


# -- srcset / sizes: what the browser should pick ---------------------------------------------

def parse_srcset(srcset: str) -> list[tuple[str, float, str]]:
    """[(url, value, 'w' | 'x')]. Next's URLs never contain ', ' or spaces."""
    out = []
    for item in srcset.split(", "):
        url, _, desc = item.strip().rpartition(" ")
        out.append((url, float(desc[:-1]), desc[-1]))
    return out


def slot_width(sizes: str, viewport_width: int) -> float:
    """Evaluate a `sizes` attribute made of (max-width|min-width: Npx) conditions and vw/px lengths."""
    for entry in (e.strip() for e in sizes.split(",")):
        m = re.fullmatch(r"(?:\((max|min)-width:\s*(\d+)px\)\s+)?(\d+(?:\.\d+)?)(vw|px)", entry)
        assert m, f"unsupported sizes entry {entry!r}"
        kind, limit, value, unit = m.groups()
        if kind == "max" and not viewport_width <= int(limit):
            continue
        if kind == "min" and not viewport_width >= int(limit):
            continue
        return float(value) * viewport_width / 100 if unit == "vw" else float(value)
    return float(viewport_width)  # no entry matched: 100vw


def expected_candidate(cands: list[tuple[str, float, str]], slot: float | None, dpr: float) -> tuple[str, float, str]:
    """HTML srcset selection as Chromium does it: the smallest candidate whose density
    (w / slot width, or x) is at least the device pixel ratio; the largest if none is."""
    def density(c: tuple[str, float, str]) -> float:
        return c[1] / slot if c[2] == "w" else c[1]

    ordered = sorted(cands, key=density)
    for c in ordered:
        if density(c) >= dpr:
            return c
    return ordered[-1]


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def sniff(body: bytes) -> str | None:
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "image/webp"
    if body[4:12] in (b"ftypavif", b"ftypavis"):
        return "image/avif"
    return None


@pytest.mark.parametrize("viewport", [(390, 844, 3), (1280, 800, 1), (375, 800, 2.5), (412, 915, 2.625), (360, 800, 2)],
                         ids=lambda v: f"{v[0]}@{v[2]}")
def test_the_srcset_rule_is_what_chromium_does(browser: Any, viewport: tuple[int, int, float]) -> None:
    """The expectation used above, checked on its own against Chromium with synthetic srcsets,
    including viewports where a "nearest density" or geometric-mean rule would pick differently."""
    widths = sorted(ALL_WIDTHS)
    srcset = ", ".join(f"http://127.0.0.1:9/x.jpg?w={w} {w}w" for w in widths)
    xset = "http://127.0.0.1:9/x.jpg?w=384 1x, http://127.0.0.1:9/x.jpg?w=640 2x"
    sizes = ["100vw", "50vw", "33vw", "400px", "340px", "(max-width: 640px) 100vw, 50vw"]
    html = "".join(f'<img id="s{i}" sizes="{sz}" srcset="{srcset}">' for i, sz in enumerate(sizes))
    html += f'<img id="x" srcset="{xset}">'
    w, h, dpr = viewport
    ctx = browser.new_context(viewport={"width": w, "height": h}, device_scale_factor=dpr)
    try:
        page = ctx.new_page()
        page.set_content(html)
        page.wait_for_function("[...document.images].every((i) => i.currentSrc)")
        picked = page.evaluate("Object.fromEntries([...document.images].map((i) => [i.id, i.currentSrc]))")
    finally:
        ctx.close()
    cands = parse_srcset(srcset)
    for i, sz in enumerate(sizes):
        want = expected_candidate(cands, slot_width(sz, w), dpr)[0]
        assert picked[f"s{i}"] == want, f"sizes={sz!r} at {w}@{dpr}: Chromium {picked[f's{i}']}, rule {want}"
    assert picked["x"] == expected_candidate(parse_srcset(xset), None, dpr)[0]


def test_a_cancelled_image_request_is_kept_without_a_body(browser: Any, tmp_path: Path) -> None:
    """An image request the browser cancels after its headers came (as a <picture> that switches
    to its <source> may) is recorded as aborted, and no body is asked for: Playwright would fetch
    the URL again for one, without the browser's image Accept header (a different variant)."""
    headers_sent = threading.Event()
    seen: list[str] = []
    png = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 40, 40)).save(png, "PNG")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

        def reply(self, ctype: str, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == "/":
                self.reply("text/html", b'<img id="a" src="/slow.avif"><script>'
                                        b'fetch("/sent").then(() => { document.getElementById("a").src = "/ok.png" })'
                                        b'</script>')
            elif self.path == "/slow.avif":
                seen.append(self.headers.get("Accept", ""))
                if len(seen) > 1:  # a second fetch of the URL: answered at once
                    self.reply("image/jpeg", b"\xff\xd8\xff" + bytes(997))
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/avif")
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.flush()
                headers_sent.set()
                # no body: the browser cancels the request, which closes the connection
                self.connection.settimeout(60)
                with contextlib.suppress(OSError):
                    self.rfile.read(1)
            elif self.path == "/sent":
                headers_sent.wait(30)
                self.reply("text/plain", b"ok")
            elif self.path == "/ok.png":
                self.reply("image/png", png.getvalue())
            else:
                self.send_error(404)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        v = visit(browser, f"http://127.0.0.1:{srv.server_address[1]}/", (800, 600, 1), tmp_path / "shot.png")
    finally:
        srv.shutdown()
        srv.server_close()
    slow = [r for r in v.responses if r["url"].endswith("/slow.avif")]
    assert len(slow) == 1, v.responses
    assert slow[0]["aborted"] is not None and slow[0]["body"] == b"", slow[0]
    assert len(seen) == 1 and "image/avif" in seen[0], f"/slow.avif was fetched with Accept {seen}"
    assert [i["currentSrc"].rsplit("/", 1)[-1] for i in v.images] == ["ok.png"]


# -- opening a page --------------------------------------------------------------------------

LOAD_ALL = """async () => {
  for (const img of document.images) {
    img.scrollIntoView({ block: 'center' })
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))
  }
  window.scrollTo(0, 0)
}"""

# For an <img> in a <picture>, the srcset that applies is that of the first <source> whose
# media matches (else the img's own).
IMG_INFO = """() => [...document.images].map((i) => {
  let srcset = i.getAttribute('srcset'), sizes = i.getAttribute('sizes'), source = null
  if (i.parentElement && i.parentElement.tagName === 'PICTURE') {
    for (const s of i.parentElement.querySelectorAll('source')) {
      if (!s.media || matchMedia(s.media).matches) { srcset = s.getAttribute('srcset'); sizes = s.getAttribute('sizes'); source = s.media; break }
    }
  }
  return {
    id: i.id, complete: i.complete, naturalWidth: i.naturalWidth, currentSrc: i.currentSrc,
    srcset, sizes, source, loading: i.getAttribute('loading'),
    width: i.getBoundingClientRect().width, background: getComputedStyle(i).backgroundImage,
  }
})"""


@dataclass
class Visit:
    images: list[dict[str, Any]]
    responses: list[dict[str, Any]]
    requests: list[str]
    viewport: tuple[int, int, float]
    inner_width: int
    dpr: float
    console_errors: list[str]


def visit(browser: Any, url: str, viewport: tuple[int, int, float], screenshot: Path) -> Visit:
    w, h, dpr = viewport
    ctx = browser.new_context(viewport={"width": w, "height": h}, device_scale_factor=dpr)
    try:
        page = ctx.new_page()
        responses: list[Any] = []
        requests: list[str] = []
        errors: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.on("response", lambda r: responses.append(r) if r.request.resource_type == "image" else None)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url, wait_until="load", timeout=120_000)
        page.evaluate(LOAD_ALL)
        page.wait_for_function("[...document.images].every((i) => i.complete)", timeout=120_000)
        page.wait_for_load_state("networkidle", timeout=120_000)
        images = page.evaluate(IMG_INFO)
        inner_width, real_dpr = page.evaluate("[innerWidth, devicePixelRatio]")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        resp = []
        for r in responses:
            if r.url.startswith("data:"):
                continue
            # A request the browser cancelled (a <picture> that switched to its <source>) has
            # no body to check: asked for one, Playwright fetches the URL again without the
            # image Accept header, and imgopt rightly answers that with the original's type.
            aborted = r.request.failure
            body = b""
            if aborted is None:
                try:
                    body = r.body()
                except Exception as e:  # noqa: BLE001 - reported as a problem below
                    body = f"<no body: {e}>".encode()
            resp.append({"url": r.url, "status": r.status, "headers": r.all_headers(), "body": body,
                         "aborted": aborted})
        return Visit(images, resp, requests, viewport, inner_width, real_dpr, errors)
    finally:
        ctx.close()


def decoded_width(body: bytes) -> int | None:
    try:
        with Image.open(io.BytesIO(body)) as im:
            return im.size[0]
    except Exception:  # noqa: BLE001 - reported by the caller
        return None


def check_visit(stack: Stack, page_path: str, v: Visit) -> list[str]:
    """Every problem with one page at one viewport (an empty list when all is well)."""
    problems: list[str] = []
    shape = stack.shape
    w, _h, dpr = v.viewport
    if v.inner_width != w or v.dpr != dpr:
        problems.append(f"viewport is {v.inner_width}@{v.dpr}, expected {w}@{dpr}")
    fill = {"bp": shape.base_path, "remote": stack.origin.base_url}
    expected = PAGES[page_path]
    ids = [i["id"] for i in v.images]
    if sorted(ids) != sorted(expected):
        problems.append(f"images on the page {ids}, expected {sorted(expected)}")
    prefix = stack.image_endpoint + "?"
    by_url = {r["url"]: r for r in v.responses if r["aborted"] is None}
    svg_urls: set[str] = set()

    for img in v.images:
        name = img["id"]
        spec = expected.get(name)
        if spec is None:
            continue
        if name == "picture" and img["source"]:
            spec = PICTURE_WIDE
        if not img["complete"] or img["naturalWidth"] <= 0:
            problems.append(f"{name}: not loaded (complete={img['complete']}, naturalWidth={img['naturalWidth']})")
            continue
        want_src = spec.src.format(**fill)
        if spec.svg:
            # As Next does for SVG without dangerouslyAllowSVG: the file itself, with ?dpl=.
            want = f"{stack.site_origin}{want_src}?dpl={DEPLOYMENT_ID}"
            if img["currentSrc"] != want:
                problems.append(f"{name}: SVG loaded from {img['currentSrc']}, expected {want} (not through imgopt)")
            svg_urls.add(img["currentSrc"])
            continue
        if spec.blur and img["background"] not in ("none", ""):
            problems.append(f"{name}: the blur placeholder is still there after load: {img['background'][:80]}")
        cands = [(urljoin(stack.site_url + "/", u), value, kind) for u, value, kind in parse_srcset(img["srcset"] or "")]
        if not cands:
            problems.append(f"{name}: no srcset")
            continue
        for url, _value, _kind in cands:
            q = query_of(url)
            if not url.startswith(prefix):
                problems.append(f"{name}: srcset URL {url} does not go to {prefix}")
            got = q.get("url", "")
            if not (got == want_src or (spec.prefix and got.startswith(want_src) and "?" not in got)):
                problems.append(f"{name}: srcset URL has url={got!r}, expected {want_src!r}" + (" + hash" if spec.prefix else ""))
            if int(q.get("w", "0")) not in ALL_WIDTHS or q.get("q") != str(spec.quality):
                problems.append(f"{name}: srcset URL {url} has w/q outside deviceSizes+imageSizes / q={spec.quality}")
            want_dpl = None if want_src.startswith("http") else DEPLOYMENT_ID
            if q.get("dpl") != want_dpl:
                problems.append(f"{name}: srcset URL {url} has dpl={q.get('dpl')!r}, expected {want_dpl!r}")
        kinds = {c[2] for c in cands}
        if kinds == {"w"}:
            slot = slot_width(img["sizes"] or "100vw", v.inner_width)
            # The layout must match the sizes attribute, or the check below proves little.
            if abs(img["width"] - slot) > 0.04 * slot + 1:
                problems.append(f"{name}: rendered {img['width']:.1f} px wide but sizes={img['sizes']!r} says {slot:.1f}")
        else:
            slot = None
        want = expected_candidate(cands, slot, dpr)
        got_w = query_of(img["currentSrc"]).get("w")
        if img["currentSrc"] != want[0]:
            problems.append(
                f"{name}: browser picked w={got_w} ({img['currentSrc']}), the sizes rule implies "
                f"w={query_of(want[0]).get('w')} (slot {slot} px x DPR {dpr}; srcset {[(int(c[1]), c[2]) for c in cands]})")
        r = by_url.get(img["currentSrc"])
        if r is None:
            problems.append(f"{name}: no complete network response seen for currentSrc {img['currentSrc']}")
        elif got_w:
            dw = decoded_width(r["body"])
            if dw != min(int(got_w), spec.width):
                problems.append(f"{name}: decoded width {dw}, expected min(w={got_w}, intrinsic {spec.width})")

    if not v.responses:
        problems.append("no image responses at all")
    for r in v.responses:
        url, hdr = r["url"], r["headers"]
        if url in svg_urls:
            if r["status"] != 200 or not hdr.get("content-type", "").startswith("image/svg+xml"):
                problems.append(f"{url}: SVG answered {r['status']} {hdr.get('content-type')!r}")
            continue
        ctype = hdr.get("content-type", "")
        if not url.startswith(prefix):
            problems.append(f"image request did not go to imgopt: {url}")
        if r["status"] != 200:
            problems.append(f"{url}: status {r['status']} {r['body'][:200]!r}")
        if ctype != "image/avif":
            problems.append(f"{url}: Content-Type {ctype!r}, expected image/avif (Chromium accepts AVIF)")
        elif r["aborted"] is None and sniff(r["body"]) != ctype:
            problems.append(f"{url}: body is not {ctype} (starts {r['body'][:16]!r})")
        if "x-request-id" not in hdr or "x-nextjs-cache" not in hdr:
            problems.append(f"{url}: not answered by imgopt (no X-Request-Id / X-Nextjs-Cache): {hdr}")
    for url in v.requests:
        path = unquote(urlsplit(url).path)
        if IMAGE_EXT.search(path) and not url.startswith(prefix) and url not in svg_urls:
            problems.append(f"an image file was requested directly, not through imgopt: {url}")
    hydration = [e for e in v.console_errors if "hydrat" in e.lower() or "did not match" in e.lower()]
    if hydration:
        problems.append(f"hydration errors in the console: {hydration[:3]}")
    return problems


def save_report(path: Path, v: Visit, problems: list[str]) -> None:
    """What the browser saw, next to the screenshot (tests/e2e/artifacts/*.json)."""
    report = {
        "viewport": {"width": v.viewport[0], "height": v.viewport[1], "dpr": v.viewport[2]},
        "images": [{**i, "picked_w": query_of(i["currentSrc"]).get("w")} for i in v.images],
        "responses": [{"url": r["url"], "status": r["status"], "content-type": r["headers"].get("content-type"),
                       "x-nextjs-cache": r["headers"].get("x-nextjs-cache"), "bytes": len(r["body"]),
                       "aborted": r["aborted"]}
                      for r in v.responses],
        "console_errors": v.console_errors,
        "problems": problems,
    }
    path.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False))


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


CASES = [(s, p, vp) for s in SHAPES for p in PAGES for vp in VIEWPORTS]
CASE_IDS = [f"{s.id}-{'home' if p == '/' else p.strip('/')}-{vp}" for s, p, vp in CASES]


def screenshot_path(shape: Shape, page_path: str, vp: str) -> Path:
    slug = "home" if page_path == "/" else page_path.strip("/").replace("/", "-")
    return ARTIFACTS / f"{shape.id}-{slug}-{vp}.png"


@pytest.mark.parametrize("shape,page_path,vp", CASES, ids=CASE_IDS)
def test_site_in_chromium(stacks: Stacks, browser: Any, shape: Shape, page_path: str, vp: str) -> None:
    """One page of one deployment shape at one viewport: every image as the checks above say."""
    stack = stacks.get(shape)
    cache_dir = stack.imgopt.cache_dir
    before = dir_size(cache_dir)
    shot = screenshot_path(shape, page_path, vp)
    v = visit(browser, stack.site_url + (page_path if page_path != "/" else "/"), VIEWPORTS[vp], shot)
    problems = check_visit(stack, page_path, v)
    if page_path == "/gallery" and stack.origin.hits["/large.jpg"] <= stack.extra["origin_hits"]:
        problems.append("imgopt never fetched the remote image from the origin")
    if shape.mode == "export":
        static: StaticServer = stack.extra["static"]
        # (/favicon.ico is the browser's own request, not an image of the page.)
        direct = [p for p in static.paths
                  if IMAGE_EXT.search(unquote(p.split("?")[0])) and not p.endswith("/favicon.ico")
                  and not unquote(p.split("?")[0]).endswith(".svg")]
        if direct:
            problems.append(f"the static server was asked for image files: {direct}")
    else:
        seen: set[str] = stack.extra["seen"]
        new = {r["url"] for r in v.responses if r["url"].startswith(stack.image_endpoint)} - seen
        seen |= new
        if new and not dir_size(cache_dir) > before:
            problems.append(f"imgopt's cache dir {cache_dir} did not grow ({before} bytes) after {len(new)} new images")
        # imgopt's cache holds every image the browser got: asking again through nginx is a HIT.
        for url in sorted(new):
            r = httpx.get(url, headers={"Accept": CHROMIUM_ACCEPT}, timeout=60)
            if r.status_code != 200 or r.headers.get("x-nextjs-cache") != "HIT" or "x-request-id" not in r.headers:
                problems.append(f"again {url}: {r.status_code} X-Nextjs-Cache={r.headers.get('x-nextjs-cache')}")
        next_images: Path = stack.extra["next_images"]
        if next_images.exists() and any(next_images.iterdir()):
            problems.append(f"Next's own image cache is not empty: {sorted(p.name for p in next_images.iterdir())}")
    save_report(shot, v, problems)
    assert not problems, "\n".join(problems)


# -- imgopt warm: the first visitor gets HITs ------------------------------------------------

STANDALONE_SHAPE = SHAPES[-1]  # the last shape of the visits above: no second build


def test_warm_from_a_standalone_builds_prerendered_pages_makes_every_image_a_hit(stacks: Stacks, browser: Any) -> None:
    """`imgopt warm <distDir>/server/app --server` on an empty cache: the pages next build
    prerendered, read like an export, sent through the running imgopt; then every image of
    every page, at every viewport, through nginx, is a HIT."""
    stack = stacks.get(STANDALONE_SHAPE)
    imgopt = stack.imgopt
    imgopt.stop()
    shutil.rmtree(imgopt.cache_dir, ignore_errors=True)
    imgopt.start()
    pages = stack.extra["build"] / "server" / "app"
    r = subprocess.run([*imgopt.argv[:imgopt.argv.index("serve")], "warm", str(pages), "--server", imgopt.url],
                       capture_output=True, text=True, timeout=900, env=imgopt.env)
    (ARTIFACTS / "warm-standalone.log").write_text(r.stdout + r.stderr)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # every variant made now (the cache was empty), none failed
    assert re.search(r"imgopt warm: (\d+) variants, \1 ok \(\1 MISS\), [\d,]+ bytes, 0 failed", r.stdout), r.stdout
    problems = not_all_hits(stack, browser, "warm-standalone")
    assert not problems, "\n".join(problems)


WARM_SHAPE = SHAPES[0]  # static export, Turbopack, no basePath


def test_warm_on_the_export_makes_every_image_the_browser_loads_a_hit(stacks: Stacks, browser: Any) -> None:
    """`imgopt warm out/` in-process (the same flags as the server, its cache folder emptied
    first), then the server restarted (its memory tier empty): every image of every page, at
    every viewport, is a HIT from the disk cache."""
    stack = stacks.get(WARM_SHAPE)
    imgopt = stack.imgopt
    imgopt.stop()
    shutil.rmtree(imgopt.cache_dir, ignore_errors=True)
    out: Path = stack.extra["out"]
    flags = imgopt.argv[imgopt.argv.index("serve") + 1:]
    r = subprocess.run([*imgopt.argv[:imgopt.argv.index("serve")], "warm", str(out), *flags],
                       capture_output=True, text=True, timeout=900, env=imgopt.env)
    (ARTIFACTS / "warm-export.log").write_text(r.stdout + r.stderr)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " 0 failed" in r.stdout, r.stdout
    imgopt.start()
    problems = not_all_hits(stack, browser, "warm")
    assert not problems, "\n".join(problems)


def not_all_hits(stack: Stack, browser: Any, tag: str) -> list[str]:
    """Every page at every viewport: each image from imgopt that was not a HIT."""
    problems = []
    for page_path in PAGES:
        for vp, viewport in VIEWPORTS.items():
            v = visit(browser, stack.site_url + page_path, viewport, ARTIFACTS / f"{tag}-{vp}-{page_path.strip('/') or 'home'}.png")
            for resp in v.responses:
                if resp["url"].startswith(stack.image_endpoint) and resp["headers"].get("x-nextjs-cache") != "HIT":
                    problems.append(f"{vp} {resp['url']}: {resp['status']} X-Nextjs-Cache={resp['headers'].get('x-nextjs-cache')}")
            if not any(r["url"].startswith(stack.image_endpoint) for r in v.responses):
                problems.append(f"{vp} {page_path}: no image from imgopt at all")
    return problems


# -- the loader against Next's own default loader ----------------------------------------------

LOADER_PARITY = r"""
const [nextLoaderPath, ourLoaderPath] = process.argv.slice(1)
const rows = []
const srcs = ['/a.jpg', '/dir with space/ä.png', '/a.png?v=1', '/_next/static/media/h.3-8si9.jpg?dpl=v9',
  '/_next/static/media/h.abc.jpg', '/shop/x.jpg?dpl=v1&k=2', '/_next/static/immutable/i.jpg',
  'https://cdn.example.com/a.jpg?dpl=x', 'http://127.0.0.1:4000/large.jpg', '/100%25.png', '/a+b&c=d.png']
const configs = [
  { path: '/_next/image', qualities: [75] },
  { path: '/shop/_next/image', qualities: [50, 75] },
  { path: '/_next/image', qualities: [90, 10, 50] },
  { path: '/_next/image', qualities: undefined },
]
;(async () => {
  const next = require(nextLoaderPath).default
  const ours = await import(ourLoaderPath)
  for (const config of configs) {
    const mine = ours.createLoader({ path: config.path, qualities: config.qualities,
      deploymentId: process.env.NEXT_DEPLOYMENT_ID, dangerouslyAllowSVG: true })
    for (const src of srcs) for (const width of [32, 640, 3840]) for (const quality of [undefined, 1, 50, 60, 75, 100]) {
      rows.push({ src, width, quality, config, next: next({ config, src, width, quality }), ours: mine({ src, width, quality }) })
    }
  }
  process.stdout.write(JSON.stringify(rows))
})()
"""


@pytest.mark.parametrize("deployment_id", ["", "v1"])
def test_the_loader_makes_the_urls_next_default_loader_makes(site_deps: Path, deployment_id: str) -> None:
    """The same {src, width, quality} and images settings give the same URL from the imgopt loader
    (without NEXT_PUBLIC_IMGOPT_URL) as from Next's own default loader, deployment id included.
    (Qualities unset: Next passes the quality through; the loader snaps it to the default [75],
    which is what an imgopt service with Next's default qualities accepts.)"""
    next_loader = SITE / "node_modules" / "next" / "dist" / "shared" / "lib" / "image-loader.js"
    env = node_env(NODE_ENV="production", **({"NEXT_DEPLOYMENT_ID": deployment_id} if deployment_id else {}))
    out = subprocess.run([need("node", "Node.js"), "-e", LOADER_PARITY, str(next_loader), str(ROOT / "loader" / "index.js")],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 4 * 11 * 3 * 6
    diff = [r for r in rows if r["next"] != r["ours"] and r["config"].get("qualities") is not None]
    assert not diff, f"{len(diff)} differ, e.g. {diff[:3]}"
    unset = [r for r in rows if r["config"].get("qualities") is None]
    assert all(r["ours"].endswith("&q=75") or "&q=75&dpl=" in r["ours"] for r in unset)


# -- every URL the loader makes for the default config is accepted ----------------------------

@functools.cache
def loader_rows() -> list[dict[str, Any]]:
    out = subprocess.run([need("node", "Node.js"), str(ROOT / "loader" / "test" / "urls-for-default-config.mjs")],
                         capture_output=True, text=True, check=True, timeout=60, env=node_env())
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def loader_file_for(src: str) -> str | None:
    """The file a src names, relative to the site root: the URL path, percent-decoded. A src
    that is not a valid URL path (a bare '%' as in '/100%.png') names no file."""
    path = src.split("?", 1)[0]
    if re.search(r"%(?![0-9A-Fa-f]{2})", path):
        return None
    return unquote(path, errors="strict").lstrip("/")


# srcs whose file name needs escaping: '/100%.png' is not a URL path; the file 100%.png is
# /100%25.png. Next answers 500 for the former (decodeURIComponent throws), imgopt 400.
EXTRA_SRCS = {"/100%25.png": "100%.png"}


@pytest.fixture(scope="module")
def loader_root(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loader-root")
    files = {src: loader_file_for(src) for src in {r["src"] for r in loader_rows()}}
    files.update(EXTRA_SRCS)
    for src, rel in files.items():
        if rel is None:
            continue
        data = (corpus / ("test.png" if rel.endswith(".png") else "test.jpg")).read_bytes()
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@pytest.mark.parametrize("source", ["local-root", "origin"])
def test_loader_urls_for_the_default_config_are_accepted(source: str, loader_root: Path, make_server: Any) -> None:
    rows = loader_rows()
    assert len(rows) == 5 * 15 * 4, "the loader's URL table changed; update this test"
    with Origin(root=loader_root) as site:
        args = ("--local-root", str(loader_root)) if source == "local-root" else ("--origin", site.base_url)
        srv = make_server(None, *args)
        seen: dict[str, tuple[int, str]] = {}
        extra = [{"src": s, "url": f"/_next/image?url={quote_component(s)}&w=640&q=75"} for s in EXTRA_SRCS]
        problems = []
        with httpx.Client(base_url=srv.url, timeout=60, headers={"Accept": CHROMIUM_ACCEPT}) as client:
            for row in rows + extra:
                if row["url"] not in seen:
                    r = client.get(row["url"])
                    seen[row["url"]] = (r.status_code, r.headers.get("content-type", "") if r.status_code == 200 else r.text)
                status, detail = seen[row["url"]]
                if loader_file_for(row["src"]) is None:
                    if (status, detail) != (400, '"url" parameter is invalid'):
                        problems.append(f"{row['url']} ({row['src']!r}): {status} {detail!r}, expected 400 invalid")
                elif status != 200 or detail != "image/webp":
                    problems.append(f"{row['url']} ({row['src']!r}): {status} {detail!r}")
    assert not problems, f"{len(problems)} of {len(rows) + len(extra)} failed:\n" + "\n".join(problems[:40])


def quote_component(s: str) -> str:
    """JavaScript's encodeURIComponent."""
    from urllib.parse import quote

    return quote(s, safe="-_.!~*'()")
