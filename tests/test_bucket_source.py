"""``--local-root s3://bucket/prefix``: originals from a bucket, with the guarantees of a folder.

A real SeaweedFS (tests/seaweed.py) holds the site's images under ``site/`` and, outside that
prefix, "secret" images that serving by mistake would turn into a 200 with a picture. A real
imgopt process reads the bucket with the standard AWS variables (key, secret, endpoint).
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from PIL import Image

from conftest import ROOT, ImgoptServer
from seaweed import SeaweedFS
from test_security_local import SECRET_COLOUR, TRAVERSALS

from imgopt import cli
from imgopt.errors import INTERNAL_INVALID
from imgopt.objectstorage import BucketURL, parse_bucket_url

W, Q = 384, 75
LIMIT = 300_000  # maximumResponseBody of the server under test


def png(colour: tuple[int, int, int], size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


def noise_png(nbytes: int) -> bytes:
    import os

    side = int((nbytes / 3) ** 0.5) + 1
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def gif_animated() -> bytes:
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    s = SeaweedFS(tmp_path_factory.mktemp("seaweed")).start()
    secret = png(SECRET_COLOUR)
    s.put("originals", "site/ok.png", png((200, 10, 10)))
    s.put("originals", "site/sub/inner.png", png((10, 200, 10)))
    s.put("originals", "site/long-lived.png", png((10, 10, 200)), **{"Cache-Control": "public, max-age=31536000"})
    s.put("originals", "site/anim.gif", gif_animated())
    s.put("originals", "site/later.png", png((90, 90, 90)))
    s.put("originals", "site/names/a b+é%41.png", png((1, 2, 3)))
    s.put("originals", "site/big.png", noise_png(LIMIT + 50_000))
    s.put("originals", "site/empty.png", b"")
    # Out of reach: beside the prefix, in a sibling prefix that starts with the same letters,
    # and at what a naive join of an absolute or parent path would name.
    for key in ("outside/secret.png", "site-secret/secret.png", "secret.png", "etc/passwd", "proc/self/environ"):
        s.put("originals", key, secret)
    s.put("other-bucket", "site/secret.png", secret)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def srv(seaweed: SeaweedFS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImgoptServer]:
    s = ImgoptServer(tmp_path_factory.mktemp("imgopt-bucket"), {"maximumResponseBody": LIMIT},
                     "--local-root", "s3://originals/site", "--fetch-timeout", "2", env=seaweed.env()).start()
    yield s
    s.stop()


def _get(srv: ImgoptServer, url: str, accept: str = "image/png") -> httpx.Response:
    # As tests/test_security_local.py: every %xx of the attack is sent as written.
    raw = url.replace("%", "%25").replace("&", "%26").replace("#", "%23").replace("+", "%2B")
    raw = raw.replace("\\", "%5C").replace(" ", "%20")
    return httpx.get(f"{srv.url}/_next/image?url={raw}&w={W}&q={Q}", headers={"Accept": accept}, timeout=30)


def _colour(body: bytes) -> tuple[int, ...]:
    return Image.open(io.BytesIO(body)).convert("RGB").getpixel((0, 0))


def test_objects_under_the_prefix_are_served(srv):
    for url, colour in (("/ok.png", (200, 10, 10)), ("/sub/inner.png", (10, 200, 10)), ("/sub/../ok.png", (200, 10, 10))):
        r = _get(srv, url)
        assert r.status_code == 200, (url, r.text)
        assert r.headers["content-type"] == "image/png"
        assert _colour(r.content) == colour
    # A key with a space, a plus, non-ASCII and a literal '%' is named by its url-encoded path.
    r = _get(srv, "/names/a%20b+%C3%A9%2541.png")
    assert r.status_code == 200 and _colour(r.content) == (1, 2, 3)
    r = _get(srv, "/ok.png", accept="image/webp,*/*")
    assert r.headers["content-type"] == "image/webp" and r.headers["x-nextjs-cache"] == "MISS"
    assert _get(srv, "/ok.png", accept="image/webp,*/*").headers["x-nextjs-cache"] == "HIT"


def test_object_cache_control_and_etag_are_the_objects(srv, seaweed):
    import obstore

    r = _get(srv, "/long-lived.png")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "public, max-age=31536000, must-revalidate"  # the object's header
    assert _get(srv, "/ok.png").headers["cache-control"] == "public, max-age=14400, must-revalidate"  # minimumCacheTTL

    # An animated GIF is served as it is, under the object's own ETag (base64url, as for an origin).
    r = _get(srv, "/anim.gif", accept="*/*")
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    tag = obstore.head(seaweed.store("originals"), "site/anim.gif")["e_tag"]
    assert r.headers["etag"] == '"' + base64.urlsafe_b64encode(tag.encode()).rstrip(b"=").decode() + '"'


def test_no_spelling_leaves_the_prefix(srv, seaweed):
    import obstore

    # The secrets are there and readable with the same credentials: refusals are not an accident.
    assert bytes(obstore.get(seaweed.store("originals"), "outside/secret.png").bytes())
    extra = ["/../site-secret/secret.png", "/%2e%2e%2fsite-secret%2fsecret.png", "/..%2f..%2fother-bucket/site/secret.png",
             "/../secret.png", "/%2e%2e/secret.png", "/..%5csecret.png", "/s3:%2f%2fother-bucket/site/secret.png"]
    for url in TRAVERSALS + extra:
        r = _get(srv, url)
        assert r.status_code in (400, 404), (url, r.status_code, r.text)
        assert r.headers["content-type"].startswith("text/plain"), url


def test_missing_object_is_a_404_as_for_a_missing_file(srv):
    for url in ("/nope.png", "/sub/nope.png", "/sub", "/"):
        r = _get(srv, url)
        assert (r.status_code, r.text) == (404, INTERNAL_INVALID), url


def test_size_is_checked_before_the_body_is_read(srv):
    r = _get(srv, "/big.png")
    assert (r.status_code, r.text) == (413, INTERNAL_INVALID)
    assert _get(srv, "/empty.png").status_code == 400


def _serve_exit(seaweed: SeaweedFS, tmp: Path, root: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "imgopt", "serve", "--port", "1", "--cache-dir", str(tmp / "c"), "--local-root", root],
        cwd=ROOT, env={**os.environ, **seaweed.env(**env)}, capture_output=True, text=True, timeout=60)


def test_wrong_credentials_or_bucket_one_line_and_exit_2(seaweed, tmp_path):
    done = _serve_exit(seaweed, tmp_path, "s3://originals/site", AWS_SECRET_ACCESS_KEY="wrong-secret")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("imgopt: --local-root s3://originals/site: access denied (")
    assert "wrong-secret" not in done.stderr

    done = _serve_exit(seaweed, tmp_path, "s3://no-such-bucket/site")
    assert (done.returncode, done.stderr) == (2, "imgopt: --local-root s3://no-such-bucket/site: no such bucket\n")


def test_credentials_refused_at_request_time_is_a_502_with_the_reason(seaweed, monkeypatch):
    """Credentials revoked after start-up (the start-up check passed): a 502 saying so, not a 404."""
    import asyncio

    from imgopt.errors import ImageError
    from imgopt.sources.bucket import BucketSource

    for k, v in seaweed.env(AWS_SECRET_ACCESS_KEY="revoked").items():
        monkeypatch.setenv(k, v)
    source = BucketSource(BucketURL("s3", "originals", "site"), timeout=5)
    with pytest.raises(ImageError) as e:
        asyncio.run(source.get_key("ok.png", LIMIT))
    assert e.value.status == 502
    assert e.value.message.startswith(INTERNAL_INVALID + " (bucket: access denied (SignatureDoesNotMatch)")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    good = asyncio.run(BucketSource(BucketURL("s3", "originals", "site"), timeout=5).get_key("ok.png", LIMIT))
    assert good.body == png((200, 10, 10)) and good.etag


def test_bucket_urls_on_the_command_line():
    def settings(*argv: str):
        return cli.settings_from(cli.resolve_options(cli.build_parser().parse_args(["serve", *argv]), {}))

    assert settings("--local-root", "s3://b1x/a//b/").local_root == BucketURL("s3", "b1x", "a/b")
    assert settings("--local-root", "gs://bucket").local_root == BucketURL("gs", "bucket", "")
    env = {"IMGOPT_LOCAL_ROOT": "az://container/images"}
    s = cli.settings_from(cli.resolve_options(cli.build_parser().parse_args(["serve"]), env))
    assert s.local_root == BucketURL("az", "container", "images")
    for bad in ("s3://", "s3://b/../x", "s3://b?x=1", "s3://-b/x", "s3://b/p\\q"):
        with pytest.raises(cli.UsageError):
            settings("--local-root", bad)
    assert str(parse_bucket_url("S3://bucket/x/y/")) == "s3://bucket/x/y"


def test_store_frozen_is_a_gateway_timeout_then_recovers(srv, seaweed):
    """Runs last: the store is stopped (SIGSTOP), then continued."""
    import signal

    seaweed.send(signal.SIGSTOP)
    try:
        r = _get(srv, "/later.png")
        assert (r.status_code, r.text) == (504, '"url" parameter is valid but upstream response timed out')
    finally:
        seaweed.send(signal.SIGCONT)
    r = _get(srv, "/later.png")
    assert r.status_code == 200 and _colour(r.content) == (90, 90, 90)
