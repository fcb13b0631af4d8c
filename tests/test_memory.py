"""Freed memory goes back to the system when the workers go idle
(imgopt/malloc.py, WorkerPool's on_idle hook), and the hook never runs under load."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from cluster import sample_sum, scrape
from conftest import PROFILE_C, wait_for
from imgopt import malloc
from imgopt.pool import WorkerPool

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim: Linux only")


async def wait_for_calls(calls: list, count: int, timeout: float = 30) -> None:
    """Wait until the idle hook has been called `count` times (or more)."""
    deadline = time.monotonic() + timeout
    while len(calls) < count:
        assert time.monotonic() < deadline, f"the idle hook ran {len(calls)} times, expected {count}"
        await asyncio.sleep(0.01)


def test_idle_hook_runs_once_on_a_worker_after_the_jobs_end():
    calls: list[str] = []

    async def main() -> None:
        pool = WorkerPool(2, 2, on_idle=lambda: calls.append(threading.current_thread().name), idle_delay=0.05)
        await asyncio.gather(*(pool.run(time.sleep, 0.02) for _ in range(4)))
        assert calls == []  # not before idle_delay has passed
        await wait_for_calls(calls, 1)
        assert len(calls) == 1 and calls[0].startswith("imgopt-vips")
        assert pool.idle_runs == 1
        await asyncio.sleep(0.2)
        assert len(calls) == 1  # once per idle period, not a timer
        await pool.run(time.sleep, 0.01)
        await wait_for_calls(calls, 2)
        assert len(calls) == 2
        pool.shutdown()

    asyncio.run(main())


def test_idle_hook_does_not_run_while_jobs_keep_arriving():
    calls: list[float] = []

    async def main() -> None:
        # Gaps of ~0.05 s between jobs: idle, but never for idle_delay. The margin is wide, so a
        # busy machine that stretches a gap does not make it an idle period; jobs keep arriving
        # for three idle_delays, long enough for a hook that ignored them to show.
        idle_delay = 0.5
        pool = WorkerPool(1, 4, on_idle=lambda: calls.append(time.monotonic()), idle_delay=idle_delay)
        end = time.monotonic() + 3 * idle_delay
        while time.monotonic() < end:
            await pool.run(time.sleep, 0.01)
            await asyncio.sleep(0.05)
        assert calls == []
        await wait_for_calls(calls, 1)
        assert len(calls) == 1 and calls[0] >= end
        pool.shutdown()

    asyncio.run(main())


def test_no_idle_hook_no_calls():
    async def main() -> None:
        pool = WorkerPool(1, 1, idle_delay=0.01)
        await pool.run(time.sleep, 0.01)
        await asyncio.sleep(0.1)
        assert pool.idle_runs == 0
        pool.shutdown()

    asyncio.run(main())


@glibc_only
def test_idle_trimmer_gives_freed_heap_memory_back():
    """Many small blocks freed below one that stays: glibc keeps the pages (the heap top cannot
    shrink), malloc_trim(0) gives them back. In a fresh process with imgopt's malloc settings."""
    code = textwrap.dedent("""
        import ctypes
        from imgopt import malloc
        malloc.tune()
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
        blocks = [libc.malloc(1024) for _ in range(150_000)]
        for b in blocks:
            ctypes.memset(b, 1, 1024)
        pin = libc.malloc(1024)
        for b in blocks:
            libc.free(b)
        before = rss()
        trim = malloc.idle_trimmer()
        assert trim is not None
        trim()
        print(before, rss())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = map(float, out.split())
    assert before - after > 100, (before, after)  # ~150 MB were freed


def test_idle_trimmer_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("IMGOPT_MALLOC_TRIM", "0")
    assert malloc.idle_trimmer() is None
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    monkeypatch.delenv("IMGOPT_MALLOC_TRIM")
    assert malloc.idle_trimmer() is None  # another allocator: glibc's trim would do nothing


@glibc_only
def test_server_releases_memory_after_a_transform_and_says_so(make_server, origin):
    srv = make_server(PROFILE_C)
    off = make_server(PROFILE_C, env={"IMGOPT_MALLOC_TRIM": "0"})
    for s in (srv, off):
        assert sample_sum(scrape(s.url), "imgopt_pool_idle_releases_total") == 0
        r = s.get(f"{origin.base_url}/large.jpg?m={uuid.uuid4().hex}", 1080, 75, accept="image/webp")
        assert r.status_code == 200 and r.headers["x-nextjs-cache"] == "MISS"
    # Both are checked after `srv` has released memory, and not before they have been idle for
    # 0.6 s (three times the 0.2 s after which idle workers release memory): time enough for a
    # second release, or one by `off`, to show.
    quiet_until = time.monotonic() + 0.6
    wait_for(lambda: sample_sum(scrape(srv.url), "imgopt_pool_idle_releases_total") > 0,
             "a release of memory once the workers went idle")
    time.sleep(max(0.0, quiet_until - time.monotonic()))
    assert sample_sum(scrape(srv.url), "imgopt_pool_idle_releases_total") == 1
    assert sample_sum(scrape(off.url), "imgopt_pool_idle_releases_total") == 0
