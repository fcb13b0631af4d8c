"""No single image can stall, crash or flood the service: libvips's messages are bounded per
image (imgopt/vipslog.py), and image work runs in supervised worker processes (imgopt/workers.py)."""

from __future__ import annotations

import io
import signal
import struct
import threading
import zlib
from pathlib import Path

import httpx
import pytest

from conftest import wait_for


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int = 16, height: int = 16, before_idat: bytes = b"") -> bytes:
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    rows = b"".join(b"\x00" + bytes((x * 7 + y * 3) % 256 for x in range(3 * width)) for y in range(height))
    return b"\x89PNG\r\n\x1a\n" + ihdr + before_idat + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def text_flood(chunks: int = 500_000) -> bytes:
    """A small PNG behind `chunks` empty tEXt chunks: libvips warns for each one, every time it
    reads the header."""
    return png(before_idat=_chunk(b"tEXt", b"") * chunks)


def jpeg_marker_flood(n: int = 200_000) -> bytes:
    """A JPEG with n comment markers, each after a stray byte (libjpeg warns for each)."""
    from PIL import Image

    b = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(b, "JPEG")
    j = b.getvalue()
    return j[:2] + b"\xff\xfe\x00\x02" + b"\x00\xff\xfe\x00\x02" * n + j[2:]


def gif_extension_flood(n: int = 300_000) -> bytes:
    """A GIF with n comment extension blocks before its image."""
    from PIL import Image

    b = io.BytesIO()
    Image.new("P", (32, 32), 1).save(b, "GIF")
    g = b.getvalue()
    at = g.index(b"\x2c")
    return g[:at] + b"\x21\xfe\x01x\x00" * n + g[at:]


def webp_chunk_flood(n: int = 300_000) -> bytes:
    """A WebP with n unknown empty chunks after its image."""
    from PIL import Image

    b = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(b, "WEBP")
    body = b.getvalue()[12:] + b"JUNK\x00\x00\x00\x00" * n
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def log_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_a_png_chunk_flood_logs_a_bounded_number_of_lines(make_server, tmp_path, isolation):
    root = tmp_path / "images"
    root.mkdir()
    (root / "flood.png").write_bytes(text_flood())
    (root / "plain.png").write_bytes(png(64, 64))
    srv = make_server(None, "--local-root", str(root), "--transform-timeout", "60", "--isolation", isolation)
    before = len(log_lines(srv.log_path))
    r = srv.get("/flood.png", 64, 75)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/webp"
    flood_lines = log_lines(srv.log_path)[before:]
    assert any("tEXt" in line for line in flood_lines)  # reported: the first message and a count
    assert any("messages while processing an image" in line for line in flood_lines)
    assert len(flood_lines) < 20, "\n".join(flood_lines[:40])

    before = len(log_lines(srv.log_path))
    assert srv.get("/plain.png", 64, 75).status_code == 200
    plain_lines = log_lines(srv.log_path)[before:]
    assert not [line for line in plain_lines if "VIPS" in line or "pyvips" in line], plain_lines


@pytest.mark.parametrize("make", [jpeg_marker_flood, gif_extension_flood, webp_chunk_flood])
def test_other_chunk_floods_are_answered_and_log_little(make_server, tmp_path, make):
    root = tmp_path / "images"
    root.mkdir()
    (root / "flood.img").write_bytes(make())
    srv = make_server(None, "--local-root", str(root), "--transform-timeout", "60")
    before = len(log_lines(srv.log_path))
    r = srv.get("/flood.img", 64, 75)
    assert r.status_code == 200, r.text  # optimized, or the original as Next serves an undecodable one
    lines = log_lines(srv.log_path)[before:]
    assert len(lines) < 20, "\n".join(lines[:40])


# -- worker processes ------------------------------------------------------------------------
# The worker's test hooks (imgopt/workerproc.py, only with IMGOPT_TEST_HOOKS=1) act on markers in
# an original's bytes: a tEXt chunk keeps the PNG valid.

HOOKS = {"IMGOPT_TEST_HOOKS": "1"}


def marked(text: str) -> bytes:
    return png(32, 32, _chunk(b"tEXt", b"Comment\x00" + text.encode()))


def metric(srv, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    body = httpx.get(srv.url + "/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def worker_pids(srv) -> set[int]:
    from prometheus_client.parser import text_string_to_metric_families

    body = httpx.get(srv.url + "/metrics", timeout=10).text
    return {int(s.value) for f in text_string_to_metric_families(body) for s in f.samples
            if s.name == "imgopt_worker_pid" and s.value}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def in_background(fn):
    out: list = []

    def run() -> None:
        try:
            out.append(fn())
        except httpx.HTTPError as e:  # the server went away (a test that kills it)
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for n in range(6):
        (root / f"plain{n}.png").write_bytes(png(40 + n, 40))
    return root


def test_a_job_hanging_in_native_code_is_killed_at_its_deadline(make_server, images):
    (images / "hang.png").write_bytes(marked("IMGOPT-TEST-HANG"))
    srv = make_server(None, "--local-root", str(images), "--workers", "1", "--transform-timeout", "1", env=HOOKS)
    before = worker_pids(srv)
    r = srv.get("/hang.png", 64, 75)
    assert r.status_code == 504 and "timed out" in r.text
    assert metric(srv, "imgopt_worker_restarts_total", reason="killed") == 1
    wait_for(lambda: worker_pids(srv) and worker_pids(srv) != before, "a new worker")
    assert not any(alive(p) for p in before)  # the hung process is gone, not left running
    ok = srv.get("/plain0.png", 64, 75)
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/webp"


def test_a_crashing_worker_fails_only_its_own_request(make_server, images, tmp_path):
    release = tmp_path / "release"
    (images / "crash.png").write_bytes(marked("IMGOPT-TEST-CRASH"))
    (images / "held.png").write_bytes(marked(f"IMGOPT-TEST-WAIT:{release};"))
    srv = make_server(None, "--local-root", str(images), "--workers", "2", env=HOOKS)
    held, held_out = in_background(lambda: srv.get("/held.png", 64, 75))
    wait_for(lambda: metric(srv, "imgopt_pool_running") == 1, "the held job on a worker")

    crashed = srv.get("/crash.png", 64, 75)
    assert crashed.status_code == 500
    assert crashed.text == "The image worker crashed while processing this image"
    assert metric(srv, "imgopt_worker_restarts_total", reason="crashed") == 1
    # while the other worker still holds its job, the service goes on (on a replacement worker)
    for n in range(3):
        r = srv.get(f"/plain{n}.png", 64, 75)
        assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    assert held.is_alive()
    release.write_bytes(b"")
    held.join(30)
    assert held_out and held_out[0].status_code == 200
    assert held_out[0].headers["content-type"] == "image/webp"
    assert "crashed while processing" in srv.log_path.read_text()
    # one crash may not be the image's fault: the next request is tried on a worker again ...
    again = srv.get("/crash.png", 64, 75)
    assert again.status_code == 500 and again.text == crashed.text
    assert metric(srv, "imgopt_worker_restarts_total", reason="crashed") == 2
    # ... and after a second crash the same answer comes at once, without taking down a worker
    third = srv.get("/crash.png", 96, 75)
    assert third.status_code == 500 and third.text == crashed.text
    assert metric(srv, "imgopt_worker_restarts_total", reason="crashed") == 2


def test_workers_are_replaced_after_max_jobs(make_server, images):
    srv = make_server(None, "--local-root", str(images), "--workers", "1", "--worker-max-jobs", "2")
    (first,) = worker_pids(srv)
    for n in range(2):
        assert srv.get(f"/plain{n}.png", 64, 75).status_code == 200
    wait_for(lambda: metric(srv, "imgopt_worker_restarts_total", reason="recycled") == 1, "a recycled worker")
    wait_for(lambda: worker_pids(srv) and worker_pids(srv) != {first}, "the new worker's pid")
    (second,) = worker_pids(srv)
    assert not alive(first)
    assert srv.get("/plain2.png", 64, 75).status_code == 200
    assert worker_pids(srv) == {second}  # one job on the new worker: no recycling yet
    assert metric(srv, "imgopt_worker_restarts_total", reason="killed") == 0
    assert metric(srv, "imgopt_worker_restarts_total", reason="crashed") == 0


def test_sigterm_drains_the_job_in_flight_and_stops_the_workers(make_server, images, tmp_path):
    release = tmp_path / "release"
    (images / "held.png").write_bytes(marked(f"IMGOPT-TEST-WAIT:{release};"))
    srv = make_server(None, "--local-root", str(images), "--workers", "2", env=HOOKS)
    pids = worker_pids(srv)
    assert len(pids) == 2 and all(alive(p) for p in pids)
    held, held_out = in_background(lambda: srv.get("/held.png", 64, 75))
    wait_for(lambda: metric(srv, "imgopt_pool_running") == 1, "the held job on a worker")
    srv.proc.send_signal(signal.SIGTERM)
    release.write_bytes(b"")
    held.join(30)
    assert held_out and held_out[0].status_code == 200
    assert srv.proc.wait(30) == 0
    assert not any(alive(p) for p in pids)


def test_workers_die_with_the_server(make_server, images):
    (images / "hang.png").write_bytes(marked("IMGOPT-TEST-HANG"))
    srv = make_server(None, "--local-root", str(images), "--workers", "2", "--transform-timeout", "60", env=HOOKS)
    pids = worker_pids(srv)
    busy, _ = in_background(lambda: srv.get("/hang.png", 64, 75))
    wait_for(lambda: metric(srv, "imgopt_pool_running") == 1, "the hanging job on a worker")
    srv.proc.kill()
    srv.proc.wait(30)
    wait_for(lambda: not any(alive(p) for p in pids), "the workers to exit with the server")


def test_mixed_hostile_and_normal_traffic_costs_only_the_culprits(make_server, images):
    """Crashing, hanging and flooding originals among normal ones, from 4 clients at once: every
    normal request gets its image, the crashes 500 and the hangs 504, and the service stays up."""
    (images / "crash.png").write_bytes(marked("IMGOPT-TEST-CRASH"))
    (images / "hang.png").write_bytes(marked("IMGOPT-TEST-HANG"))
    (images / "flood.png").write_bytes(text_flood(100_000))
    srv = make_server(None, "--local-root", str(images), "--workers", "2", "--queue", "16",
                      "--transform-timeout", "1", env=HOOKS)
    normal = [(f"/plain{n}.png", w) for n in range(6) for w in (64, 96, 128)]
    hostile = [("/crash.png", 64), ("/hang.png", 64), ("/flood.png", 64), ("/crash.png", 96), ("/hang.png", 96)]
    jobs = normal[:6] + hostile[:2] + normal[6:12] + hostile[2:] + normal[12:]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as ex:
        answers = list(ex.map(lambda job: (job, srv.get(job[0], job[1], 75)), jobs))
    for (path, w), r in answers:
        if "crash" in path:
            assert r.status_code == 500, (path, r.status_code, r.text)
        elif "hang" in path:
            assert r.status_code == 504, (path, r.status_code, r.text)
        else:
            assert r.status_code == 200, (path, w, r.status_code, r.text)
            assert r.headers["content-type"] == "image/webp"
    assert metric(srv, "imgopt_worker_restarts_total", reason="crashed") >= 1
    assert metric(srv, "imgopt_worker_restarts_total", reason="killed") >= 1
    assert httpx.get(srv.url + "/healthz", timeout=5).status_code == 200
    assert srv.get("/plain0.png", 256, 75).status_code == 200


def test_the_oom_killer_prefers_a_worker_to_the_server(make_server, images):
    srv = make_server(None, "--local-root", str(images), "--workers", "1")
    wait_for(lambda: metric(srv, "imgopt_workers_ready") == 1, "the worker to start")
    (pid,) = worker_pids(srv)
    worker = int(Path(f"/proc/{pid}/oom_score_adj").read_text())
    server = int(Path(f"/proc/{srv.proc.pid}/oom_score_adj").read_text())
    assert worker == min(1000, server + 500)


def test_the_server_never_maps_libvips_while_its_workers_do_the_image_work(make_server, images):
    """Images, a placeholder and the metrics all answered, and libvips is mapped only in the
    worker processes (results cross back without the server importing imgopt.transform)."""
    srv = make_server(None, "--local-root", str(images), "--workers", "1")
    assert srv.get("/plain0.png", 32, 75, accept="image/avif").status_code == 200
    assert srv.get("/plain1.png", 32, 75, accept="image/webp").status_code == 200
    assert httpx.get(srv.url + "/_next/image/placeholder", params={"url": "/plain2.png"}, timeout=30).status_code == 200
    assert httpx.get(srv.url + "/metrics", timeout=30).status_code == 200
    (pid,) = worker_pids(srv)
    assert "libvips" in Path(f"/proc/{pid}/maps").read_text()
    assert "libvips" not in Path(f"/proc/{srv.proc.pid}/maps").read_text()


# -- the process pool on its own ---------------------------------------------------------------


def test_process_pool_moves_large_bytes_and_errors_intact():
    import asyncio
    import os

    from imgopt import transform
    from imgopt.errors import ImageError
    from imgopt.pool import DEADLINE, MEMO
    from imgopt.workers import ProcessPool

    async def main() -> None:
        pool = ProcessPool(1, 0, trim=False)
        try:
            big = os.urandom(3 << 20)
            assert await pool.run(len, big, timeout=30) == len(big)
            res = await pool.run(transform.process, png(8, 8), "image/webp", False, 16, 75, 10**8, DEADLINE,
                                 transform.NO_EXTRAS, MEMO, None, timeout=30)
            assert res.kind == "optimized" and res.mime == "image/webp" and res.body[:4] == b"RIFF"
            # a passthrough returns the caller's own bytes (the worker sends a marker, not them)
            svg = b"<svg xmlns='http://www.w3.org/2000/svg' width='1' height='1'/>" + b" " * (100 << 10)
            res = await pool.run(transform.process, svg, "image/webp", True, 16, 75, 10**8, DEADLINE,
                                 transform.NO_EXTRAS, MEMO, None, timeout=30)
            assert res.kind == "passthrough" and res.body is svg
            with pytest.raises(ImageError) as e:  # a 4xx from the worker keeps its status
                await pool.run(transform.process, b"not an image", "", False, 16, 75, 10**8, DEADLINE,
                               transform.NO_EXTRAS, MEMO, None, timeout=30)
            assert e.value.status == 400
            assert pool.crashed == pool.killed == 0
        finally:
            pool.shutdown()

    asyncio.run(main())


def test_an_abandoned_job_keeps_its_place_until_its_worker_is_free(tmp_path):
    """A caller that goes away (client disconnect) does not free its place while its job still
    runs: admission never lets in more work than workers + queue."""
    import asyncio
    import subprocess

    from imgopt.errors import ImageError
    from imgopt.workers import ProcessPool

    release = tmp_path / "release"

    async def main() -> None:
        pool = ProcessPool(1, 0, trim=False)
        try:
            async def miss() -> None:
                async with pool.admit():
                    await pool.run(subprocess.run, ["sh", "-c", f'while [ ! -e "{release}" ]; do sleep 0.01; done'],
                                   timeout=60)

            task = asyncio.ensure_future(miss())
            while pool.running == 0:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert pool.admitted == 1  # still held by the job that runs on
            with pytest.raises(ImageError):
                async with pool.admit():
                    pass
            release.write_bytes(b"")
            while pool.admitted:
                await asyncio.sleep(0.01)
            assert pool.running == 0
        finally:
            pool.shutdown()

    asyncio.run(main())


def test_the_worker_processes_share_one_memo_of_resizes(tmp_path, monkeypatch):
    """A resize made on one worker is what the other worker encodes the next format from (the
    pool keeps it in a memfd): the same pixels, one decode. Dropped entries close their memfds."""
    import asyncio
    import io
    import os

    from PIL import Image

    from imgopt import transform
    from imgopt.pool import DEADLINE, MEMO
    from imgopt.workers import ProcessPool

    monkeypatch.setenv("IMGOPT_TEST_HOOKS", "1")
    release = tmp_path / "release"
    photo = Image.effect_noise((600, 400), 60).convert("RGB")
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    original = buf.getvalue()
    blocker = marked(f"IMGOPT-TEST-WAIT:{release};")

    def memfds() -> int:
        count = 0
        for n in os.listdir("/proc/self/fd"):
            try:
                count += os.readlink(f"/proc/self/fd/{n}").startswith("/memfd:")
            except FileNotFoundError:  # the listing's own descriptor
                pass
        return count

    async def main() -> None:
        before = memfds()
        pool = ProcessPool(2, 0, trim=False, memo_bytes=1 << 20)  # a resize may take 256 KiB
        try:
            def job(fmt: str, key: object, body: bytes = original) -> object:
                return pool.run(transform.process, body, fmt, False, 300, 75, 10**8, DEADLINE,
                                transform.NO_EXTRAS, MEMO, "photo", timeout=30, key=key)

            webp = await job("image/webp", ("photo", 300))
            assert (pool.memo.hits, pool.memo.misses) == (0, 1) and pool.memo.bytes == 300 * 200 * 3
            first = pool.pids()
            # hold one worker with a job of its own, so the next one runs on the other worker
            held = asyncio.ensure_future(pool.run(transform.process, blocker, "image/webp", False, 16, 75, 10**8,
                                                  DEADLINE, transform.NO_EXTRAS, MEMO, None, timeout=60))
            while pool.running == 0:
                await asyncio.sleep(0.01)
            png_out = await job("image/png", ("photo", 300))
            assert (pool.memo.hits, pool.memo.misses) == (1, 1), "the other worker did not find the resize"
            release.write_bytes(b"")
            await held
            assert pool.pids() == first and pool.crashed == 0
            a = Image.open(io.BytesIO(webp.body))
            b = Image.open(io.BytesIO(png_out.body)).convert("RGB")
            assert a.size == b.size == (300, 200)
            # more resizes than the budget holds: the oldest are dropped, their memfds closed
            for w in range(302, 322, 2):  # 10 resizes of ~185 KB
                await pool.run(transform.process, original, "image/webp", False, w, 75, 10**8, DEADLINE,
                               transform.NO_EXTRAS, MEMO, "photo", timeout=30, key=("photo", w))
            assert pool.memo.bytes <= pool.memo.max_bytes
            assert memfds() - before == len(pool.memo._items) <= 5
        finally:
            pool.shutdown()
        assert memfds() == before

    asyncio.run(main())


def test_a_resize_with_no_memory_for_its_memfd_is_encoded_without_being_kept(monkeypatch):
    import errno
    import os

    import pyvips

    from imgopt.workerproc import SharedResized

    memo = SharedResized(1 << 20, 4)
    published: list = []
    memo.publish = lambda key, px, fd: published.append((key, px.nbytes, os.fstat(fd).st_size))
    img = (pyvips.Image.black(20, 10, bands=3) + 7).cast("uchar")
    kept = memo.keep(("a", 20), img)
    assert published == [(("a", 20), 600, 600)] and kept.avg() == 7 and (kept.width, kept.height) == (20, 10)

    def no_memory(*_args):
        raise OSError(errno.ENOMEM, "no memory")

    monkeypatch.setattr(os, "posix_fallocate", no_memory)
    kept = memo.keep(("b", 20), img)
    assert len(published) == 1 and kept.avg() == 7 and (kept.width, kept.height) == (20, 10)


def test_the_shared_memo_holds_a_bounded_number_of_descriptors():
    """Many small resizes do not use up the open-file limit: the pool keeps at most
    max_entries memfds (the oldest go first) and closes what it drops."""
    import os

    from imgopt.workerproc import Pixels
    from imgopt.workers import SharedMemo

    def open_memfds() -> list[str]:
        names = []
        for n in os.listdir("/proc/self/fd"):
            try:
                link = os.readlink(f"/proc/self/fd/{n}")
            except FileNotFoundError:  # the listing's own descriptor
                continue
            if link.startswith("/memfd:bounded-"):
                names.append(link.split()[0].removeprefix("/memfd:"))
        return sorted(names)

    memo = SharedMemo(1 << 30, max_entries=3)
    for n in range(5):
        fd = os.memfd_create(f"bounded-{n}")
        os.ftruncate(fd, 12)
        memo.keep(("img", n), Pixels(2, 2, 3, "uchar", "srgb"), fd)
    assert list(memo._items) == [("img", 2), ("img", 3), ("img", 4)] and memo.bytes == 36
    assert open_memfds() == ["bounded-2", "bounded-3", "bounded-4"]
    offered = memo.offer(("img", 4))
    assert offered is not None
    os.close(offered[2])
    memo.clear()
    assert open_memfds() == []
    assert SharedMemo(1).max_entries >= 64
