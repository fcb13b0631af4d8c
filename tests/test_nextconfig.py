"""`--next-config`: the images section of a real next.config, loaded by a real node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from imgopt.cli import UsageError, build_parser, resolve_options, settings_from
from imgopt.config import ConfigError, parse_images_config
from imgopt.nextconfig import load_next_config, node_version

ROOT = Path(__file__).resolve().parent.parent
NODE = shutil.which("node")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def serve_exit(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`imgopt serve ARGS` expected to stop at configuration time."""
    return subprocess.run([sys.executable, "-m", "imgopt", "serve", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd or ROOT, env={**os.environ, **(env or {})})


def test_node_is_installed():
    # The rest of the file needs a real node; make test must not pass silently without one.
    assert NODE, "node is not on PATH (the Next.js site and loader need it too)"


def test_commonjs_with_url_remote_patterns_and_noise(tmp_path):
    cfg = write(tmp_path / "next.config.js", """
        console.log('stdout noise from the config')
        process.stdout.write('more noise without a newline')
        module.exports = {
          reactStrictMode: true,
          images: {
            formats: ['image/avif', 'image/webp'],
            remotePatterns: [new URL('https://cdn.example.com/photos/**'), { protocol: 'http', hostname: '127.0.0.1', port: '4000' }],
            qualities: [50, 75],
            loader: 'custom',
            loaderFile: './loader.js',
          },
        }
    """)
    images = load_next_config(cfg)
    assert images == {
        "formats": ["image/avif", "image/webp"],
        "remotePatterns": [
            # new URL(...) becomes what Next's config loader makes of it
            {"protocol": "https", "hostname": "cdn.example.com", "port": "", "pathname": "/photos/**", "search": ""},
            {"protocol": "http", "hostname": "127.0.0.1", "port": "4000"},
        ],
        "qualities": [50, 75],
        "loader": "custom",
        "loaderFile": "./loader.js",
    }
    parsed = parse_images_config(images)
    assert parsed.qualities == (50, 75) and parsed.formats == ("image/avif", "image/webp")


def test_base_path_comes_along_with_the_images(tmp_path):
    cfg = write(tmp_path / "next.config.js", """
        module.exports = { basePath: '/docs', images: { formats: ['image/webp'] } }
    """)
    images = load_next_config(cfg)
    assert images == {"formats": ["image/webp"], "basePath": "/docs"}
    assert parse_images_config(images).base_path == "/docs"
    write(tmp_path / "next.config.js", "module.exports = { images: {} }")
    assert load_next_config(cfg) == {}


def test_trailing_slash_comes_along_with_the_images(tmp_path):
    cfg = write(tmp_path / "next.config.js", "module.exports = { trailingSlash: true, images: {} }")
    images = load_next_config(cfg)
    assert images == {"trailingSlash": True}
    assert parse_images_config(images).trailing_slash is True
    write(tmp_path / "next.config.js", "module.exports = { trailingSlash: 'yes', images: {} }")
    assert load_next_config(cfg) == {}  # Next's own check is `=== true`
    assert parse_images_config({}).trailing_slash is False


def test_esm_mjs_with_top_level_await(tmp_path):
    cfg = write(tmp_path / "next.config.mjs", """
        const sizes = await Promise.resolve([320, 640])
        /** @type {import('next').NextConfig} */
        const nextConfig = { images: { deviceSizes: sizes, imageSizes: [] } }
        export default nextConfig
    """)
    assert load_next_config(cfg) == {"deviceSizes": [320, 640], "imageSizes": []}


def test_esm_js_in_a_type_module_package(tmp_path):
    write(tmp_path / "package.json", '{"type": "module"}')
    cfg = write(tmp_path / "next.config.js", "export default { images: { minimumCacheTTL: 60 } }\n")
    assert load_next_config(cfg) == {"minimumCacheTTL": 60}


@pytest.mark.parametrize("body", [
    "module.exports = (phase, { defaultConfig }) => ({ images: { path: phase, deviceSizes: [defaultConfig.images.deviceSizes[0]] } })",
    "module.exports = async (phase, { defaultConfig }) => ({ images: { path: phase, deviceSizes: [defaultConfig.images.deviceSizes[0]] } })",
    "export default async function config(phase, { defaultConfig }) {\n"
    "  await new Promise((r) => setTimeout(r, 5))\n"
    "  return { images: { path: phase, deviceSizes: [defaultConfig.images.deviceSizes[0]] } }\n}",
], ids=["function", "async-function", "esm-async-function"])
def test_function_form_is_called_with_the_production_server_phase(tmp_path, body):
    name = "next.config.mjs" if body.startswith("export") else "next.config.js"
    cfg = write(tmp_path / name, body + "\n")
    assert load_next_config(cfg) == {"path": "phase-production-server", "deviceSizes": [640]}


def test_promise_export(tmp_path):
    cfg = write(tmp_path / "next.config.js", "module.exports = Promise.resolve({ images: { qualities: [90] } })\n")
    assert load_next_config(cfg) == {"qualities": [90]}


def test_environment_and_node_env(tmp_path, monkeypatch):
    cfg = write(tmp_path / "next.config.js", """
        module.exports = { images: {
          path: process.env.NODE_ENV,
          remotePatterns: [{ protocol: 'http', hostname: '127.0.0.1', port: process.env.IMAGE_PORT }],
        } }
    """)
    monkeypatch.delenv("NODE_ENV", raising=False)
    monkeypatch.setenv("IMAGE_PORT", "4321")
    images = load_next_config(cfg)
    assert images["path"] == "production"
    assert images["remotePatterns"][0]["port"] == "4321"


def test_project_next_env_and_default_config_are_used(tmp_path):
    """With `next` installed, its @next/env loads .env files and its defaultConfig is passed."""
    write(tmp_path / "node_modules/@next/env/index.js", """
        exports.loadEnvConfig = (dir, dev) => { process.env.FROM_DOTENV = `${require('path').basename(dir)}:${dev}` }
    """)
    write(tmp_path / "node_modules/next/dist/server/config-shared.js", """
        exports.defaultConfig = { images: { deviceSizes: [111] } }
    """)
    write(tmp_path / "site/next.config.js", """
        module.exports = (phase, { defaultConfig }) => ({
          images: { path: process.env.FROM_DOTENV, deviceSizes: defaultConfig.images.deviceSizes },
        })
    """)
    assert load_next_config(tmp_path / "site/next.config.js") == {"path": "site:false", "deviceSizes": [111]}


def test_a_project_folder_finds_the_config_next_would_use(tmp_path):
    write(tmp_path / "next.config.mjs", "export default { images: { qualities: [60] } }\n")
    assert load_next_config(tmp_path) == {"qualities": [60]}
    write(tmp_path / "next.config.js", "module.exports = { images: { qualities: [70] } }\n")
    assert load_next_config(tmp_path) == {"qualities": [70]}  # .js comes first, as in Next


@pytest.mark.parametrize("body,expected", [
    ("module.exports = { reactStrictMode: true }\n", {}),
    ("export default { images: null }\n", {}),
    ("module.exports = {}\n", {}),
    ("module.exports = { output: 'standalone', basePath: '/shop' }\n", {"basePath": "/shop"}),
])
def test_a_config_without_images_gets_next_defaults(tmp_path, body, expected):
    # next start runs such a site with its default images settings; so does imgopt
    ext = ".mjs" if body.startswith("export") else ".js"
    cfg = write(tmp_path / f"next.config{ext}", body)
    images = load_next_config(cfg)
    assert images == expected
    parsed = parse_images_config(images)
    assert parsed.qualities == (75,) and parsed.remote_patterns == () and parsed.formats == ("image/webp",)


def test_asset_prefix_on_another_host_allows_that_host_as_next_does(tmp_path):
    # static imports are built as {assetPrefix}/_next/static/media/...; config.ts adds the
    # prefix's {hostname, protocol, port} to remotePatterns unless one already matches it
    cfg = write(tmp_path / "next.config.js", """
        module.exports = { assetPrefix: 'https://cdn.example.com:8443/assets', images: {} }
    """)
    images = load_next_config(cfg)
    assert images == {"assetPrefix": "https://cdn.example.com:8443/assets"}
    parsed = parse_images_config(images)
    assert [(p.hostname, p.protocol, p.port, p.pathname) for p in parsed.remote_patterns] == [
        ("cdn.example.com", "https", "8443", None)]
    write(tmp_path / "next.config.js", """
        module.exports = { assetPrefix: 'https://cdn.example.com',
                           images: { remotePatterns: [{ hostname: '**.example.com' }] } }
    """)
    assert len(parse_images_config(load_next_config(cfg)).remote_patterns) == 1  # already matched
    write(tmp_path / "next.config.js", "module.exports = { assetPrefix: '/static-prefix', images: {} }")
    assert parse_images_config(load_next_config(cfg)).remote_patterns == ()  # a path: nothing to add
    write(tmp_path / "next.config.js", "module.exports = { assetPrefix: 'http://', images: {} }")
    with pytest.raises(ConfigError, match="Invalid assetPrefix provided"):
        parse_images_config(load_next_config(cfg))


@pytest.mark.parametrize("body,fragment", [
    ("module.exports = () => 42\n", "the config is not an object (got number)"),
    ("module.exports = { images: 'big' }\n", "images: expected an object"),
])
def test_config_without_a_usable_images_section(tmp_path, body, fragment):
    ext = ".mjs" if body.startswith("export") else ".js"
    cfg = write(tmp_path / f"next.config{ext}", body)
    with pytest.raises(ConfigError) as e:
        load_next_config(cfg)
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["next.config.js", "next.config.mjs"])
def test_syntax_error_names_file_and_line(tmp_path, name):
    cfg = write(tmp_path / name, "const x = 1\nconst images = { a: 1 \n}}}\n")
    with pytest.raises(ConfigError) as e:
        load_next_config(cfg)
    msg = str(e.value)
    assert "\n" not in msg
    assert "node could not load it: SyntaxError:" in msg
    assert f"{cfg}:3" in msg


def test_error_thrown_by_the_config(tmp_path):
    cfg = write(tmp_path / "next.config.mjs", "throw new Error('IMAGE_HOST is not set\\nsecond line')\n")
    with pytest.raises(ConfigError) as e:
        load_next_config(cfg)
    assert str(e.value) == f"--next-config {cfg}: node could not load it: Error: IMAGE_HOST is not set (at {cfg}:1)"


def test_missing_import(tmp_path):
    cfg = write(tmp_path / "next.config.mjs", "import x from 'not-installed-pkg'\nexport default x\n")
    with pytest.raises(ConfigError, match="node could not load it: Error: Cannot find package 'not-installed-pkg'"):
        load_next_config(cfg)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_next_config(tmp_path / "next.config.js")
    with pytest.raises(ConfigError, match="no next.config.js, next.config.mjs"):
        load_next_config(tmp_path)


def test_a_config_that_never_finishes_times_out(tmp_path):
    cfg = write(tmp_path / "next.config.js", "setInterval(() => {}, 1000)\nmodule.exports = new Promise(() => {})\n")
    with pytest.raises(ConfigError, match="node did not finish loading it within 3 s"):
        load_next_config(cfg, timeout=3)


def test_a_config_that_keeps_the_event_loop_alive_still_returns(tmp_path):
    cfg = write(tmp_path / "next.config.js", "setInterval(() => {}, 1000)\nmodule.exports = { images: {} }\n")
    assert load_next_config(cfg, timeout=20) == {}


def test_typescript_config(tmp_path):
    cfg = write(tmp_path / "next.config.ts", """
        type Images = { qualities: number[] }
        const images: Images = { qualities: [42] }
        export default { images }
    """)
    if node_version(NODE) >= (22, 6, 0):
        assert load_next_config(cfg) == {"qualities": [42]}
    else:
        with pytest.raises(ConfigError) as e:
            load_next_config(cfg)
        msg = str(e.value)
        assert "a TypeScript config needs Node.js 22.6 or newer" in msg
        assert "use next.config.js or next.config.mjs, or install a newer Node.js" in msg
        assert "\n" not in msg


# -- node missing ------------------------------------------------------------------------------

def test_node_missing_from_path(tmp_path, monkeypatch):
    cfg = write(tmp_path / "next.config.js", "module.exports = { images: {} }\n")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ConfigError) as e:
        load_next_config(cfg)
    assert '"node" is not on PATH' in str(e.value) and "--config" in str(e.value)


def test_cli_node_missing_exits_2_with_one_line(tmp_path):
    cfg = write(tmp_path / "next.config.js", "module.exports = { images: {} }\n")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    r = serve_exit(["--next-config", str(cfg), "--port", "1"], env={"PATH": str(empty)})
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"imgopt: --next-config {cfg}: ")
    assert '"node" is not on PATH' in r.stderr


# -- the command line --------------------------------------------------------------------------

def _settings(argv: list[str], env: dict[str, str] | None = None):
    args = build_parser().parse_args(["serve", *argv])
    return settings_from(resolve_options(args, env or {}))


def test_cli_reads_images_from_the_next_config(tmp_path):
    cfg = write(tmp_path / "next.config.js", """
        module.exports = { images: { qualities: [50, 80], formats: ['image/avif'], loader: 'custom', loaderFile: './l.js' } }
    """)
    s = _settings(["--next-config", str(cfg)])
    assert s.images.qualities == (50, 80) and s.images.formats == ("image/avif",)
    s = _settings([], env={"IMGOPT_NEXT_CONFIG": str(cfg)})
    assert s.images.qualities == (50, 80)


def test_cli_config_and_next_config_together_is_a_usage_error(tmp_path):
    cfg = write(tmp_path / "next.config.js", "module.exports = { images: {} }\n")
    js = write(tmp_path / "images.json", "{}")
    with pytest.raises(UsageError, match="--config and --next-config cannot be used together"):
        _settings(["--next-config", str(cfg), "--config", str(js)])
    r = serve_exit(["--next-config", str(cfg), "--config", str(js)])
    assert r.returncode == 2 and r.stderr.count("\n") == 1


@pytest.mark.parametrize("body,fragment", [
    ("module.exports = {\n", "SyntaxError"),
    ("module.exports = { images: { qualities: [0] } }\n", "images.qualities[0]: Number must be greater than or equal to 1"),
    ("module.exports = { images: { bogus: 1 } }\n", "images.bogus: unknown key"),
])
def test_cli_bad_next_config_exits_2_with_one_line(tmp_path, body, fragment):
    cfg = write(tmp_path / "next.config.js", body)
    r = serve_exit(["--next-config", str(cfg)])
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("imgopt: ")
    assert fragment in r.stderr


def test_served_with_the_next_config(tmp_path, corpus, make_server):
    cfg = write(tmp_path / "site/next.config.mjs", """
        export default (phase) => ({ images: { qualities: [40, 60], deviceSizes: [300], imageSizes: [] } })
    """)
    srv = make_server(None, "--next-config", str(cfg), "--local-root", str(corpus))
    assert srv.get("/test.jpg", 300, 60).status_code == 200
    r = srv.get("/test.jpg", 300, 75)
    assert r.status_code == 400 and r.text == '"q" parameter (quality) of 75 is not allowed'
    r = srv.get("/test.jpg", 640, 60)
    assert r.status_code == 400 and r.text == '"w" parameter (width) of 640 is not allowed'


def test_a_site_without_images_settings_is_served_under_its_base_path(tmp_path, corpus, make_server):
    cfg = write(tmp_path / "site/next.config.js", "module.exports = { basePath: '/shop', output: 'standalone' }\n")
    srv = make_server(None, "--next-config", str(cfg), "--local-root", str(corpus))
    r = httpx.get(srv.url + "/shop/_next/image", params={"url": "/shop/test.jpg", "w": 640, "q": 75},
                  headers={"Accept": "image/webp"}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    r = srv.get("/test.jpg", 640, 50)  # Next's default qualities: [75]
    assert r.status_code == 400 and r.text == '"q" parameter (quality) of 50 is not allowed'


def test_static_imports_from_an_asset_prefix_host_are_fetched(tmp_path, corpus, origin, make_server):
    cfg = write(tmp_path / "site/next.config.js", f"""
        module.exports = {{ assetPrefix: '{origin.base_url}', images: {{ dangerouslyAllowLocalIP: true }} }}
    """)
    srv = make_server(None, "--next-config", str(cfg))
    r = srv.get(origin.base_url + "/test.jpg", 640, 75)
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    other = origin.base_url.replace("127.0.0.1", "localhost")  # another host: not the prefix's
    r = srv.get(other + "/test.jpg", 640, 75)
    assert r.status_code == 400 and r.text == '"url" parameter is not allowed'


def test_a_path_asset_prefix_is_read_from_the_exports_next_folder(tmp_path, corpus, make_server):
    """With assetPrefix a path ("/cdn"), a static export's static imports are
    /cdn/_next/static/media/..., served by the host from out/_next/: a folder source finds them
    there. Only {assetPrefix}/_next/ is mapped; basePath urls are as before."""
    out = tmp_path / "out"
    (out / "_next/static/media").mkdir(parents=True)
    shutil.copy(corpus / "test.jpg", out / "_next/static/media/still.0a1b2c3d.jpg")
    shutil.copy(corpus / "test.jpg", out / "photo.jpg")
    cfg = write(tmp_path / "site/next.config.js", """
        module.exports = { output: 'export', basePath: '/shop', assetPrefix: 'cdn/', images: {} }
    """)
    srv = make_server(None, "--next-config", str(cfg), "--local-root", str(out))

    def get(url: str) -> httpx.Response:
        return httpx.get(srv.url + "/shop/_next/image", params={"url": url, "w": 640, "q": 75},
                         headers={"Accept": "image/webp"}, timeout=30)

    r = get("/cdn/_next/static/media/still.0a1b2c3d.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp", r.text
    assert get("/shop/photo.jpg").status_code == 200  # public files at {basePath}/ as before
    assert get("/cdn/photo.jpg").status_code == 404  # only {assetPrefix}/_next/ is the prefix's
    assert get("/cdn/_next/static/media/missing.jpg").status_code == 404
    assert get("/cdn/_next/%2e%2e/photo.jpg").status_code == 404  # a dot segment: /cdn/photo.jpg
    r = get("/cdn/_next/..%2f..%2fsite/next.config.js")
    assert r.status_code == 400 and r.text == '"url" parameter is not allowed'


@pytest.mark.parametrize("prefix,path", [
    ("/cdn", "/cdn"), ("cdn/", "/cdn"), ("//a/b//", "/a/b"), ("/", ""), ("", ""),
    ("https://cdn.example.com/x", ""), ("http://localhost", ""),
])
def test_a_path_asset_prefix_is_normalised_as_next_does(prefix, path):
    # Next's normalizedAssetPrefix: no leading or trailing slashes, then one leading slash
    assert parse_images_config({"assetPrefix": prefix}).asset_prefix == path


def test_the_sites_optimizer_limits_are_imgopts_defaults(tmp_path, corpus, make_server):
    """next.config's experimental.imgOptMaxInputPixels and imgOptTimeoutInSeconds set the pixel
    limit and the transform timeout, as they do for Next's optimizer; a flag still wins."""
    cfg = write(tmp_path / "site/next.config.js", """
        module.exports = { experimental: { imgOptMaxInputPixels: 1000, imgOptTimeoutInSeconds: 20 }, images: {} }
    """)
    assert load_next_config(cfg) == {"imgOptMaxInputPixels": 1000, "imgOptTimeoutInSeconds": 20}
    s = _settings(["--next-config", str(cfg)])
    assert s.max_input_pixels == 1000 and s.transform_timeout == 20.0
    s = _settings(["--next-config", str(cfg), "--max-input-pixels", "5000", "--transform-timeout", "3"])
    assert s.max_input_pixels == 5000 and s.transform_timeout == 3.0
    assert _settings([]).max_input_pixels == 268_402_689 and _settings([]).transform_timeout == 7.0
    # a build carries them in its resolved config (there always: Next's defaults)
    built = built_config(tmp_path / "built/.next", images={}, experimental={"imgOptMaxInputPixels": 2000,
                                                                            "imgOptTimeoutInSeconds": 7})
    assert _settings(["--next-config", str(built)]).max_input_pixels == 2000
    for bad in ("0", "'7'", "true"):
        write(tmp_path / "site/next.config.js", f"module.exports = {{ experimental: {{ imgOptTimeoutInSeconds: {bad} }} }}")
        with pytest.raises(ConfigError, match="images.imgOptTimeoutInSeconds: expected a number of seconds"):
            parse_images_config(load_next_config(cfg))
    # served: an image over the site's pixel limit is refused as over imgopt's own
    write(tmp_path / "site/next.config.js", "module.exports = { experimental: { imgOptMaxInputPixels: 1000 } }")
    srv = make_server(None, "--next-config", str(cfg), "--local-root", str(corpus))
    r = srv.get("/test.jpg", 640, 75)
    assert r.status_code == 400 and "over the limit of 1000" in r.text


def built_config(folder: Path, **config: object) -> Path:
    """A required-server-files.json as `next build` writes it (the parts imgopt reads)."""
    body = {"version": 1, "config": {"distDir": ".next", "basePath": "", "assetPrefix": "", "trailingSlash": False,
                                      **config}, "appDir": "/srv/site", "files": [], "ignore": []}
    path = folder / "required-server-files.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


def test_a_standalone_folder_is_read_from_its_built_config_without_node(tmp_path):
    # output: 'standalone' keeps no next.config, only .next/required-server-files.json with the
    # config next build resolved: defaults filled in, static media patterns and the asset prefix's
    # host already added (imgopt adds neither twice)
    images = {
        "deviceSizes": [100, 200], "imageSizes": [10], "path": "/shop/_next/image", "loader": "default",
        "loaderFile": "", "domains": [], "disableStaticImages": False, "minimumCacheTTL": 600,
        "formats": ["image/webp", "image/avif"], "maximumRedirects": 0, "maximumResponseBody": 30000,
        "dangerouslyAllowLocalIP": False, "dangerouslyAllowSVG": False,
        "contentSecurityPolicy": "script-src 'none'; frame-src 'none'; sandbox;",
        "contentDispositionType": "inline",
        "localPatterns": [{"pathname": "/img/**", "search": ""},
                          {"pathname": "/_next/static/media/**", "search": ""},
                          {"pathname": "/_next/static/immutable/media/**", "search": ""}],
        "remotePatterns": [{"hostname": "cdn.example.com", "protocol": "https", "port": ""}],
        "qualities": [10, 90], "unoptimized": False, "customCacheHandler": False,
    }
    built_config(tmp_path / "standalone/.next", basePath="/shop", assetPrefix="https://cdn.example.com",
                 trailingSlash=True, images=images)
    got = load_next_config(tmp_path / "standalone", node="/nonexistent/node")  # node is never run
    assert got == {**images, "basePath": "/shop", "trailingSlash": True, "assetPrefix": "https://cdn.example.com"}
    parsed = parse_images_config(got)
    assert parsed.base_path == "/shop" and parsed.trailing_slash is True and parsed.qualities == (10, 90)
    assert parsed.path == "/shop/_next/image"  # the resolved default: {basePath}/_next/image, no other route
    assert len(parsed.remote_patterns) == 1 and parsed.local_patterns is not None and len(parsed.local_patterns) == 3
    # the distDir itself, and the file itself, work too
    assert load_next_config(tmp_path / "standalone/.next", node="/nonexistent/node") == got
    assert load_next_config(tmp_path / "standalone/.next/required-server-files.json", node="/nonexistent/node") == got


def test_a_next_config_wins_over_a_build_in_the_same_project(tmp_path):
    built_config(tmp_path / ".next", images={"qualities": [10]})
    write(tmp_path / "next.config.js", "module.exports = { images: { qualities: [70] } }\n")
    assert load_next_config(tmp_path) == {"qualities": [70]}


@pytest.mark.parametrize("text,fragment", [
    ("{not json", "not a Next.js required-server-files.json (JSONDecodeError"),
    ('{"version": 1}', "not a Next.js required-server-files.json (KeyError"),
    ('{"config": [1]}', "its config is not an object"),
    ('{"config": {"images": "big"}}', "images: expected an object"),
])
def test_a_broken_built_config_is_one_line(tmp_path, text, fragment):
    path = tmp_path / "required-server-files.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_next_config(path)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_a_standalone_folder_with_a_distdir_of_another_name(tmp_path):
    built_config(tmp_path / "standalone/build", distDir="build", images={"qualities": [40]})
    (tmp_path / "standalone/public").mkdir()
    assert load_next_config(tmp_path / "standalone", node="/nonexistent/node") == {"qualities": [40]}
    built_config(tmp_path / "standalone/.next-old", images={"qualities": [50]})
    with pytest.raises(ConfigError) as e:
        load_next_config(tmp_path / "standalone")
    assert "more than one build in that folder (.next-old, build)" in str(e.value)


def test_a_folder_without_any_config_says_what_it_looked_for(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_next_config(tmp_path)
    assert "no next.config.js, next.config.mjs" in str(e.value) and "required-server-files.json" in str(e.value)
