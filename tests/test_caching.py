"""Spec §4 and §6.5: HIT/MISS/STALE, single flight, TTLs, restarts, damaged entries, LRU bound."""

from __future__ import annotations

import concurrent.futures
import io
import sqlite3
import threading
import time

import httpx
import pytest
from PIL import Image

from conftest import PROFILE_C, wait_for

W, Q = 399, 75


def png_bytes(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


def test_miss_then_hit(server_c, origin):
    url = f"{origin.base_url}/test.gif?only=miss-then-hit"  # a variant no other test asks for
    a = server_c.get(url, W, Q, accept="image/webp")
    b = server_c.get(url, W, Q, accept="image/webp")
    assert (a.headers["x-nextjs-cache"], b.headers["x-nextjs-cache"]) == ("MISS", "HIT")
    assert a.content == b.content and a.headers["etag"] == b.headers["etag"]


def test_key_uses_negotiated_type_not_raw_accept(server_c, origin):
    url = f"{origin.base_url}/test.tiff"
    a = server_c.get(url, W, Q, accept="image/webp")
    b = server_c.get(url, W, Q, accept="image/webp,image/apng,image/*,*/*;q=0.8")
    assert a.headers["x-nextjs-cache"] == "MISS"
    assert b.headers["x-nextjs-cache"] == "HIT" and b.headers["content-type"] == "image/webp"


def test_concurrent_misses_share_one_fetch(make_server, origin):
    srv = make_server(PROFILE_C)
    origin.reset_counters()
    url = f"{origin.base_url}/large.jpg?delay=500"
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        rs = list(ex.map(lambda _: srv.get(url, 1080, 75), range(6)))
    assert all(r.status_code == 200 for r in rs)
    assert {r.headers["x-nextjs-cache"] for r in rs} == {"MISS"}
    assert len({r.content for r in rs}) == 1
    assert origin.hits["/large.jpg"] == 1


def expire_then_two_parallel_stale(srv, url: str, ttl: float, first: httpx.Response) -> None:
    """Wait out the TTL, then two parallel requests: both STALE, both the old bytes.

    Each comes on a connection opened beforehand and is sent when both threads are ready, so
    the two arrive together however slowly the machine starts a thread or a connection."""
    time.sleep(ttl + 0.2)
    ready = threading.Barrier(2)

    def ask(_: int) -> httpx.Response:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get("/healthz").status_code == 200  # connected
            ready.wait(timeout=30)
            return c.get("/_next/image", params={"url": url, "w": W, "q": Q}, headers={"Accept": "image/png"})

    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        stale = list(ex.map(ask, range(2)))
    assert [r.headers["x-nextjs-cache"] for r in stale] == ["STALE", "STALE"]
    assert all(r.content == first.content for r in stale)


def test_stale_while_revalidate(make_server, origin):
    ttl = 3
    srv = make_server({**PROFILE_C, "minimumCacheTTL": ttl})
    origin.set_stateful("/stateful/a.png", [png_bytes((255, 0, 0)), png_bytes((0, 0, 255))])
    # The delay keeps the background refresh busy long enough for both parallel requests to
    # arrive while it runs, however loaded the machine is.
    url = f"{origin.base_url}/stateful/a.png?delay=400"
    t0 = time.monotonic()
    first = srv.get(url, W, Q, accept="image/png")
    assert first.headers["x-nextjs-cache"] == "MISS"
    second = srv.get(url, W, Q, accept="image/png")
    if time.monotonic() - t0 < ttl:
        assert second.headers["x-nextjs-cache"] == "HIT"
    expire_then_two_parallel_stale(srv, url, ttl, first)
    r = wait_for_refresh(srv, url, first, timeout=10)
    assert Image.open(io.BytesIO(r.content)).convert("RGB").getpixel((0, 0)) == (0, 0, 255)


def wait_for_refresh(srv, url: str, first: httpx.Response, timeout: float) -> httpx.Response:
    """Ask again until the refresh a STALE answer started has landed: a HIT with new bytes."""
    last: list[httpx.Response] = []

    def refreshed() -> bool:
        last[:] = [srv.get(url, W, Q, accept="image/png")]
        return last[0].headers["x-nextjs-cache"] == "HIT" and last[0].content != first.content

    wait_for(refreshed, lambda: f"the refresh to land (last answer {last[0].headers['x-nextjs-cache']})", timeout)
    return last[0]


@pytest.mark.parametrize("run", range(3))
def test_parallel_requests_on_an_expired_entry_are_all_stale(make_server, origin, run):
    """Spec 6.5 cases 71/72: after the TTL, two parallel requests are STALE, STALE, also when
    the upstream is instant and the refresh of a tiny image takes a few milliseconds (the
    refresh starts REFRESH_DELAY after the first STALE answer, as Next's batcher answers
    everything that arrives during its revalidation from the old entry)."""
    ttl = 1
    srv = make_server({**PROFILE_C, "minimumCacheTTL": ttl})
    origin.set_stateful(f"/stateful/fast{run}.png", [png_bytes((255, 0, 0)), png_bytes((0, 0, 255))])
    url = f"{origin.base_url}/stateful/fast{run}.png"
    first = srv.get(url, W, Q, accept="image/png")
    assert first.headers["x-nextjs-cache"] == "MISS"
    expire_then_two_parallel_stale(srv, url, ttl, first)
    # The refresh the first STALE answer started lands in the background: asked again until
    # then, the entry is STALE; once it has landed, a HIT with the new bytes.
    wait_for_refresh(srv, url, first, timeout=30)


def test_stale_kept_when_refresh_fails(make_server, origin, corpus):
    srv = make_server({**PROFILE_C, "minimumCacheTTL": 1})
    (corpus / "flaky.png").write_bytes((corpus / "test.png").read_bytes())
    url = f"{origin.base_url}/flaky.png"
    first = srv.get(url, W, Q)
    assert first.status_code == 200
    (corpus / "flaky.png").unlink()
    time.sleep(1.2)
    for n in range(1, 4):
        r = srv.get(url, W, Q)
        assert r.status_code == 200 and r.content == first.content
        assert r.headers["x-nextjs-cache"] == "STALE"
        srv.wait_for_log("background refresh failed", n)  # the refresh this answer started has failed


def test_errors_are_not_cached(server_c, origin, corpus):
    url = f"{origin.base_url}/later.png"
    assert server_c.get(url, W, Q).status_code == 404
    (corpus / "later.png").write_bytes((corpus / "test.png").read_bytes())
    r = server_c.get(url, W, Q)
    assert r.status_code == 200 and r.headers["x-nextjs-cache"] == "MISS"


def test_cache_survives_restart(tmp_path, corpus):
    from conftest import ImgoptServer

    srv = ImgoptServer(tmp_path / "a", None, "--local-root", str(corpus)).start()
    a = srv.get("/test.jpg", 384, 75)
    srv.stop()
    srv2 = ImgoptServer(tmp_path / "a", None, "--local-root", str(corpus))
    srv2.start()
    try:
        b = srv2.get("/test.jpg", 384, 75)
        assert b.headers["x-nextjs-cache"] == "HIT"
        assert a.content == b.content
    finally:
        srv2.stop()


def test_damaged_entry_is_dropped_and_regenerated(tmp_path, corpus):
    from conftest import ImgoptServer

    srv = ImgoptServer(tmp_path / "a", None, "--local-root", str(corpus)).start()
    good = srv.get("/mountains.jpg", 640, 75)
    small = srv.get("/test.png", 384, 75)
    srv.stop()
    # Flip bytes in every stored value: large ones live in files, small ones in sqlite.
    for f in (tmp_path / "a" / "cache").rglob("*.val"):
        data = bytearray(f.read_bytes())
        data[-10] ^= 0xFF
        f.write_bytes(bytes(data))
    db = sqlite3.connect(tmp_path / "a" / "cache" / "cache.db")
    rows = db.execute("SELECT rowid, value FROM Cache WHERE value IS NOT NULL").fetchall()
    for rowid, value in rows:
        v = bytearray(value)
        v[-5] ^= 0xFF
        db.execute("UPDATE Cache SET value = ? WHERE rowid = ?", (bytes(v), rowid))
    db.commit()
    db.close()
    srv = ImgoptServer(tmp_path / "a", None, "--local-root", str(corpus)).start()
    try:
        for src, w, ref in (("/mountains.jpg", 640, good), ("/test.png", 384, small)):
            r = srv.get(src, w, 75)
            assert r.status_code == 200
            assert r.headers["x-nextjs-cache"] == "MISS"  # the damaged entry was not served
            Image.open(io.BytesIO(r.content)).load()
            assert r.content == ref.content
    finally:
        srv.stop()


def test_cache_size_is_bounded(make_server, corpus):
    srv = make_server({"deviceSizes": [640, 750, 828, 1080, 1200, 1920], "qualities": [50, 75, 100]},
                      "--local-root", str(corpus), "--cache-size", "300000")
    for w in (640, 750, 828, 1080, 1200, 1920):
        for q in (50, 75, 100):
            assert srv.get("/large.jpg", w, q).status_code == 200
    total = sum(f.stat().st_size for f in srv.cache_dir.rglob("*.val"))
    assert total <= 300000 * 1.5  # diskcache culls after the write that passes the bound


def test_cache_disabled_with_zero(make_server, corpus):
    srv = make_server({"maximumDiskCacheSize": 0}, "--local-root", str(corpus))
    assert srv.get("/test.jpg", 384, 75).headers["x-nextjs-cache"] == "MISS"
    assert srv.get("/test.jpg", 384, 75).headers["x-nextjs-cache"] == "MISS"


def test_healthz_during_work(server_c, origin):
    before = origin.hits["/large.jpg"]
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        fut = ex.submit(server_c.get, f"{origin.base_url}/large.jpg?delay=1000", 1080, 100)
        # imgopt is at work once the origin has the request (it holds the answer for 1 s)
        wait_for(lambda: origin.hits["/large.jpg"] != before or fut.done(), "imgopt to fetch /large.jpg")
        t0 = time.monotonic()
        assert httpx.get(server_c.url + "/healthz").status_code == 200
        assert time.monotonic() - t0 < 0.5
        assert fut.result().status_code == 200
