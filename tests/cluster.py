"""Real processes for multi-replica tests and benchmarks: redis-server, nginx, N imgopt replicas.

Everything binds 127.0.0.1 on free ports and lives in a temporary folder; each process is
started here and stopped by its own pid. A missing tool is an error, never a skip.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from conftest import PROFILE_C, ImgoptServer, free_port, nginx_conf


def need_tool(name: str, package: str, *fallbacks: str) -> str:
    found = shutil.which(name) or next((p for p in fallbacks if os.access(p, os.X_OK)), None)
    if not found:
        raise RuntimeError(f"{name} not found: install it with `apt-get install {package}` (.ci/run does)")
    return found


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class RedisServer:
    """`redis-server` without persistence, LRU-bounded as recommended for imgopt."""

    def __init__(self, tmp: Path, port: int | None = None, maxmemory: str = "256mb") -> None:
        self.binary = need_tool("redis-server", "redis-server", "/usr/bin/redis-server", "/usr/sbin/redis-server")
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.maxmemory = maxmemory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp), "--maxmemory", self.maxmemory, "--maxmemory-policy", "allkeys-lru",
             "--logfile", str(self.tmp / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.tmp / 'redis.log').read_text()[-2000:]}")
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Nginx:
    """nginx in the foreground, round-robin over the replicas, as docs/deploy.md configures it."""

    def __init__(self, tmp: Path, ports: list[int]) -> None:
        self.binary = need_tool("nginx", "nginx-light", "/usr/sbin/nginx")
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;" for p in ports)
        self.conf = tmp / "nginx.conf"
        self.conf.write_text(nginx_conf(tmp, f"""  upstream imgopt {{
{servers}
    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass http://imgopt;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Request-Id $request_id;
      proxy_connect_timeout 2s;
      proxy_read_timeout 60s;
      proxy_next_upstream error timeout;
      proxy_next_upstream_tries 3;
    }}
  }}"""))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Nginx":
        self.proc = subprocess.Popen(
            [self.binary, "-p", str(self.tmp), "-e", str(self.tmp / "error.log"), "-c", str(self.conf),
             "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"nginx did not start: {(self.tmp / 'error.log').read_text()[-2000:]}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Cluster:
    """One Redis, N imgopt replicas sharing it (`tiers[i]` = --cache-tier), nginx in front."""

    def __init__(self, tmp: Path, origin_url: str, tiers: tuple[str, ...] = ("disk", "none", "none"),
                 images: dict[str, Any] | None = None, extra: tuple[str, ...] = ()) -> None:
        self.tmp = tmp
        self.redis = RedisServer(tmp / "redis").start()
        self.replicas = [
            ImgoptServer(tmp / f"replica{i}", images or PROFILE_C, "--cache", self.redis.url, "--cache-tier", tier,
                         "--origin", origin_url, *extra)
            for i, tier in enumerate(tiers)
        ]
        with concurrent.futures.ThreadPoolExecutor(len(self.replicas)) as ex:
            list(ex.map(lambda r: r.start(), self.replicas))
        self.nginx = Nginx(tmp / "nginx", [r.port for r in self.replicas]).start()

    def close(self) -> None:
        self.nginx.stop()
        for r in self.replicas:
            r.stop()
        self.redis.stop()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def scrape(base_url: str) -> list[Any]:
    """Every sample of a replica's /metrics."""
    r = httpx.get(base_url + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(r.text) for s in family.samples]


def sample_sum(samples: list[Any], name: str, **labels: str) -> float:
    """Sum of the samples called `name` (e.g. imgopt_transform_seconds_count) matching labels."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def metric(base_url: str, name: str, **labels: str) -> float:
    return sample_sum(scrape(base_url), name, **labels)


def image(base_url: str, url: str, w: int, q: int = 75, accept: str = "image/webp,*/*",
          timeout: float = 60, **kw: Any) -> httpx.Response:
    return httpx.get(base_url + "/_next/image", params={"url": url, "w": str(w), "q": str(q)},
                     headers={"Accept": accept, **kw.pop("headers", {})}, timeout=timeout, **kw)
