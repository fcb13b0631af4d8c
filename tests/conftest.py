"""Shared fixtures: a generated image corpus, a real origin on 127.0.0.1, real imgopt processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from imagecorpus import build_corpus  # noqa: E402
from origin import Origin  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_conf(tmp: Path, http_body: str, worker_connections: int = 1024) -> str:
    """A test nginx.conf: pid, logs and temp folders under ``tmp`` (created), then ``http_body``
    (upstreams and servers) inside the http block. Used by the cluster and the browser tests."""
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the temp folders
    return f"""{user}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
  access_log {tmp}/access.log;
  client_body_temp_path {tmp}/client_body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
{http_body}
}}
"""


def wait_for(predicate: Callable[[], object], what: str | Callable[[], str], timeout: float = 30.0,
             interval: float = 0.02) -> None:
    """Poll a state (not a guess at how long something takes) until ``predicate()`` holds; past
    ``timeout`` seconds fail with "timed out waiting for ``what``" (a callable: evaluated then)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(interval)


class ImgoptServer:
    """`python -m imgopt serve` in a subprocess, on a free port of 127.0.0.1."""

    def __init__(self, tmp: Path, images: dict[str, Any] | None = None, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cache_dir = tmp / "cache"
        self.log_path = tmp / "imgopt.log"
        argv = [sys.executable, "-m", "imgopt", "serve", "--port", str(self.port),
                "--cache-dir", str(self.cache_dir), *args]
        if images is not None:
            cfg = tmp / "images.json"
            cfg.write_text(json.dumps(images))
            argv += ["--config", str(cfg)]
        self.argv = argv
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> "ImgoptServer":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"imgopt exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"imgopt did not start:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 60) -> None:
        """Wait until the server's log holds ``text`` ``count`` times (or more)."""
        def seen() -> int:
            return self.log_path.read_text(errors="replace").count(text)

        wait_for(lambda: seen() >= count, lambda: f"{text!r} {count} times in the log (it holds it {seen()} times)", timeout)

    def get(self, url: str, w: int | str | None = None, q: int | str | None = None,
            accept: str | None = "image/webp,*/*", **kw: Any) -> httpx.Response:
        params: list[tuple[str, str]] = [("url", url)]
        if w is not None:
            params.append(("w", str(w)))
        if q is not None:
            params.append(("q", str(q)))
        headers = dict(kw.pop("headers", {}) or {})
        if accept is not None:
            headers.setdefault("Accept", accept)
        return httpx.get(self.url + "/_next/image", params=params, headers=headers, timeout=30, **kw)

    def raw(self, query: str, method: str = "GET", **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}/_next/image?{query}", timeout=30, **kw)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    build_corpus(root)
    return root


@pytest.fixture(scope="session")
def origin(corpus: Path) -> Iterator[Origin]:
    with Origin(root=corpus) as o:
        yield o


@pytest.fixture(scope="session")
def server_d(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImgoptServer]:
    """Profile D: Next 16 defaults, local images from the corpus folder."""
    srv = ImgoptServer(tmp_path_factory.mktemp("imgopt-d"), None, "--local-root", str(corpus)).start()
    yield srv
    srv.stop()


PROFILE_C = {
    "dangerouslyAllowLocalIP": True,
    "domains": ["localhost", "127.0.0.1", "example.com"],
    "formats": ["image/avif", "image/webp"],
    "deviceSizes": [399, 1080],
    "qualities": [50, 75, 100],
}


@pytest.fixture(scope="session")
def server_c(origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImgoptServer]:
    """Profile C: Next's "with next.config.js" test profile; relative urls from the origin."""
    srv = ImgoptServer(tmp_path_factory.mktemp("imgopt-c"), PROFILE_C, "--origin", origin.base_url).start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    """Start servers with any config inside one test; all are stopped at the end."""
    started: list[ImgoptServer] = []

    def make(images: dict[str, Any] | None = None, *args: str, **kw: Any) -> ImgoptServer:
        srv = ImgoptServer(tmp_path / f"srv{len(started)}", images, *args, **kw).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
