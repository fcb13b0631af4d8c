"""libvips messages, bounded: never one log line per warning.

libvips reports problems in a file through GLib logging, one message each time: a PNG made of
500,000 empty ``tEXt`` chunks gives ~2.5 M "tEXt: too short" warnings (the header is read more
than once). pyvips sends every one through Python logging, which costs ~6 us each even when
nothing is printed (15 s of CPU for that file) and, at the default level, writes them all.

Here messages are counted per job (``job()`` around a transform; overlapping jobs on threads
share one window): the first ``LINES_PER_JOB`` are logged, and a job that had more logs one
summary line with the count and the first message. After ``QUIET_AFTER`` warnings in a window,
warnings are handed to libvips's own no-op handler (set up by ``VIPS_WARNING`` when libvips
starts), so the rest of the flood costs no Python at all (that file: 0.4 s of CPU instead of
15 s); they are then no longer counted. libvips's info and debug chatter (e.g. "threadpool ...")
is logged at DEBUG only.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator

# libvips installs a no-op handler for its warnings at start-up when VIPS_WARNING is set; the
# handler below sits in front of it until a window has had too many. It must be set before
# libvips starts (the first import of pyvips).
_NOOP_AVAILABLE = "VIPS_WARNING" in os.environ or "pyvips" not in sys.modules
os.environ.setdefault("VIPS_WARNING", "1")

import pyvips  # noqa: E402

log = logging.getLogger("pyvips")

LINES_PER_JOB = 3  # messages logged as they come, per window
QUIET_AFTER = 100  # warnings in one window after which they are no longer seen from Python
WINDOW_SECONDS = 30.0  # overlapping jobs (threads) start a new window at most this often

_FATAL, _RECURSION = 1 << 1, 1 << 0
_ERROR, _CRITICAL, _WARNING, _MESSAGE, _INFO, _DEBUG = (1 << i for i in range(2, 8))
_FLAGS = _FATAL | _RECURSION
_TO_LOGGING = {_ERROR: logging.ERROR, _CRITICAL: logging.CRITICAL, _WARNING: logging.WARNING,
               _MESSAGE: logging.DEBUG, _INFO: logging.DEBUG, _DEBUG: logging.DEBUG}


class _Window:
    def __init__(self) -> None:
        self.count = 0
        self.first = ""
        self.quiet = False  # warnings go to libvips's no-op handler
        self.started = time.monotonic()
        self.active = 0  # jobs in this window now


_lock = threading.Lock()
_w = _Window()
_domain = b"VIPS"
_ids: dict[str, int] = {}


def _text(domain: object, message: object) -> str:
    ffi = pyvips.ffi
    d = ffi.string(domain).decode("utf-8", "replace") if domain != ffi.NULL else ""
    m = ffi.string(message).decode("utf-8", "replace") if message != ffi.NULL else ""
    return f"{d}: {m}"[:500]


def _on_message(domain: object, level: int, message: object, _data: object) -> None:
    try:
        lvl = _TO_LOGGING.get(level & ~_FLAGS, logging.WARNING)
        if lvl < logging.WARNING:
            if log.isEnabledFor(lvl):
                log.log(lvl, _text(domain, message))
            return
        with _lock:
            _w.count += 1
            n = _w.count
            if n == 1:
                _w.first = _text(domain, message)
            if n >= QUIET_AFTER and not _w.quiet and _NOOP_AVAILABLE:
                _w.quiet = True
                _remove("warnings")
        if n <= LINES_PER_JOB:
            log.log(lvl, _text(domain, message))
    except Exception:  # noqa: BLE001 - never raise into libvips
        pass


_callback = pyvips.ffi.callback("GLogFunc", _on_message)


def _remove(name: str) -> None:
    handler_id = _ids.pop(name, None)
    if handler_id:
        pyvips.glib_lib.g_log_remove_handler(_domain, handler_id)


def _add(name: str, levels: int) -> None:
    _ids[name] = pyvips.glib_lib.g_log_set_handler(_domain, levels | _FLAGS, _callback, pyvips.ffi.NULL)


def install() -> None:
    """Put the bounded handler in place of pyvips's (which logs every message). Idempotent."""
    with _lock:
        if _ids:
            return
        pyvips._remove_log_handler()
        _add("others", _ERROR | _CRITICAL | _MESSAGE | _INFO | _DEBUG)
        _add("warnings", _WARNING)
    atexit.register(_uninstall)


def _uninstall() -> None:
    with _lock:
        _remove("warnings")
        _remove("others")


def _close_window() -> tuple[int, str, bool]:
    """With _lock held: the window's count, first message and quiet flag; a new window."""
    global _w
    done = (_w.count, _w.first, _w.quiet)
    active = _w.active
    if _w.quiet and "others" in _ids and "warnings" not in _ids:
        _add("warnings", _WARNING)  # the next window sees warnings again
    _w = _Window()
    _w.active = active
    return done


def _summarise(done: tuple[int, str, bool]) -> None:
    count, first, quiet = done
    if count > LINES_PER_JOB:
        more = "+" if quiet else ""
        log.warning("libvips: %d%s messages while processing an image, %d logged; the first: %s",
                    count, more, LINES_PER_JOB, first)


@contextlib.contextmanager
def job() -> Iterator[None]:
    """Around one transform: its libvips messages are bounded and summed up at the end."""
    done = None
    with _lock:
        if _w.active == 0 or time.monotonic() - _w.started > WINDOW_SECONDS:
            done = _close_window()
        _w.active += 1
    if done is not None:
        _summarise(done)
    try:
        yield
    finally:
        done = None
        with _lock:
            _w.active -= 1
            if _w.active == 0:
                done = _close_window()
        if done is not None:
            _summarise(done)


install()
