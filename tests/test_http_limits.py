"""HTTP limits of the server imgopt runs, against real imgopt processes and raw sockets.

* Request headers are bounded (--max-header-bytes): a header streamed without end is cut at
  the limit (431, or the connection closed) and the server keeps answering /healthz.
* Headers must arrive within --header-timeout: half-sent requests are closed (408) and never
  keep /healthz from answering; a trickle of bytes does not extend the deadline.
* At --max-connections the longest idle connection makes room for a new one.
* An Accept or Accept-Encoding longer than any browser sends is cut before negotiation.
* A compressed (gzip) body of a cached entry is made once, not on every hit.
"""

from __future__ import annotations

import socket
import threading
from typing import Iterator

import httpx
import pytest

from cluster import metric
from conftest import ImgoptServer

FLOOD = 256 << 20


def connect(srv: ImgoptServer, sndbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if sndbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    s.settimeout(30)  # a bound for a broken server, not a wait the test relies on
    s.connect(("127.0.0.1", srv.port))
    return s


def read_to_eof(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def healthz(srv: ImgoptServer) -> None:
    r = httpx.get(srv.url + "/healthz", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"


@pytest.fixture
def srv(make_server, corpus) -> Iterator[ImgoptServer]:
    yield make_server(None, "--local-root", str(corpus))


# -- header size ---------------------------------------------------------------------------------


def test_a_header_streamed_without_end_is_cut_at_the_limit(srv):
    s = connect(srv, sndbuf=64 << 10)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Flood: ")
    chunk = b"a" * (64 << 10)
    sent = 0
    flood_over = threading.Event()

    def flood() -> None:
        nonlocal sent
        try:
            while sent < FLOOD:
                sent += s.send(chunk)
        except OSError:
            pass  # the server closed the connection
        flood_over.set()

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    healthz(srv)  # answers during the flood
    assert flood_over.wait(60)
    answer = read_to_eof(s)
    s.close()
    # limit + one read + what is dropped after the answer + the two kernel socket buffers
    assert sent < 32 << 20, sent
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    healthz(srv)
    assert metric(srv.url, "imgopt_http_rejected_total", reason="header_bytes") == 1


@pytest.mark.parametrize("size,status", [(15 << 10, 200), (17 << 10, 431)])
def test_headers_up_to_16k_pass_larger_get_431(srv, size, status):
    s = connect(srv)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"b" * size + b"\r\n\r\n")
    answer = read_to_eof(s)
    s.close()
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:100]
    if status == 431:
        assert b"connection: close" in answer.lower()


def test_the_header_limit_is_a_flag(make_server, corpus):
    srv = make_server(None, "--local-root", str(corpus), "--max-header-bytes", "64K")
    s = connect(srv)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"b" * (40 << 10) + b"\r\n\r\n")
    assert read_to_eof(s).startswith(b"HTTP/1.1 200 ")
    s.close()


# -- header time -------------------------------------------------------------------------------


def test_half_sent_requests_are_closed_and_do_not_stop_healthz(make_server, corpus):
    srv = make_server(None, "--local-root", str(corpus), "--header-timeout", "1")
    half = [connect(srv) for _ in range(300)]
    for i, s in enumerate(half):
        if i % 10:  # one in ten sends nothing at all
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Part: ")
    healthz(srv)  # while they are all open
    answers = [read_to_eof(s) for s in half]  # the server closes each of them
    for s in half:
        s.close()
    for i, answer in enumerate(answers):
        if i % 10:
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        else:
            assert answer == b""
    healthz(srv)
    assert metric(srv.url, "imgopt_http_rejected_total", reason="header_timeout") == 300


def test_a_trickle_of_header_bytes_does_not_extend_the_deadline(make_server, corpus):
    srv = make_server(None, "--local-root", str(corpus), "--header-timeout", "1")
    s = connect(srv)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    s.settimeout(0.1)  # the pace of the trickle: one byte, then up to 0.1 s for an answer
    answer = None
    for _ in range(300):  # up to 30 s of trickle; the deadline is 1 s
        try:
            s.sendall(b"s")
            answer = s.recv(65536)
            break  # the server answered (408) or closed (b"")
        except socket.timeout:
            continue
        except OSError:
            answer = b""
            break
    s.close()
    assert answer is not None, "the connection stayed open while bytes trickled in"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")


def test_an_idle_keepalive_connection_is_closed(make_server, corpus):
    srv = make_server(None, "--local-root", str(corpus), "--keepalive-timeout", "1")
    s = connect(srv)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = read_to_eof(s)  # the response, then the close once the connection idles
    s.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'"status":"ok","cache":"disk"}')


# -- connection cap ------------------------------------------------------------------------------


def test_at_the_connection_cap_idle_connections_make_room(make_server, corpus):
    srv = make_server(None, "--local-root", str(corpus), "--max-connections", "20")
    idle = [connect(srv) for _ in range(30)]
    for s in idle[:10]:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # half-sent
    healthz(srv)  # a new client still gets in
    # the oldest ones were closed to make room: the first 10 (half-sent, 408) and 1 more
    for s in idle[:11]:
        answer = read_to_eof(s)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")
    for s in idle:
        s.close()
    assert metric(srv.url, "imgopt_http_rejected_total", reason="evicted") >= 11


def test_at_the_connection_cap_with_every_connection_busy_a_new_one_gets_503(make_server, origin):
    from concurrent.futures import ThreadPoolExecutor

    srv = make_server({"dangerouslyAllowLocalIP": True, "domains": ["127.0.0.1"]}, "--fetch-timeout", "5",
                      "--max-connections", "2")
    before = origin.hits["/hang"]
    with ThreadPoolExecutor(2) as ex:
        busy = [ex.submit(srv.get, f"{origin.base_url}/hang?cap{i}", 640, 75) for i in range(2)]
        for _ in range(500):  # until both fetches are at the origin: two requests in progress
            if origin.hits["/hang"] >= before + 2:
                break
            threading.Event().wait(0.02)
        s = connect(srv)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_to_eof(s)
        s.close()
        assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer.lower(), answer[:200]
        assert [f.result(30).status_code for f in busy] == [504, 504]  # the busy ones were not touched
    healthz(srv)
    assert metric(srv.url, "imgopt_http_rejected_total", reason="connections") == 1


# -- Accept and Accept-Encoding ---------------------------------------------------------------


def test_a_huge_accept_is_cut_and_answered_correctly(make_server, corpus):
    srv = make_server(None, "--local-root", str(corpus), "--max-header-bytes", "8M")
    huge_accept = ",".join(["image/webp"] + ["text/html;q=0.9"] * (1_900_000 // 16))
    huge_encoding = ", ".join(["gzip"] + ["x-unknown;q=0.5"] * (1_900_000 // 17))
    results: list[httpx.Response] = []

    def hostile() -> None:
        with httpx.Client(timeout=60) as c:
            for _ in range(3):
                results.append(c.get(srv.url + "/_next/image", params={"url": "/test.bmp", "w": "640", "q": "75"},
                                     headers={"Accept": huge_accept, "Accept-Encoding": huge_encoding}))

    t = threading.Thread(target=hostile)
    t.start()
    normal = [srv.get("/test.png", 640, 75) for _ in range(5)]
    t.join(120)
    assert all(r.status_code == 200 and r.headers["content-type"] == "image/webp" for r in normal)
    assert len(results) == 3
    for r in results:
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/bmp"  # BMP is passed through, as in Next
        assert r.headers["content-encoding"] == "gzip"  # gzip was first, before the cut
    # cut after the last complete element: a type named past the cut is not seen
    far = "text/html," * 200 + "image/webp"
    r = srv.get("/test.png", 640, 75, accept=far)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


# -- compressed bodies ---------------------------------------------------------------------------


def test_a_gzipped_hit_is_compressed_once(srv):
    def made() -> float:
        return metric(srv.url, "imgopt_encoded_bodies_total", coding="gzip", result="made")

    before = made()
    bodies = []
    for state in ("MISS", "HIT", "HIT"):
        r = httpx.get(srv.url + "/_next/image", params={"url": "/test.bmp", "w": "640", "q": "75"},
                      headers={"Accept": "image/webp", "Accept-Encoding": "gzip"})
        assert r.status_code == 200 and r.headers["x-nextjs-cache"] == state
        assert r.headers["content-encoding"] == "gzip"
        bodies.append(r.content)  # httpx decodes the gzip
    assert made() - before == 1
    assert metric(srv.url, "imgopt_encoded_bodies_total", coding="gzip", result="reused") >= 2
    assert bodies[0] == bodies[1] == bodies[2] and bodies[0][:2] == b"BM"
    deflate = httpx.get(srv.url + "/_next/image", params={"url": "/test.bmp", "w": "640", "q": "75"},
                        headers={"Accept": "image/webp", "Accept-Encoding": "deflate"})
    assert deflate.headers["content-encoding"] == "deflate" and deflate.content == bodies[0]


# -- drain ---------------------------------------------------------------------------------------


def test_drain_timeout_bounds_shutdown_with_a_request_in_flight(make_server, corpus, origin):
    import signal
    from concurrent.futures import ThreadPoolExecutor

    srv = make_server({"dangerouslyAllowLocalIP": True, "domains": ["127.0.0.1"]}, "--fetch-timeout", "60",
                      "--drain-timeout", "1")
    before = origin.hits["/hang"]
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(lambda: srv.get(f"{origin.base_url}/hang?drain", 640, 75))
        for _ in range(500):  # until the fetch is at the origin
            if origin.hits["/hang"] > before:
                break
            threading.Event().wait(0.02)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0  # well before the 60 s fetch deadline
        try:
            r = fut.result(30)
        except httpx.HTTPError:
            return  # the connection was closed at the drain timeout
        assert r.status_code >= 500, r.status_code  # or answered with an error, never an image
