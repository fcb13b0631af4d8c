"""Configuration and the command line: Next defaults, one-line errors with exit status 2, env vars."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import compile_path

from imgopt.cli import build_parser, resolve_options, settings_from
from imgopt.config import ConfigError, ImagesConfig, parse_images_config


def test_next16_defaults():
    c = ImagesConfig()
    assert c.device_sizes == (640, 750, 828, 1080, 1200, 1920, 2048, 3840)
    assert c.image_sizes == (32, 48, 64, 96, 128, 256, 384)
    assert c.qualities == (75,)
    assert c.formats == ("image/webp",)
    assert c.minimum_cache_ttl == 14400
    assert c.maximum_redirects == 3
    assert c.maximum_response_body == 50_000_000
    assert c.content_disposition_type == "attachment"
    assert not c.dangerously_allow_svg and not c.dangerously_allow_local_ip


def test_wrapped_and_bare_objects():
    a = parse_images_config({"images": {"qualities": [50, 75]}})
    b = parse_images_config({"qualities": [50, 75]})
    assert a == b and a.qualities == (50, 75)


def test_next_keys_for_the_site_are_accepted():
    c = parse_images_config({"loader": "custom", "loaderFile": "./l.js", "path": "/x", "unoptimized": False})
    assert c == ImagesConfig(loader="custom", path="/x")
    assert c.optimizer_off is None  # a custom loader (imgopt's own) is served


@pytest.mark.parametrize("obj,off", [
    ({}, None),
    ({"loader": "default"}, None),
    ({"loader": "custom", "loaderFile": "./l.js"}, None),
    ({"unoptimized": True}, "images.unoptimized is true"),
    ({"loader": "custom", "unoptimized": True}, "images.unoptimized is true"),
    ({"loader": "imgix", "path": "https://example.imgix.net/"}, "images.loader is 'imgix'"),
    ({"loader": "cloudinary", "path": "https://res.cloudinary.com/x/"}, "images.loader is 'cloudinary'"),
    ({"loader": "akamai", "path": "https://a.example/"}, "images.loader is 'akamai'"),
])
def test_when_the_optimizer_is_off(obj, off):
    assert parse_images_config(obj).optimizer_off == off


@pytest.mark.parametrize("obj,fragment", [
    ({"deviceSizes": [0]}, "images.deviceSizes[0]: Number must be greater than or equal to 1"),
    ({"deviceSizes": [10001]}, "images.deviceSizes[0]: Number must be less than or equal to 10000"),
    ({"imageSizes": ["a"]}, "images.imageSizes[0]"),
    ({"qualities": [101]}, "images.qualities[0]"),
    ({"qualities": []}, "images.qualities"),
    ({"formats": ["image/webp", "jpeg"]}, "images.formats[1]: Expected 'image/avif' | 'image/webp', received \"jpeg\""),
    ({"contentDispositionType": "nope"}, "images.contentDispositionType"),
    ({"minimumCacheTTL": -1}, "images.minimumCacheTTL: Number must be greater than or equal to 0"),
    ({"domains": ["a"] * 51}, "images.domains: Array must contain at most 50 element(s)"),
    ({"maximumRedirects": 21}, "images.maximumRedirects"),
    ({"dangerouslyAllowSVG": "yes"}, "images.dangerouslyAllowSVG"),
    ({"remotePatterns": [{"protocol": "ftp", "hostname": "x"}]}, "remotePatterns"),
    ({"remotePatterns": [{"pathname": "/x"}]}, "hostname"),
    ({"bogus": 1}, "images.bogus: unknown key"),
    ({"loader": "foo"}, "images.loader: Specified images.loader should be one of (default, imgix, cloudinary, akamai, custom), received invalid value (foo)"),
    ({"unoptimized": "yes"}, "images.unoptimized"),
    ({"basePath": "docs"}, 'images.basePath: Specified basePath has to start with a /, found "docs"'),
    ({"basePath": "/docs/"}, 'images.basePath: Specified basePath should not end with /, found "/docs/"'),
    ({"basePath": "/a?b"}, "images.basePath"),
    ({"basePath": 1}, "images.basePath: expected a string"),
    ({"trailingSlash": "yes"}, "images.trailingSlash: expected a boolean"),
    ({"assetPrefix": 1}, 'images.assetPrefix: Specified assetPrefix is not a string, found type "int"'),
    ({"assetPrefix": "https://"}, "images.assetPrefix: Invalid assetPrefix provided. Original error:"),
])
def test_bad_config_names_the_key(obj, fragment):
    with pytest.raises(ConfigError) as e:
        parse_images_config(obj)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "imgopt", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_bad_config_file_exits_2_with_one_line(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"images": {"deviceSizes": [0]}}))
    p = run_cli("serve", "--config", str(cfg))
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0
    assert "images.deviceSizes[0]" in p.stderr and "Traceback" not in p.stderr
    cfg.write_text("{not json")
    p = run_cli("serve", "--config", str(cfg))
    assert p.returncode == 2 and "not valid JSON" in p.stderr
    p = run_cli("serve", "--config", str(tmp_path / "missing.json"))
    assert p.returncode == 2 and "cannot read" in p.stderr
    p = run_cli("serve", "--port", "x")
    assert p.returncode == 2 and "--port" in p.stderr
    p = run_cli("serve", env={"IMGOPT_WORKERS": "0"})
    assert p.returncode == 2 and "IMGOPT_WORKERS" in p.stderr


def test_flag_over_env_over_default(tmp_path):
    args = build_parser().parse_args(["serve", "--port", "4000"])
    values = resolve_options(args, {"IMGOPT_PORT": "5000", "IMGOPT_WORKERS": "3", "IMGOPT_CACHE_SIZE": "2M"})
    s = settings_from(values)
    assert s.port == 4000 and s.workers == 3 and s.cache_size == 2 << 20
    s = settings_from(resolve_options(build_parser().parse_args(["serve"]), {}))
    assert s.port == 3001 and s.host == "127.0.0.1" and s.queue_limit == 4 * s.workers


def test_http_limit_flags_and_env():
    from imgopt.cli import http_limits_from

    args = build_parser().parse_args(["serve", "--max-header-bytes", "32K", "--header-timeout", "2.5"])
    limits = http_limits_from(resolve_options(args, {"IMGOPT_DRAIN_TIMEOUT": "3", "IMGOPT_MAX_CONNECTIONS": "50",
                                                     "IMGOPT_KEEPALIVE_TIMEOUT": "7", "IMGOPT_HEADER_TIMEOUT": "9"}))
    assert (limits.max_header_bytes, limits.header_timeout, limits.drain_timeout) == (32 << 10, 2.5, 3.0)
    assert (limits.max_connections, limits.keepalive_timeout) == (50, 7.0)
    defaults = http_limits_from(resolve_options(build_parser().parse_args(["serve"]), {}))
    assert (defaults.max_header_bytes, defaults.header_timeout, defaults.drain_timeout) == (16 << 10, 10.0, 20.0)
    assert defaults.keepalive_timeout == 5.0 and 16 <= defaults.max_connections <= 1024
    for argv in (["--max-header-bytes", "100"], ["--drain-timeout", "0"], ["--max-connections", "0"]):
        with pytest.raises(Exception, match=argv[0]):
            resolve_options(build_parser().parse_args(["serve", *argv]), {})


def test_env_port_starts_server(tmp_path, corpus):
    from conftest import ImgoptServer, free_port

    port = free_port()
    srv = ImgoptServer(tmp_path, None, "--local-root", str(corpus), env={"IMGOPT_PORT": str(port)})
    srv.argv.remove("--port")
    srv.argv.remove(str(srv.port))
    srv.port, srv.url = port, f"http://127.0.0.1:{port}"
    srv.start()
    try:
        assert srv.get("/test.png", 384, 75).status_code == 200
    finally:
        assert srv.stop() == 0


def test_bad_cache_url_does_not_echo_the_password():
    from imgopt.cli import UsageError

    args = build_parser().parse_args(["serve", "--cache", "redis2://user:s3cret@host:6379/0"])
    with pytest.raises(UsageError) as e:
        resolve_options(args, {})
    assert "s3cret" not in str(e.value) and "--cache" in str(e.value)


def test_every_flag_and_images_key_is_documented() -> None:
    """docs/configuration.md describes every `imgopt serve` option and every `images` key the
    config accepts, so a new one cannot go unmentioned."""
    from pathlib import Path

    from imgopt import cli

    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    missing = [f"--{flag}" for flag, _convert, _help in cli.OPTIONS if f"`--{flag}`" not in doc]
    assert not missing, f"not in docs/configuration.md: {missing}"
    for key in ("deviceSizes", "imageSizes", "qualities", "formats", "minimumCacheTTL", "remotePatterns", "domains",
                "localPatterns", "dangerouslyAllowSVG", "contentSecurityPolicy", "contentDispositionType",
                "maximumResponseBody", "maximumRedirects", "dangerouslyAllowLocalIP", "maximumDiskCacheSize",
                "basePath", "trailingSlash", "unoptimized", "loader"):
        assert f"`{key}`" in doc, key


@pytest.mark.parametrize("raw,path", [
    ("/_next/image", "/_next/image"), ("/shop/_next/image/", "/shop/_next/image"),
    ("https://img.example.com/optimize", "/optimize"), ("https://img.example.com/optimize/", "/optimize"),
    ("http://img.example.com:8080", "/"), ("https://img.example.com/", "/"), ("//img.example.com/o", "/o"),
    ("/a/../img", "/img"), ("/img?x=1", "/img"), ("/bilder/größe", "/bilder/gr%C3%B6%C3%9Fe"),
])
def test_images_path_is_the_pathname_the_default_loader_sends_to(raw, path):
    assert parse_images_config({"path": raw}).path == path


@pytest.mark.parametrize("raw,message", [
    (42, "images.path: expected a string"),
    ("img", "images.path: expected a path starting with / or an http(s) URL"),
    ("ftp://x/img", "images.path: expected a path starting with / or an http(s) URL"),
    ("/healthz", "images.path: /healthz is imgopt's own route"),
    ("https://img.example.com/metrics/", "images.path: /metrics is imgopt's own route"),
    ("/img/{w:int}", "images.path: braces are not supported"),
])
def test_a_bad_images_path_is_a_config_error(raw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_images_config({"path": raw})


def test_imgopt_answers_at_images_path(tmp_path, corpus, make_server):
    """A site can point Next's default loader at imgopt with images.path (no proxy rule, no
    loader file): imgopt answers there as at /_next/image, counted as that route."""
    srv = make_server({"path": "https://img.example.com/optimize"}, "--local-root", str(corpus))
    q = {"url": "/test.jpg", "w": 640, "q": 75}
    for path in ("/optimize", "/_next/image"):
        r = httpx.get(srv.url + path, params=q, headers={"Accept": "image/webp"}, timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "image/webp", (path, r.text)
    r = httpx.get(srv.url + "/optimize/", params=q, timeout=30)  # no trailingSlash: Next's 308
    assert r.status_code == 308 and r.headers["location"].startswith("/optimize?url=")
    metrics = httpx.get(srv.url + "/metrics", timeout=30).text
    assert 'imgopt_http_requests_total{route="/_next/image",status="200"} 2.0' in metrics
    assert 'route="other"' not in metrics
    slashed = make_server({"path": "https://img.example.com/optimize", "trailingSlash": True}, "--local-root", str(corpus))
    assert httpx.get(slashed.url + "/optimize/", params=q, timeout=30).status_code == 200
    # a path with letters a URL encodes: the browser sends it encoded, the route matches it
    umlaut = make_server({"path": "https://img.example.com/bilder/größe"}, "--local-root", str(corpus))
    assert httpx.get(umlaut.url + "/bilder/gr%C3%B6%C3%9Fe", params=q, timeout=30).status_code == 200
    root = make_server({"path": "https://img.example.com"}, "--local-root", str(corpus))
    assert httpx.get(root.url + "/", params=q, timeout=30).status_code == 200
    assert httpx.get(root.url + "/healthz", timeout=30).status_code == 200
    # imgopt's loader sends images to images.path too (Next adds a slash for custom loaders)
    loader = make_server({"path": "/optimize/", "loader": "custom"}, "--local-root", str(corpus))
    assert httpx.get(loader.url + "/optimize", params=q, timeout=30).status_code == 200
    # with the optimizer off (another loader), 404 there as at /_next/image
    off = make_server({"path": "https://example.imgix.net/", "loader": "imgix"}, "--local-root", str(corpus))
    assert httpx.get(off.url + "/", params=q, timeout=30).status_code == 404
    assert httpx.get(off.url + "/_next/image", params=q, timeout=30).status_code == 404


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text().map(lambda s: "/" + s), st.text().map(lambda s: "https://h/" + s),
                 st.text().map(lambda s: "//" + s)))
def test_any_images_path_is_a_route_or_a_config_error(raw):
    """A pasted images.path never stops start-up with anything but a one-line ConfigError, and
    what it gives is a path the router compiles."""
    try:
        path = parse_images_config({"path": raw}).path
    except ConfigError:
        return
    assert path.startswith("/")
    compile_path(unquote(path))
    compile_path(unquote(path) + "/")
