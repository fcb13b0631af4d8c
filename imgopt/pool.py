"""Bounded workers: libvips runs off the event loop, and surplus work is refused at once.

``WorkerPool.admit()`` reserves one of ``workers + queue`` places for a whole miss (fetch and
transform); when none is free it raises a 503 with Retry-After instead of growing a queue.
``SingleFlight`` makes concurrent requests for one cache key share one piece of work.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Awaitable, Callable, Generic, TypeVar

from .errors import ImageError

T = TypeVar("T")


class WorkerPool:
    def __init__(self, workers: int, queue: int) -> None:
        self.workers = max(1, workers)
        self.capacity = self.workers + max(0, queue)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="imgopt-vips")
        self.admitted = 0  # misses in progress: running or waiting for a worker
        self.running = 0  # jobs on a worker thread now

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

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()

        def call() -> T:
            self.running += 1
            try:
                return fn(*args)
            finally:
                self.running -= 1

        return await loop.run_in_executor(self._executor, call)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)


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
            task.add_done_callback(lambda t, k=key: self._done(k, t))
        # shield: one caller going away (client disconnect) must not cancel the shared work.
        return asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[T]) -> None:
        self._tasks.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited is not logged as lost

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
