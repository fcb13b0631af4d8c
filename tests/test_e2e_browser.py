"""The Next.js loader and drop-in set-up, proven with a real Next.js build and a real browser.

The site is tests/e2e/site (Next.js 16, app router, pinned in its package-lock.json). It is
built once per test session for each set-up:

* **export**: ``output: 'export'`` with ``images.loaderFile`` = loader/index.js and
  ``NEXT_PUBLIC_IMGOPT_URL`` pointing at imgopt. ``out/`` is served by a plain static
  server; imgopt reads local images from ``--local-root out`` and the remote image from the
  test origin.
* **dropin**: ``next start`` with Next's default loader, and nginx in front that sends
  ``/_next/image`` to imgopt (``--origin`` = the Next server) and everything else to Next.

imgopt reads its ``images`` settings from the site's own next.config.js (``--next-config``).
Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) opens every page at
390x844@3 and 1280x800@1 and checks that every image loaded, that every image request went
to imgopt and came back 200 as AVIF or WebP, and that the srcset candidate the browser
picked is the one the ``sizes`` rule implies. A screenshot of every page and viewport goes
to tests/e2e/artifacts/.

Nothing is skipped when a tool is missing: the tests fail and say what to install
(.ci/run installs chromium and nginx-light; the site's node modules come from ``npm ci``,
run here when node_modules is missing or older than package-lock.json).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
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
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import httpx
import pytest

from conftest import ROOT, ImgoptServer, free_port, nginx_conf
from origin import Origin

SITE = ROOT / "tests" / "e2e" / "site"
ARTIFACTS = ROOT / "tests" / "e2e" / "artifacts"
NEXT_BIN = SITE / "node_modules" / "next" / "dist" / "bin" / "next"
CHROMIUM = os.environ.get("IMGOPT_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
INSTALL_HINT = ("install it (.ci/run does: apt-get install chromium nginx-light; Next.js 16 also needs "
                "Node.js >= 20.9 with npm)")

# The defaults of Next 16 (the site does not change deviceSizes/imageSizes/qualities).
DEVICE_SIZES = [640, 750, 828, 1080, 1200, 1920, 2048, 3840]
IMAGE_SIZES = [32, 48, 64, 96, 128, 256, 384]
ALL_WIDTHS = set(DEVICE_SIZES) | set(IMAGE_SIZES)

# Generous limits: this proves correctness, and the box may be busy (AVIF encodes are slow).
IMGOPT_ARGS = ("--transform-timeout", "60", "--fetch-timeout", "30")

VIEWPORTS = {"390x844@3": (390, 844, 3), "1280x800@1": (1280, 800, 1)}

# Site file -> corpus fixture it is copied from (generated, not committed; see site/.gitignore).
SITE_IMAGES = {
    "public/img/hero.jpg": "large.jpg",
    "public/img/photo.jpg": "mountains.jpg",
    "public/img/tile.png": "test.png",
    "public/img/dir with space/photo.jpg": "dir with space/photo.jpg",
    "public/img/äöüščří.png": "äöüščří.png",
    "media/still.jpg": "mountains.jpg",
}

# Page -> {img id: the src the loader must have been given}; "static" is a prefix.
PAGES = {
    "/": {"hero": "/img/hero.jpg", "fixed": "/img/photo.jpg"},
    "/gallery": {
        "remote": "{remote}/large.jpg",
        "static": "/_next/static/media/still.",
        "tile-png": "/img/tile.png",
        "tile-space": "/img/dir with space/photo.jpg",
        "tile-unicode": "/img/äöüščří.png",
    },
}

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
    """out/ over HTTP on 127.0.0.1, like a plain static host: /gallery serves gallery.html."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=str(root), **kw)

            def translate_path(self, path: str) -> str:
                server.paths.append(path)
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


NGINX_HTTP = """\
  upstream imgopt {{ server 127.0.0.1:{imgopt_port}; keepalive 16; }}
  upstream nextjs {{ server 127.0.0.1:{next_port}; keepalive 16; }}

  server {{
    listen 127.0.0.1:{port};
    server_name localhost;

    # Next.js's image route goes to imgopt (the same prefix Next itself matches).
    location ^~ /_next/image {{
      proxy_pass http://imgopt;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_pass_header Server;  # only so the test can see who answered
    }}

    location / {{
      proxy_pass http://nextjs;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
  }}"""


# -- the site: node modules, images, builds ----------------------------------------------------

def node_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXT_PUBLIC_IMGOPT_", "IMGOPT_E2E_"))}
    env.update(NEXT_TELEMETRY_DISABLED="1", **extra)
    env.pop("NODE_ENV", None)
    return env


def write_site_images(corpus: Path, site: Path = SITE) -> None:
    """Copy the site's images from the generated corpus (only files whose bytes changed)."""
    for rel, src in SITE_IMAGES.items():
        data = (corpus / src).read_bytes()
        dest = site / rel
        if not dest.is_file() or dest.read_bytes() != data:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)


@pytest.fixture(scope="session")
def site_deps(corpus: Path) -> Path:
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
    write_site_images(corpus)
    return SITE


def next_build(mode: str, log: Path, **env: str) -> None:
    run_logged([need("node", "Node.js"), str(NEXT_BIN), "build"], log, cwd=SITE,
               env=node_env(IMGOPT_E2E_MODE=mode, **env), timeout=900, what=f"next build ({mode})")


@pytest.fixture(scope="session")
def remote_origin(corpus: Path) -> Iterator[Origin]:
    """The remote image's origin (its own, so no other test's settings reach it)."""
    with Origin(root=corpus) as o:
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
    mode: str
    base_url: str           # where the browser opens pages
    image_base: str         # every image request must start with this + /_next/image?
    imgopt: ImgoptServer
    origin: Origin          # the remote image's origin
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="session")
def export_stack(site_deps: Path, remote_origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e-export")
    out = tmp / "out"
    env = {"IMGOPT_E2E_MODE": "export", "IMGOPT_E2E_REMOTE_ORIGIN": remote_origin.base_url}
    # The port is chosen before the build: NEXT_PUBLIC_IMGOPT_URL is baked into the pages.
    imgopt = ImgoptServer(tmp / "imgopt", None, "--next-config", str(SITE / "next.config.js"),
                          "--local-root", str(out), *IMGOPT_ARGS, env=env)
    t0 = time.monotonic()
    next_build("export", ARTIFACTS / "next-build-export.log", IMGOPT_E2E_REMOTE_ORIGIN=remote_origin.base_url,
               NEXT_PUBLIC_IMGOPT_URL=imgopt.url)
    shutil.copytree(SITE / "out", out)  # a later build may rewrite out/; this copy stays
    build_s = time.monotonic() - t0
    imgopt.start()
    try:
        static = StaticServer(out)
        try:
            yield Stack("export", static.url, imgopt.url, imgopt, remote_origin,
                        {"static": static, "build_s": build_s, "out": out})
        finally:
            static.stop()
    finally:
        imgopt.stop()


@pytest.fixture(scope="session")
def dropin_stack(site_deps: Path, remote_origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    nginx = need("nginx", "nginx")
    tmp = tmp_path_factory.mktemp("e2e-dropin")
    env = {"IMGOPT_E2E_MODE": "dropin", "IMGOPT_E2E_REMOTE_ORIGIN": remote_origin.base_url}
    t0 = time.monotonic()
    next_build("dropin", ARTIFACTS / "next-build-dropin.log", IMGOPT_E2E_REMOTE_ORIGIN=remote_origin.base_url)
    build_s = time.monotonic() - t0
    next_images = SITE / ".next-dropin" / "cache" / "images"
    shutil.rmtree(next_images, ignore_errors=True)

    started: list[Any] = []
    try:
        next_port = free_port()
        nxt = Proc([need("node", "Node.js"), str(NEXT_BIN), "start", "-H", "127.0.0.1", "-p", str(next_port)],
                   ARTIFACTS / "next-start.log", cwd=SITE, env=node_env(**env))
        started.append(nxt)
        nxt.wait_http(f"http://127.0.0.1:{next_port}/")

        imgopt = ImgoptServer(tmp / "imgopt", None, "--next-config", str(SITE / "next.config.js"),
                              "--origin", f"http://127.0.0.1:{next_port}", *IMGOPT_ARGS, env=env).start()
        started.append(imgopt)

        ngx = tmp / "nginx"
        ngx.mkdir()
        port = free_port()
        conf = ngx / "nginx.conf"
        conf.write_text(nginx_conf(ngx, NGINX_HTTP.format(port=port, imgopt_port=imgopt.port, next_port=next_port),
                                   worker_connections=512))
        proxy = Proc([nginx, "-p", f"{ngx}/", "-e", str(ngx / "error.log"), "-c", str(conf), "-g", "daemon off;"],
                     ngx / "stdout.log", cwd=ngx)
        started.append(proxy)
        proxy.wait_http(f"http://127.0.0.1:{port}/")
        yield Stack("dropin", f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}", imgopt, remote_origin,
                    {"next_images": next_images, "build_s": build_s, "nginx_conf": conf, "seen": set()})
    finally:
        for p in reversed(started):
            p.stop()


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


# -- opening a page --------------------------------------------------------------------------

LOAD_ALL = """async () => {
  for (const img of document.images) {
    img.scrollIntoView({ block: 'center' })
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))
  }
  window.scrollTo(0, 0)
}"""

IMG_INFO = """() => [...document.images].map((i) => ({
  id: i.id, complete: i.complete, naturalWidth: i.naturalWidth, currentSrc: i.currentSrc,
  srcset: i.getAttribute('srcset'), sizes: i.getAttribute('sizes'), loading: i.getAttribute('loading'),
  width: i.getBoundingClientRect().width,
}))"""


@dataclass
class Visit:
    images: list[dict[str, Any]]
    responses: list[dict[str, Any]]
    requests: list[str]
    viewport: tuple[int, int, float]
    inner_width: int
    dpr: float


def visit(browser: Any, url: str, viewport: tuple[int, int, float], screenshot: Path) -> Visit:
    w, h, dpr = viewport
    ctx = browser.new_context(viewport={"width": w, "height": h}, device_scale_factor=dpr)
    try:
        page = ctx.new_page()
        responses: list[Any] = []
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.on("response", lambda r: responses.append(r) if r.request.resource_type == "image" else None)
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
            try:
                body = r.body()
            except Exception as e:  # noqa: BLE001 - reported as a problem below
                body = f"<no body: {e}>".encode()
            resp.append({"url": r.url, "status": r.status, "headers": r.all_headers(), "body": body})
        return Visit(images, resp, requests, viewport, inner_width, real_dpr)
    finally:
        ctx.close()


def check_visit(stack: Stack, page_path: str, v: Visit) -> list[str]:
    """Every problem with one page at one viewport (an empty list when all is well)."""
    problems: list[str] = []
    w, _h, dpr = v.viewport
    if v.inner_width != w or v.dpr != dpr:
        problems.append(f"viewport is {v.inner_width}@{v.dpr}, expected {w}@{dpr}")
    remote = stack.origin.base_url
    expected_ids = PAGES[page_path]
    ids = [i["id"] for i in v.images]
    if sorted(ids) != sorted(expected_ids):
        problems.append(f"images on the page {ids}, expected {sorted(expected_ids)}")
    prefix = stack.image_base + "/_next/image?"
    by_url = {r["url"]: r for r in v.responses}

    for img in v.images:
        name = img["id"]
        if not img["complete"] or img["naturalWidth"] <= 0:
            problems.append(f"{name}: not loaded (complete={img['complete']}, naturalWidth={img['naturalWidth']})")
            continue
        cands = [(urljoin(stack.base_url + "/", u), value, kind) for u, value, kind in parse_srcset(img["srcset"] or "")]
        want_src = expected_ids.get(name, "").format(remote=remote)
        for url, value, kind in cands:
            q = query_of(url)
            if not url.startswith(prefix):
                problems.append(f"{name}: srcset URL {url} does not go to {prefix}")
            if not (q.get("url", "") == want_src or (name == "static" and q.get("url", "").startswith(want_src))):
                problems.append(f"{name}: srcset URL has url={q.get('url')!r}, expected {want_src!r}")
            if int(q.get("w", "0")) not in ALL_WIDTHS or q.get("q") != "75":
                problems.append(f"{name}: srcset URL {url} has w/q outside deviceSizes+imageSizes / [75]")
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
        if img["currentSrc"] not in by_url:
            problems.append(f"{name}: no network response seen for currentSrc {img['currentSrc']}")

    if not v.responses:
        problems.append("no image responses at all")
    for r in v.responses:
        url, hdr = r["url"], r["headers"]
        ctype = hdr.get("content-type", "")
        if not url.startswith(prefix):
            problems.append(f"image request did not go to imgopt: {url}")
        if r["status"] != 200:
            problems.append(f"{url}: status {r['status']}")
        if ctype not in ("image/avif", "image/webp"):
            problems.append(f"{url}: Content-Type {ctype!r}, expected image/avif or image/webp")
        elif sniff(r["body"]) != ctype:
            problems.append(f"{url}: body is not {ctype} (starts {r['body'][:16]!r})")
        if "x-nextjs-cache" not in hdr or "vary" not in hdr:
            problems.append(f"{url}: missing the optimizer's headers (X-Nextjs-Cache, Vary): {hdr}")
        if stack.mode == "dropin" and hdr.get("server") != "uvicorn":
            problems.append(f"{url}: answered by {hdr.get('server')!r}, not imgopt (uvicorn) behind nginx")
    for url in v.requests:
        path = unquote(urlsplit(url).path)
        if IMAGE_EXT.search(path) and not url.startswith(prefix):
            problems.append(f"an image file was requested directly, not through imgopt: {url}")
    return problems


def save_report(path: Path, v: Visit, problems: list[str]) -> None:
    """What the browser saw, next to the screenshot (tests/e2e/artifacts/*.json)."""
    report = {
        "viewport": {"width": v.viewport[0], "height": v.viewport[1], "dpr": v.viewport[2]},
        "images": [{**i, "picked_w": query_of(i["currentSrc"]).get("w")} for i in v.images],
        "responses": [{"url": r["url"], "status": r["status"], "content-type": r["headers"].get("content-type"),
                       "x-nextjs-cache": r["headers"].get("x-nextjs-cache"), "server": r["headers"].get("server"),
                       "bytes": len(r["body"])} for r in v.responses],
        "problems": problems,
    }
    path.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False))


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


CASES = [(p, vp) for p in PAGES for vp in VIEWPORTS]
CASE_IDS = [f"{'home' if p == '/' else p.strip('/')}-{vp}" for p, vp in CASES]


def screenshot_path(mode: str, page_path: str, vp: str) -> Path:
    slug = "home" if page_path == "/" else page_path.strip("/").replace("/", "-")
    return ARTIFACTS / f"{mode}-{slug}-{vp}.png"


@pytest.mark.parametrize("page_path,vp", CASES, ids=CASE_IDS)
def test_export_site_in_chromium(export_stack: Stack, browser: Any, page_path: str, vp: str) -> None:
    """output: 'export' + loaderFile: static out/ on one server, every image from imgopt."""
    v = visit(browser, export_stack.base_url + page_path, VIEWPORTS[vp], screenshot_path("export", page_path, vp))
    problems = check_visit(export_stack, page_path, v)
    static: StaticServer = export_stack.extra["static"]
    # (/favicon.ico is the browser's own request, not an image of the page.)
    direct = [p for p in static.paths if IMAGE_EXT.search(unquote(p.split("?")[0])) and p != "/favicon.ico"]
    if direct:
        problems.append(f"the static server was asked for image files: {direct}")
    if page_path == "/gallery" and export_stack.origin.hits["/large.jpg"] < 1:
        problems.append("imgopt never fetched the remote image from the origin")
    save_report(screenshot_path("export", page_path, vp), v, problems)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page_path,vp", CASES, ids=CASE_IDS)
def test_dropin_site_in_chromium(dropin_stack: Stack, browser: Any, page_path: str, vp: str) -> None:
    """next start + nginx: /_next/image is answered by imgopt, its cache holds the results."""
    cache_dir = dropin_stack.imgopt.cache_dir
    before = dir_size(cache_dir)
    v = visit(browser, dropin_stack.base_url + page_path, VIEWPORTS[vp], screenshot_path("dropin", page_path, vp))
    problems = check_visit(dropin_stack, page_path, v)

    seen: set[str] = dropin_stack.extra["seen"]
    new = {r["url"] for r in v.responses} - seen
    seen |= new
    if new and not dir_size(cache_dir) > before:
        problems.append(f"imgopt's cache dir {cache_dir} did not grow ({before} bytes) after {len(new)} new images")
    # imgopt's cache holds every image the browser got: asking again is a HIT from imgopt.
    for url in sorted({r["url"] for r in v.responses}):
        r = httpx.get(url, headers={"Accept": CHROMIUM_ACCEPT}, timeout=60)
        if r.status_code != 200 or r.headers.get("x-nextjs-cache") != "HIT" or r.headers.get("server") != "uvicorn":
            problems.append(f"again {url}: {r.status_code} X-Nextjs-Cache={r.headers.get('x-nextjs-cache')} "
                            f"Server={r.headers.get('server')}")
    next_images: Path = dropin_stack.extra["next_images"]
    if next_images.exists() and any(next_images.iterdir()):
        problems.append(f"Next's own image cache is not empty: {sorted(p.name for p in next_images.iterdir())}")
    if page_path == "/gallery" and dropin_stack.origin.hits["/large.jpg"] < 1:
        problems.append("imgopt never fetched the remote image from the origin")
    save_report(screenshot_path("dropin", page_path, vp), v, problems)
    assert not problems, "\n".join(problems)


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
