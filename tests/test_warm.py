"""`imgopt warm`: every /_next/image URL of a built site, once per output format, before traffic.

The site here is a small static export written by the test (the shapes Next writes: <img
srcset>, <picture><source srcset>, <link rel=preload imagesrcset>, the RSC payload in an inline
script and in a .txt file). The browser test (tests/test_e2e_browser.py) warms a real Next.js
export and then checks that every image the browser loads is a HIT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ImgoptServer
from imgopt import warm
from origin import Origin

IMAGES = {"formats": ["image/avif", "image/webp"], "qualities": [50, 75]}


def img(url: str, w: int, q: int = 75, base: str = "") -> str:
    return f"{base}/_next/image?url={url.replace('/', '%2F')}&w={w}&q={q}"


def page_html(base: str = "") -> str:
    a640, a1080 = img("/a.jpg", 640, base=base), img("/a.jpg", 1080, base=base)
    rsc = json.dumps(img("/rsc.jpg", 640, q=50, base=base)).replace("&", "\\u0026")
    return f"""<!DOCTYPE html><html><head>
<link rel="preload" as="image" imagesrcset="{a640.replace('&', '&amp;')} 640w, {a1080.replace('&', '&amp;')} 1080w" imagesizes="100vw">
</head><body>
<img alt="" srcset="{a640.replace('&', '&amp;')} 640w, {a1080.replace('&', '&amp;')} 1080w" src="{a1080.replace('&', '&amp;')}">
<picture><source media="(min-width: 800px)" srcset="{img('/wide.jpg', 1920, base=base).replace('&', '&amp;')} 1x">
<img alt="" src="{img('/narrow.jpg', 640, base=base).replace('&', '&amp;')}"></picture>
<img alt="svg" src="/logo.svg?dpl=v1">
<script>self.__next_f.push([1,{rsc}])</script>
</body></html>"""


EXPECTED = {img("/a.jpg", 640), img("/a.jpg", 1080), img("/wide.jpg", 1920), img("/narrow.jpg", 640),
            img("/rsc.jpg", 640, q=50), img("/txt.jpg", 384)}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    (out / "gallery").mkdir(parents=True)
    (out / "index.html").write_text(page_html())
    # A second page repeats an image (collected once) and its RSC payload sits in a .txt file.
    (out / "gallery.html").write_text(f'<img src="{img("/a.jpg", 640).replace("&", "&amp;")}">')
    (out / "gallery" / "__next.gallery.txt").write_text('1:["$","img",null,{"src":' + json.dumps(img("/txt.jpg", 384)) + "}]")
    return out


@pytest.fixture
def originals(corpus: Path, tmp_path: Path) -> Path:
    root = tmp_path / "originals"
    root.mkdir()
    for name in ("a.jpg", "wide.jpg", "narrow.jpg", "rsc.jpg", "txt.jpg"):
        (root / name).write_bytes((corpus / "test.jpg").read_bytes())
    return root


def warm_argv(*args: str, tmp: Path) -> list[str]:
    """`imgopt warm ARGS --config` the test's images settings (written into tmp)."""
    cfg = tmp / "images.json"
    cfg.write_text(json.dumps(IMAGES))
    return [sys.executable, "-m", "imgopt", "warm", *args, "--config", str(cfg)]


def run_warm(*args: str, tmp: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(warm_argv(*args, tmp=tmp), capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def assert_every_browser_hits(base_url: str, paths: Iterable[str], avif: bool = True) -> None:
    """An AVIF browser and a WebP browser each get a HIT of their format for every path."""
    for path in paths:
        for accept, mime in (("image/avif,image/webp,*/*", "image/avif" if avif else "image/webp"),
                             ("image/webp,*/*", "image/webp")):
            resp = httpx.get(base_url + path, headers={"Accept": accept}, timeout=60)
            assert resp.status_code == 200 and resp.headers["content-type"] == mime, (path, mime)
            assert resp.headers["x-nextjs-cache"] == "HIT", (path, mime)


def test_collects_every_image_url_a_next_page_uses(site: Path) -> None:
    import asyncio

    async def go() -> list[str]:
        async with httpx.AsyncClient() as c:
            return await warm.collect([str(site)], c)

    found = asyncio.run(go())
    assert set(found) == EXPECTED
    assert len(found) == len(EXPECTED)  # each once


def test_any_host_and_basepath_keep_their_path() -> None:
    html = page_html(base="https://img.example.com/shop")
    paths = {warm.image_path(u) for u in warm.urls_in_html(html)} - {None}
    assert paths == {p.replace("/_next/image", "/shop/_next/image") for p in EXPECTED - {img("/txt.jpg", 384)}}


def test_a_trailing_slash_site_is_warmed_at_its_own_urls(site: Path, originals: Path, make_server: Any) -> None:
    # trailingSlash: true makes Next's images.path /_next/image/, so every URL is /_next/image/?…
    for page in site.rglob("*.*"):
        page.write_text(page.read_text().replace("/_next/image?", "/_next/image/?"))
    slashed = {p.replace("/_next/image?", "/_next/image/?") for p in EXPECTED}
    html = page_html(base="https://img.example.com/shop").replace("/_next/image?", "/_next/image/?")
    assert {warm.image_path(u) for u in warm.urls_in_html(html)} - {None} == {
        p.replace("/_next/image/", "/shop/_next/image/") for p in slashed - {img("/txt.jpg", 384).replace("?", "/?", 1)}}
    srv = make_server({**IMAGES, "trailingSlash": True}, "--local-root", str(originals))
    r = subprocess.run([sys.executable, "-m", "imgopt", "warm", str(site), "--server", srv.url],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(EXPECTED) * 2} variants, {len(EXPECTED) * 2} ok ({len(EXPECTED) * 2} MISS)" in r.stdout
    assert_every_browser_hits(srv.url, slashed)


def test_a_site_whose_images_path_is_imgopt_is_warmed_at_that_path(site: Path, originals: Path, make_server: Any) -> None:
    # images.path: 'https://img.example.com/optimize' points Next's default loader at imgopt
    custom = {p.replace("/_next/image?", "/optimize?") for p in EXPECTED}
    for page in site.rglob("*.*"):
        page.write_text(page.read_text().replace("/_next/image?", "https://img.example.com/optimize?"))
    html = page_html().replace("/_next/image?", "https://img.example.com/optimize?")
    assert {warm.image_path(u, "/optimize") for u in warm.urls_in_html(html, "/optimize")} - {None} == (
        custom - {img("/txt.jpg", 384).replace("/_next/image?", "/optimize?")})
    assert not {warm.image_path(u) for u in warm.urls_in_html(html)} - {None}  # not without the config's path
    config = {**IMAGES, "path": "https://img.example.com/optimize"}
    srv = make_server(config, "--local-root", str(originals))
    cfg = site.parent / "custom-path.json"
    cfg.write_text(json.dumps(config))
    r = subprocess.run([sys.executable, "-m", "imgopt", "warm", str(site), "--server", srv.url, "--config", str(cfg)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(EXPECTED) * 2} variants, {len(EXPECTED) * 2} ok ({len(EXPECTED) * 2} MISS)" in r.stdout
    assert_every_browser_hits(srv.url, custom)


def test_an_images_path_written_raw_or_encoded_is_one_url() -> None:
    # Next writes images.path as configured (raw letters); the browser sends it encoded
    path = "/bilder/gr%C3%B6%C3%9Fe"  # what the config gives for 'https://img.example.com/bilder/größe'
    html = ('<img srcset="https://img.example.com/bilder/größe?url=%2Fa.jpg&amp;w=640&amp;q=75 640w">'
            '<script>self.__next_f.push([1,"https://img.example.com/bilder/gr%C3%B6%C3%9Fe?url=%2Fa.jpg'
            '\\u0026w=640\\u0026q=75"])</script>')
    assert {warm.image_path(u, path) for u in warm.urls_in_html(html, path)} - {None} == {
        "/bilder/gr%C3%B6%C3%9Fe?url=%2Fa.jpg&w=640&q=75"}


def assert_a_server_on_it_hits(tmp: Path, originals: Path, *args: str, env: dict[str, str] | None = None) -> None:
    """A server started on the warmed cache (``args``) answers every browser with a HIT."""
    srv = ImgoptServer(tmp / "srv", IMAGES, "--local-root", str(originals), *args, env=env).start()
    try:
        assert_every_browser_hits(srv.url, EXPECTED)
    finally:
        srv.stop()


def test_in_process_warm_fills_the_cache_a_server_then_serves_as_hits(site: Path, originals: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    r = run_warm(str(site), "--local-root", str(originals), "--cache-dir", str(cache), tmp=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(EXPECTED) * 2} variants, {len(EXPECTED) * 2} ok ({len(EXPECTED) * 2} MISS)" in r.stdout
    assert_a_server_on_it_hits(tmp_path, originals, "--cache-dir", str(cache))
    # A second run finds everything fresh: it resumes, producing nothing again.
    again = run_warm(str(site), "--local-root", str(originals), "--cache-dir", str(cache), tmp=tmp_path)
    assert again.returncode == 0 and f"({len(EXPECTED) * 2} HIT)" in again.stdout, again.stdout


@pytest.mark.parametrize("store", ["redis", "s3"])
def test_in_process_warm_fills_a_shared_store(store: str, site: Path, originals: Path, tmp_path: Path) -> None:
    """Warmed in-process into Redis or a bucket (a real redis-server, a real SeaweedFS): a replica
    started afterwards on that store, with no local tier, answers every browser with a HIT."""
    from cluster import RedisServer
    from seaweed import SeaweedFS

    env: dict[str, str] = {}
    if store == "redis":
        backend: Any = RedisServer(tmp_path / "redis").start()
        cache = backend.url
    else:
        backend = SeaweedFS(tmp_path / "seaweed").start()
        backend.put("warm-cache", "created", b"1")
        env, cache = backend.env(), "s3://warm-cache/variants"
    try:
        r = run_warm(str(site), "--local-root", str(originals), "--cache", cache, tmp=tmp_path, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{len(EXPECTED) * 2} variants, {len(EXPECTED) * 2} ok ({len(EXPECTED) * 2} MISS)" in r.stdout
        assert_a_server_on_it_hits(tmp_path, originals, "--cache", cache, "--cache-tier", "none", env=env)
    finally:
        backend.stop()


def test_warm_through_a_server_from_a_sitemap_and_failures_exit_1(site: Path, originals: Path, make_server: Any,
                                                                   tmp_path: Path) -> None:
    srv = make_server(IMAGES, "--local-root", str(originals))
    bad = img("/a.jpg", 641)          # not an allowed width
    missing = img("/missing.jpg", 640)
    (site / "broken.html").write_text(f'<img src="{bad.replace("&", "&amp;")}"><img src="{missing.replace("&", "&amp;")}">')
    with Origin(root=site) as pages:
        sitemap = site / "sitemap.xml"
        sitemap.write_text('<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                           f"<url><loc>{pages.base_url}/index.html</loc></url>"
                           f"<url><loc>{pages.base_url}/broken.html</loc></url></urlset>")
        r = run_warm(f"{pages.base_url}/sitemap.xml", "--server", srv.url, "--formats", "webp", tmp=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"FAILED 400 webp {bad}: \"w\" parameter (width) of 641 is not allowed" in r.stdout
    assert f"FAILED 404 webp {missing}" in r.stdout
    assert "2 failed" in r.stdout
    resp = httpx.get(srv.url + img("/wide.jpg", 1920), headers={"Accept": "image/webp"}, timeout=60)
    assert resp.headers["x-nextjs-cache"] == "HIT"


@pytest.mark.parametrize("server_formats", [["image/avif", "image/webp"], ["image/webp"]])
def test_through_a_server_without_a_config_it_asks_as_browsers_do(site: Path, originals: Path, make_server: Any,
                                                                  server_formats: list[str]) -> None:
    # No --config/--next-config: imgopt warm cannot know what the server negotiates, so it asks
    # for AVIF and WebP as an AVIF browser and a WebP browser do; every browser then gets a HIT.
    srv = make_server({**IMAGES, "formats": server_formats}, "--local-root", str(originals))
    r = subprocess.run([sys.executable, "-m", "imgopt", "warm", str(site), "--server", srv.url],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(EXPECTED) * 2} variants, {len(EXPECTED) * 2} ok" in r.stdout and " 0 failed" in r.stdout
    assert_every_browser_hits(srv.url, EXPECTED, avif="image/avif" in server_formats)


@pytest.mark.parametrize("with_config", [True, False])
def test_a_fast_first_server_is_warmed_with_its_avifs_made_now(with_config: bool, site: Path, originals: Path,
                                                                  make_server: Any, tmp_path: Path) -> None:
    """A server with --fast-first answers a browser's cold AVIF request with the WebP and makes
    the AVIF later; warm asks again as an AVIF-only client, so when it ends every AVIF is made."""
    srv = make_server(IMAGES, "--local-root", str(originals), "--fast-first")
    if with_config:
        r = run_warm(str(site), "--server", srv.url, tmp=tmp_path)
    else:
        r = subprocess.run([sys.executable, "-m", "imgopt", "warm", str(site), "--server", srv.url],
                           capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(EXPECTED) * 2} variants, {len(EXPECTED) * 2} ok" in r.stdout
    assert_every_browser_hits(srv.url, EXPECTED)


def test_in_process_warm_with_the_servers_fast_first_flag_makes_every_avif(site: Path, originals: Path,
                                                                             tmp_path: Path) -> None:
    """The same flags as serve, --fast-first among them: in this process every variant is made
    before warm ends (nothing deferred to a background that ends with it)."""
    cache = tmp_path / "cache"
    r = run_warm(str(site), "--local-root", str(originals), "--cache-dir", str(cache), "--fast-first", tmp=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_a_server_on_it_hits(tmp_path, originals, "--cache-dir", str(cache))


def test_a_terminal_gets_a_progress_bar_and_a_pipe_does_not(site: Path, originals: Path, tmp_path: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios
    import threading

    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # 30 rows, 100 columns
    seen: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not data:
                return
            seen.append(data)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    argv = warm_argv(str(site), "--local-root", str(originals), "--cache-dir", str(tmp_path / "cache"), tmp=tmp_path)
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL, timeout=600)
    os.close(terminal)
    reader.join(30)
    os.close(master)
    n = len(EXPECTED) * 2
    assert proc.returncode == 0
    bar = b"".join(seen).decode("utf-8", "replace")
    assert f"{n}/{n}" in bar and "variant/s" in bar, bar
    assert b"variant/s" not in proc.stdout and f"imgopt warm: {n} variants".encode() in proc.stdout
    piped = run_warm(str(site), "--local-root", str(originals), "--cache-dir", str(tmp_path / "cache"), tmp=tmp_path)
    assert piped.returncode == 0 and "variant/s" not in piped.stderr + piped.stdout


def test_warm_asks_again_while_the_server_is_busy(site: Path, originals: Path, make_server: Any,
                                                  tmp_path: Path) -> None:
    """A server whose workers and queue are full answers 503 with Retry-After; warm asks again
    after that long instead of counting the variant as failed."""
    from conftest import wait_for
    from test_isolation import HOOKS, in_background, marked, metric

    release = tmp_path / "release"
    (originals / "held.png").write_bytes(marked(f"IMGOPT-TEST-WAIT:{release};1"))
    srv = make_server(IMAGES, "--local-root", str(originals), "--workers", "1", "--queue", "0", env=HOOKS)
    thread, _out = in_background(lambda: srv.get("/held.png", 64, 75))
    wait_for(lambda: metric(srv, "imgopt_pool_running") == 1, "the only worker held")
    warm_run = subprocess.Popen(warm_argv(str(site), "--server", srv.url, tmp=tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: metric(srv, "imgopt_http_requests_total", status="503") >= 1, "warm to be told 503")
    finally:
        release.write_bytes(b"")
    out, err = warm_run.communicate(timeout=600)
    thread.join(30)
    n = len(EXPECTED) * 2
    assert warm_run.returncode == 0, out + err
    assert f"{n} variants, {n} ok" in out and " 0 failed" in out
    assert "asked again after the server said it was busy" in out
    assert_every_browser_hits(srv.url, EXPECTED)


def test_dry_run_lists_the_variants(site: Path, tmp_path: Path) -> None:
    r = run_warm(str(site), "--dry-run", "--formats", "avif,original", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if "\t" in line]
    assert {tuple(line.split("\t")) for line in lines} == {(f, p) for p in EXPECTED for f in ("avif", "original")}
    assert "(dry run)" in r.stdout


@pytest.mark.parametrize("formats,message", [("gif", "unknown format 'gif'"),
                                             ("webp,avif", None)])
def test_formats_are_checked_against_the_config(formats: str, message: str | None) -> None:
    if message is None:
        assert warm.formats_for(["image/avif", "image/webp"], formats.split(",")) == ["webp", "avif"]
        with pytest.raises(warm.WarmError, match="not in the config"):
            warm.formats_for(["image/webp"], formats.split(","))
    else:
        with pytest.raises(warm.WarmError, match=message):
            warm.formats_for(["image/webp"], formats.split(","))


def test_a_site_without_image_urls_says_so_and_exits_1(tmp_path: Path) -> None:
    # a wrong folder (or a build whose images skip /_next/image) must not pass as a warmed cache
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "index.html").write_text('<img src="/a.png"><img src="/_next/static/media/b.jpg">')
    r = run_warm(str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), tmp=tmp_path)
    assert r.returncode == 1 and "no /_next/image URLs found in" in r.stderr, r.stdout + r.stderr
    dry = run_warm(str(tmp_path / "out"), "--dry-run", tmp=tmp_path)
    assert dry.returncode == 0 and "no /_next/image URLs found in" in dry.stderr


def test_a_source_that_is_nothing_is_a_usage_error(tmp_path: Path) -> None:
    r = run_warm(str(tmp_path / "nope"), "--dry-run", tmp=tmp_path)
    assert r.returncode == 2 and "not a folder, a file or an http(s) URL" in r.stderr
