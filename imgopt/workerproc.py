"""The worker process's side of imgopt/workers.py: its message framing, its side of the shared memo of
resized originals, and its main loop (``python -m imgopt.workerproc FD PARENT_PID``).

It imports only what a job needs: no asyncio, no multiprocessing, no web stack (each import
costs resident memory in every worker). libvips is imported with the first image module.

Messages go over a Unix socket pair: a pickle of ``(frames, fds, head)`` in
multiprocessing.connection's framing (a 4-byte big-endian length, or -1 and an 8-byte one),
then, when ``fds``, one byte carrying that many file descriptors (SCM_RIGHTS), then each raw
frame (bodies over 64 KiB, copied once each way).

Resized pixels are shared by all workers through the server: a worker that decodes and
resizes an original writes the pixels into a memfd and hands it to the server at once (a
``("resized", key, pixels)`` message before the job's ``("done", ...)``);
the server keeps those memfds in an LRU bounded by ``--resized-cache-size`` and passes one to
the next job for the same original and width, whichever worker runs it; that worker maps it
read-only and encodes from it, so the formats of one image share one decode and resize.
"""

from __future__ import annotations

import array
import dataclasses
import mmap
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .imagetypes import pixel_bytes
from .jobargs import substitute

INLINE = 64 << 10  # larger bytes go as their own frame, not inside the pickle


class Frame:
    """Stands for the n-th raw frame sent after the message."""

    def __init__(self, n: int) -> None:
        self.n = n


class SameAsInput:
    """A result body that is the job's input bytes (sent back as this marker, not the bytes)."""


@dataclasses.dataclass(frozen=True)
class Pixels:
    """Where a resize's pixels are: the memfd (sent beside the message) holds width x height x
    bands samples of ``format``, in ``interpretation``."""

    width: int
    height: int
    bands: int
    format: str
    interpretation: str

    @property
    def nbytes(self) -> int:
        return pixel_bytes(self.width, self.height, self.bands, self.format)


_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


# -- framing -----------------------------------------------------------------------------------


def _send_frame(sock: socket.socket, data: bytes | bytearray | memoryview) -> None:
    n = len(data)
    head = struct.pack("!i", n) if n <= 0x7FFFFFFF else struct.pack("!iQ", -1, n)
    if n < 16 << 10:
        sock.sendall(head + bytes(data))
    else:
        sock.sendall(head)
        sock.sendall(data)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = sock.recv(size, socket.MSG_WAITALL)
    while len(data) < size:  # a signal cut the wait short, or the peer is gone
        more = sock.recv(size - len(data), socket.MSG_WAITALL)
        if not more:
            raise EOFError
        data += more
    return data


def _read_frame(sock: socket.socket) -> bytes:
    """One frame, read into a bytes object of its size (one copy)."""
    (size,) = struct.unpack("!i", _read_exactly(sock, 4))
    if size == -1:
        (size,) = struct.unpack("!Q", _read_exactly(sock, 8))
    return _read_exactly(sock, size) if size else b""


def send(sock: socket.socket, head: Any, frames: Sequence[Any] = (), fds: Sequence[int] = ()) -> None:
    _send_frame(sock, pickle.dumps((len(frames), len(fds), head), protocol=pickle.HIGHEST_PROTOCOL))
    if fds:
        sock.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    for f in frames:
        _send_frame(sock, f)


def recv(sock: socket.socket) -> tuple[Any, list[bytes], list[int]]:
    """A message, its frames and the file descriptors that came with it (now the caller's)."""
    nframes, nfds, head = pickle.loads(_read_frame(sock))
    fds: list[int] = []
    if nfds:
        _msg, fds, _flags, _addr = socket.recv_fds(sock, 1, nfds)
        if len(fds) != nfds:
            for fd in fds:
                os.close(fd)
            raise EOFError("file descriptors missing from a message")
    return head, [_read_frame(sock) for _ in range(nframes)], fds


def readable(sock: socket.socket, timeout: float | None) -> bool:
    """Whether a message (or end-of-file) is waiting, within timeout seconds (None: forever)."""
    p = select.poll()
    p.register(sock.fileno(), select.POLLIN)
    return bool(p.poll(None if timeout is None else max(0, int(timeout * 1000))))


def pack_args(args: tuple[Any, ...]) -> tuple[tuple[Any, ...], list[Any]]:
    frames: list[Any] = []
    out = []
    for a in args:
        if isinstance(a, (bytes, bytearray)) and len(a) > INLINE:
            out.append(Frame(len(frames)))
            frames.append(a)
        else:
            out.append(a)
    return tuple(out), frames


def unpack(value: Any, frames: list[bytes]) -> Any:
    return frames[value.n] if isinstance(value, Frame) else value


# -- the worker's side of the shared memo of resized originals --------------------------------


class SharedResized:
    """What transform._resized asks of a memo (get, fits, keep), over the server's memfds.

    For one job at a time: ``begin`` gives it the resize the server offered (the job's
    original and width, or nothing); ``keep`` writes a new resize into a memfd and hands it to
    the server at once (``publish``), before the job encodes: a job for another format of the
    same image that starts meanwhile, on another worker, finds it (as with threads)."""

    def __init__(self, max_bytes: int, max_share: int) -> None:
        self.max_bytes = max_bytes
        self.max_entry = max_bytes // max(1, max_share)
        self.hits = self.misses = 0
        self._offer: tuple[Any, Pixels, int] | None = None
        self.publish: Callable[[Any, Pixels, int], None] = lambda key, px, fd: None

    def begin(self, offer: tuple[Any, Pixels, int] | None) -> None:
        self._offer = offer

    def end(self) -> None:
        """The job is over: close the memfd it was offered."""
        if self._offer is not None:
            os.close(self._offer[2])
            self._offer = None

    def get(self, key: Any) -> Any:
        if self._offer is None or self._offer[0] != key:
            self.misses += 1
            return None
        _key, px, fd = self._offer
        self.hits += 1
        return self._map(fd, px).copy(interpretation=px.interpretation)

    def fits(self, img: Any) -> bool:
        return bool(self.max_entry) and pixel_bytes(img.width, img.height, img.bands, img.format) <= self.max_entry

    def keep(self, key: Any, img: Any) -> Any:
        """Decode and resize now, straight into a new memfd (killable: img carries the job's
        deadline watch), keep that for the server, and return an image over it to encode."""
        px = Pixels(img.width, img.height, img.bands, str(img.format), str(img.interpretation))
        fd = -1
        try:
            fd = os.memfd_create("imgopt-resized", os.MFD_CLOEXEC)
            os.posix_fallocate(fd, 0, px.nbytes)  # the pages now, so the mapping can take them at once
            out = self._map(fd, px, writable=True)
        except OSError:  # no descriptor or no memory for it (a container's limit): encode without keeping it
            if fd >= 0:
                os.close(fd)
            return img.copy_memory()
        try:
            img.write(out)
        except BaseException:
            os.close(fd)
            raise
        try:
            self.publish(key, px, fd)
        finally:
            os.close(fd)  # the server has its own descriptor now
        return out.copy(interpretation=px.interpretation)

    @staticmethod
    def _map(fd: int, px: Pixels, writable: bool = False) -> Any:
        import pyvips

        # The mapping lives as long as the image over it (pyvips keeps a reference to it).
        # MAP_POPULATE maps every page at once: a page fault for each 4 KiB would cost more.
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        mm = mmap.mmap(fd, px.nbytes, mmap.MAP_SHARED | _POPULATE, prot)
        return pyvips.Image.new_from_memory(mm, px.width, px.height, px.bands, px.format)


# -- the worker process ------------------------------------------------------------------------


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


def _portable(e: Exception) -> Exception:
    """The exception as the server can take it: itself, or its text when it does not pickle."""
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:  # noqa: BLE001 - one that does not cross intact: its text does
        return RuntimeError(f"{type(e).__name__}: {e}")
    return e


def worker_main(fd: int, parent: int) -> None:
    _die_with_parent(parent)
    # Ctrl-C, or a service manager's SIGTERM to the whole group, reaches the workers too: the
    # server decides when they stop (after draining), and PR_SET_PDEATHSIG ends them with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from . import malloc

    malloc.tune()
    sock = socket.socket(fileno=fd)
    head, _, _ = recv(sock)
    cfg = head[1]
    if cfg.get("nice"):  # a worker for background jobs: only the CPU the others leave
        os.nice(cfg["nice"])
    from . import logs

    logs.configure(*cfg["log"])
    from . import transform

    transform.configure_libvips()
    import pyvips

    if cfg["libvips_threads"] and not os.environ.get("VIPS_CONCURRENCY"):
        pyvips.concurrency_set(cfg["libvips_threads"])
    from . import animated, autoquality, placeholder  # noqa: F401 - loaded before the first job

    memo = SharedResized(cfg["memo_bytes"], cfg["memo_share"])

    def publish(key: Any, px: Pixels, fd: int) -> None:
        try:
            send(sock, ("resized", key, px), [], [fd])
        except OSError:
            pass  # the server is gone: the job's own answer will fail the same way

    memo.publish = publish
    trim = malloc.idle_trimmer() if cfg["trim"] else None
    hooks = os.environ.get("IMGOPT_TEST_HOOKS") == "1"
    libvips = ".".join(str(pyvips.version(i)) for i in range(3))
    send(sock, ("ready", os.getpid(), libvips))
    while True:
        try:
            head, frames, fds = recv(sock)
        except (EOFError, OSError):
            return  # the server is gone
        kind = head[0]
        if kind == "exit":
            return
        if kind == "trim":
            if trim is not None:
                trim()
            continue
        _kind, fn, args, timeout, offer = head
        args = tuple(unpack(a, frames) for a in args)
        memo.begin(None if offer is None else (offer[0], offer[1], fds[0]))
        begin = time.perf_counter()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if hooks:
                _test_hooks(args)
            result = fn(*substitute(args, deadline, memo))
            status, value = "ok", result
        except Exception as e:  # noqa: BLE001 - sent to the server, which raises it there
            status, value = "error", _portable(e)
        memo.end()
        stats = {"seconds": time.perf_counter() - begin, "rss": _rss(), "memo": (memo.hits, memo.misses)}
        out: list[Any] = []
        if status == "ok":
            body = getattr(value, "body", None)
            if isinstance(body, (bytes, bytearray)) and dataclasses.is_dataclass(value) and not isinstance(value, type):
                if any(body is a for a in args):
                    value = dataclasses.replace(value, body=SameAsInput())
                elif len(body) > INLINE:
                    value = dataclasses.replace(value, body=Frame(0))
                    out.append(body)
        frames = args = result = None  # type: ignore[assignment]
        try:
            try:
                send(sock, ("done", status, value, stats), out)
            except OSError:
                raise
            except Exception as e:  # noqa: BLE001 - a value that does not pickle (nothing was sent)
                send(sock, ("done", "error", RuntimeError(f"{type(value).__name__}: {value} ({e})"), stats))
        except OSError:
            return
        value = None
        out = []


if __name__ == "__main__":
    # Run as the imported module, not as __main__: what the worker pickles (its classes) must
    # be found under imgopt.workerproc in the server.
    from imgopt.workerproc import worker_main as _main

    _main(int(sys.argv[1]), int(sys.argv[2]))
