"""The disk cache heals itself and never stops the service, against real imgopt processes.

* Integrity of the whole entry: a changed byte in a stored entry's content type, max-age or
  body, or two entries' value files swapped, is a MISS (dropped and counted), never served.
* A damaged database (truncated, header overwritten, garbage) is moved aside as
  cache.db.damaged-<time>, a new one is created, the server starts and serves.
* A read-only or full cache dir (a tmpfs mounted read-only, or a small full tmpfs) is
  *degraded*: the server starts, serves from memory (a request just served is a HIT), and
  /healthz answers 200 with {"status": "degraded", "reason": ...}.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from cluster import metric
from conftest import ImgoptServer

W, Q = 640, 75


def server(tmp: Path, corpus: Path, *args: str) -> ImgoptServer:
    return ImgoptServer(tmp, None, "--local-root", str(corpus), *args)


def stored_values(cache_dir: Path) -> list[tuple[str, Path | None, bytes]]:
    """(key, value file or None, raw value) of every entry in a stopped server's cache."""
    db = sqlite3.connect(cache_dir / "cache.db")
    try:
        rows = db.execute("SELECT key, filename, value FROM Cache").fetchall()
    finally:
        db.close()
    out = []
    for key, filename, value in rows:
        if filename:
            path = cache_dir / filename
            out.append((key, path, path.read_bytes()))
        else:
            out.append((key, None, bytes(value)))
    return out


def write_value(cache_dir: Path, key: str, path: Path | None, raw: bytes) -> None:
    if path is not None:
        path.write_bytes(raw)
        return
    db = sqlite3.connect(cache_dir / "cache.db")
    try:
        db.execute("UPDATE Cache SET value = ? WHERE key = ?", (raw, key))
        db.commit()
    finally:
        db.close()


# -- integrity of the whole entry ---------------------------------------------------------------


@pytest.mark.parametrize("field", ["content-type", "max-age", "body"])
def test_a_changed_byte_anywhere_in_an_entry_is_a_miss(tmp_path, corpus, field):
    srv = server(tmp_path / "s", corpus).start()
    try:
        good = srv.get("/test.png", W, Q, accept="image/webp")
        assert good.status_code == 200 and good.headers["x-nextjs-cache"] == "MISS"
    finally:
        srv.stop()
    ((key, path, raw),) = stored_values(srv.cache_dir)
    if field == "content-type":
        assert raw.count(b'"image/webp"') == 1
        changed = raw.replace(b'"image/webp"', b'"imagE/webp"')
    elif field == "max-age":
        assert raw.count(b'"max_age":14400') == 1
        changed = raw.replace(b'"max_age":14400', b'"max_age":94400')
    else:
        changed = raw[:-1] + bytes([raw[-1] ^ 0x01])
    assert len(changed) == len(raw) and changed != raw
    write_value(srv.cache_dir, key, path, changed)
    srv = server(tmp_path / "s", corpus).start()
    try:
        r = srv.get("/test.png", W, Q, accept="image/webp")
        assert r.status_code == 200
        assert r.headers["x-nextjs-cache"] == "MISS"  # the changed entry was not served
        assert r.headers["content-type"] == "image/webp"
        assert r.headers["cache-control"] == good.headers["cache-control"]
        assert r.content == good.content
        assert metric(srv.url, "imgopt_cache_errors_total", tier="disk", op="corrupt") == 1
        again = srv.get("/test.png", W, Q, accept="image/webp")
        assert again.headers["x-nextjs-cache"] == "HIT" and again.content == good.content
    finally:
        srv.stop()


def test_swapped_value_files_are_misses_not_the_other_image(tmp_path, corpus):
    srv = server(tmp_path / "s", corpus).start()
    try:
        first = {src: srv.get(src, 1920, Q, accept="image/webp") for src in ("/mountains.jpg", "/large.jpg")}
        assert all(r.status_code == 200 for r in first.values())
        assert first["/mountains.jpg"].content != first["/large.jpg"].content
    finally:
        srv.stop()
    files = [(k, p, raw) for k, p, raw in stored_values(srv.cache_dir) if p is not None]
    assert len(files) == 2, "both outputs are large enough to live in value files"
    (_, a, raw_a), (_, b, raw_b) = files
    a.write_bytes(raw_b)
    b.write_bytes(raw_a)
    srv = server(tmp_path / "s", corpus).start()
    try:
        for src, before in first.items():
            r = srv.get(src, 1920, Q, accept="image/webp")
            assert r.status_code == 200
            assert r.headers["x-nextjs-cache"] == "MISS", src
            assert r.content == before.content
        assert metric(srv.url, "imgopt_cache_errors_total", tier="disk", op="corrupt") == 2
    finally:
        srv.stop()


# -- a damaged database ------------------------------------------------------------------------


def _truncate(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])


def _overwrite_header(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[:100] = b"\xa5" * 100
    db.write_bytes(bytes(data))


def _garbage(db: Path) -> None:
    db.write_bytes(os.urandom(64 << 10))


@pytest.mark.parametrize("damage", [_truncate, _overwrite_header, _garbage], ids=["truncated", "header", "garbage"])
def test_a_damaged_database_is_moved_aside_and_replaced(tmp_path, corpus, damage):
    srv = server(tmp_path / "s", corpus).start()
    try:
        for src in ("/test.png", "/test.jpg", "/alpha.png", "/mountains.jpg", "/large.jpg"):
            for w in (384, 640, 1080):
                assert srv.get(src, w, Q).status_code == 200
    finally:
        srv.stop()
    db = srv.cache_dir / "cache.db"
    con = sqlite3.connect(db)  # everything in the main file, no -wal beside it
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    for side in ("cache.db-wal", "cache.db-shm"):
        (srv.cache_dir / side).unlink(missing_ok=True)
    assert db.stat().st_size > 8 * 4096
    before = db.read_bytes()
    damage(db)
    srv = server(tmp_path / "s", corpus).start()  # starts: no exit 1
    try:
        (aside,) = srv.cache_dir.glob("cache.db.damaged-*[0-9]")
        assert aside.read_bytes() != before and len(aside.read_bytes()) > 0  # the damaged file, kept
        assert "damaged" in srv.log_path.read_text()
        assert metric(srv.url, "imgopt_cache_db_damaged_total", tier="disk") == 1
        health = httpx.get(srv.url + "/healthz").json()
        assert health["status"] == "ok"
        r = srv.get("/test.png", 384, Q)
        assert r.status_code == 200 and r.headers["x-nextjs-cache"] == "MISS"
    finally:
        srv.stop()
    srv = server(tmp_path / "s", corpus).start()  # the new database keeps entries across restarts
    try:
        assert srv.get("/test.png", 384, Q).headers["x-nextjs-cache"] == "HIT"
        assert metric(srv.url, "imgopt_cache_db_damaged_total", tier="disk") == 0
    finally:
        srv.stop()


# -- read-only and full cache dirs --------------------------------------------------------------


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` (root can mount one on any Linux; chmod does not stop root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def assert_degraded(srv: ImgoptServer, reason: str) -> None:
    r = httpx.get(srv.url + "/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "degraded" and r.json()["reason"] == reason, r.json()
    assert metric(srv.url, "imgopt_cache_degraded", tier="disk") == 1


@pytest.mark.parametrize("populated", [False, True], ids=["empty", "populated"])
def test_read_only_cache_dir_is_degraded_and_served_from_memory(tmp_path, corpus, populated):
    with tmpfs(tmp_path / "mnt", "16m") as mnt:
        cache = mnt / "cache"
        cache.mkdir()
        if populated:
            srv = server(tmp_path / "a", corpus, "--cache-dir", str(cache)).start()
            assert srv.get("/test.jpg", W, Q).status_code == 200
            srv.stop()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        srv = server(tmp_path / "b", corpus, "--cache-dir", str(cache)).start()
        try:
            assert_degraded(srv, "cache dir read-only")
            a = srv.get("/test.png", W, Q)
            b = srv.get("/test.png", W, Q)
            assert a.status_code == b.status_code == 200
            assert (a.headers["x-nextjs-cache"], b.headers["x-nextjs-cache"]) == ("MISS", "HIT")
            assert a.content == b.content
            assert_degraded(srv, "cache dir read-only")
        finally:
            srv.stop()
        assert srv.proc is not None and srv.proc.returncode == 0


def test_full_cache_disk_is_degraded_and_just_served_entries_still_hit(tmp_path, corpus):
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        srv = server(tmp_path / "a", corpus, "--cache-dir", str(mnt / "cache")).start()
        try:
            assert srv.get("/test.jpg", 384, Q).headers["x-nextjs-cache"] == "MISS"  # the disk works
            assert httpx.get(srv.url + "/healthz").json()["status"] == "ok"
            with open(mnt / "filler", "wb") as f:
                with pytest.raises(OSError):
                    while True:
                        f.write(b"\0" * (64 << 10))
                        f.flush()
            served = {}
            for src in ("/mountains.jpg", "/large.jpg", "/alpha.png"):
                r = srv.get(src, 1080, Q)
                assert r.status_code == 200 and r.headers["x-nextjs-cache"] == "MISS"
                served[src] = r.content
            assert_degraded(srv, "cache disk full")
            for src, body in served.items():
                r = srv.get(src, 1080, Q)
                assert r.status_code == 200 and r.headers["x-nextjs-cache"] == "HIT", src
                assert r.content == body
            assert httpx.get(srv.url + "/healthz", timeout=5).status_code == 200
        finally:
            srv.stop()
        assert srv.proc is not None and srv.proc.returncode == 0


def test_damage_met_while_running_is_healed_in_place(tmp_path):
    """A connection opened after the damage (each thread has its own) meets it: the store moves
    the database aside, starts a new one and goes on, without raising."""
    import threading
    import time

    from imgopt.cache import Entry
    from imgopt.stores.disk import DiskStore

    store = DiskStore(tmp_path / "c", 1 << 20)
    entry = Entry(b"x" * 100, "image/webp", '"e"', "u", 60, time.time() + 60)
    store.set("a", entry)
    assert store.get("a") == entry
    db = tmp_path / "c" / "cache.db"
    data = bytearray(db.read_bytes())
    data[:100] = b"\xa5" * 100
    db.write_bytes(bytes(data))
    got: list[object] = []
    t = threading.Thread(target=lambda: got.extend([store.get("a"), store.set("b", entry), store.get("b")]))
    t.start()
    t.join()
    assert got == [None, None, entry]  # a miss, then the new database works
    assert store.degraded is None
    assert len(list((tmp_path / "c").glob("cache.db.damaged-*[0-9]"))) == 1
    store.close()
