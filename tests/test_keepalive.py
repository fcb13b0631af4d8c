"""A request that fails on a reused keep-alive connection before any response byte is sent
once more on a new connection (GET is idempotent), never more than once.

The origins are raw sockets on 127.0.0.1 that misbehave on purpose: one sends a 204 with a
body (the body is left on the kept-alive connection, where the next response should start),
one closes a kept-alive connection without answering.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable

import pytest

from conftest import PROFILE_C
from imagecorpus import build_corpus

W, Q = 399, 75
Answer = Callable[[str, int], "bytes | None"]  # (path, connection number) -> bytes to send, None: close


class RawOrigin:
    """HTTP/1.1 by hand: reads request heads on each connection and sends what `answer` says."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.hits: list[tuple[str, int]] = []  # (path, connection number), in order
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
                number = len(self._conns)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                path = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
                with self._lock:
                    self.hits.append((path, number))
                out = self.answer(path, number)
                if out is None:
                    return  # close without answering
                conn.sendall(out)

    def paths(self, path: str) -> list[int]:
        """The connections `path` was requested on, in order."""
        with self._lock:
            return [n for p, n in self.hits if p == path]

    def close(self) -> None:
        self.sock.close()
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("ka-corpus")
    build_corpus(root)
    return (root / "test.png").read_bytes()


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def test_leftover_bytes_on_a_kept_alive_connection_do_not_fail_the_next_request(make_server, png):
    def answer(path: str, number: int) -> bytes:
        if path == "/no-content.png":  # a 204 with a body: the body stays on the connection
            return b"HTTP/1.1 204 No Content\r\n\r\n" + b"stray body bytes that are no response\r\n\r\n"
        return ok(png)

    origin = RawOrigin(answer)
    try:
        srv = make_server(PROFILE_C)
        first = srv.get(f"{origin.base_url}/no-content.png", W, Q)
        assert first.status_code != 500
        r = srv.get(f"{origin.base_url}/unrelated.png", W, Q, accept="image/webp")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/webp"
        assert 1 <= len(origin.paths("/unrelated.png")) <= 2, origin.hits
    finally:
        origin.close()


def test_a_closed_kept_alive_connection_is_retried_once_on_a_new_one(make_server, png):
    def answer(path: str, number: int) -> bytes | None:
        if path == "/flaky.png" and number == 1:
            return None  # the kept-alive connection is closed instead of answered
        return None if path == "/always-fails.png" else ok(png)

    origin = RawOrigin(answer)
    try:
        srv = make_server(PROFILE_C)
        assert srv.get(f"{origin.base_url}/first.png", W, Q).status_code == 200  # opens connection 1
        r = srv.get(f"{origin.base_url}/flaky.png", W, Q)
        assert r.status_code == 200, r.text
        assert origin.paths("/flaky.png") == [1, 2]  # connection 1, then a new one

        # a server that always fails this way is tried exactly twice, then it is an upstream fault
        assert srv.get(f"{origin.base_url}/second.png", W, Q).status_code == 200  # a kept-alive connection
        r = srv.get(f"{origin.base_url}/always-fails.png", W, Q)
        assert r.status_code == 502
        assert r.text.startswith('"url" parameter is valid but upstream response is invalid')
        tries = origin.paths("/always-fails.png")
        assert len(tries) == 2 and tries[0] != tries[1]
        # the next request is unaffected
        assert srv.get(f"{origin.base_url}/third.png", W, Q).status_code == 200
    finally:
        origin.close()


def test_a_new_connection_that_fails_is_not_retried(make_server):
    origin = RawOrigin(lambda path, number: None)
    try:
        srv = make_server(PROFILE_C)
        r = srv.get(f"{origin.base_url}/never.png", W, Q)
        assert r.status_code == 502
        assert origin.paths("/never.png") == [1]
    finally:
        origin.close()
