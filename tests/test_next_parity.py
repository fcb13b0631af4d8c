"""imgopt against a real ``next start``: the same requests to both, the answers compared.

tests/e2e/parity is a small Next.js 16 app (the node modules of tests/e2e/site, linked) whose
``public/`` holds the test corpus and whose routes are the odd upstreams of spec §6
(``/api/no-header``, ``/api/wrong-header.svg``, ``/png-as-octet-stream``). It is built once per
profile with ``next build --webpack`` and started with ``next start``; imgopt reads the same
next.config.js (``--next-config``) and fetches local urls from that Next server (``--origin``),
so both sides see the same bytes, the same ``Cache-Control`` and the same ``images`` object.
Profiles S and B give imgopt the build's folder instead (``--next-config .next-S``): the config
``next build`` resolved, which is all an ``output: 'standalone'`` folder keeps.

Every case sends one request to Next's ``/_next/image`` and the same one to imgopt's, and
compares what a client sees: the status, the error text, and for images the Content-Type,
Cache-Control, Vary, Content-Disposition, Content-Security-Policy, X-Nextjs-Cache, whether
there is an ETag, and the decoded size and frame count. The few places where imgopt answers
differently on purpose are listed in DEVIATIONS with the reason, and their cases assert
imgopt's answer instead (so a change on either side shows up here).

Not compared: the image bytes (different encoders), Cache-Control and Content-Type of error
answers (imgopt sends ``no-store`` and ``text/plain``), the ETag's value (imgopt quotes it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

import httpx
import pytest
import pyvips

from conftest import ROOT, ImgoptServer, free_port
from imgopt import encoding
from imgopt.app import content_disposition
from imgopt.params import negotiate
from origin import Origin
from test_e2e_browser import NEXT_BIN, Proc, need, node_env, run_logged, site_deps  # noqa: F401 (fixture)

APP = ROOT / "tests" / "e2e" / "parity"
ARTIFACTS = ROOT / "tests" / "e2e" / "artifacts"
WEBP = "image/webp,*/*"
CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
SAFARI = "image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"


# -- the two servers ---------------------------------------------------------------------------

@dataclass
class Pair:
    next_url: str
    imgopt_url: str
    origin: Origin | None
    static: str  # /_next/static/media/still.<hash>.jpg of this build
    base_path: str = ""

    def both(self, query: str, accept: str | None, method: str = "GET",
             route: str | None = None) -> tuple[httpx.Response, httpx.Response]:
        headers = {"accept-encoding": "identity"}  # Next gzips ICO/BMP/SVG passthroughs otherwise
        if accept is not None:
            headers["accept"] = accept
        route = self.base_path + "/_next/image" if route is None else route
        return tuple(  # type: ignore[return-value]
            httpx.request(method, f"{base}{route}{query}", headers=headers, timeout=30)
            for base in (self.next_url, self.imgopt_url)
        )


@pytest.fixture(scope="module")
def parity_app(site_deps: Path, corpus: Path) -> Path:
    """The app's public/ from the corpus, and its node_modules linked from tests/e2e/site."""
    modules = APP / "node_modules"
    if not modules.exists():
        modules.symlink_to(site_deps / "node_modules", target_is_directory=True)
    public = APP / "public"
    shutil.rmtree(public, ignore_errors=True)
    # not the _next/ folder another test may have put in the corpus: Next refuses public/_next
    shutil.copytree(corpus, public, ignore=shutil.ignore_patterns("_next"))
    shutil.copyfile(corpus / "test.png", public / "max-age.png")
    (public / "img").mkdir()
    for name in ("test.png", "test.svg", "large.jpg"):
        shutil.copyfile(corpus / name, public / "img" / name)
    # file names that Content-Disposition has to carry (spec 4.3 item 5)
    for name, src in ODD_NAMES.items():
        shutil.copyfile(corpus / src, public / name)
    (APP / "media").mkdir(exist_ok=True)
    shutil.copyfile(corpus / "test.jpg", APP / "media" / "still.jpg")  # imported by app/page.js
    return APP


ODD_NAMES = {
    "file.name.with.dots.gif": "test.gif", "no-extension": "test.png", "名前.png": "test.png",
    "emoji-😀.jpg": "test.jpg", 'quote"d.png': "test.png", "semi;colon.png": "test.png",
    "per%cent.png": "test.png", "UPPER.PNG": "test.png", ".hidden.png": "test.png", "trailing-dot.": "test.png",
}


def static_media(profile: str) -> str:
    """The url of the image that app/page.js imports, as this build emitted it."""
    found = sorted((APP / f".next-{profile}" / "static" / "media").glob("still.*.jpg"))
    assert found, "the build emitted no static media"
    return f"/_next/static/media/{found[0].name}"


@contextlib.contextmanager
def running_pair(profile: str, tmp: Path, origin: Origin | None = None, base_path: str = "",
                 built: bool = False) -> Iterator[Pair]:
    """next build + next start of the app under `profile`, and imgopt in front of it, reading the
    same next.config.js with node, or with `built` the config the build resolved (its distDir's
    required-server-files.json, what an `output: 'standalone'` folder keeps)."""
    env = {"PARITY_PROFILE": profile, **({"PARITY_REMOTE_ORIGIN": origin.base_url} if origin else {})}
    node = need("node", "Node.js")
    # --webpack: Turbopack refuses a node_modules that is a link to outside the app's root.
    run_logged([node, str(NEXT_BIN), "build", "--webpack"], ARTIFACTS / f"next-build-parity-{profile}.log",
               cwd=APP, env=node_env(**env), timeout=900, what=f"next build (parity {profile})")
    shutil.rmtree(APP / f".next-{profile}" / "cache" / "images", ignore_errors=True)
    port = free_port()
    nxt = Proc([node, str(NEXT_BIN), "start", "-p", str(port), "-H", "127.0.0.1"],
               ARTIFACTS / f"next-start-parity-{profile}.log", cwd=APP, env=node_env(NODE_ENV="production", **env))
    next_url = f"http://127.0.0.1:{port}"
    try:
        nxt.wait_http(next_url + base_path + "/")
        config = APP / f".next-{profile}" if built else APP / "next.config.js"
        imgopt = ImgoptServer(tmp, None, "--next-config", str(config), "--origin", next_url, env=env).start()
        try:
            yield Pair(next_url, imgopt.url, origin, base_path + static_media(profile), base_path)
        finally:
            imgopt.stop()
    finally:
        nxt.stop()


@pytest.fixture(scope="module")
def pair_d(parity_app: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with running_pair("D", tmp_path_factory.mktemp("parity-d")) as pair:
        yield pair


@pytest.fixture(scope="module")
def pair_c(parity_app: Path, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with Origin(root=corpus) as origin, running_pair("C", tmp_path_factory.mktemp("parity-c"), origin) as pair:
        yield pair


@pytest.fixture(scope="module")
def pair_s(parity_app: Path, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("parity-s-origin")
    for sub in ("ok", "url", "no"):
        shutil.copytree(corpus, root / sub)
    with Origin(root=root) as origin, running_pair("S", tmp_path_factory.mktemp("parity-s"), origin, built=True) as pair:
        yield pair


@pytest.fixture(scope="module")
def pair_b(parity_app: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with running_pair("B", tmp_path_factory.mktemp("parity-b"), base_path="/docs", built=True) as pair:
        yield pair


@pytest.fixture(scope="module")
def pair_a(parity_app: Path, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with Origin(root=corpus) as origin, running_pair("A", tmp_path_factory.mktemp("parity-a"), origin) as pair:
        yield pair


# -- what a client sees ------------------------------------------------------------------------

def seen(r: httpx.Response) -> dict[str, Any]:
    out: dict[str, Any] = {"status": r.status_code}
    if r.status_code >= 300:
        out["body"] = r.text
        return out
    h = r.headers
    out.update({
        "content-type": h.get("content-type"),
        "cache-control": h.get("cache-control"),
        "vary": (h.get("vary") or "").replace(", Accept-Encoding", ""),
        "content-disposition": h.get("content-disposition"),
        "content-security-policy": h.get("content-security-policy"),
        "x-nextjs-cache": h.get("x-nextjs-cache"),
        "etag": bool(h.get("etag")),
        "content-length": h.get("content-length") == str(len(r.content)) if r.request.method == "GET" else None,
    })
    if r.request.method == "GET":
        out["picture"] = picture(r.content, h.get("content-type") or "")
    return out


def picture(body: bytes, ctype: str) -> tuple[int, int, int] | str | None:
    """(width, height, frames) as libvips decodes it; None for types it does not read."""
    if not ctype.startswith("image/") or ctype in ("image/svg+xml", "image/x-icns", "image/jxl", "image/jp2",
                                                   "image/x-icon", "image/bmp", "image/heic"):
        return None
    try:
        try:
            im = pyvips.Image.new_from_buffer(body, "", n=-1)
        except pyvips.Error:
            im = pyvips.Image.new_from_buffer(body, "")
    except pyvips.Error as e:
        return f"undecodable: {str(e).splitlines()[0]}"
    pages = im.get("n-pages") if im.get_typeof("n-pages") else 1
    height = im.get("page-height") if im.get_typeof("page-height") else im.height
    return (im.width, height, pages)


# -- the cases ---------------------------------------------------------------------------------

# Where imgopt answers differently on purpose (spec §9 and the README's "What the endpoint
# answers"): each function gets (next, imgopt) as seen() dicts and asserts both sides.
def _next_500_imgopt_400(n: dict[str, Any], i: dict[str, Any]) -> None:
    # Next throws on a malformed %-escape (decodeURIComponent): a bare 500. Bad input is a 400 with a message here.
    assert n["status"] == 500 and i == {"status": 400, "body": '"url" parameter is invalid'}


def _next_404_imgopt_400(n: dict[str, Any], i: dict[str, Any]) -> None:
    # "/\\host/x": Next 16.5 fetches it from its own router, which finds nothing (16.4 threw, a 500).
    # A backslash is refused here as bad input.
    assert n == {"status": 404, "body": '"url" parameter is valid but internal response is invalid'}
    assert i == {"status": 400, "body": '"url" parameter is invalid'}


def _next_5xx_imgopt_502(n: dict[str, Any], i: dict[str, Any]) -> None:
    # An upstream that fails (5xx, 399, reset, refused, cut short) is a 500 in Next; a fault
    # upstream is a 502 here, with the same message (and what happened, in brackets).
    assert n["status"] == 500 and i["status"] == 502
    assert i["body"].startswith(n["body"] if n["body"].startswith('"url"') else '"url" parameter is valid but upstream')


def _next_serves_bomb_imgopt_400(n: dict[str, Any], i: dict[str, Any]) -> None:
    # Next's sharp refuses the pixel count and Next falls back to the original bytes: the
    # decompression bomb goes to the browser. imgopt refuses it from its header.
    assert n["status"] == 200 and i["status"] == 400
    assert i["body"].startswith("The requested image is too large: ")


def _next_fallback_imgopt_optimizes(n: dict[str, Any], i: dict[str, Any]) -> None:
    # corrupt.jpg only makes libjpeg warn: sharp (failOn 'warning') refuses it and Next serves
    # the original; browsers show it the same way, so imgopt optimizes it.
    assert n["status"] == i["status"] == 200
    assert n["content-type"] == "image/jpeg" and n["picture"] == (400, 300, 1)
    assert i["content-type"] == "image/webp" and i["picture"] == (384, 288, 1)


def _same_image_shares_the_entry(n: dict[str, Any], i: dict[str, Any]) -> None:
    # "/test.png  " and "http://host/test.png#x" fetch /test.png on both sides, but Next keys its
    # cache on the string with the spaces or the fragment (a second MISS, a second copy); imgopt
    # drops them first and answers from the entry of /test.png.
    assert (n["x-nextjs-cache"], i["x-nextjs-cache"]) == ("MISS", "HIT")
    assert {**i, "x-nextjs-cache": "MISS"} == n


def _userinfo_refused(n: dict[str, Any], i: dict[str, Any]) -> None:
    # Next fetches http://user:pass@host/ (and sends the credentials); imgopt refuses userinfo
    # in a url (spec §8 item 4).
    assert n["status"] == 200 and i == {"status": 400, "body": '"url" parameter is not allowed'}


def _post_is_405(n: dict[str, Any], i: dict[str, Any]) -> None:
    assert n["status"] == 200 and i == {"status": 405, "body": "Method Not Allowed"}


def _nul_is_400(n: dict[str, Any], i: dict[str, Any]) -> None:
    # Next asks its router for the path and gets a 404; a NUL in a url is refused here.
    assert n["status"] == 404 and i == {"status": 400, "body": '"url" parameter is invalid'}


@dataclass(frozen=True)
class Case:
    query: str
    accept: str | None = WEBP
    method: str = "GET"
    deviation: Callable[[dict[str, Any], dict[str, Any]], None] | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.query[:90]} [{self.accept}]"


def q(url: str, w: int, qual: int = 75, extra: str = "") -> str:
    return f"?url={quote(url, safe='')}&w={w}&q={qual}{extra}"


W_D, W_C = 384, 399

CASES_D = [
    # §6.1 validation, in Next's order, and the odd inputs around it
    Case(f"?w={W_D}&q=75"), Case("?url=/test.png&q=75"), Case(f"?url=/test.png&w={W_D}"),
    *[Case(f"?url=/test.png&w={W_D}&q={v}") for v in ("101", "0", "foo", "99.9", "13", "075", "75.0", "%2B75", "")],
    *[Case(f"?url=/test.png&w={v}&q=75") for v in ("0", "000", "-100", "foo", "99.9", "1000", "8", "3", "0384",
                                                    "99999999999999999999999", "%EF%BC%93%EF%BC%98%EF%BC%94", "")],
    Case("?url=/test.png&w=0&q=foo"), Case("?url=/test.png&w=1000&q=101"),
    Case(q("/" + "a" * 4000, W_D)), Case(q("//example.vercel.sh", W_D)), Case(q("file://example.vercel.sh:1/test.png", W_D)),
    Case(q("ftp://example.vercel.sh:1/test.png", W_D)), Case(q("/_next/image?url=test.pngw=1&q=75", W_D)),
    Case(q("%2F_next%2Fimage%3Furl%3Dtest.pngw%3D1%26q%3D1", W_D)), Case(q("/assets/_next/image?url=%2Ftest.png", W_D)),
    Case(q("/_next/image/", W_D)), Case(q("/%5Fnext/image", W_D)), Case(q("/foo/../_next/image", W_D)),
    Case(q("http://vercel.com/button", W_D)), Case(q("/test.png?v=1", W_D)), Case(q("", W_D)),
    Case(f"?url=a&url=b&w={W_D}&q=75"), Case(f"?url=/test.png&w={W_D}&w={W_D}&q=75"), Case(f"?url=/test.png&w={W_D}&q=75&q=75"),
    Case(q("/test.png", W_D, extra="&dpl=abc")), Case(q("/test.png#frag", W_D)), Case(q("/test.png  ", W_D), deviation=_same_image_shares_the_entry),
    Case(q("/./x/../test%2Epng", W_D)), Case(q("http://127.0.0.1:1/x.png", W_D)), Case(q("notaurl", W_D)),
    # how the query string itself is read (Node's querystring: '+' is a space, and so on)
    *[Case(qs) for qs in (
        "?url=/dir+with+space/photo.jpg&w=384&q=75", "?url=%2Fdir%20with%20space%2Fphoto.jpg&w=384&q=75",
        "?url=/test.png&w=3%384&q=75", "?url=/test.png&w=384&q=7%35", "?url=/test.png&&w=384&q=75&",
        "?=x&url=/test.png&w=384&q=75", "?url=/test.png&w%5B%5D=384&q=75", "?url%5B%5D=/test.png&w=384&q=75",
        "?url=/test.png&w=384&q=75&__proto__=x", "?url=/test.png&w=384&q=75;x=1", "?url=/test.png&w=384&Q=75",
        "?url=/test.png&w=384&q=75&w", "?url=/test.png&w=%33%38%34&q=75", "?url=/test.png&w=+384&q=75",
        "?url=/test.png&w=384+&q=75", "?url=%2Ftest.png%3Fx%3D1&w=384&q=75", "?url=/test.png?&w=384&q=75",
        "?url=/test.png%3F&w=384&q=75", "?url=/test.png%23&w=384&q=75", "?url=/test.png&w=384&q=75#frag",
        "?url=/%74est.png&w=384&q=75", "?url=/test%2epng&w=384&q=75", "?url=%2F%2Fexample.com&w=384&q=75",
        "?url=/%2F/example.com/x.png&w=384&q=75", "?url=/%2e%2e/test.png&w=384&q=75",
    )],
    Case(q("/a%ZZ.png", W_D), deviation=_next_500_imgopt_400),
    Case(q("/\\example.com/x.png", W_D), deviation=_next_404_imgopt_400),
    Case(q("/\x00test.png", W_D), deviation=_nul_is_400),
    # §6.3 conversion, negotiation and passthrough
    *[Case(q(f"/{name}", W_D), accept=acc) for name in (
        "test.png", "test.jpg", "test.webp", "test.avif", "test.gif", "test.tiff", "test.bmp", "test.ico",
        "test.icns", "test.jp2", "test.svg", "test.pdf", "test.txt", "animated.gif", "animated.png",
        "animated2.png", "animated.webp", "animated-odd.gif", "mountains.jpg", "äöüščří.png",
        "dir with space/photo.jpg", "exif-rotated.jpg", "cmyk.jpg", "rgb16.png", "gray16.png",
        "gray-alpha.png", "palette.png", "alpha.png", "progressive.jpg", "interlaced.png", "multipage.tiff",
        "tiny.png", "tall.png", "does_not_exist.jpg", "bad/zero.png", "bad/truncated.jpg", "bad/truncated.png",
        "bad/wrong-magic.png", "bad/magic-only.png", "bad/polyglot.gif", "bad/html.png", "bad/huge-icc.jpg",
        "bad/many-exif.jpg", "bad/svg-script.svg",
    ) for acc in (WEBP, "image/invalid", SAFARI)],
    *[Case(q("/test.jpg", W_D), accept=acc) for acc in (
        None, "*/*", "image/*", "image/png", "image/avif", CHROME, "image/webp;q=0, image/*", "image/webp;q=0.5",
    )],
    Case(q("/test.jpg", 1080)), Case(q("/large.jpg", 3840)), Case(q("/large.jpg", 32)), Case(q("/tall.png", 640)),
    Case(q("/png-as-octet-stream", W_D)), Case(q("/api/no-header", W_D)), Case(q("/api/wrong-header.svg", W_D)),
    Case(q("/max-age.png", W_D)), Case(q("/max-age.png", W_D)),  # the second one is a HIT on both
    Case(q("/test.png", W_D), method="HEAD"), Case(q("/nope.png", W_D), method="HEAD"),
    Case(q("/test.png", 1000), method="HEAD"),
    *[Case(q(f"/{name}", W_D), accept=acc) for name in ODD_NAMES if name not in ("per%cent.png", ".hidden.png")
      for acc in (WEBP, "image/invalid")],
    Case(q("/per%cent.png", W_D), deviation=_next_500_imgopt_400),  # a malformed %-escape
    # Next's router answers a dotfile with a 500; from the origin that is an upstream fault
    Case(q("/.hidden.png", W_D), deviation=_next_5xx_imgopt_502),
    Case(q("{static}", W_D)), Case(q("{static}", W_D)), Case(q("{static}", 1080), accept=SAFARI),
    Case(q("{static}?v=1", W_D)), Case(q("{static}", W_D), method="HEAD"),
    Case(q("/bad/corrupt.jpg", W_D), deviation=_next_fallback_imgopt_optimizes),
    Case(q("/bad/bomb.png", W_D), deviation=_next_serves_bomb_imgopt_400),
    Case(q("/bad/bomb-gif.gif", W_D), deviation=_next_serves_bomb_imgopt_400),
    Case(q("/test.png", W_D), method="POST", deviation=_post_is_405),
]


def remote(path: str) -> str:
    return "{origin}" + path


CASES_C = [
    Case(q("/test.png", W_C), accept=CHROME), Case(q("/test.png", W_C), accept=WEBP),
    *[Case(q("/mountains.jpg", 1080, v), accept=acc) for v in (50, 75, 100) for acc in (CHROME, WEBP, SAFARI)],
    Case(q("/test.png", W_C, 13)), Case(q("/test.png", 400)), Case(q("/test.jpg", 1080)),
    *[Case(q("/test.jpg", W_C), accept=acc) for acc in (
        "image/avif", "image/webp;q=0.9,image/avif;q=0.8", "image/avif;q=0.5,image/webp", "image/*,image/webp",
        "image/avif;q=0,image/webp", "image/avif,image/webp",
    )],
    *[Case(q(remote(p), W_C)) for p in (
        "/test.png", "/test.jpg?status=404", "/nope.png", "/test.jpg?status=301&location=/test.png",
        "/redirect-loop", "/chain/3/test.jpg", "/chain/4/test.jpg", "/no-header", "/test.svg",
        "/test.png?ct=application/octet-stream", "/test.svg?ct=image/png", "/test.txt?ct=image/png",
        "/test.jpg?cc=public,max-age=86400", "/test.jpg?cc=s-maxage=99999,max-age=5", "/test.jpg?cc=no-store",
        "/test.jpg?cc=max-age=1", "/test.jpg?cc=public,%20max-age=%2231536000%22", "/gzip/test.png",
        "/chunked/test.png", "/animated.gif", "/test.ico", "/test.jp2", "/test.bmp", "/bad/truncated.jpg",
        "/lying-length/test.jpg", "/test.avif", "", "/dir%20with%20space/photo.jpg",
        "/%C3%A4%C3%B6%C3%BC%C5%A1%C4%8D%C5%99%C3%AD.png", "/_next/image?url=%2Ftest.png&w=399&q=75",
        # redirects: every status Next follows, relative and absolute Locations, and the ones it does not
        *[f"/test.jpg?status={c}&location=/test.png" for c in (301, 302, 303, 307, 308)],
        "/test.jpg?status=302&location=test.gif", "/test.jpg?status=302&location=%2F%2F127.0.0.1%3A{port}%2Ftest.gif",
        "/test.jpg?status=302&location=http%3A%2F%2Flocalhost%3A{port}%2Fanimated.gif",
        "/test.jpg?status=302&location=%2Ftest.png%23frag",
        "/test.jpg?status=302&location=%2Fnope.png", "/test.jpg?status=302&location=%2Ftest.txt",
        "/test.jpg?status=301&location=%2Ftest.png%3Fstatus%3D302%26location%3D%252Ftest.gif",
        "/test.jpg?status=204", "/test.jpg?status=206", "/test.jpg?status=203", "/test.jpg?status=410",
        "/test.jpg?status=429", "/test.jpg?status=418",
    )],
    *[Case(q(u, W_C)) for u in (
        "http://[::1]:{port}/test.png", "http://[0:0::1]:{port}/test.png",  # one cache entry: HIT on both
        "http://[0000:0000:0000:0000:0000:0000:0000:0001]:{port}/test.png", "HTTP://127.0.0.1:{port}/test.png",
        "http://127.0.0.1.:{port}/test.png", "http://2130706433:{port}/test.png", "http://127.1:{port}/test.png",
        "http://localhost:{port}/test.png", "http://example.com:99999/x.png",
        # WHATWG's leniency for http(s): any run of / and \ after the scheme, \ as / in the path,
        # tabs and newlines dropped, C0 and spaces trimmed at the ends
        "http:/127.0.0.1:{port}/test.png", "http:127.0.0.1:{port}/test.png", "HTTP:///127.0.0.1:{port}/test.png",
        "http:\\\\127.0.0.1:{port}\\test.png", "http://127.0.0.1:{port}/img\\..\\test.png",
        "http://127.0.0.1:{port}/te\tst.png", "http://127.0.0.1:{port}/test.png\n", " http://127.0.0.1:{port}/test.png",
        "http:", "http:///", "http:\\\\/test.png",
    )],
    *[Case(q(remote(p), W_C), deviation=_next_5xx_imgopt_502) for p in (
        "/test.jpg?status=399", "/test.jpg?status=500", "/test.jpg?status=302", "/short-body/test.jpg",
        "/reset/test.jpg?after=100", "/test.jpg?status=302&location=",
        *[f"/test.jpg?status={c}&location=/test.png" for c in (300, 304, 305)],  # redirects Next does not follow
    )],
    Case(q("http://user:pass@127.0.0.1:{port}/test.png", W_C), deviation=_userinfo_refused),
    Case(q(remote("/test.png#x"), W_C), deviation=_same_image_shares_the_entry),
]


CASES_S = [
    # widths, qualities and formats of this config
    *[Case(f"?url=/test.png&w={w}&q={v}", accept=acc) for w, v in ((100, 10), (200, 90), (10, 90), (384, 90), (100, 75))
      for acc in (WEBP, CHROME)],
    # localPatterns: /img/** without a query, /test.* with any query, nothing else
    *[Case(q(u, 200, 90)) for u in ("/img/test.png", "/img/test.png?v=1", "/test.png?v=1", "/test.jpg",
                                     "/mountains.jpg", "/img/../mountains.jpg", "/img/%2e%2e/mountains.jpg", "/IMG/test.png")],
    # SVG allowed: passed through byte for byte with this CSP, inline
    Case(q("/img/test.svg", 200, 90)), Case(q("/test.svg", 200, 90), accept=CHROME), Case(q("/test.svg", 200, 90)),
    # remotePatterns: the object form (/ok/**) and the URL form (/url/**, no query string)
    *[Case(q(remote(p), 200, 90)) for p in (
        "/ok/test.png", "/ok/sub/../test.png", "/no/test.png", "/url/test.png", "/url/test.png?cc=max-age=5",
        "/ok/test.png?cc=public,max-age=86400", "/ok/test.png?status=301&location=/ok/test.jpg", "/ok/large.jpg",
        "/ok/test.jpg", "/ok/chunked/large.jpg", "/ok/animated.gif", "/ok/test.svg",
    )],
    Case(q("http://localhost:{port}/ok/test.png", 200, 90)),
    # maximumResponseBody 30000: mountains.jpg (470 kB) is over it (local: see below)
    Case(q(remote("/ok/mountains.jpg"), 100, 10)), Case(q(remote("/ok/chunked/mountains.jpg"), 100, 10)),
    Case(q(remote("/ok/gzip/mountains.jpg"), 100, 10)), Case(q(remote("/ok/gzip/test.png"), 100, 10)),
    Case(q(remote("/ok/lying-length/mountains.jpg"), 100, 10)),
    # maximumRedirects 0: the first redirect is a 508
    Case(q(remote("/ok/test.png?status=302&location=/ok/test.gif"), 100, 10)), Case(q(remote("/ok/redirect-loop"), 100, 10)),
]


CASES_B = [  # basePath /docs: Next serves the optimizer at /docs/_next/image and public/x at /docs/x
    Case(q("/docs/test.png", W_D)), Case(q("/docs/test.png", W_D), accept=CHROME), Case(q("/test.png", W_D)),
    Case(q("/docs/animated.gif", W_D)), Case(q("/docs/dir with space/photo.jpg", W_D)),
    Case(q("{static}", W_D)), Case(q("{static}", W_D), accept=SAFARI),
    Case(q("/docs/_next/image?url=%2Fdocs%2Ftest.png&w=384&q=75", W_D)), Case(q("/docs/test.png?v=1", W_D)),
    Case(q("/docs/test.png", 1000)), Case(q("/docs/test.png", W_D), method="HEAD"),
]


CASES_A = [  # assetPrefix {origin}/cdn: static imports live on the origin's host, which Next allows
    Case(q("{origin}/test.png", W_D)), Case(q("{origin}/test.png", W_D), accept=CHROME),
    Case(q("{origin}/cdn/_next/static/media/missing.jpg", W_D)), Case(q("{origin}/animated.gif", W_D)),
    Case(q("https://127.0.0.1:{port}/test.png", W_D)), Case(q("http://127.0.0.1:1/test.png", W_D)),
    Case(q("http://example.com/test.png", W_D)), Case(q("/test.png", W_D)), Case(q("{static}", W_D)),
]


def run_case(pair: Pair, case: Case) -> None:
    query = case.query.replace(quote("{static}", safe=""), quote(pair.static, safe=""))
    if pair.origin is not None:
        port = pair.origin.base_url.rsplit(":", 1)[1]
        query = query.replace(quote("{origin}", safe=""), quote(pair.origin.base_url, safe=""))
        query = query.replace(quote("{port}", safe=""), port)
    rn, ri = pair.both(query, case.accept, case.method)
    n, i = seen(rn), seen(ri)
    if case.deviation is not None:
        case.deviation(n, i)
    else:
        assert i == n, f"imgopt differs from next start for {case}:\n  next   {n}\n  imgopt {i}"


@pytest.mark.parametrize("case", CASES_D, ids=str)
def test_profile_d_matches_next_start(pair_d: Pair, case: Case) -> None:
    run_case(pair_d, case)


@pytest.mark.parametrize("case", CASES_C, ids=str)
def test_profile_c_matches_next_start(pair_c: Pair, case: Case) -> None:
    run_case(pair_c, case)


@pytest.mark.parametrize("case", CASES_S, ids=str)
def test_profile_s_matches_next_start(pair_s: Pair, case: Case) -> None:
    run_case(pair_s, case)


@pytest.mark.parametrize("case", CASES_B, ids=str)
def test_base_path_matches_next_start(pair_b: Pair, case: Case) -> None:
    run_case(pair_b, case)


@pytest.mark.parametrize("case", CASES_A, ids=str)
def test_asset_prefix_matches_next_start(pair_a: Pair, case: Case) -> None:
    run_case(pair_a, case)


def test_asset_prefix_host_is_fetched_by_both(pair_a: Pair) -> None:
    """The cases above could agree on a refusal; this is the point of the profile: with no
    remotePatterns, an image on the assetPrefix's host is fetched and optimized by both."""
    assert pair_a.origin is not None
    rn, ri = pair_a.both(q(pair_a.origin.base_url + "/test.png", W_D), WEBP)
    assert (rn.status_code, ri.status_code) == (200, 200), (rn.text[:200], ri.text[:200])
    assert rn.headers["content-type"] == ri.headers["content-type"] == "image/webp"


def test_base_path_site_without_the_prefix(pair_b: Pair) -> None:
    """Next answers only at /docs/_next/image; imgopt also at /_next/image, for a proxy that
    strips the prefix (same answer as with it)."""
    query = q("/docs/test.png", W_D)
    rn, ri = pair_b.both(query, WEBP, route="/_next/image")
    assert rn.status_code == 404
    with_prefix = httpx.get(f"{pair_b.imgopt_url}/docs/_next/image{query}", headers={"accept": WEBP})
    assert ri.status_code == 200 and ri.content == with_prefix.content


def test_local_original_over_the_body_limit(pair_s: Pair) -> None:
    """Spec §9 item 2: next start never answers for a local file over maximumResponseBody (an
    unhandled ERR_MAX_BODY_SIZE_EXCEEDED); imgopt answers 413 at once."""
    query = q("/img/large.jpg", 100, 10)
    r = httpx.get(f"{pair_s.imgopt_url}/_next/image{query}", headers={"accept": WEBP}, timeout=30)
    assert (r.status_code, r.text) == (413, '"url" parameter is valid but internal response is invalid')
    with pytest.raises(httpx.TimeoutException):
        httpx.get(f"{pair_s.next_url}/_next/image{query}", headers={"accept": WEBP}, timeout=5)


def test_upstream_timeout_is_504_on_both(pair_c: Pair) -> None:
    """Spec 6.4 case 63: 8 s of upstream delay against the fixed 7 s of Next (imgopt: 7 s too)."""
    assert pair_c.origin is not None
    query = q(pair_c.origin.base_url + "/test.jpg?delay=8000", W_C)
    t0 = time.monotonic()
    rn, ri = pair_c.both(query, WEBP)
    assert seen(ri) == seen(rn) == {"status": 504, "body": '"url" parameter is valid but upstream response timed out'}
    assert time.monotonic() - t0 < 20


def test_conditional_requests_match(pair_d: Pair) -> None:
    """Spec 6.5 case 75 and the `fresh` rules: each side gets its own ETag back."""
    results = []
    for base in (pair_d.next_url, pair_d.imgopt_url):
        url = f"{base}/_next/image{q('/test.jpg', W_D)}"
        etag = httpx.get(url, headers={"accept": WEBP}).headers["etag"]
        row = []
        for extra in ({"if-none-match": etag}, {"if-none-match": "*"}, {"if-none-match": f"xyz, {etag}"},
                      {"if-none-match": f"W/{etag}"}, {"if-none-match": "xyz"},
                      {"if-none-match": etag, "cache-control": "no-cache"},
                      {"if-none-match": etag, "if-modified-since": "Wed, 21 Oct 2015 07:28:00 GMT"}):
            r = httpx.get(url, headers={"accept": WEBP, **extra})
            row.append((r.status_code, len(r.content) == 0,
                        sorted(k for k in r.headers if k in ("vary", "cache-control", "etag", "content-type",
                                                              "content-disposition", "x-nextjs-cache"))))
        results.append(row)
    assert results[1] == results[0]
    assert results[0][0][0] == 304



def test_negotiation_matches_hapi(site_deps: Path) -> None:
    """params.negotiate against the @hapi/accept that Next.js ships (next/dist/compiled), plus
    Next's accept.includes() check, over 4,000 generated Accept headers and four formats lists."""
    rnd = random.Random(26)
    types = ["image/avif", "image/webp", "image/png", "image/*", "*/*", "IMAGE/WEBP", "Image/Avif", "text/html",
             "application/*", "image/apng", "image/svg+xml", "video/*", "image", "*/webp", "image/webp+x"]
    qs = ["", ";q=1", ";q=0", ";q=0.5", ";q=0.9", ";q=0.001", ";q=0.0001", ";q=1.5", ";q=abc", ";q=0.8x",
          ";Q=0.7", ";q=", ";level=1", ";level=1;q=0.5", ";q=0.5;level=1", ";foo", ";q=-1", ";q=1e-2"]
    headers = ["", " ", ",", "image/webp,,image/avif", "image/webp\t,\timage/avif;q=0.9"]
    for _ in range(4000):
        items = [rnd.choice(types) + rnd.choice(qs) for _ in range(rnd.randint(1, 6))]
        headers.append(rnd.choice([",", ", "]).join(items))
    formats = [["image/webp"], ["image/avif"], ["image/avif", "image/webp"], ["image/webp", "image/avif"]]
    script = """
      const { mediaType } = require(process.argv[1])
      const { headers, formats } = JSON.parse(require('fs').readFileSync(0, 'utf8'))
      const out = headers.map((h) => formats.map((f) => {
        let m
        try { m = mediaType(h, f) } catch { return null }  // Next does not catch it: a 500
        return h.includes(m) ? m : ''
      }))
      process.stdout.write(JSON.stringify(out))
    """
    hapi = site_deps / "node_modules" / "next" / "dist" / "compiled" / "@hapi" / "accept"
    r = subprocess.run([need("node", "Node.js"), "-e", script, str(hapi)], input=json.dumps({"headers": headers, "formats": formats}),
                       capture_output=True, text=True, check=True, timeout=120)
    expected = json.loads(r.stdout)
    mismatches = []
    for h, row in zip(headers, expected):
        for f, want in zip(formats, row):
            want = (want or "").split(";", 1)[0]  # imgopt answers the type without hapi's parameters
            got = negotiate(h, tuple(f))
            if got != want:
                mismatches.append((h, f, want, got))
    assert not mismatches, f"{len(mismatches)} differ, e.g. {mismatches[:5]}"


def test_content_disposition_matches_the_package(site_deps: Path) -> None:
    """app.content_disposition against the content-disposition package Next ships, over 3,000
    generated file names (ASCII specials, Latin-1, other BMP text, astral characters, escapes)."""
    rnd = random.Random(4)
    # no "/": the package takes path.basename() first, and file_name() already gives one segment
    alphabet = (list("abcXYZ019 .-_~!*'()\"\\;,=%?&+#@") + ["%41", "%zz", "%2"] + list("äöüßéñÿ\xa0\xad")
                + list("ščřłΩЖ中文名前€") + ["😀", "𝄞", "\U0001F600"] + ["\x00", "\x1f", "\x7f", "\x80", "\x9f"])
    names = ["test.webp", "image.bin", "äöüščří.webp"]
    for _ in range(3000):
        names.append("".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 12))) + rnd.choice([".webp", ".avif", ""]))
    script = """
      const cd = require(process.argv[1])
      const names = JSON.parse(require('fs').readFileSync(0, 'utf8'))
      process.stdout.write(JSON.stringify(names.flatMap((n) => ['attachment', 'inline'].map((type) => {
        try { return cd(n, { type }) } catch (e) { return null }
      }))))
    """
    pkg = site_deps / "node_modules" / "next" / "dist" / "compiled" / "content-disposition"
    r = subprocess.run([need("node", "Node.js"), "-e", script, str(pkg)], input=json.dumps(names),
                       capture_output=True, text=True, check=True, timeout=120)
    expected = json.loads(r.stdout)
    got = [content_disposition(kind, n) for n in names for kind in ("attachment", "inline")]
    mismatches = [(n, w, g) for n, w, g in zip([n for n in names for _ in (0, 1)], expected, got) if w != g]
    assert not mismatches, f"{len(mismatches)} differ, e.g. {mismatches[:5]}"


def test_content_coding_matches_the_compression_package(site_deps: Path) -> None:
    """encoding.choose against the compression middleware Next.js puts in front of every
    response (next/dist/compiled/compression, default options), run in a node http server:
    3,000 generated Accept-Encoding headers for a 2 KiB SVG body, plus the threshold."""
    rnd = random.Random(11)
    names = ["gzip", "deflate", "br", "identity", "*", "GZIP", "Deflate", "x-gzip", "zstd", "compress"]
    qs = ["", ";q=1", ";q=0", ";q=0.5", ";q=0.4", ";q=0.001", ";q=abc", ";q=", ";Q=0.5", ";q=1e-3",
          ";q=-1", ";q=2", ";level=1;q=0.3", ";q=0.5;level=1", " ;q=0.7", ";q=.5", ";q=Infinity"]
    headers = ["", " ", ",", "gzip, deflate, br", "gzip, deflate", "br", "deflate, gzip", "identity"]
    for _ in range(3000):
        items = [rnd.choice(names) + rnd.choice(qs) for _ in range(rnd.randint(1, 5))]
        headers.append(rnd.choice([",", ", ", " , "]).join(items))
    script = """
      const compression = require(process.argv[1])
      const http = require('http')
      const headers = JSON.parse(require('fs').readFileSync(0, 'utf8'))
      const mw = compression()
      const server = http.createServer((req, res) => mw(req, res, () => {
        const body = Buffer.alloc(Number(req.url.slice(1)), 'a')
        res.setHeader('Content-Type', 'image/svg+xml')
        res.setHeader('Content-Length', body.length)
        res.end(body)
      }))
      const get = (path, h) => new Promise((resolve, reject) => {
        const opts = { port: server.address().port, path, headers: h === null ? {} : { 'accept-encoding': h } }
        http.get(opts, (res) => { res.resume(); res.on('end', () => resolve(res.headers['content-encoding'] || null)) })
          .on('error', reject)
      })
      server.listen(0, '127.0.0.1', async () => {
        const out = []
        for (const h of headers) out.push(await get('/2048', h))
        out.push(await get('/2048', null), await get('/1023', 'gzip'), await get('/1024', 'gzip'))
        server.close()
        process.stdout.write(JSON.stringify(out))
      })
    """
    pkg = site_deps / "node_modules" / "next" / "dist" / "compiled" / "compression"
    r = subprocess.run([need("node", "Node.js"), "-e", script, str(pkg)], input=json.dumps(headers),
                       capture_output=True, text=True, check=True, timeout=120)
    expected = json.loads(r.stdout)
    assert expected[-3:] == [None, None, "gzip"]  # no header: none; below 1 KiB: none
    assert encoding.THRESHOLD == 1024 and encoding.choose(None) is None
    mismatches = [(h, w, encoding.choose(h)) for h, w in zip(headers, expected) if encoding.choose(h) != w]
    assert not mismatches, f"{len(mismatches)} of {len(headers)} differ, e.g. {mismatches[:5]}"
    assert {"gzip", "deflate", None} <= set(expected)  # the generated headers reach every outcome


def _encodings_seen(base: str, cases: list[tuple[str, str, str]]) -> list[tuple]:
    row = []
    for query, accept_encoding, method in cases:
        r = httpx.request(method, f"{base}/_next/image{query}", timeout=30,
                          headers={"accept": WEBP, "accept-encoding": accept_encoding})
        row.append((query, accept_encoding, method, r.status_code, r.headers.get("content-type"),
                    r.headers.get("content-encoding"), r.headers.get("vary"),
                    hashlib.sha256(r.content).hexdigest() if "png" not in query else None))  # decoded by httpx
    return row


def test_compressible_passthroughs_are_encoded_as_by_next(pair_d: Pair, pair_s: Pair) -> None:
    """Spec section 9 item 8: with Accept-Encoding, Next gzips ICO, BMP and SVG passthroughs
    (not WebP) and adds Accept-Encoding to Vary; HEAD and 304 are not encoded. ICO and BMP under
    the defaults (profile S's 30 kB body limit is below test.bmp, and next start never answers
    for a local file over it), SVG where it is allowed (profile S)."""
    d_cases = [(q("/test.ico", W_D), "gzip", "GET"), (q("/test.bmp", W_D), "gzip, deflate, br", "GET"),
               (q("/test.bmp", W_D), "deflate", "GET"), (q("/test.bmp", W_D), "br", "GET"),
               (q("/test.bmp", W_D), "identity", "GET"), (q("/test.bmp", W_D), "gzip", "HEAD"),
               (q("/test.png", W_D), "gzip", "GET")]
    s_cases = [(q("/test.svg", 200, 90), "gzip, deflate, br", "GET"), (q("/test.svg", 200, 90), "gzip;q=0", "GET")]
    rows: dict[str, list[tuple]] = {}
    for name, d_base, s_base in (("next", pair_d.next_url, pair_s.next_url),
                                 ("imgopt", pair_d.imgopt_url, pair_s.imgopt_url)):
        rows[name] = _encodings_seen(d_base, d_cases) + _encodings_seen(s_base, s_cases)
        url = f"{d_base}/_next/image{q('/test.bmp', W_D)}"
        etag = httpx.get(url, headers={"accept": WEBP}).headers["etag"]
        r = httpx.get(url, headers={"accept": WEBP, "accept-encoding": "gzip", "if-none-match": etag})
        rows[name].append((r.status_code, r.headers.get("content-encoding"), r.headers.get("vary")))
    assert rows["imgopt"] == rows["next"]
    encoded = {(row[0], row[1]): row[5] for row in rows["next"][:-1]}
    assert encoded[(q("/test.bmp", W_D), "gzip, deflate, br")] == "gzip"  # the case is not vacuous
    assert encoded[(q("/test.bmp", W_D), "deflate")] == "deflate"


def test_parallel_misses_are_one_fetch_on_both(pair_c: Pair) -> None:
    """Spec 6.5 case 73: three parallel requests for an uncached slow image are MISS, MISS,
    MISS with one body, and the upstream is asked once."""
    import concurrent.futures

    assert pair_c.origin is not None
    seen_by: dict[str, tuple[list[str], int, int]] = {}
    for name, base in (("next", pair_c.next_url), ("imgopt", pair_c.imgopt_url)):
        path = f"/large.jpg?delay=500&who={name}"
        pair_c.origin.reset_counters()
        url = f"{base}/_next/image{q(pair_c.origin.base_url + path, 1080)}"
        with concurrent.futures.ThreadPoolExecutor(3) as ex:
            rs = list(ex.map(lambda _: httpx.get(url, headers={"accept": WEBP}, timeout=30), range(3)))
        assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
        seen_by[name] = ([r.headers["x-nextjs-cache"] for r in rs], len({r.content for r in rs}),
                         pair_c.origin.hits["/large.jpg"])
    assert seen_by["imgopt"] == seen_by["next"] == (["MISS", "MISS", "MISS"], 1, 1)



def test_trailing_slash_redirects_as_next(pair_d: Pair, pair_b: Pair) -> None:
    """Without trailingSlash in next.config, /_next/image/ is Next's 308 to the path without the
    slash, query kept (with trailingSlash: true it is served: tests/test_validation.py)."""
    rows: dict[str, list[tuple]] = {}
    for name, d_base, b_base in (("next", pair_d.next_url, pair_b.next_url),
                                 ("imgopt", pair_d.imgopt_url, pair_b.imgopt_url)):
        rows[name] = []
        for base, route in ((d_base, "/_next/image/"), (b_base, "/docs/_next/image/")):
            for method in ("GET", "HEAD"):
                r = httpx.request(method, f"{base}{route}{q('/test.png', W_D)}", headers={"accept": WEBP})
                rows[name].append((route, method, r.status_code, r.headers.get("location"), r.headers.get("refresh"),
                                   r.headers.get("content-type"), r.text))
    assert rows["imgopt"] == rows["next"]
    assert rows["next"][0][2] == 308 and rows["next"][0][3] == "/_next/image" + q("/test.png", W_D)
