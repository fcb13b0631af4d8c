"""Image work in worker processes the server supervises (``--isolation process``, the default).

A decoder that hangs in native code cannot be stopped from a thread, and one that crashes takes
the whole process with it. Here each of ``--workers`` slots owns one worker process (started
with ``subprocess``: a fresh interpreter, never a fork of a process where libvips already runs
threads), pre-started with the server, and one supervising thread in the server:

* a job still running ``GRACE`` seconds past its deadline is killed (SIGKILL) and its worker
  replaced; the caller gets TimeoutError (the same 504 as a transform timeout);
* a worker that dies (a signal, ``os._exit``, the OOM killer) fails only its own job, with
  :class:`WorkerCrashed`; it is replaced, and no other job notices;
* a worker is replaced after ``max_jobs`` jobs, or once its RSS passes ``max_rss`` after a job,
  so memory the allocator keeps (glibc's arenas) is given back with the process;
* admission (workers + queue places, then 503) and the server's single flight are unchanged
  (``admit()`` is the thread pool's).

Messages are pickles over a socket pair (imgopt/workerproc.py, the worker's side); an original
or result body over 64 KiB is sent as its own frame after the pickle, so it is copied once each
way (the socket's read into a new bytes object), and a body the worker returns unchanged (a
passthrough or a fallback to the original) is not sent back at all.

Workers die with the server: PR_SET_PDEATHSIG (SIGKILL when the supervising thread, which
lives as long as the pool, goes), and a worker exits on end-of-file on its socket.

The memo of resized originals is shared by all workers: a worker that resizes an original hands
the pixels over in a memfd as soon as they are made (before it encodes), the pool keeps those (``SharedMemo``, an LRU bounded by
``--resized-cache-size``) and gives the next job for that original and width a descriptor of
its own, whichever worker runs it; so the formats of one image share one decode and resize, as
with threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from .lru import BytesLRU
from .pool import Admission, Observer
from .workerproc import Frame, Pixels, SameAsInput, pack_args, readable, recv, send, unpack

log = logging.getLogger("imgopt")

GRACE = 1.0  # seconds past a job's deadline before its worker is killed
START_TIMEOUT = 60.0  # seconds a new worker may take to be ready
_SOCKET_BUFFER = 4 << 20  # fewer, larger reads and writes for the big frames


class WorkerCrashed(Exception):
    """The worker process died while running the job."""


Segment = tuple[Hashable, Pixels, int]  # a resize: (its key, what the memfd holds, the memfd)


def _memo_entries() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(64, min(1024, soft // 8))


class SharedMemo(BytesLRU[Hashable, tuple[Pixels, int]]):
    """The resized originals the workers made, as memfds (pixels, descriptor), bounded by bytes
    and by count (LRU), plus the workers' hit and miss counts (what metrics.bind_memory reads).

    The entries are touched only on the event loop (the counts by the supervising threads). A
    job is offered a duplicate of an entry's descriptor, closed once sent: dropping an entry
    never pulls the pixels from under a job."""

    max_share = 4  # one resize may take at most a quarter of the budget, as ResizedMemo

    def __init__(self, max_bytes: int, max_entries: int | None = None) -> None:
        super().__init__(max_bytes)
        # Each entry holds a file descriptor: many small resizes must not use up the open-file
        # limit that connections and the cache need (an eighth of it, 64 to 1024 entries).
        self.max_entries = max_entries if max_entries is not None else _memo_entries()
        self.per_worker: dict[int, tuple[int, int]] = {}
        self.retired = (0, 0)  # hits and misses of workers that are gone

    def size_of(self, value: tuple[Pixels, int]) -> int:
        return value[0].nbytes

    def dropped(self, value: tuple[Pixels, int]) -> None:
        os.close(value[1])

    @property
    def hits(self) -> int:
        return self.retired[0] + sum(v[0] for v in list(self.per_worker.values()))

    @property
    def misses(self) -> int:
        return self.retired[1] + sum(v[1] for v in list(self.per_worker.values()))

    def retire(self, slot: int) -> None:
        h, m = self.per_worker.pop(slot, (0, 0))
        self.retired = (self.retired[0] + h, self.retired[1] + m)

    def offer(self, key: Hashable | None) -> Segment | None:
        found = None if key is None else self.get(key)
        if found is None:
            return None
        try:
            return key, found[0], os.dup(found[1])
        except OSError:
            return None

    def keep(self, key: Hashable, px: Pixels, fd: int) -> None:
        """Take ``fd`` (closed when dropped); an entry already kept for ``key`` stays."""
        if key in self._items:
            os.close(fd)
        else:
            self.put(key, (px, fd))


@dataclasses.dataclass
class _Task:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    timeout: float | None
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    offer: Segment | None  # the resize this job may start from (its descriptor is the task's)


# What a job came to: (status, result or exception, seconds).
_Outcome = tuple[str, Any, float]

_TRIM = object()
_STOP = object()


class _Slot:
    """One worker process and the thread that supervises it."""

    def __init__(self, pool: ProcessPool, index: int, config: dict[str, Any] | None = None) -> None:
        self.pool = pool
        self.index = index
        self.config = config if config is not None else pool.worker_config
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.ready = False
        self.jobs = 0  # jobs done by the current process
        self.dirty = False  # a job ran since the last trim
        self.rss = 0  # the process's RSS after its last job
        self._after: Callable[[], None] | None = None  # what to do once the job's caller has its answer
        self.tasks: collections.deque[object] = collections.deque()
        self.wake = threading.Condition()
        self.thread = threading.Thread(target=self._serve, name=f"imgopt-worker-{index}", daemon=True)

    # -- on the supervising thread ---------------------------------------------------------

    def _serve(self) -> None:
        self._respawn()
        while True:
            with self.wake:
                while not self.tasks:
                    self.wake.wait()
                task = self.tasks.popleft()
            if task is _STOP:
                self._retire(kill_after=5.0)
                return
            if task is _TRIM:
                self._trim()
                continue
            assert isinstance(task, _Task)
            self._after = None
            try:
                outcome = self._run(task)
            except Exception as e:  # noqa: BLE001 - a bug here must not end the slot
                log.exception("image worker %d: unexpected error", self.index)
                self._discard(kill=True)
                self._after = self._respawn
                outcome = ("error", WorkerCrashed(f"{type(e).__name__}: {e}"), 0.0)
            finally:
                if task.offer is not None:
                    os.close(task.offer[2])
            _call_soon(task.loop, self.pool._finish, self, task, outcome)
            if self._after is not None:  # a replacement, once the caller has its answer
                self._after()

    def _spawn(self) -> None:
        parent, child = socket.socketpair()
        for sock in (parent, child):  # fewer, larger reads and writes for the big frames
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        try:
            cmd = [sys.executable, "-m", "imgopt.workerproc", str(child.fileno()), str(os.getpid())]
            self.proc = subprocess.Popen(cmd, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                         close_fds=True, env=_worker_env())
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.sock = parent
        self.ready = False
        self.jobs = 0
        send(self.sock, ("init", self.config))
        self.pool.spawned += 1

    def _ensure_ready(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            # Died while idle (the OOM killer, an operator's kill): no job of ours to blame.
            log.warning("image worker %d (pid %d) had exited (%s); starting another",
                        self.index, self.proc.pid, _exit_reason(self.proc.returncode))
            self._discard()
        if self.proc is None:
            self._spawn()
        if self.ready:
            return
        assert self.sock is not None
        if not readable(self.sock, START_TIMEOUT):
            self._discard(kill=True)
            raise WorkerCrashed("the image worker did not start")
        try:
            head, _, _ = recv(self.sock)
        except (EOFError, OSError):
            self._discard(kill=True)
            raise WorkerCrashed("the image worker did not start") from None
        self.ready = head[0] == "ready"
        if self.ready:
            self.pool.libvips_version = head[2]

    def _run(self, task: _Task) -> _Outcome:
        try:
            self._ensure_ready()
        except (WorkerCrashed, OSError) as e:
            return "error", WorkerCrashed(str(e)), 0.0
        assert self.sock is not None and self.proc is not None
        args, frames = pack_args(task.args)
        begin = time.monotonic()
        kill_at = None if task.timeout is None else begin + task.timeout + GRACE
        self.dirty = True
        offer = task.offer
        try:
            send(self.sock, ("job", task.fn, args, task.timeout, None if offer is None else offer[:2]), frames,
                 [] if offer is None else [offer[2]])
            while True:
                wait = None if kill_at is None else max(0.0, kill_at - time.monotonic())
                if readable(self.sock, wait):
                    head, frames, fds = recv(self.sock)
                    if head[0] != "resized":
                        break
                    # a resize the job made, handed over before it encodes: kept at once
                    segment = (head[1], head[2], fds[0])
                    if not _call_soon(task.loop, self.pool._keep, segment):
                        os.close(fds[0])
                if kill_at is not None and time.monotonic() >= kill_at:
                    pid = self.proc.pid
                    self._discard(kill=True)
                    self.pool.killed += 1
                    log.error("image worker %d (pid %d) killed: its job ran %.1f s past its deadline",
                              self.index, pid, GRACE)
                    self._after = self._respawn
                    return "error", TimeoutError(), time.monotonic() - begin
        except (EOFError, OSError):
            pid = self.proc.pid
            reason = self._discard(kill=True)
            self.pool.crashed += 1
            log.error("image worker %d (pid %d) died while processing an image (%s)", self.index, pid, reason)
            self._after = self._respawn
            return "error", WorkerCrashed(reason), time.monotonic() - begin
        seconds = time.monotonic() - begin
        self.jobs += 1
        _done, status, value, stats = head
        for fd in fds:
            os.close(fd)
        self.pool.memo.per_worker[self.index] = stats["memo"]
        if status == "ok":
            body = getattr(value, "body", None)
            if isinstance(body, SameAsInput):
                value = dataclasses.replace(value, body=next(a for a in task.args if isinstance(a, (bytes, bytearray))))
            elif isinstance(body, Frame):
                value = dataclasses.replace(value, body=unpack(body, frames))
            seconds = stats["seconds"]
        self.rss = stats["rss"]
        self._after = self._maybe_recycle
        return status, value, seconds

    def _maybe_recycle(self) -> None:
        p, rss = self.pool, self.rss
        why = None
        if p.max_jobs and self.jobs >= p.max_jobs:
            why = f"after {self.jobs} jobs"
        elif p.max_rss and rss > p.max_rss:
            why = f"at {rss >> 20} MiB RSS"
        if why is None:
            return
        log.info("image worker %d (pid %d) replaced %s", self.index, self.proc.pid if self.proc else 0, why)
        self._retire(kill_after=5.0)
        p.recycled += 1
        self._respawn()

    def _respawn(self) -> None:
        """A new worker, ready before the slot takes its next job (no job waits for the start)."""
        try:
            self._spawn()
            self._ensure_ready()
        except (OSError, WorkerCrashed) as e:  # tried again at the next job
            log.error("image worker %d could not start: %s", self.index, e)

    def _trim(self) -> None:
        if not self.dirty or self.sock is None or not self.ready:
            return
        self.dirty = False
        try:
            send(self.sock, ("trim",))
        except OSError:
            pass

    def _retire(self, kill_after: float) -> None:
        """Ask the worker to exit; kill it if it has not after kill_after seconds."""
        if self.proc is None:
            return
        try:
            if self.sock is not None:
                send(self.sock, ("exit",))
        except OSError:
            pass
        try:
            self.proc.wait(kill_after)
        except subprocess.TimeoutExpired:
            pass
        self._discard(kill=True)

    def _discard(self, kill: bool = False) -> str:
        """Forget the current process (killed first when asked); the reason it ended."""
        proc, sock = self.proc, self.sock
        self.proc = self.sock = None
        self.ready = False
        self.rss = 0
        self.pool.memo.retire(self.index)
        if sock is not None:
            sock.close()
        if proc is None:
            return "no process"
        if kill and proc.poll() is None:
            proc.kill()
        try:
            code = proc.wait(5)
        except subprocess.TimeoutExpired:
            return "did not exit"
        return _exit_reason(code)

    # -- on the event loop --------------------------------------------------------------------

    def submit(self, item: object) -> None:
        with self.wake:
            self.tasks.append(item)
            self.wake.notify()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def _worker_env() -> dict[str, str]:
    """The server's environment, with this copy of imgopt first on the path (the server may
    have been started from a launcher that put it on sys.path, not in PYTHONPATH)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": here + (os.pathsep + path if path else "")}


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> bool:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: the server is gone
        return False
    return True


class ProcessPool(Admission):
    """The WorkerPool interface (admit, run, counters, shutdown) over worker processes."""

    isolation = "process"

    def __init__(self, workers: int, queue: int, *, max_jobs: int = 500, max_rss: int = 1 << 30,
                 memo_bytes: int = 0, trim: bool = True, idle_delay: float = 0.2,
                 observe: Observer | None = None, log: tuple[str, str] = ("info", "json"),
                 libvips_threads: int | None = None) -> None:
        self.workers = max(1, workers)
        self.capacity = self.workers + max(0, queue)
        self.max_jobs = max_jobs
        self.max_rss = max_rss
        self.admitted = 0
        self.running = 0
        self.started = 0
        self.idle_runs = 0
        self.spawned = self.recycled = self.killed = self.crashed = 0
        self.libvips_version: str | None = None  # as the first worker to start reports it
        self.memo = SharedMemo(memo_bytes)
        self.worker_config = {
            "memo_bytes": memo_bytes,
            "memo_share": SharedMemo.max_share,
            "log": log,  # (level, format), as the server logs
            "libvips_threads": libvips_threads,
            "trim": trim,
        }
        self._trim = trim
        self._idle_delay = idle_delay
        self._observe = observe
        self._slots = [_Slot(self, i) for i in range(self.workers)]
        self._idle: collections.deque[_Slot] = collections.deque(self._slots)
        self._waiters: collections.deque[asyncio.Future[_Slot]] = collections.deque()
        self._closed = False
        for s in self._slots:  # each starts its worker now: the first request does not wait
            s.thread.start()
        self._background: _Slot | None = None  # started with the first background job

    async def _acquire(self) -> _Slot:
        if self._idle and not self._waiters:
            return self._idle.popleft()
        fut: asyncio.Future[_Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(fut.result())
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def _release(self, slot: _Slot) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(slot)
                return
        self._idle.append(slot)
        if len(self._idle) == self.workers and self._trim:
            asyncio.get_running_loop().call_later(self._idle_delay, self._idle_check, self.started)

    def _idle_check(self, mark: int) -> None:
        """idle_delay after all workers went idle with no job started since: each worker that
        ran a job gives its freed memory back to the system (malloc_trim, in the worker)."""
        if self._closed or self.started != mark or len(self._idle) != self.workers:
            return
        if any(s.dirty for s in self._slots):
            self.idle_runs += 1
            for s in self._slots:
                if s.dirty:
                    s.submit(_TRIM)

    async def run(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None,
                  key: Hashable | None = None) -> Any:
        """Run ``fn(*args)`` in a worker process (``fn`` and the arguments are pickled; bytes
        over 64 KiB travel as raw frames). With ``timeout``, :data:`pool.DEADLINE` becomes the
        worker's ``time.monotonic() + timeout`` when it starts the job, and the worker is killed
        GRACE seconds after that (TimeoutError). ``key`` names the resize the job may share
        (``(source id, width)``): the job gets it from the shared memo when it is there, and
        the resize it makes is kept under that key."""
        if self._closed:
            raise RuntimeError("the worker pool is shut down")
        slot = await self._acquire()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self.running += 1
        self.started += 1
        slot.submit(_Task(fn, args, timeout, fut, loop, self.memo.offer(key)))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            if not fut.done():
                # The caller went away; the job runs on to its end or its deadline, and its
                # place stays taken until then (admission never exceeds workers + queue).
                self.admitted += 1
                fut.add_done_callback(lambda _f: self._release_abandoned())
            raise

    async def run_background(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None,
                             key: Hashable | None = None) -> Any:
        """Run ``fn(*args)`` in a worker process of its own at the lowest CPU priority (nice 19):
        it takes no worker and no place in the queue, and the kernel gives it only the CPU the
        workers leave. One such job at a time (the caller's to ensure); the same deadline and
        kill as :meth:`run`. Used for work nobody waits for (--fast-first's deferred AVIFs)."""
        if self._closed:
            raise RuntimeError("the worker pool is shut down")
        if self._background is None:
            self._background = _Slot(self, self.workers, {**self.worker_config, "nice": 19})
            self._background.thread.start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._background.submit(_Task(fn, args, timeout, fut, loop, self.memo.offer(key)))
        return await asyncio.shield(fut)

    def _release_abandoned(self) -> None:
        self.admitted -= 1

    def _keep(self, segment: Segment) -> None:
        if self._closed:
            os.close(segment[2])
        else:
            self.memo.keep(*segment)

    def _finish(self, slot: _Slot, task: _Task, outcome: _Outcome) -> None:
        status, value, seconds = outcome
        background = slot is self._background
        if not background:
            self.running -= 1
        if self._observe is not None:
            self._observe(value if status == "ok" else None, seconds)
        if not task.future.done():
            if status == "ok":
                task.future.set_result(value)
            else:
                task.future.set_exception(value)
            task.future.add_done_callback(_retrieve)
        if not background:
            self._release(slot)

    def pids(self) -> list[int | None]:
        return [s.pid for s in self._slots]

    def rss(self) -> list[int]:
        return [s.rss for s in self._slots]

    @property
    def ready(self) -> int:
        """Workers started and waiting for a job (or running one)."""
        return sum(1 for s in self._slots if s.ready)

    def health(self) -> dict[str, Any]:
        return {"isolation": self.isolation, "workers": self.workers, "pids": self.pids(),
                "restarts": {"recycled": self.recycled, "killed": self.killed, "crashed": self.crashed}}

    def shutdown(self) -> None:
        """Stop the workers (each finishes its job first, up to its deadline and GRACE)."""
        if self._closed:
            return
        self._closed = True
        slots = self._slots + ([self._background] if self._background is not None else [])
        for s in slots:
            s.submit(_STOP)
        for s in slots:
            s.thread.join(timeout=30)
        self.memo.clear()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
