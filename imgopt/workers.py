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

Messages are pickles over a socket pair (multiprocessing.connection framing); an original or
result body over 64 KiB is sent as its own frame after the pickle, so it is copied once each way
(the socket's read into a new bytes object), and a body the worker returns unchanged (a
passthrough or a fallback to the original) is not sent back at all.

Workers die with the server: PR_SET_PDEATHSIG (SIGKILL when the supervising thread, which
lives as long as the pool, goes), and a worker exits on end-of-file on its socket.

Each worker keeps its own memo of resized originals (a share of ``--resized-cache-size``); jobs
for an original and width a worker has resized recently go to that worker when it is free, so
the formats of one image still share one decode and resize.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable
from multiprocessing.connection import Connection
from typing import Any

from .pool import Admission, Observer, substitute

log = logging.getLogger("imgopt")

GRACE = 1.0  # seconds past a job's deadline before its worker is killed
START_TIMEOUT = 60.0  # seconds a new worker may take to be ready
_INLINE = 64 << 10  # larger bytes go as their own frame, not inside the pickle
_AFFINITY_KEYS = 64
_SOCKET_BUFFER = 4 << 20  # recent memo keys remembered per worker


class WorkerCrashed(Exception):
    """The worker process died while running the job."""


class _Frame:
    """Stands for the n-th raw frame sent after the message."""

    def __init__(self, n: int) -> None:
        self.n = n


class _SameAsInput:
    """A result body that is the job's input bytes (sent back as this marker, not the bytes)."""


def _send(conn: Connection, head: tuple[Any, ...], frames: list[Any]) -> None:
    conn.send_bytes(pickle.dumps((len(frames), head), protocol=pickle.HIGHEST_PROTOCOL))
    for f in frames:
        conn.send_bytes(f)


def _recv(conn: Connection) -> tuple[Any, list[bytes]]:
    """A message and its frames. A frame is read with one recv(MSG_WAITALL) into a bytes object
    of its size: one copy (Connection.recv_bytes makes three: the reads, a BytesIO, its value)."""
    count, head = pickle.loads(conn.recv_bytes())
    return head, [_read_frame(conn.fileno()) for _ in range(count)]


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = sock.recv(size, socket.MSG_WAITALL)
    while len(data) < size:  # a signal cut the wait short
        more = sock.recv(size - len(data), socket.MSG_WAITALL)
        if not more:
            raise EOFError
        data += more
    return data


def _read_frame(fd: int) -> bytes:
    """One message in multiprocessing.connection's framing (a 4-byte big-endian length, or -1
    and an 8-byte one)."""
    sock = socket.socket(fileno=fd)
    try:
        (size,) = struct.unpack("!i", _read_exactly(sock, 4))
        if size == -1:
            (size,) = struct.unpack("!Q", _read_exactly(sock, 8))
        return _read_exactly(sock, size) if size else b""
    finally:
        sock.detach()  # the fd stays the Connection's


def _pack_args(args: tuple[Any, ...]) -> tuple[tuple[Any, ...], list[Any]]:
    frames: list[Any] = []
    out = []
    for a in args:
        if isinstance(a, (bytes, bytearray)) and len(a) > _INLINE:
            out.append(_Frame(len(frames)))
            frames.append(a)
        else:
            out.append(a)
    return tuple(out), frames


def _unpack(value: Any, frames: list[bytes]) -> Any:
    return frames[value.n] if isinstance(value, _Frame) else value


@dataclasses.dataclass
class MemoStats:
    """The workers' memos of resized originals, summed (what metrics.bind_memory reads)."""

    max_bytes: int
    per_worker: dict[int, tuple[int, int, int]] = dataclasses.field(default_factory=dict)
    retired: tuple[int, int] = (0, 0)  # hits and misses of workers that are gone

    @property
    def hits(self) -> int:
        return self.retired[0] + sum(v[0] for v in list(self.per_worker.values()))

    @property
    def misses(self) -> int:
        return self.retired[1] + sum(v[1] for v in list(self.per_worker.values()))

    @property
    def bytes(self) -> int:
        return sum(v[2] for v in list(self.per_worker.values()))

    def retire(self, slot: int) -> None:
        h, m, _b = self.per_worker.pop(slot, (0, 0, 0))
        self.retired = (self.retired[0] + h, self.retired[1] + m)


@dataclasses.dataclass
class _Task:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    timeout: float | None
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    key: Hashable | None


_TRIM = object()
_STOP = object()


class _Slot:
    """One worker process and the thread that supervises it."""

    def __init__(self, pool: ProcessPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        self.ready = False
        self.jobs = 0  # jobs done by the current process
        self.dirty = False  # a job ran since the last trim
        self.rss = 0  # the process's RSS after its last job
        self._after: Callable[[], None] | None = None  # what to do once the job's caller has its answer
        self.keys: collections.OrderedDict[Hashable, None] = collections.OrderedDict()
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
            _call_soon(task.loop, self.pool._finish, self, task, outcome)
            if self._after is not None:  # a replacement, once the caller has its answer
                self._after()

    def _spawn(self) -> None:
        parent, child = socket.socketpair()
        for sock in (parent, child):  # fewer, larger reads and writes for the big frames
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        try:
            cmd = [sys.executable, "-m", "imgopt.workers", str(child.fileno()), str(os.getpid())]
            self.proc = subprocess.Popen(cmd, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                         close_fds=True, env=_worker_env())
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self.ready = False
        self.jobs = 0
        self.keys.clear()
        _send(self.conn, ("init", self.pool.worker_config), [])
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
        assert self.conn is not None
        if not self.conn.poll(START_TIMEOUT):
            self._discard(kill=True)
            raise WorkerCrashed("the image worker did not start")
        try:
            head, _ = _recv(self.conn)
        except (EOFError, OSError):
            self._discard(kill=True)
            raise WorkerCrashed("the image worker did not start") from None
        self.ready = head[0] == "ready"

    def _run(self, task: _Task) -> tuple[str, Any, float]:
        """('ok', result, seconds) | ('error', exception, seconds)."""
        try:
            self._ensure_ready()
        except (WorkerCrashed, OSError) as e:
            return "error", WorkerCrashed(str(e)), 0.0
        assert self.conn is not None and self.proc is not None
        args, frames = _pack_args(task.args)
        begin = time.monotonic()
        kill_at = None if task.timeout is None else begin + task.timeout + GRACE
        self.dirty = True
        try:
            _send(self.conn, ("job", task.fn, args, task.timeout), frames)
            while True:
                wait = None if kill_at is None else max(0.0, kill_at - time.monotonic())
                if self.conn.poll(wait):
                    head, frames = _recv(self.conn)
                    break
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
        status, value, stats = head
        self.pool.memo.per_worker[self.index] = stats["memo"]
        if task.key is not None:
            self.keys[task.key] = None
            self.keys.move_to_end(task.key)
            while len(self.keys) > _AFFINITY_KEYS:
                self.keys.popitem(last=False)
        if status == "ok":
            body = getattr(value, "body", None)
            if isinstance(body, _SameAsInput):
                value = dataclasses.replace(value, body=next(a for a in task.args if isinstance(a, (bytes, bytearray))))
            elif isinstance(body, _Frame):
                value = dataclasses.replace(value, body=_unpack(body, frames))
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
        if not self.dirty or self.conn is None or not self.ready:
            return
        self.dirty = False
        try:
            _send(self.conn, ("trim",), [])
        except OSError:
            pass

    def _retire(self, kill_after: float) -> None:
        """Ask the worker to exit; kill it if it has not after kill_after seconds."""
        if self.proc is None:
            return
        try:
            if self.conn is not None:
                _send(self.conn, ("exit",), [])
        except OSError:
            pass
        try:
            self.proc.wait(kill_after)
        except subprocess.TimeoutExpired:
            pass
        self._discard(kill=True)

    def _discard(self, kill: bool = False) -> str:
        """Forget the current process (killed first when asked); the reason it ended."""
        proc, conn = self.proc, self.conn
        self.proc = self.conn = None
        self.ready = False
        self.rss = 0
        self.pool.memo.retire(self.index)
        if conn is not None:
            conn.close()
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


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: the server is gone
        pass


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
        self.memo = MemoStats(max_bytes=memo_bytes)
        self.worker_config = {
            "memo_bytes": memo_bytes // self.workers,
            # the largest resize kept stays what one shared memo would keep (a quarter of it)
            "memo_share": max(1, 4 // self.workers),
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

    async def _acquire(self, key: Hashable | None) -> _Slot:
        if self._idle and not self._waiters:
            if key is not None:
                for s in self._idle:
                    if key in s.keys:
                        self._idle.remove(s)
                        return s
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
        (``(source id, width)``): the job goes to a free worker that made it recently."""
        if self._closed:
            raise RuntimeError("the worker pool is shut down")
        slot = await self._acquire(key)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self.running += 1
        self.started += 1
        slot.submit(_Task(fn, args, timeout, fut, loop, key))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            if not fut.done():
                # The caller went away; the job runs on to its end or its deadline, and its
                # place stays taken until then (admission never exceeds workers + queue).
                self.admitted += 1
                fut.add_done_callback(lambda _f: self._release_abandoned())
            raise

    def _release_abandoned(self) -> None:
        self.admitted -= 1

    def _finish(self, slot: _Slot, task: _Task, outcome: tuple[str, Any, float]) -> None:
        status, value, seconds = outcome
        self.running -= 1
        if self._observe is not None:
            self._observe(value if status == "ok" else None, seconds)
        if not task.future.done():
            if status == "ok":
                task.future.set_result(value)
            else:
                task.future.set_exception(value)
            task.future.add_done_callback(_retrieve)
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
        for s in self._slots:
            s.submit(_STOP)
        for s in self._slots:
            s.thread.join(timeout=30)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


# -- the worker process ----------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the thread that started it exits (with the server); exit now
    if the server is already gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(0)
    try:  # under memory pressure the kernel ends a worker (one request), not the server
        with open("/proc/self/oom_score_adj", "r+") as f:
            adj = min(1000, int(f.read()) + 500)
            f.seek(0)
            f.write(str(adj))
    except OSError:
        pass


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _test_hooks(args: tuple[Any, ...]) -> None:
    """Only with IMGOPT_TEST_HOOKS=1 (the test-suite sets it): an original containing
    ``IMGOPT-TEST-CRASH`` kills its worker with SIGSEGV, ``IMGOPT-TEST-HANG`` blocks it in
    native code, and ``IMGOPT-TEST-WAIT:<path>;`` holds the job until that file exists."""
    buf = next((a for a in args if isinstance(a, (bytes, bytearray))), b"")
    if b"IMGOPT-TEST-CRASH" in buf:
        os.kill(os.getpid(), signal.SIGSEGV)
    if b"IMGOPT-TEST-HANG" in buf:
        import ctypes

        ctypes.CDLL(None).pause()  # a signal-less wait in C: only SIGKILL ends it
    at = buf.find(b"IMGOPT-TEST-WAIT:")
    if at >= 0:
        path = buf[at + 17 : buf.index(b";", at)].decode()
        while not os.path.exists(path):
            time.sleep(0.01)


def worker_main(fd: int, parent: int) -> None:
    _die_with_parent(parent)
    # Ctrl-C, or a service manager's SIGTERM to the whole group, reaches the workers too: the
    # server decides when they stop (after draining), and PR_SET_PDEATHSIG ends them with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from . import malloc

    malloc.tune()
    conn = Connection(fd)
    head, _ = _recv(conn)
    cfg = head[1]
    from . import logs

    logs.configure(*cfg["log"])
    from . import animated, autoquality, placeholder, transform  # noqa: F401 - loaded before the first job

    transform.configure_libvips()
    if cfg["libvips_threads"]:
        import pyvips

        if not os.environ.get("VIPS_CONCURRENCY"):
            pyvips.concurrency_set(cfg["libvips_threads"])
    memo = transform.ResizedMemo(cfg["memo_bytes"])
    memo.max_share = cfg["memo_share"]
    trim = malloc.idle_trimmer() if cfg["trim"] else None
    hooks = os.environ.get("IMGOPT_TEST_HOOKS") == "1"
    _send(conn, ("ready", os.getpid()), [])
    while True:
        try:
            head, frames = _recv(conn)
        except (EOFError, OSError):
            return  # the server is gone
        kind = head[0]
        if kind == "exit":
            return
        if kind == "trim":
            if trim is not None:
                trim()
            continue
        _kind, fn, args, timeout = head
        args = tuple(_unpack(a, frames) for a in args)
        begin = time.perf_counter()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if hooks:
                _test_hooks(args)
            result = fn(*substitute(args, deadline, memo))
            status, value = "ok", result
        except Exception as e:  # noqa: BLE001 - sent to the server, which raises it there
            status, value = "error", e
            try:
                pickle.loads(pickle.dumps(e))
            except Exception:  # noqa: BLE001 - one that does not cross intact: its text does
                value = RuntimeError(f"{type(e).__name__}: {e}")
        stats = {"seconds": time.perf_counter() - begin, "rss": _rss(), "memo": (memo.hits, memo.misses, memo.bytes)}
        out: list[Any] = []
        if status == "ok":
            body = getattr(value, "body", None)
            if isinstance(body, (bytes, bytearray)) and dataclasses.is_dataclass(value) and not isinstance(value, type):
                if any(body is a for a in args):
                    value = dataclasses.replace(value, body=_SameAsInput())
                elif len(body) > _INLINE:
                    value = dataclasses.replace(value, body=_Frame(0))
                    out.append(body)
        try:
            msg = pickle.dumps((len(out), (status, value, stats)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - an exception that does not pickle
            out = []
            msg = pickle.dumps((0, ("error", RuntimeError(f"{type(value).__name__}: {value} ({e})"), stats)))
        frames = args = result = value = None  # type: ignore[assignment]
        try:
            conn.send_bytes(msg)
            for f in out:
                conn.send_bytes(f)
        except OSError:
            return
        out = []


if __name__ == "__main__":
    # Run as the imported module, not as __main__: what the worker pickles (its classes) must
    # be found under imgopt.workers in the server.
    from imgopt.workers import worker_main as _main

    _main(int(sys.argv[1]), int(sys.argv[2]))
