"""Figures for docs/security.md: what hostile HTTP clients and damaged stores cost a real imgopt.

Each case starts `python -m imgopt serve` on 127.0.0.1 (defaults unless said) and reports:

* header flood: one connection streams a 256 MB header; bytes the server took before closing,
  the answer, /healthz latency during the flood (probe every 50 ms), server RSS after.
* half-sent: 300 connections send half a request (and nothing more); /healthz latency while
  they are open, and when the server has closed them all (--header-timeout, default 10 s).
* huge Accept: a 1.9 MB Accept and Accept-Encoding (with --max-header-bytes 8M so they reach
  the app): time per request, /healthz latency meanwhile.
* gzip hits: a cached 4 MB BMP requested 20 times with Accept-Encoding: gzip; server CPU per hit.
* damaged store: cache.db header overwritten, then start: time to /healthz 200.

    .venv/bin/python benchmarks/hostile_http.py     # about a minute
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [sys.executable, "-m", "imgopt", "serve", "--port", str(self.port), "--local-root", str(tmp / "root"),
                     "--cache-dir", str(tmp / "cache"), "--log-level", "warning", *args]

    def start(self) -> "Server":
        t = time.monotonic()
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        self.started_in = time.monotonic() - t
        return self

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_s(self) -> float:
        f = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


class Prober(threading.Thread):
    """/healthz every 50 ms; the slowest answer (a failure counts as 10 s)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.worst, self.count, self.failed = url, 0.0, 0, 0
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self.halt.is_set():
                t = time.monotonic()
                try:
                    ok = c.get(self.url + "/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.failed += not ok
                self.worst = max(self.worst, time.monotonic() - t if ok else 10.0)
                self.count += 1
                self.halt.wait(0.05)

    def done(self) -> str:
        self.halt.set()
        self.join()
        return f"/healthz max {self.worst * 1000:.0f} ms over {self.count} probes, {self.failed} failed"


def header_flood(tmp: Path) -> None:
    srv = Server(tmp).start()
    rss0 = srv.rss_mb()
    probe = Prober(srv.url)
    probe.start()
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Flood: ")
    chunk, sent = b"a" * (64 << 10), 0
    try:
        while sent < 256 << 20:
            sent += s.send(chunk)
    except OSError:
        pass
    try:
        answer = s.recv(100)
    except OSError:
        answer = b"(reset)"
    s.close()
    time.sleep(0.5)
    print(f"header flood: server closed after {sent / 1e6:.1f} MB sent by the client (of 256 MB; includes "
          f"kernel socket buffers), answer {answer[:12]!r}, RSS {rss0:.0f} -> {srv.rss_mb():.0f} MB, {probe.done()}")
    srv.stop()


def half_sent(tmp: Path) -> None:
    srv = Server(tmp).start()
    probe = Prober(srv.url)
    probe.start()
    socks = []
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Part: ")
        socks.append(s)
    t = time.monotonic()
    for s in socks:
        s.settimeout(60)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
    closed_in = time.monotonic() - t
    for s in socks:
        s.close()
    print(f"300 half-sent requests: all closed by the server {closed_in:.1f} s after the last was opened "
          f"(--header-timeout 10), {probe.done()}")
    srv.stop()


def huge_accept(tmp: Path) -> None:
    srv = Server(tmp, "--max-header-bytes", "8M").start()
    accept = ",".join(["image/webp"] + ["text/html;q=0.9"] * (1_900_000 // 16))
    enc = ", ".join(["gzip"] + ["x-unknown;q=0.5"] * (1_900_000 // 17))
    probe = Prober(srv.url)
    probe.start()
    times = []
    with httpx.Client(timeout=60) as c:
        for _ in range(10):
            t = time.monotonic()
            r = c.get(srv.url + "/_next/image", params={"url": "/photo.png", "w": "640", "q": "75"},
                      headers={"Accept": accept, "Accept-Encoding": enc})
            times.append(time.monotonic() - t)
            assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    times.sort()
    print(f"1.9 MB Accept + Accept-Encoding: median {times[5] * 1000:.0f} ms per request (hit; mostly "
          f"sending and parsing 3.8 MB of headers), {probe.done()}")
    srv.stop()


def gzip_hits(tmp: Path) -> None:
    srv = Server(tmp).start()
    q = {"url": "/big.bmp", "w": "640", "q": "75"}
    h = {"Accept": "image/webp", "Accept-Encoding": "gzip"}
    with httpx.Client(timeout=60) as c:
        c.get(srv.url + "/_next/image", params=q, headers=h)  # miss: made once
        cpu0 = srv.cpu_s()
        for _ in range(20):
            r = c.get(srv.url + "/_next/image", params=q, headers=h)
            assert r.headers["content-encoding"] == "gzip" and r.headers["x-nextjs-cache"] == "HIT"
        per_hit = (srv.cpu_s() - cpu0) / 20
    print(f"gzip hits of a cached 4 MB BMP: {per_hit * 1000:.1f} ms server CPU per hit (compressed once)")
    srv.stop()


def damaged_store(tmp: Path) -> None:
    srv = Server(tmp).start()
    httpx.get(srv.url + "/_next/image", params={"url": "/photo.png", "w": "640", "q": "75"}, timeout=60)
    srv.stop()
    db = tmp / "cache" / "cache.db"
    data = bytearray(db.read_bytes())
    data[:100] = b"\xa5" * 100
    db.write_bytes(bytes(data))
    srv = Server(tmp).start()
    aside = [p.name for p in (tmp / "cache").glob("cache.db.damaged-*[0-9]")]
    print(f"cache.db header overwritten: started in {srv.started_in:.2f} s, moved aside as {aside}")
    srv.stop()


def main() -> None:
    from PIL import Image, ImageFilter

    for case in (header_flood, half_sent, huge_accept, gzip_hits, damaged_store):
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            (tmp / "root").mkdir()
            noise = Image.effect_noise((1200, 900), 64).filter(ImageFilter.GaussianBlur(3))
            img = Image.merge("RGB", (noise, noise, noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
            buf = io.BytesIO()
            img.save(buf, "PNG")
            (tmp / "root" / "photo.png").write_bytes(buf.getvalue())
            buf = io.BytesIO()
            img.save(buf, "BMP")  # 1200 x 900 x 3 = 3.2 MB
            (tmp / "root" / "big.bmp").write_bytes(buf.getvalue())
            case(tmp)


if __name__ == "__main__":
    main()
