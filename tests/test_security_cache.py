"""Cache integrity, against real imgopt processes.

* No client header reaches the upstream (remote URLs and --origin) or the cache key, and the
  key uses the *negotiated* type: every Accept that negotiates the same type shares an entry.
* kill -9 in the middle of heavy cache writes leaves a cache that opens; afterwards every
  entry served decodes and equals a fresh transform, or is a MISS (never a partial entry).
* Damaged entries (truncated, zeroed, padded, missing value file) are detected and
  regenerated, never served.
* When the upstream fails during a refresh (5xx, hang, reset, refused, not an image, a pixel
  bomb, empty), the stale entry keeps being served, the failure is not cached, and the
  entry refreshes once the upstream is back.
"""

from __future__ import annotations

import concurrent.futures
import io
import itertools
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from PIL import Image

from conftest import ImgoptServer
from origin import Origin

CLIENT_HEADERS = {
    "Cookie": "session=s3cret; other=1",
    "Authorization": "Bearer top-secret",
    "Proxy-Authorization": "Basic c2VjcmV0",
    "X-Forwarded-For": "203.0.113.7",
    "X-Real-IP": "203.0.113.7",
    "Forwarded": "for=203.0.113.7",
    "Referer": "https://victim.example/private?token=abc",
    "User-Agent": "client-agent/1.0",
    "If-None-Match": '"client-etag"',
    "If-Modified-Since": "Wed, 21 Oct 2015 07:28:00 GMT",
    "Range": "bytes=0-10",
    "Accept-Encoding": "br",
    "X-Api-Key": "k-123",
    "Origin": "https://victim.example",
}
SECRETS = ("s3cret", "top-secret", "c2VjcmV0", "203.0.113.7", "victim", "client-agent", "client-etag",
           "bytes=0", "k-123", "2015")


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def pixel(body: bytes) -> tuple[int, int, int]:
    return Image.open(io.BytesIO(body)).convert("RGB").getpixel((4, 4))


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


def get(client: httpx.Client, srv: ImgoptServer, url: str, w: int = 640, q: int = 75,
        accept: str | None = "image/webp", headers: dict[str, str] | None = None) -> httpx.Response:
    h = dict(headers or {})
    if accept is not None:
        h["Accept"] = accept
    return client.get(srv.url + "/_next/image", params={"url": url, "w": str(w), "q": str(q)}, headers=h)


# -- headers and the key -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["remote", "origin"])
def test_client_headers_never_reach_upstream_or_key(make_server, origin, client, mode):
    if mode == "remote":
        srv = make_server({"dangerouslyAllowLocalIP": True, "domains": ["127.0.0.1"]})
        url = f"{origin.base_url}/test.jpg"
    else:
        srv = make_server(None, "--origin", origin.base_url)
        url = "/test.jpg"
    origin.reset_counters()
    a = get(client, srv, url, headers=CLIENT_HEADERS)
    assert a.status_code == 200 and a.headers["x-nextjs-cache"] == "MISS"
    b = get(client, srv, url, headers={"Cookie": "session=someone-else", "Authorization": "Bearer other"})
    c = get(client, srv, url)
    assert b.headers["x-nextjs-cache"] == c.headers["x-nextjs-cache"] == "HIT"
    assert a.content == b.content == c.content and a.headers["etag"] == b.headers["etag"]
    assert origin.hits["/test.jpg"] == 1
    (rec,) = [r for r in origin.requests if r.path == "/test.jpg"]
    sent = " ".join(f"{k}: {v}" for k, v in rec.headers.items())
    for name in CLIENT_HEADERS:
        if name.lower() not in ("user-agent", "accept-encoding"):
            assert name.lower() not in rec.headers, name
    for secret in SECRETS:
        assert secret not in sent, secret
    assert rec.headers.get("range") is None and rec.method == "GET"


def test_key_is_the_negotiated_type(make_server, origin, client):
    srv = make_server({"dangerouslyAllowLocalIP": True, "domains": ["127.0.0.1"],
                       "formats": ["image/avif", "image/webp"]})
    url = f"{origin.base_url}/test.png"
    groups = {
        "image/webp": ["image/webp", "image/webp,*/*", "text/html,image/webp;q=0.9,*/*;q=0.8",
                       "image/webp;q=1.0, image/png", "image/png;q=0.9,image/webp",
                       "image/webp," * 1400],  # 15 KB: under the 16 KiB header limit (as Node's)
        "image/avif": ["image/avif", "image/avif,image/webp,*/*", "image/webp;q=0.5,image/avif;q=0.9"],
        "image/png": [None, "", "*/*", "image/*", "image/png", "image/invalid", "image/avif;q=0",
                      "text/html", "image/webp;q=0,image/avif;q=0", ";;;,,,=q",
                      "IMAGE/WEBP"],  # Next's accept.includes() is case-sensitive
    }
    for ctype, accepts in groups.items():
        states = []
        for accept in accepts:
            r = get(client, srv, url, accept=accept)
            assert r.status_code == 200 and r.headers["content-type"] == ctype, (accept, r.headers["content-type"])
            states.append(r.headers["x-nextjs-cache"])
        assert states == ["MISS"] + ["HIT"] * (len(accepts) - 1), (ctype, states)


# -- kill -9 during heavy writes -------------------------------------------------------------------


KILL_CONFIG = {
    "imageSizes": [32, 48, 64, 96, 128, 256, 384],
    "qualities": [40, 50, 60, 70, 75, 80, 90],
    "formats": ["image/webp"],
}
SOURCES = ["/mountains.jpg", "/large.jpg", "/test.png", "/alpha.png", "/test.jpg"]
WIDTHS = [1920, 1080, 828, 640, 384, 256, 128]


def _variants() -> list[tuple[str, int, int, str]]:
    combos = list(itertools.product(SOURCES, WIDTHS, KILL_CONFIG["qualities"], ["image/webp", "*/*"]))
    # big outputs first, interleaved, so large value files are being written when the kill lands
    combos.sort(key=lambda v: (WIDTHS.index(v[1]) // 3, hash(v) % 97))
    return combos


def test_kill_9_during_heavy_writes_leaves_only_complete_entries(corpus, tmp_path, client):
    base = tmp_path / "victim"
    srv = ImgoptServer(base, KILL_CONFIG, "--local-root", str(corpus), "--workers", "2", "--queue", "30").start()
    variants = _variants()
    done: dict[tuple, bytes] = {}
    attempted: set[tuple] = set()
    stop = threading.Event()
    lock = threading.Lock()
    feed = iter(variants)

    def worker() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                with lock:
                    v = next(feed, None)
                if v is None:
                    return
                attempted.add(v)
                try:
                    r = get(c, srv, v[0], v[1], v[2], accept=v[3])
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    done[v] = r.content

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(worker) for _ in range(8)]
        deadline = time.monotonic() + 20
        while len(done) < 25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGKILL)  # mid-write: 8 requests in flight, writes queued
        stop.set()
        for f in futs:
            f.result()
    assert srv.proc.wait(10) == -signal.SIGKILL
    srv.log.close()
    assert len(done) >= 25

    db = sqlite3.connect(base / "cache" / "cache.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()

    after = ImgoptServer(base, KILL_CONFIG, "--local-root", str(corpus), "--workers", "2").start()  # same cache dir
    fresh = ImgoptServer(tmp_path / "fresh", KILL_CONFIG, "--local-root", str(corpus), "--workers", "2").start()
    try:
        hits = misses = 0
        for v in sorted(attempted):
            r = get(client, after, v[0], v[1], v[2], accept=v[3])
            assert r.status_code == 200, (v, r.status_code, r.text)
            Image.open(io.BytesIO(r.content)).load()  # decodes in full: never a partial body
            if r.headers["x-nextjs-cache"] == "HIT":
                hits += 1
                # equals a fresh transform: the one the killed server answered with, or, when
                # its answer was lost in the kill, one from a server with an empty cache
                ref = done[v] if v in done else get(client, fresh, v[0], v[1], v[2], accept=v[3]).content
                assert r.content == ref, v
            else:
                assert r.headers["x-nextjs-cache"] == "MISS"
                misses += 1
        assert hits >= 10, (hits, misses)  # entries written before the kill survived
    finally:
        after.stop()
        fresh.stop()


# -- damaged entries ------------------------------------------------------------------------------


def _damage_value_files(cache_dir: Path, how: str) -> int:
    files = sorted(cache_dir.rglob("*.val"))
    for f in files:
        data = f.read_bytes()
        if how == "truncate":
            f.write_bytes(data[: len(data) // 2])
        elif how == "zero-tail":
            f.write_bytes(data[:-100] + bytes(100))
        elif how == "append":
            f.write_bytes(data + b"garbage" * 10)
        elif how == "delete":
            f.unlink()
        elif how == "empty":
            f.write_bytes(b"")
    return len(files)


def _damage_rows(cache_dir: Path, how: str) -> int:
    db = sqlite3.connect(cache_dir / "cache.db")
    rows = db.execute("SELECT rowid, value FROM Cache WHERE value IS NOT NULL").fetchall()
    for rowid, value in rows:
        v = bytes(value)
        v = {"truncate": v[: len(v) // 2], "zero-tail": v[:-20] + bytes(20), "append": v + b"xx",
             "delete": b"", "empty": b""}[how]
        db.execute("UPDATE Cache SET value = ? WHERE rowid = ?", (v, rowid))
    db.commit()
    db.close()
    return len(rows)


def test_damaged_entries_are_regenerated(corpus, tmp_path, client):
    # (url, width, accept): two large values (diskcache keeps them in files), two small (sqlite)
    cases = [("/test.bmp", 384, "image/webp"), ("/test.tiff", 384, "*/*"), ("/test.jpg", 384, "image/webp"),
             ("/tiny.png", 32, "image/webp")]
    srv = ImgoptServer(tmp_path / "a", None, "--local-root", str(corpus)).start()
    good = {c: get(client, srv, c[0], c[1], accept=c[2]).content for c in cases}
    assert sum(len(b) > 40_000 for b in good.values()) == 2 and sum(len(b) < 30_000 for b in good.values()) == 2
    srv.stop()
    for how in ("truncate", "zero-tail", "append", "delete"):
        damaged = _damage_value_files(srv.cache_dir, how) + _damage_rows(srv.cache_dir, how)
        assert damaged >= len(cases), how
        srv = ImgoptServer(tmp_path / "a", None, "--local-root", str(corpus)).start()
        try:
            for c in cases:
                r = get(client, srv, c[0], c[1], accept=c[2])
                assert r.status_code == 200, (how, c, r.status_code)
                assert r.headers["x-nextjs-cache"] == "MISS", (how, c)  # detected, not served
                assert r.content == good[c]
                r = get(client, srv, c[0], c[1], accept=c[2])
                assert r.headers["x-nextjs-cache"] == "HIT" and r.content == good[c]  # regenerated
        finally:
            srv.stop()


# -- stale served while the upstream fails -----------------------------------------------------------


class SwitchableOrigin(Origin):
    """The hostile origin, plus per-path switches that make a path fail in a chosen way."""

    def __init__(self, bomb: bytes) -> None:
        super().__init__()
        self.bomb = bomb
        self.modes: dict[str, str] = {}

    async def _route(self, req, reader, writer):  # type: ignore[override]
        mode = self.modes.get(req.path, "ok")
        if mode == "500":
            return await self._simple(writer, req, 500, b"boom", "text/plain")
        if mode == "404":
            return await self._simple(writer, req, 404, b"gone", "text/plain")
        if mode == "hang":
            return await self._serve_hang(req, reader)
        if mode == "html":
            return await self._simple(writer, req, 200, b"<html>maintenance</html>", "text/html")
        if mode == "empty":
            return await self._simple(writer, req, 200, b"", "image/png")
        if mode == "bomb":
            return await self._simple(writer, req, 200, self.bomb, "image/png")
        if mode == "reset":
            data, ctype = self._load(req.path)  # type: ignore[misc]
            return await self._serve_reset(req, writer, req.path, data, ctype)
        return await super()._route(req, reader, writer)


FAILURES = ["500", "404", "hang", "reset", "html", "empty", "bomb"]


def test_stale_entry_survives_every_kind_of_upstream_failure(corpus, make_server, client):
    with SwitchableOrigin((corpus / "bad" / "bomb.png").read_bytes()) as up:
        srv = make_server({"dangerouslyAllowLocalIP": True, "domains": ["127.0.0.1"], "minimumCacheTTL": 1},
                          "--fetch-timeout", "1")
        urls = {f: f"http://127.0.0.1:{up.port}/sw/{f}.png" for f in FAILURES}
        first = {}
        for f in FAILURES:
            up.add_file(f"/sw/{f}.png", png((200, 0, 0)))
            first[f] = get(client, srv, urls[f], accept="image/png")
            assert first[f].status_code == 200 and first[f].headers["x-nextjs-cache"] == "MISS"
        time.sleep(1.1)  # all stale now
        for f in FAILURES:
            up.modes[f"/sw/{f}.png"] = f
        for n in range(1, 4):  # every failing refresh leaves the stale entry being served
            for f in FAILURES:
                r = get(client, srv, urls[f], accept="image/png")
                assert r.status_code == 200, (f, r.status_code, r.text)
                assert r.headers["x-nextjs-cache"] == "STALE", f
                assert r.content == first[f].content, f
            # the refreshes these answers started have all failed (the hanging one at the fetch deadline)
            srv.wait_for_log("background refresh failed", n * len(FAILURES))
        assert up.hits["/sw/hang.png"] >= 2  # refreshes were really attempted (and failed)
        # the upstream recovers with new content: the failures were not cached, refreshes land
        for f in FAILURES:
            up.modes.pop(f"/sw/{f}.png")
            up.add_file(f"/sw/{f}.png", png((0, 0, 200)))
        pending = set(FAILURES)
        deadline = time.monotonic() + 10
        while pending and time.monotonic() < deadline:
            for f in sorted(pending):
                r = get(client, srv, urls[f], accept="image/png")
                assert r.status_code == 200
                if r.headers["x-nextjs-cache"] == "HIT" and pixel(r.content) == (0, 0, 200):
                    pending.discard(f)
            time.sleep(0.2)
        assert not pending, f"refresh never landed after the upstream recovered: {pending}"
    assert "Traceback" not in srv.log_path.read_text()


def test_stale_entry_survives_a_dead_upstream(corpus, make_server, client):
    """The origin process goes away entirely (connection refused), then comes back."""
    from conftest import free_port

    port = free_port()
    o = Origin(port=port)
    o.add_file("/dead.png", png((10, 200, 10)))
    o.start()
    srv = make_server({"dangerouslyAllowLocalIP": True, "domains": ["127.0.0.1"], "minimumCacheTTL": 1})
    url = f"http://127.0.0.1:{port}/dead.png"
    first = get(client, srv, url, accept="image/png")
    assert first.headers["x-nextjs-cache"] == "MISS"
    o.stop()
    time.sleep(1.1)
    for n in range(1, 4):
        r = get(client, srv, url, accept="image/png")
        assert r.status_code == 200 and r.headers["x-nextjs-cache"] == "STALE" and r.content == first.content
        srv.wait_for_log("background refresh failed", n)  # the refresh this answer started has failed
    o2 = Origin(port=port)
    o2.add_file("/dead.png", png((10, 10, 200)))
    with o2:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            r = get(client, srv, url, accept="image/png")
            if r.headers["x-nextjs-cache"] == "HIT" and pixel(r.content) == (10, 10, 200):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the refresh never landed after the upstream came back")
