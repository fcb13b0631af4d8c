"""--fast-first: a cold AVIF request is answered at once with WebP (short max-age, MISS) while
the AVIF is made in the background, in the same single flight as any AVIF request; later
requests get the AVIF."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

IMAGES = {"formats": ["image/avif", "image/webp"]}
CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"


def transforms(base_url: str) -> dict[str, float]:
    """Transforms done so far, by output format (imgopt's own histogram counts)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(base_url + "/metrics", timeout=10).text):
        if family.name == "imgopt_transform_seconds":
            for s in family.samples:
                if s.name.endswith("_count"):
                    out[s.labels["format"]] = out.get(s.labels["format"], 0) + s.value
    return out


@pytest.fixture
def root(corpus: Path, tmp_path: Path) -> Path:
    r = tmp_path / "site"
    (r / "_next" / "static" / "media").mkdir(parents=True)
    shutil.copy(corpus / "test.jpg", r / "a.jpg")
    shutil.copy(corpus / "test.jpg", r / "_next" / "static" / "media" / "a.1234.jpg")
    return r


def test_cold_avif_is_answered_in_webp_then_avif(root: Path, make_server: Any) -> None:
    srv = make_server(IMAGES, "--local-root", str(root), "--fast-first")
    url = f"{srv.url}/_next/image?url=%2Fa.jpg&w=640&q=75"
    first = httpx.get(url, headers={"Accept": CHROME}, timeout=60)
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/webp" and first.content[8:12] == b"WEBP"
    assert first.headers["cache-control"] == "public, max-age=60, must-revalidate"
    assert first.headers["x-nextjs-cache"] == "MISS"
    assert first.headers["vary"] == "Accept"
    assert first.headers["x-imgopt-deferred"] == "image/avif"
    # An AVIF-only client has nothing faster to take: it joins the AVIF in progress.
    avif_only = httpx.get(url, headers={"Accept": "image/avif"}, timeout=60)
    assert avif_only.status_code == 200 and avif_only.headers["content-type"] == "image/avif"
    later = httpx.get(url, headers={"Accept": CHROME}, timeout=60)
    assert later.headers["content-type"] == "image/avif" and later.content[4:12] == b"ftypavif"
    assert later.headers["x-nextjs-cache"] == "HIT"
    assert later.headers["cache-control"] == "public, max-age=14400, must-revalidate"
    assert "x-imgopt-deferred" not in later.headers and "x-imgopt-deferred" not in avif_only.headers
    assert later.content == avif_only.content
    # One AVIF encode however many asked, and the WebP that was answered is cached for WebP clients.
    assert transforms(srv.url) == {"avif": 1, "webp": 1}
    webp = httpx.get(url, headers={"Accept": "image/webp"}, timeout=60)
    assert webp.headers["x-nextjs-cache"] == "HIT" and webp.content == first.content
    assert webp.headers["cache-control"] == "public, max-age=14400, must-revalidate"


def test_static_media_answered_fast_is_not_immutable(root: Path, make_server: Any) -> None:
    srv = make_server(IMAGES, "--local-root", str(root), "--fast-first")
    url = f"{srv.url}/_next/image?url=%2F_next%2Fstatic%2Fmedia%2Fa.1234.jpg&w=640&q=75"
    first = httpx.get(url, headers={"Accept": CHROME}, timeout=60)
    assert first.headers["content-type"] == "image/webp"
    assert first.headers["cache-control"] == "public, max-age=60, must-revalidate"
    avif = httpx.get(url, headers={"Accept": "image/avif"}, timeout=60)
    assert avif.headers["cache-control"] == "public, max-age=315360000, immutable"


def test_an_image_passed_through_is_not_answered_as_a_stand_in(root: Path, corpus: Path, make_server: Any) -> None:
    """An animated GIF is passed through whatever the Accept: its first answer is what an AVIF
    request gets too, with the normal max-age and no deferred format."""
    shutil.copy(corpus / "animated.gif", root / "anim.gif")
    srv = make_server(IMAGES, "--local-root", str(root), "--fast-first")
    url = f"{srv.url}/_next/image?url=%2Fanim.gif&w=640&q=75"
    first = httpx.get(url, headers={"Accept": CHROME}, timeout=60)
    assert first.status_code == 200 and first.headers["content-type"] == "image/gif"
    assert first.headers["cache-control"] == "public, max-age=14400, must-revalidate"
    assert "x-imgopt-deferred" not in first.headers
    assert first.content == (corpus / "animated.gif").read_bytes()


BOUNDED_DEFERRALS = r"""
import asyncio, sys
from pathlib import Path

import httpx

from imgopt import service as service_module
from imgopt.app import create_app
from imgopt.config import ImagesConfig, Settings

service_module.DEFERRED_MAX = 3
root, cache, chrome = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
settings = Settings(images=ImagesConfig(formats=("image/avif", "image/webp")), local_root=root, cache_dir=cache,
                    fast_first=True, isolation="thread", workers=1)
widths = (32, 48, 64, 96, 128)


async def main() -> None:
    app = create_app(settings)
    service = app.state.service
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://imgopt.test") as client:
            await service._background.acquire()  # as under load: no deferred AVIF may start
            for w in widths:
                r = await client.get(f"/_next/image?url=%2Fa.jpg&w={w}&q=75", headers={"Accept": chrome})
                assert r.status_code == 200 and r.headers["content-type"] == "image/webp", r.headers
                assert r.headers["cache-control"] == "public, max-age=60, must-revalidate"
            assert len(service._deferred) == 3, len(service._deferred)
            service._background.release()
            for _ in range(600):  # the three are made one after another
                if not service._deferred:
                    break
                await asyncio.sleep(0.05)
            assert not service._deferred, len(service._deferred)
            got = [(await client.get(f"/_next/image?url=%2Fa.jpg&w={w}&q=75", headers={"Accept": chrome}))
                   .headers["content-type"] for w in widths]
            assert got == ["image/avif"] * 3 + ["image/webp"] * 2, got
    print("bounded ok")


asyncio.run(main())
"""


def test_the_avifs_waiting_for_a_lull_are_bounded(root: Path, tmp_path: Path) -> None:
    """Under sustained load deferred AVIFs wait as long as it lasts: past DEFERRED_MAX of them a
    cold AVIF request still gets the WebP at once, and defers nothing (memory stays bounded);
    those deferred are made once there is room. In-process, so in a process of its own: the
    service sets libvips up for the whole process (which loaders it may use)."""
    r = subprocess.run([sys.executable, "-c", BOUNDED_DEFERRALS, str(root), str(tmp_path / "cache"), CHROME],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "bounded ok" in r.stdout, r.stdout + r.stderr


def test_the_early_answer_is_never_kept_longer_than_the_image_may_be(origin: Any, corpus: Path, make_server: Any) -> None:
    """An upstream max-age of 10 s with minimumCacheTTL 0: the early WebP says 10, not 60."""
    images = {**IMAGES, "minimumCacheTTL": 0, "remotePatterns": [{"protocol": "http", "hostname": "127.0.0.1"}],
              "dangerouslyAllowLocalIP": True}
    srv = make_server(images, "--fast-first")
    src = f"{origin.base_url}/test.jpg?cc=public,max-age=10"
    r = httpx.get(f"{srv.url}/_next/image", params={"url": src, "w": "640", "q": "75"}, headers={"Accept": CHROME},
                  timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp", r.text[:200]
    assert r.headers["cache-control"] == "public, max-age=10, must-revalidate"
    assert r.headers["x-imgopt-deferred"] == "image/avif"


def test_without_a_cache_the_flag_does_nothing(root: Path, make_server: Any) -> None:
    """With --cache-size 0 no AVIF made later could be kept for the next request: the flag is
    ignored (with a warning) rather than making AVIFs nobody gets."""
    srv = make_server(IMAGES, "--local-root", str(root), "--fast-first", "--cache-size", "0")
    r = httpx.get(f"{srv.url}/_next/image?url=%2Fa.jpg&w=640&q=75", headers={"Accept": CHROME}, timeout=60)
    assert r.headers["content-type"] == "image/avif" and "x-imgopt-deferred" not in r.headers
    assert transforms(srv.url) == {"avif": 1}
    srv.wait_for_log("--fast-first does nothing with --cache-size 0")


def test_without_the_flag_a_cold_avif_is_waited_for(root: Path, make_server: Any) -> None:
    srv = make_server(IMAGES, "--local-root", str(root))
    r = httpx.get(f"{srv.url}/_next/image?url=%2Fa.jpg&w=640&q=75", headers={"Accept": CHROME}, timeout=60)
    assert r.headers["content-type"] == "image/avif" and r.headers["x-nextjs-cache"] == "MISS"
    assert transforms(srv.url) == {"avif": 1}


def test_the_flag_and_its_variable(tmp_path: Path) -> None:
    from imgopt import cli

    args = cli.build_parser().parse_args(["serve", "--fast-first"])
    assert cli.settings_from(cli.resolve_options(args, {})).fast_first is True
    args = cli.build_parser().parse_args(["serve"])
    assert cli.settings_from(cli.resolve_options(args, {"IMGOPT_FAST_FIRST": "1"})).fast_first is True
    assert cli.settings_from(cli.resolve_options(args, {})).fast_first is False
    r = subprocess.run([sys.executable, "-m", "imgopt", "serve", "--fast-first", "maybe"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "--fast-first: invalid value 'maybe'" in r.stderr
    assert cli.settings_from(cli.resolve_options(args, {})).fast_first_max_age == 60
    args = cli.build_parser().parse_args(["serve", "--fast-first", "--fast-first-max-age", "300"])
    assert cli.settings_from(cli.resolve_options(args, {})).fast_first_max_age == 300
    args = cli.build_parser().parse_args(["serve"])
    assert cli.settings_from(cli.resolve_options(args, {"IMGOPT_FAST_FIRST_MAX_AGE": "5"})).fast_first_max_age == 5
    for bad in ("0", "-1", "soon"):
        r = subprocess.run([sys.executable, "-m", "imgopt", "serve", "--fast-first-max-age", bad], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and "--fast-first-max-age" in r.stderr, (bad, r.stderr)


def test_the_webp_is_sent_with_the_max_age_given(root: Path, make_server: Any) -> None:
    srv = make_server(IMAGES, "--local-root", str(root), "--fast-first", "--fast-first-max-age", "15")
    first = httpx.get(f"{srv.url}/_next/image?url=%2Fa.jpg&w=640&q=75", headers={"Accept": CHROME}, timeout=60)
    assert first.headers["content-type"] == "image/webp"
    assert first.headers["cache-control"] == "public, max-age=15, must-revalidate"


def test_the_avif_waits_for_a_lull_and_is_made_at_the_lowest_priority(root: Path, make_server: Any,
                                                                              tmp_path: Path) -> None:
    """While image work is admitted the deferred AVIF waits; then it is made in a worker process
    of its own at nice 19, which takes no worker from requests."""
    from test_isolation import HOOKS, in_background, marked, metric, wait_for, worker_pids

    release = tmp_path / "release"
    for n in (1, 2):
        (root / f"held{n}.png").write_bytes(marked(f"IMGOPT-TEST-WAIT:{release};{n}"))
    srv = make_server(IMAGES, "--local-root", str(root), "--fast-first", "--workers", "2", env=HOOKS)
    url = f"{srv.url}/_next/image?url=%2Fa.jpg&w=640&q=75"
    assert httpx.get(url, headers={"Accept": "image/webp"}, timeout=60).headers["content-type"] == "image/webp"
    held = [in_background(lambda n=n: srv.get(f"/held{n}.png", 64, 75)) for n in (1, 2)]
    wait_for(lambda: metric(srv, "imgopt_pool_running") == 2, "both workers held")
    first = httpx.get(url, headers={"Accept": CHROME}, timeout=60)  # the WebP from the cache
    assert first.headers["content-type"] == "image/webp" and first.headers["x-nextjs-cache"] == "MISS"
    assert first.headers["cache-control"] == "public, max-age=60, must-revalidate"
    again = httpx.get(url, headers={"Accept": CHROME}, timeout=60)  # still no AVIF: WebP again
    assert again.headers["content-type"] == "image/webp"
    assert transforms(srv.url).get("avif", 0) == 0
    release.write_bytes(b"")
    for thread, out in held:
        thread.join(30)
        assert out and out[0].status_code == 200
    wait_for(lambda: transforms(srv.url).get("avif", 0) == 1, "the deferred AVIF")
    later = httpx.get(url, headers={"Accept": CHROME}, timeout=60)
    assert later.headers["content-type"] == "image/avif" and later.headers["x-nextjs-cache"] == "HIT"
    # each worker is started by its supervising thread, so look at every thread's children
    children = {int(p) for t in Path(f"/proc/{srv.proc.pid}/task").iterdir() for p in (t / "children").read_text().split()}
    (background,) = children - worker_pids(srv)
    nice = int(Path(f"/proc/{background}/stat").read_text().rsplit(")", 1)[1].split()[16])
    assert nice == 19 and len(worker_pids(srv)) == 2
