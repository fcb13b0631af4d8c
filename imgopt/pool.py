"""Bounded workers: libvips runs off the event loop, and surplus work is refused at once.

``WorkerPool`` runs jobs on threads of the server (``--isolation thread``); the default is
worker processes, imgopt/workers.py's ``ProcessPool``, with the same interface.

``WorkerPool.admit()`` reserves one of ``workers + queue`` places for a whole miss (fetch and
transform); when none is free it raises a 503 with Retry-After instead of growing a queue.
``SingleFlight`` makes concurrent requests for one cache key share one piece of work. An
``on_idle`` hook runs on a worker once no job has run for ``idle_delay`` seconds (imgopt gives
freed memory back to the system there, imgopt/malloc.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from .errors import ImageError
from .jobargs import DEADLINE, MEMO, Observer, substitute

__all__ = ["DEADLINE", "MEMO", "Admission", "Observer", "SingleFlight", "WorkerPool", "substitute"]

T = TypeVar("T")


def _set_started(started: asyncio.Future[None]) -> None:
    if not started.done():
        started.set_result(None)


class Admission:
    """``workers + queue`` places for whole misses (fetch and transform); one more gets a 503
    with Retry-After at once instead of a growing queue. Shared by both kinds of pool."""

    admitted = 0  # misses in progress: running or waiting for a worker
    capacity = 0

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        if self.admitted >= self.capacity:
            raise ImageError(
                503, "imgopt is busy: too many images are being processed, retry shortly", retry_after=1
            )
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1


class WorkerPool(Admission):
    """Image work on threads of the server process (``--isolation thread``)."""

    isolation = "thread"

    def __init__(self, workers: int, queue: int, on_idle: Callable[[], object] | None = None,
                 idle_delay: float = 0.2, memo: Any = None, observe: Observer | None = None) -> None:
        self.workers = max(1, workers)
        self.capacity = self.workers + max(0, queue)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="imgopt-vips")
        self.admitted = 0  # misses in progress: running or waiting for a worker
        self.running = 0  # jobs on a worker thread now
        self.started = 0  # jobs a worker has picked up, ever
        self.idle_runs = 0  # times on_idle ran
        self._on_idle = on_idle
        self._idle_delay = idle_delay
        self._lock = threading.Lock()  # running/started change on the worker threads
        self._memo = memo
        self._observe = observe

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float | None = None,
                  key: Any = None) -> T:
        """Run ``fn(*args)`` on a worker thread.

        With ``timeout``, the clock starts when a worker picks the job up, not
        when it is queued: an argument given as :data:`DEADLINE` becomes
        ``time.monotonic() + timeout`` at that moment (the transform's own deadline), and the
        caller gives up with TimeoutError 2 s after it (a backstop, should the work not stop).
        ``key`` is for the process pool (the resize the job may take from its shared memo); threads share one memo.
        """
        loop = asyncio.get_running_loop()
        started = loop.create_future()

        def call() -> T:
            with self._lock:
                self.running += 1
                self.started += 1
            _call_soon(loop, functools.partial(_set_started, started))
            begin = time.perf_counter()
            result = None
            try:
                deadline = None if timeout is None else time.monotonic() + timeout
                result = fn(*substitute(args, deadline, self._memo))
                return result
            finally:
                if self._observe is not None:
                    self._observe(result, time.perf_counter() - begin)
                with self._lock:
                    self.running -= 1
                    idle, mark = self.running == 0, self.started
                if idle and self._on_idle is not None:
                    _call_soon(loop, functools.partial(loop.call_later, self._idle_delay, self._idle_check, mark))

        cf = self._executor.submit(call)
        fut = asyncio.wrap_future(cf)
        fut.add_done_callback(_retrieve)
        try:
            if timeout is None:
                return await asyncio.shield(fut)
            # Waiting for a thread is bounded by admission (workers + queue places).
            await asyncio.wait([started, fut], return_when=asyncio.FIRST_COMPLETED)
            return await asyncio.wait_for(asyncio.shield(fut), timeout + 2)
        except (asyncio.CancelledError, TimeoutError):
            # The caller gave up (client gone, or the backstop fired). A job still
            # waiting for a thread is dropped; a running one cannot be stopped from outside,
            # so its place stays taken until the worker is really free: admission never lets
            # more work in than there are workers and queue places.
            if not cf.cancel() and not cf.done():
                self.admitted += 1
                cf.add_done_callback(lambda _cf: _call_soon(loop, self._release_abandoned))
            raise
        finally:
            if not started.done():
                started.cancel()

    def _release_abandoned(self) -> None:
        self.admitted -= 1

    def _idle_check(self, mark: int) -> None:
        """On the event loop, idle_delay after the workers went idle: when no job has started
        since, run on_idle on a worker (off the loop; a job arriving meanwhile waits at most
        for that one call, as the other workers are free)."""
        with self._lock:
            still_idle = self.running == 0 and self.started == mark
        if still_idle:
            try:
                self._executor.submit(self._run_idle)
            except RuntimeError:  # shut down meanwhile
                pass

    def _run_idle(self) -> None:
        self.idle_runs += 1
        self._on_idle()  # type: ignore[misc]

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)

    def health(self) -> dict[str, Any]:
        return {"isolation": self.isolation, "workers": self.workers}


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved, so asyncio does not log an abandoned job's error as lost


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    try:
        loop.call_soon_threadsafe(fn)
    except RuntimeError:  # the loop is closed: the server is gone, nothing left to count
        pass


class SingleFlight(Generic[T]):
    """One task per key; everyone asking for the key meanwhile awaits the same result."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[T]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._tasks

    def run(self, key: str, make: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        # shield: one caller going away (client disconnect) must not cancel the shared work.
        return asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[T]) -> None:
        self._tasks.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited is not logged as lost

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for the work in flight; after ``timeout`` seconds cancel what is left."""
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks.values()), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
