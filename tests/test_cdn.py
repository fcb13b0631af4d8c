"""The CDN recipes in deploy/cdn/, run as they are written in front of a real imgopt: Varnish
(Debian's varnish) with deploy/cdn/varnish.vcl, and nginx's proxy_cache with
deploy/cdn/nginx-cache.conf. Only the listen address, imgopt's port and the cache folder change.

Both normalise Accept to the tokens imgopt negotiates on, so five real browsers' Accept
strings make no more cached objects than there are distinct outputs; each browser gets the
right format; errors are never cached; a conditional request is answered 304 from the cache;
and one client's X-Request-Id is never replayed to another from the cache.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import ROOT, ImgoptServer, free_port, nginx_conf, wait_for

CDN = ROOT / "deploy" / "cdn"

# Image requests' Accept headers of real browsers (and curl).
BROWSERS = {
    "chrome": "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    "edge": "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    "firefox": "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
    "safari": "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,"
              "image/svg+xml,image/*;q=0.8,*/*;q=0.5",
    "curl": "*/*",
}
EXPECTED = {"chrome": "image/avif", "edge": "image/avif", "firefox": "image/avif", "safari": "image/avif",
            "curl": "image/jpeg"}
IMAGES = {"formats": ["image/avif", "image/webp"]}


def need(name: str) -> str:
    for d in ("", "/usr/sbin/", "/usr/bin/", "/sbin/"):
        path = shutil.which(name) if not d else (d + name if os.access(d + name, os.X_OK) else None)
        if path:
            return path
    pytest.fail(f"{name} is not installed; .ci/run installs it (apt-get install varnish nginx-light)", pytrace=False)


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s:\n{log.read_text(errors='replace')}")


class Cdn:
    def __init__(self, kind: str, url: str, proc: subprocess.Popen[bytes], work: Path) -> None:
        self.kind, self.url, self.proc, self.work = kind, url, proc, work

    def objects(self) -> int:
        """Objects the cache holds now."""
        if self.kind == "varnish":
            out = subprocess.run([need("varnishstat"), "-n", str(self.work / "varnish"), "-1", "-f", "MAIN.n_object"],
                                 capture_output=True, text=True, check=True, timeout=30).stdout
            return int(out.split()[1])
        return sum(1 for p in (self.work / "cache").rglob("*") if p.is_file())

    def cache_state(self, r: httpx.Response) -> str:
        return r.headers.get("x-cache", "")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_varnish(work: Path, imgopt_port: int) -> Cdn:
    vcl = (CDN / "varnish.vcl").read_text()
    assert vcl.count('.port = "3001";') == 1
    conf = work / "imgopt.vcl"
    conf.write_text(vcl.replace('.port = "3001";', f'.port = "{imgopt_port}";'))
    port = free_port()
    log = work / "varnishd.log"
    proc = subprocess.Popen([need("varnishd"), "-F", "-j", "none", "-n", str(work / "varnish"), "-a", f"127.0.0.1:{port}",
                             "-f", str(conf), "-s", "malloc,64m", "-T", "none"],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", proc, log)
    return Cdn("varnish", url, proc, work)


def start_nginx(work: Path, imgopt_port: int) -> Cdn:
    recipe = (CDN / "nginx-cache.conf").read_text()
    for old in ("listen 80;", "server 127.0.0.1:3001;", "/var/cache/nginx/imgopt"):
        assert recipe.count(old) == 1, old
    port = free_port()
    body = (recipe.replace("listen 80;", f"listen 127.0.0.1:{port};")
            .replace("server 127.0.0.1:3001;", f"server 127.0.0.1:{imgopt_port};")
            .replace("/var/cache/nginx/imgopt", str(work / "cache")))
    conf = work / "nginx.conf"
    conf.write_text(nginx_conf(work, body))
    log = work / "stdout.log"
    proc = subprocess.Popen([need("nginx"), "-p", f"{work}/", "-e", str(work / "error.log"), "-c", str(conf),
                             "-g", "daemon off;"], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/metrics", proc, work / "error.log")
    return Cdn("nginx", url, proc, work)


@pytest.fixture
def site(corpus: Path, tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    for name in ("test.jpg", "test.png", "test.bmp"):
        shutil.copy(corpus / name, root / name)
    return root


def cdn_in_front(kind: str, site: Path, tmp_path: Path, *args: str) -> Iterator[tuple[Cdn, ImgoptServer]]:
    """imgopt (with ``args``) and the ``kind`` recipe in front of it, stopped afterwards."""
    imgopt = ImgoptServer(tmp_path / "imgopt", IMAGES, "--local-root", str(site), *args).start()
    work = tmp_path / kind
    work.mkdir()
    try:
        cdn = (start_varnish if kind == "varnish" else start_nginx)(work, imgopt.port)
        try:
            yield cdn, imgopt
        finally:
            cdn.stop()
    finally:
        imgopt.stop()


@pytest.fixture(params=["varnish", "nginx"])
def stack(request: pytest.FixtureRequest, site: Path, tmp_path: Path) -> Iterator[tuple[Cdn, ImgoptServer]]:
    yield from cdn_in_front(request.param, site, tmp_path)


@pytest.fixture(params=["varnish", "nginx"])
def fast_first_stack(request: pytest.FixtureRequest, site: Path, tmp_path: Path) -> Iterator[tuple[Cdn, ImgoptServer]]:
    yield from cdn_in_front(request.param, site, tmp_path, "--fast-first", "--fast-first-max-age", "1")


def image_url(name: str = "/test.jpg", w: int = 640) -> str:
    return f"/_next/image?url={name.replace('/', '%2F')}&w={w}&q=75"


def upstream_requests(imgopt: ImgoptServer) -> int:
    """Image requests imgopt has answered (its own counter, so the CDN cannot fake it)."""
    text = httpx.get(imgopt.url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("imgopt_http_requests_total{") and 'route="image"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def test_five_browsers_make_one_object_per_output(stack: tuple[Cdn, ImgoptServer]) -> None:
    cdn, imgopt = stack
    bodies: dict[str, bytes] = {}
    with httpx.Client(base_url=cdn.url, timeout=60) as client:
        for name, accept in BROWSERS.items():
            r = client.get(image_url(), headers={"Accept": accept, "Accept-Encoding": "gzip, deflate, br"})
            assert r.status_code == 200, (name, r.status_code, r.text[:200])
            assert r.headers["content-type"] == EXPECTED[name], name
            assert "Accept" in r.headers.get("vary", ""), "clients and caches further down still need Vary"
            bodies[name] = r.content
        again = {name: client.get(image_url(), headers={"Accept": accept}) for name, accept in BROWSERS.items()}
    outputs = set(EXPECTED.values())
    assert cdn.objects() <= len(outputs), f"{cdn.objects()} cached objects for {len(outputs)} distinct outputs"
    assert len({bodies[b] for b in ("chrome", "edge", "firefox", "safari")}) == 1
    for name, r in again.items():
        assert r.status_code == 200 and r.headers["content-type"] == EXPECTED[name], name
        assert cdn.cache_state(r) == "HIT", (name, r.headers)
        assert r.content == bodies[name]


def test_a_webp_only_browser_gets_webp(stack: tuple[Cdn, ImgoptServer]) -> None:
    cdn, _imgopt = stack
    with httpx.Client(base_url=cdn.url, timeout=60) as client:
        chrome = client.get(image_url(), headers={"Accept": BROWSERS["chrome"]})
        old = client.get(image_url(), headers={"Accept": "image/webp,*/*"})
    assert chrome.headers["content-type"] == "image/avif"
    assert old.status_code == 200 and old.headers["content-type"] == "image/webp"
    assert old.content[8:12] == b"WEBP"


def test_errors_are_never_cached(stack: tuple[Cdn, ImgoptServer], site: Path, corpus: Path) -> None:
    cdn, imgopt = stack
    url = image_url("/later.jpg")
    with httpx.Client(base_url=cdn.url, timeout=60) as client:
        first = client.get(url, headers={"Accept": BROWSERS["chrome"]})
        assert first.status_code == 404, first.text
        shutil.copy(corpus / "test.jpg", site / "later.jpg")
        second = client.get(url, headers={"Accept": BROWSERS["chrome"]})
        assert second.status_code == 200 and second.headers["content-type"] == "image/avif"
        bad = [client.get(image_url("/test.jpg", w=641), headers={"Accept": BROWSERS["chrome"]}) for _ in range(2)]
    assert [r.status_code for r in bad] == [400, 400]
    assert all(cdn.cache_state(r) != "HIT" for r in bad)


def test_conditional_requests_are_answered_304_from_the_cache(stack: tuple[Cdn, ImgoptServer]) -> None:
    cdn, imgopt = stack
    with httpx.Client(base_url=cdn.url, timeout=60) as client:
        r = client.get(image_url(), headers={"Accept": BROWSERS["firefox"]})
        etag = r.headers["etag"]
        before = upstream_requests(imgopt)
        r304 = client.get(image_url(), headers={"Accept": BROWSERS["safari"], "If-None-Match": etag})
        assert r304.status_code == 304 and r304.content == b""
        assert r304.headers["etag"] == etag
        other = client.get(image_url(), headers={"Accept": BROWSERS["safari"], "If-None-Match": '"other"'})
        assert other.status_code == 200 and other.content == r.content
    assert upstream_requests(imgopt) == before, "the CDN asked imgopt again instead of answering from its cache"


def test_a_request_id_is_never_replayed_from_the_cache(stack: tuple[Cdn, ImgoptServer]) -> None:
    cdn, _imgopt = stack
    with httpx.Client(base_url=cdn.url, timeout=60) as client:
        a = client.get(image_url(), headers={"Accept": BROWSERS["chrome"], "X-Request-Id": "client-a-1234"})
        b = client.get(image_url(), headers={"Accept": BROWSERS["chrome"], "X-Request-Id": "client-b-5678"})
        c = client.get(image_url(), headers={"Accept": BROWSERS["chrome"]})
    assert a.headers.get("x-request-id") == "client-a-1234"
    assert cdn.cache_state(b) == "HIT" and b.headers.get("x-request-id") == "client-b-5678"
    assert cdn.cache_state(c) == "HIT" and c.headers.get("x-request-id") not in (None, "", "client-a-1234", "client-b-5678")


def test_compressed_bodies_follow_accept_encoding(stack: tuple[Cdn, ImgoptServer]) -> None:
    """BMP is served as it is, gzipped for clients that take gzip: the cache keeps them apart."""
    cdn, _imgopt = stack
    url = image_url("/test.bmp")
    with httpx.Client(base_url=cdn.url, timeout=60) as client:
        gz = client.get(url, headers={"Accept": "*/*", "Accept-Encoding": "gzip"})
        plain = client.get(url, headers={"Accept": "*/*", "Accept-Encoding": "identity"})
    assert gz.status_code == 200 and gz.headers.get("content-encoding") == "gzip"
    assert plain.status_code == 200 and plain.headers.get("content-encoding") is None
    assert gz.content == plain.content and plain.content[:2] == b"BM"  # httpx decodes gzip


def test_fast_first_through_the_cdn(fast_first_stack: tuple[Cdn, ImgoptServer]) -> None:
    """With --fast-first the CDN keeps the WebP answered in place of a cold AVIF only for its
    short max-age, then revalidates and takes the AVIF; a client that names AVIF but not WebP
    never gets that WebP; one AVIF and one WebP encode in all."""
    from test_fast_first import transforms

    cdn, imgopt = fast_first_stack
    url = image_url()
    with httpx.Client(base_url=cdn.url, timeout=60) as client:
        first = client.get(url, headers={"Accept": BROWSERS["chrome"]})
        assert first.status_code == 200 and first.headers["content-type"] == "image/webp", first.headers
        assert first.headers["cache-control"] == "public, max-age=1, must-revalidate"
        assert "Accept" in first.headers.get("vary", "")
        avif_only = client.get(url, headers={"Accept": "image/avif"})
        assert avif_only.status_code == 200 and avif_only.headers["content-type"] == "image/avif"
        assert avif_only.content[4:12] == b"ftypavif"

        def browsers_get_avif() -> bool:
            r = client.get(url, headers={"Accept": BROWSERS["firefox"]})
            assert r.status_code == 200, (r.status_code, r.text[:200])
            assert r.headers["content-type"] in ("image/webp", "image/avif")
            return r.headers["content-type"] == "image/avif"

        wait_for(browsers_get_avif, "the CDN to hand browsers the AVIF once the WebP's max-age is over",
                 timeout=60, interval=0.25)
        again = client.get(url, headers={"Accept": BROWSERS["safari"]})
    assert again.headers["content-type"] == "image/avif" and cdn.cache_state(again) == "HIT", again.headers
    assert again.headers["cache-control"] == "public, max-age=14400, must-revalidate"
    assert again.content == avif_only.content
    assert transforms(imgopt.url) == {"avif": 1, "webp": 1}


EDGE_FUNCTIONS = r"""
const fs = require('node:fs')
const [cloudfront, worker, acceptsJson] = process.argv.slice(1)
const accepts = JSON.parse(acceptsJson)
eval(fs.readFileSync(cloudfront, 'utf8'))  // defines handler()
;(async () => {
  const { imgoptAccept } = await import(worker)
  const out = {}
  for (const [name, accept] of Object.entries(accepts)) {
    const req = await handler({ request: { headers: { accept: { value: accept }, 'x-request-id': { value: 'a' } } } })
    out[name] = { cloudfront: req.headers.accept ? req.headers.accept.value : '', requestId: 'x-request-id' in req.headers,
                  worker: imgoptAccept(accept) }
  }
  process.stdout.write(JSON.stringify(out))
})()
"""


def test_the_cloudfront_function_and_the_worker_normalise_like_the_tested_recipes() -> None:
    """CloudFront and Cloudflare cannot run here; their edge code is plain JavaScript, run with
    node on the same Accept headers: it must pick what the Varnish and nginx recipes pick."""
    node = shutil.which("node")
    if not node:
        pytest.fail("node is not installed (Node.js >= 20 runs the loader tests too)", pytrace=False)
    import json
    accepts = {**BROWSERS, "old": "image/webp,*/*", "avif-only": "image/avif", "none": ""}
    out = subprocess.run([node, "--input-type=commonjs", "-e", EDGE_FUNCTIONS, str(CDN / "cloudfront-function.js"),
                          str(CDN / "cloudflare-worker.js"), json.dumps(accepts)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    got = json.loads(out)
    want = {name: ("image/avif,image/webp" if EXPECTED.get(name) == "image/avif" else "image/avif"
                   if name == "avif-only" else "image/webp" if name == "old" else "") for name in accepts}
    assert {n: g["cloudfront"] for n, g in got.items()} == want
    assert {n: g["worker"] for n, g in got.items()} == want
    assert not any(g["requestId"] for g in got.values())
    vcl = (CDN / "varnish.vcl").read_text()
    nginx = (CDN / "nginx-cache.conf").read_text()
    for value in ("image/avif,image/webp", "image/avif", "image/webp"):
        assert f'"{value}"' in vcl and f'"{value}"' in nginx
