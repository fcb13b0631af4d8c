"""Tests for the test-suite's hostile HTTP origin server (tests/origin.py)."""
from __future__ import annotations

import gzip
import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib

import httpx
import pytest

try:
    from tests.origin import HAS_BROTLI, PNG_SIGNATURE, Origin, RequestRecord
except ImportError:  # pragma: no cover - run without PYTHONPATH=.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    from tests.origin import HAS_BROTLI, PNG_SIGNATURE, Origin, RequestRecord

ORIGIN_PY = pathlib.Path(__file__).resolve().parent / "origin.py"
IMG = PNG_SIGNATURE + random.Random(42).randbytes(100_000 - len(PNG_SIGNATURE))


@pytest.fixture()
def root(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "img.png").write_bytes(IMG)
    (tmp_path / "small.jpg").write_bytes(b"\xff\xd8\xff" + b"x" * 997)
    (tmp_path / "blob.unknownext").write_bytes(b"data")
    (tmp_path / "with space.png").write_bytes(b"space")
    (tmp_path / "ünïcødé 画像.webp").write_bytes(b"unicode")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nested.gif").write_bytes(b"GIF89a...")
    return tmp_path


@pytest.fixture()
def origin(root: pathlib.Path):
    with Origin(root=root) as o:
        yield o


@pytest.fixture()
def client():
    with httpx.Client(timeout=10) as c:
        yield c


def raw_request(origin: Origin, target: str, method: str = "GET", headers: dict | None = None,
                timeout: float = 10) -> bytes:
    """Send one request on a raw socket and read until the server closes. Returns all bytes."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{origin.port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", origin.port), timeout=timeout) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def wait_until(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


# --------------------------------------------------------------------------- lifecycle

def test_start_stop(root):
    o = Origin(root=root).start()
    try:
        assert o.port > 0
        assert o.base_url == f"http://127.0.0.1:{o.port}"
        assert httpx.get(o.base_url + "/img.png").status_code == 200
    finally:
        o.stop()
    o.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(o.base_url + "/img.png", timeout=2)


def test_context_manager_and_no_root():
    with Origin() as o:
        assert httpx.get(o.base_url + "/img.png").status_code == 404
        assert httpx.get(o.base_url + "/no-header").content == b"foo"


def test_binds_loopback_only(origin):
    assert origin.host == "127.0.0.1"
    assert origin._server.sockets[0].getsockname()[0] == "127.0.0.1"


# --------------------------------------------------------------------------- files

def test_serves_file(origin, client):
    r = client.get(origin.base_url + "/img.png")
    assert r.status_code == 200
    assert r.content == IMG
    assert r.headers["content-length"] == str(len(IMG))
    assert r.headers["content-type"] == "image/png"


def test_head(origin, client):
    r = client.head(origin.base_url + "/img.png")
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(IMG))
    assert r.content == b""
    assert origin.requests[-1].method == "HEAD"


def test_content_types(origin, client):
    assert client.get(origin.base_url + "/small.jpg").headers["content-type"] == "image/jpeg"
    assert client.get(origin.base_url + "/sub/nested.gif").headers["content-type"] == "image/gif"
    assert client.get(origin.base_url + "/blob.unknownext").headers["content-type"] == \
        "application/octet-stream"


def test_unicode_and_space_filenames(origin, client):
    r = client.get(origin.url("/with space.png"))
    assert r.status_code == 200 and r.content == b"space"
    r = client.get(origin.url("/ünïcødé 画像.webp"))
    assert r.status_code == 200 and r.content == b"unicode"
    assert r.headers["content-type"] == "image/webp"
    # hits are keyed by the decoded path, but the encoded form works for look-ups too
    assert origin.hits["/ünïcødé 画像.webp"] == 1
    assert origin.hits["/%C3%BCn%C3%AFc%C3%B8d%C3%A9%20%E7%94%BB%E5%83%8F.webp"] == 1


def test_404(origin, client):
    r = client.get(origin.base_url + "/missing.png")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert b"404" in r.content and len(r.content) < 512
    assert client.get(origin.base_url + "/sub").status_code == 404  # directory


@pytest.mark.parametrize("target", [
    "/../etc/passwd", "/sub/../../etc/passwd", "/%2e%2e/etc/passwd", "/sub/%2E%2E/%2E%2E/etc/passwd",
    "/..%2fetc%2fpasswd", "/img.png%00.png",
])
def test_no_traversal(origin, root, target):
    (root.parent / "secret.txt").write_text("secret")
    status, _, body = split_response(raw_request(origin, target))
    assert status == 404
    assert b"root:" not in body and b"secret" not in body
    status, _, body = split_response(raw_request(origin, target.replace("etc/passwd", "secret.txt")))
    assert status == 404 and b"secret" not in body


def test_symlink_out_of_root_refused(origin, root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "x.png"
    outside.write_bytes(b"outside")
    (root / "link.png").symlink_to(outside)
    assert httpx.get(origin.base_url + "/link.png").status_code == 404


def test_add_file_in_memory(origin, client):
    origin.add_file("/mem/thing.avif", b"avifdata")
    r = client.get(origin.url("/mem/thing.avif"))
    assert r.content == b"avifdata" and r.headers["content-type"] == "image/avif"


def test_keep_alive_reuses_connection(origin, client):
    for _ in range(3):
        assert client.get(origin.base_url + "/small.jpg").status_code == 200
    # one connection handled all three requests
    assert origin.hits["/small.jpg"] == 3
    assert origin.active_connections == 1


# --------------------------------------------------------------------------- query controls

def test_status_and_location(origin, client):
    r = client.get(origin.base_url + "/img.png", params={"status": "301", "location": "/small.jpg"})
    assert r.status_code == 301
    assert r.headers["location"] == "/small.jpg"
    r = client.get(origin.base_url + "/whatever", params={"status": "500"})
    assert r.status_code == 500
    r = client.get(origin.base_url + "/img.png", params={"status": "204"})
    assert r.status_code == 204 and r.content == b""


def test_cc_ct_etag(origin, client):
    r = client.get(origin.base_url + "/img.png",
                   params={"cc": "public, max-age=60", "ct": "image/webp", "etag": '"abc"'})
    assert r.status_code == 200
    assert r.headers["cache-control"] == "public, max-age=60"
    assert r.headers["content-type"] == "image/webp"
    assert r.headers["etag"] == '"abc"'
    assert r.content == IMG
    r = client.get(origin.base_url + "/img.png", params={"ct": ""})
    assert "content-type" not in r.headers


def test_if_none_match(origin, client):
    r = client.get(origin.base_url + "/img.png", params={"etag": '"v1"'},
                   headers={"If-None-Match": '"v1"'})
    assert r.status_code == 304 and r.content == b""
    r = client.get(origin.base_url + "/img.png", params={"etag": '"v2"'},
                   headers={"If-None-Match": '"v1"'})
    assert r.status_code == 200 and r.content == IMG


def test_combined_on_special_path(origin, client):
    r = client.get(origin.base_url + "/chunked/img.png", params={"cc": "no-store", "delay": "50"})
    assert r.headers["cache-control"] == "no-store"
    assert r.content == IMG


def test_delay(origin, client):
    t0 = time.monotonic()
    r = client.get(origin.base_url + "/img.png", params={"delay": "300"})
    assert r.status_code == 200
    assert time.monotonic() - t0 >= 0.3


def test_slow_request_does_not_block_others(origin):
    done = threading.Event()

    def slow():
        httpx.get(origin.base_url + "/img.png", params={"delay": "1500"}, timeout=10)
        done.set()

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    assert wait_until(lambda: origin.hits["/img.png"] == 1)
    t0 = time.monotonic()
    assert httpx.get(origin.base_url + "/small.jpg", timeout=10).status_code == 200
    assert time.monotonic() - t0 < 1.0
    assert not done.is_set()
    t.join(5)
    assert done.is_set()


def test_set_headers(origin, client):
    origin.set_headers("/img.png", {"Cache-Control": "max-age=123", "X-Custom": "1"})
    r = client.get(origin.base_url + "/img.png")
    assert r.headers["cache-control"] == "max-age=123"
    assert r.headers["x-custom"] == "1"
    # query override beats set_headers
    r = client.get(origin.base_url + "/img.png", params={"cc": "no-cache"})
    assert r.headers["cache-control"] == "no-cache"
    # also applies when the file is served through a wrapper path
    assert client.get(origin.base_url + "/gzip/img.png").headers["x-custom"] == "1"
    assert "x-custom" not in client.get(origin.base_url + "/small.jpg").headers


# --------------------------------------------------------------------------- redirects

def test_redirect_loop(origin, client):
    r = client.get(origin.base_url + "/redirect-loop")
    assert r.status_code == 308
    assert r.headers["location"] == "/redirect-loop"
    with pytest.raises(httpx.TooManyRedirects):
        client.get(origin.base_url + "/redirect-loop", follow_redirects=True)


def test_redirect_to(origin, client):
    with Origin() as other:
        other.add_file("/x.png", b"other")
        target = other.base_url.replace("127.0.0.1", "localhost") + "/x.png"
        r = client.get(origin.base_url + "/redirect", params={"to": target, "code": "301"})
        assert r.status_code == 301 and r.headers["location"] == target
        r = client.get(origin.base_url + "/redirect", params={"to": other.base_url + "/x.png"},
                       follow_redirects=True)
        assert r.content == b"other"
        assert r.history[0].status_code == 302
    assert client.get(origin.base_url + "/redirect").status_code == 400


def test_chain(origin, client):
    r = client.get(origin.base_url + "/chain/3/img.png", follow_redirects=True)
    assert r.status_code == 200 and r.content == IMG
    assert [h.status_code for h in r.history] == [302, 302, 302]
    assert origin.hits["/chain/3/img.png"] == 1
    assert origin.hits["/chain/2/img.png"] == 1
    assert origin.hits["/chain/1/img.png"] == 1
    assert origin.hits["/img.png"] == 1
    r = client.get(origin.base_url + "/chain/2/img.png")
    assert r.headers["location"] == "/chain/1/img.png"
    assert client.get(origin.base_url + "/chain/0/img.png").content == IMG
    r = client.get(origin.url("/chain/1/with space.png"), follow_redirects=True)
    assert r.content == b"space"


# --------------------------------------------------------------------------- hostile bodies

def test_slow_body(origin):
    # 100 kB in 20 kB chunks at 150 ms each: headers immediately, body takes >= 750 ms
    t0 = time.monotonic()
    with httpx.stream("GET", origin.base_url + "/slow-body/img.png",
                      params={"chunk_delay": "150", "chunk_size": "20000"}, timeout=10) as r:
        t_headers = time.monotonic() - t0
        assert r.headers["content-length"] == str(len(IMG))
        gaps, body, last = [], b"", time.monotonic()
        for chunk in r.iter_raw():
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            body += chunk
    total = time.monotonic() - t0
    assert t_headers < 0.5
    assert body == IMG
    assert total >= 0.75
    assert max(gaps) < 0.5  # each chunk individually is fast


def test_lying_length_smaller_claim_raw_socket(origin):
    raw = raw_request(origin, "/lying-length/img.png?claim=1000")
    status, headers, body = split_response(raw)
    assert status == 200
    assert headers["content-length"] == "1000"
    assert len(body) == len(IMG) > 1000
    assert body == IMG


def test_lying_length_default_claim(origin):
    _, headers, body = split_response(raw_request(origin, "/lying-length/img.png"))
    assert int(headers["content-length"]) == len(IMG) // 2
    assert len(body) == len(IMG)


def test_lying_length_bigger_claim_closes_early(origin, client):
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(origin.base_url + "/lying-length/img.png", params={"claim": str(len(IMG) * 2)})


def test_short_body(origin, client):
    _, headers, body = split_response(raw_request(origin, "/short-body/img.png"))
    assert headers["content-length"] == str(len(IMG))
    assert body == IMG[: len(IMG) // 2]
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(origin.base_url + "/short-body/img.png")


def test_chunked(origin, client):
    r = client.get(origin.base_url + "/chunked/img.png")
    assert r.status_code == 200
    assert "content-length" not in r.headers
    assert r.headers["transfer-encoding"] == "chunked"
    assert r.content == IMG
    raw = raw_request(origin, "/chunked/img.png?chunk_size=1000")
    _, headers, body = split_response(raw)
    assert "content-length" not in headers
    assert body.startswith(b"3e8\r\n") and body.endswith(b"0\r\n\r\n")


def test_gzip(origin, client):
    r = client.get(origin.base_url + "/gzip/img.png")
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["content-type"] == "image/png"
    assert r.content == IMG  # httpx decodes
    _, headers, body = split_response(raw_request(origin, "/gzip/img.png"))
    assert int(headers["content-length"]) == len(body)
    assert gzip.decompress(body) == IMG


def test_br(origin, client):  # brotli is in the test extras, so this always runs
    assert HAS_BROTLI
    r = client.get(origin.base_url + "/br/img.png")
    assert r.headers["content-encoding"] == "br"
    assert r.content == IMG


def test_gzip_bomb(origin):
    raw = raw_request(origin, "/gzip-bomb")
    status, headers, body = split_response(raw)
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "image/png"
    assert int(headers["content-length"]) == len(body)
    assert len(body) < 300_000  # inflates to 200 MB
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    prefix = d.decompress(body, 5_000_000)
    assert len(prefix) == 5_000_000 and prefix.count(0) == len(prefix)


def test_gzip_bomb_exact_size(origin):
    _, _, body = split_response(raw_request(origin, "/gzip-bomb?size=3000007"))
    out = gzip.decompress(body)  # also validates CRC and ISIZE
    assert len(out) == 3_000_007 and out.count(0) == len(out)


def test_infinite(origin):
    with httpx.stream("GET", origin.base_url + "/infinite", timeout=10) as r:
        assert r.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in r.headers
        got = b""
        for chunk in r.iter_raw():
            got += chunk
            if len(got) > 2_000_000:
                break
    assert got.startswith(PNG_SIGNATURE)
    assert len(got) > 2_000_000
    # the handler notices the closed client and ends
    assert wait_until(lambda: origin.active_connections == 0)


def test_reset_httpx(origin, client):
    with pytest.raises(httpx.ReadError):
        client.get(origin.base_url + "/reset/img.png")


def test_reset_raw_socket(origin):
    with socket.create_connection(("127.0.0.1", origin.port), timeout=5) as s:
        s.sendall(b"GET /reset/img.png HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        with pytest.raises(ConnectionResetError):
            while True:
                data = s.recv(65536)
                if not data:
                    break  # a clean FIN would fail the test via pytest.raises
                got += data
    assert len(got) < len(IMG)


def test_hang(origin):
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(origin.base_url + "/hang", timeout=httpx.Timeout(5, read=0.5))
    assert origin.hits["/hang"] == 1
    assert wait_until(lambda: origin.active_connections == 0)


def test_hang_and_infinite_end_on_their_own(origin):
    origin.max_hang = 0.3  # 60 s by default
    t0 = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(origin.base_url + "/hang", timeout=10)
    assert 0.3 <= time.monotonic() - t0 < 5
    # a client that never reads /infinite: the server gives up after max_hang
    with socket.create_connection(("127.0.0.1", origin.port), timeout=5) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /infinite HTTP/1.1\r\nHost: x\r\n\r\n")
        assert wait_until(lambda: origin.active_connections == 1)
        assert wait_until(lambda: origin.active_connections == 0, timeout=5)


def test_stateful(origin, client):
    origin.set_stateful("/stateful/a.png", [b"one", b"two", b"three"])
    got = [client.get(origin.base_url + "/stateful/a.png").content for _ in range(4)]
    assert got == [b"one", b"two", b"three", b"one"]
    origin.set_stateful("b", [PNG_SIGNATURE + b"x", b"\xff\xd8\xffy"])
    r1 = client.get(origin.base_url + "/stateful/b")
    r2 = client.get(origin.base_url + "/stateful/b")
    assert r1.headers["content-type"] == "image/png" and r2.headers["content-type"] == "image/jpeg"
    assert client.get(origin.base_url + "/stateful/unknown").status_code == 404
    # any exact path can be stateful, overriding files
    origin.set_stateful("/img.png", [b"A", b"B"])
    assert [client.get(origin.base_url + "/img.png").content for _ in range(3)] == [b"A", b"B", b"A"]


def test_echo_headers(origin, client):
    r = client.get(origin.base_url + "/echo-headers", headers={"X-Test": "yes", "Accept": "image/avif"})
    assert r.headers["content-type"] == "application/json"
    data = json.loads(r.content)
    assert data["x-test"] == "yes"
    assert data["accept"] == "image/avif"


def test_no_header(origin, client):
    r = client.get(origin.base_url + "/no-header")
    assert r.status_code == 200
    assert r.content == b"foo"
    assert "content-type" not in r.headers


# --------------------------------------------------------------------------- recording

def test_hits_and_requests(origin, client):
    client.get(origin.base_url + "/img.png?w=64&q=75", headers={"Cookie": "session=s3cret",
                                                                  "Authorization": "Bearer t"})
    client.get(origin.base_url + "/missing")
    assert origin.hits["/img.png"] == 1
    assert origin.hits["/missing"] == 1
    rec = origin.requests[0]
    assert isinstance(rec, RequestRecord)
    assert rec.method == "GET" and rec.path == "/img.png" and rec.query == "w=64&q=75"
    assert rec.params == {"w": "64", "q": "75"}
    assert rec.headers["cookie"] == "session=s3cret"
    assert rec.headers["authorization"] == "Bearer t"
    assert all(k == k.lower() for k in rec.headers)
    assert "cookie" not in origin.requests[1].headers
    origin.reset_counters()
    assert origin.hits["/img.png"] == 0 and origin.requests == []


def test_request_body_is_consumed(origin, client):
    r = client.post(origin.base_url + "/echo-headers", content=b"x" * 5000)
    assert r.status_code == 200
    assert origin.requests[-1].body == b"x" * 5000
    assert client.get(origin.base_url + "/small.jpg").status_code == 200  # same connection still fine


def test_malformed_request(origin):
    with socket.create_connection(("127.0.0.1", origin.port), timeout=5) as s:
        s.sendall(b"garbage\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 400")


# --------------------------------------------------------------------------- shutdown

def test_stop_with_hanging_clients(root):
    o = Origin(root=root).start()
    socks = []
    try:
        for target in ("/hang", "/infinite", "/slow-body/img.png?chunk_delay=5000", "/img.png?delay=30000"):
            s = socket.create_connection(("127.0.0.1", o.port), timeout=5)
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            socks.append(s)
        idle = socket.create_connection(("127.0.0.1", o.port), timeout=5)  # never sends a request
        socks.append(idle)
        assert wait_until(lambda: o.active_connections == 5)
        t0 = time.monotonic()
        o.stop()
        assert time.monotonic() - t0 < 2.0
        # the connections were closed by the server
        s = socks[0]
        s.settimeout(2)
        try:
            assert s.recv(1024) == b""
        except ConnectionResetError:
            pass
    finally:
        for s in socks:
            s.close()


def test_script_mode(root):
    with subprocess.Popen([sys.executable, str(ORIGIN_PY), "--root", str(root)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            line = proc.stdout.readline().strip()
            assert line.startswith("http://127.0.0.1:")
            r = httpx.get(line + "/img.png", timeout=5)
            assert r.status_code == 200 and r.content == IMG
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
