"""Which ASGI server imgopt runs: the HTTP limits each offers, and cache-hit throughput and p99.

Each server runs imgopt's app (imgopt.app.create_app) on 127.0.0.1 with one primed entry (a
640 px WebP of a generated photo-like PNG); a bounded keep-alive load (BENCH_CONNECTIONS
connections, each sending its next request when the last answer is in) asks for it for
BENCH_SECONDS per server. Reported: hits/s, p50 and p99 latency, server CPU ms per 1000 hits,
errors (anything but 200 HIT). The load generator shares the machine, so compare rows with each
other, not with other machines.

    .venv/bin/python benchmarks/bench_servers.py                    # all servers installed
    BENCH_SECONDS=20 BENCH_CONNECTIONS=16 .venv/bin/python benchmarks/bench_servers.py imgopt uvicorn-h11

Servers: imgopt (`python -m imgopt serve`: uvicorn + httptools + imgopt.httpserver's limits),
uvicorn-httptools (the same without the limits), uvicorn-h11, granian and hypercorn (each only
when installed; they are not dependencies of imgopt).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import proc_tree  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "20"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))

# What each server bounds, from its documentation and options (checked with --help), for the
# limits imgopt needs. "-" = not offered.
LIMITS = {
    "imgopt": {"header bytes": "16 KiB, 431 (--max-header-bytes)", "header deadline": "10 s from connect, 408 (--header-timeout)",
               "keep-alive idle": "5 s (--keepalive-timeout)", "connection cap": "1024: evict longest idle, else 503 (--max-connections)"},
    "uvicorn-httptools": {"header bytes": "-", "header deadline": "-", "keep-alive idle": "timeout_keep_alive",
                          "connection cap": "limit_concurrency (503 per request; connections still accepted)"},
    "uvicorn-h11": {"header bytes": "h11_max_incomplete_event_size (400, not 431)", "header deadline": "-",
                    "keep-alive idle": "timeout_keep_alive", "connection cap": "limit_concurrency (as above)"},
    "granian": {"header bytes": "--http1-buffer-size (default 408 KiB)", "header deadline": "--http1-header-read-timeout",
                "keep-alive idle": "- (on/off only)", "connection cap": "- (--backpressure bounds requests)"},
    "hypercorn": {"header bytes": "h11_max_incomplete_size (16 KiB)", "header deadline": "- (--read-timeout is per read: a trickle extends it)",
                  "keep-alive idle": "--keep-alive", "connection cap": "-"},
}

APP_MODULE = textwrap.dedent("""
    import os
    from pathlib import Path
    from imgopt.app import create_app
    from imgopt.config import Settings
    app = create_app(Settings(local_root=Path(os.environ["BENCH_ROOT"]), cache_dir=Path(os.environ["BENCH_CACHE"])))
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_root(root: Path) -> None:
    from PIL import Image, ImageFilter

    noise = Image.effect_noise((1600, 1200), 64).filter(ImageFilter.GaussianBlur(3))
    img = Image.merge("RGB", (noise, noise.rotate(90, expand=False), noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    (root / "photo.png").write_bytes(buf.getvalue())


def command(name: str, port: int, tmp: Path) -> list[str] | None:
    py = sys.executable
    bindir = Path(py).parent
    if name == "imgopt":
        return [py, "-m", "imgopt", "serve", "--port", str(port), "--local-root", str(tmp / "root"),
                "--cache-dir", str(tmp / "cache"), "--log-level", "warning"]
    if name == "uvicorn-httptools":
        return [py, "-m", "uvicorn", "benchapp:app", "--port", str(port), "--http", "httptools",
                "--log-level", "warning", "--no-access-log"]
    if name == "uvicorn-h11":
        return [py, "-m", "uvicorn", "benchapp:app", "--port", str(port), "--http", "h11",
                "--h11-max-incomplete-event-size", "16384", "--log-level", "warning", "--no-access-log"]
    if name == "granian" and (bindir / "granian").exists():
        return [str(bindir / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--loop", "uvloop", "--log-level", "warning", "benchapp:app"]
    if name == "hypercorn" and (bindir / "hypercorn").exists():
        return [str(bindir / "hypercorn"), "--bind", f"127.0.0.1:{port}", "--worker-class", "uvloop",
                "--log-level", "warning", "benchapp:app"]
    return None


def cpu_seconds(pid: int) -> float:
    """CPU of the server and its processes (worker processes are children of its threads)."""
    total = 0.0
    for p in proc_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            pass
    return total


async def one_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200") and b"x-nextjs-cache: hit" in head.lower()


async def load(port: int, seconds: float, connections: int) -> dict[str, float]:
    request = (b"GET /_next/image?url=%2Fphoto.png&w=640&q=75 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Accept: image/avif,image/webp,image/apng,image/*,*/*;q=0.8\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n")
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    ok = await one_request(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - t)
                errors += not ok
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    return {
        "hits_per_s": n / elapsed,
        "p50_ms": latencies[n // 2] * 1000 if n else float("nan"),
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        "requests": n,
        "errors": errors,
    }


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/_next/image", params={"url": "/photo.png", "w": "640", "q": "75"},
                          headers={"Accept": "image/webp"}, timeout=30)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def bench(name: str, tmp: Path) -> dict[str, float] | None:
    port = free_port()
    argv = command(name, port, tmp)
    if argv is None:
        return None
    cache = tmp / f"cache-{name}"
    shutil.rmtree(cache, ignore_errors=True)
    if name == "imgopt":
        argv[argv.index("--cache-dir") + 1] = str(cache)
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}", "BENCH_ROOT": str(tmp / "root"),
           "BENCH_CACHE": str(cache), "IMGOPT_WORKERS": "2"}
    proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_ready(port, proc)
        asyncio.run(load(port, 2, CONNECTIONS))  # warm-up
        cpu0 = cpu_seconds(proc.pid)
        result = asyncio.run(load(port, SECONDS, CONNECTIONS))
        cpu = cpu_seconds(proc.pid) - cpu0
        result["server_cpu_ms_per_1000"] = cpu / max(1, result["requests"]) * 1e6
        return result
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(names: list[str]) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    names = names or list(LIMITS)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "root").mkdir()
        make_root(tmp / "root")
        (tmp / "benchapp.py").write_text(APP_MODULE)
        rows = {}
        for name in names:
            r = bench(name, tmp)
            if r is None:
                print(f"{name}: not installed, skipped", file=sys.stderr)
                continue
            rows[name] = r
            print(f"{name:18} {r['hits_per_s']:8.0f} hits/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                  f"cpu {r['server_cpu_ms_per_1000']:6.0f} ms/1000  errors {r['errors']}", flush=True)
    print()
    print(f"{CONNECTIONS} keep-alive connections, {SECONDS:.0f} s per server, cache hits of one 640 px WebP")
    print("| server | hits/s | p50 ms | p99 ms | server CPU ms / 1000 hits | errors | header bytes | header deadline | keep-alive idle | connection cap |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        lim = LIMITS[name]
        print(f"| {name} | {r['hits_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['server_cpu_ms_per_1000']:.0f} "
              f"| {r['errors']} | {lim['header bytes']} | {lim['header deadline']} | {lim['keep-alive idle']} | {lim['connection cap']} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
