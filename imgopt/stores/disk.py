"""The embedded disk cache (diskcache over sqlite), LRU-bounded, and healing itself.

A damaged database is moved aside (``cache.db.damaged-<time>``, the last few kept) and
replaced; a read-only or full cache dir degrades the store (reads and writes skipped, so
responses are kept in the memory tier only; ``/healthz`` says why) and one write every few
seconds tries the disk again.
"""

from __future__ import annotations

import errno
import logging
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import diskcache

from .. import metrics
from ..cache import Entry, decode_entry, encode_entry

log = logging.getLogger("imgopt")

_DAMAGE_WORDS = ("malformed", "not a database", "file is encrypted", "corrupt")
_RETRY_SECONDS = 5.0  # while degraded, one write in this interval tries the disk again
_KEEP_DAMAGED = 3  # damaged databases kept for inspection; older ones are removed


def is_damage(e: BaseException) -> bool:
    """A database that sqlite cannot read as one (as opposed to a disk that cannot be written)."""
    text = str(e).lower()
    if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
        return True
    return isinstance(e, sqlite3.DatabaseError) and any(w in text for w in _DAMAGE_WORDS)


def degraded_reason(e: BaseException) -> str:
    """Why the disk cache cannot be used, in a few words for /healthz and the log."""
    text = str(e).lower()
    code = getattr(e, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "full" in text:
        return "cache disk full"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in text or "read-only" in text:
        return "cache dir read-only"
    if "unable to open" in text:
        return "cache dir not writable"
    return f"cache store error: {type(e).__name__}: {e}"[:200]


class DiskStore:
    """diskcache-backed store: survives restarts, bounded by size with LRU eviction.

    It never raises and never stops the service:

    * a database sqlite cannot read (truncated, header overwritten, not a database) is moved
      aside as ``cache.db.damaged-<time>`` (the last few are kept for inspection), its
      unreachable value files are removed, and a new database is created: an error log line
      and ``imgopt_cache_db_damaged_total``. At start-up and whenever an operation meets it.
    * a cache dir that cannot be written (read-only, full, not creatable) makes the store
      *degraded*: reads and writes are skipped (responses are then kept in the memory tier
      only), ``degraded`` holds the reason (shown by /healthz), ``imgopt_cache_degraded`` is 1.
      One write every few seconds tries the disk again; the first that succeeds ends it.
    """

    def __init__(self, directory: Path, size_limit: int) -> None:
        self.directory = directory
        self.size_limit = size_limit
        self.degraded: str | None = None
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._cache: diskcache.Cache | None = None
        metrics.CACHE_DEGRADED.labels("disk").set(0)
        with self._lock:
            self._open()

    # -- opening and healing (under self._lock) ------------------------------------------------

    def _connect(self) -> diskcache.Cache:
        self.directory.mkdir(parents=True, exist_ok=True)
        cache = diskcache.Cache(
            str(self.directory),
            size_limit=self.size_limit,
            eviction_policy="least-recently-used",
            cull_limit=16,
            statistics=False,
            timeout=5,
        )
        try:
            # Cheap reads that fail on a truncated or overwritten file: the key index and the
            # right edge of the table (the pages a truncation removes first).
            cache._sql("SELECT COUNT(*) FROM Cache").fetchone()
            cache._sql("SELECT MAX(rowid) FROM Cache").fetchone()
        except BaseException:
            cache.close()
            raise
        return cache

    def _open(self) -> None:
        try:
            self._cache = self._connect()
        except Exception as e:
            if not is_damage(e):
                self._cache = None
                self._degrade(e)
                return
            self._heal(e)

    def _heal(self, e: BaseException) -> None:
        self._cache = None
        moved = self._move_aside()
        metrics.CACHE_DB_DAMAGED.labels("disk").inc()
        log.error("cache database %s is damaged (%s); moved aside as %s, starting a new one",
                  self.directory / "cache.db", e, moved.name if moved else "(could not move it)")
        try:
            self._cache = self._connect()
        except Exception as again:
            self._degrade(again)
            return
        self._recovered()

    def _move_aside(self) -> Path | None:
        db = self.directory / "cache.db"
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = db.with_name(f"cache.db.damaged-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = db.with_name(f"cache.db.damaged-{stamp}.{n}")
        try:
            db.rename(target)
        except OSError as e:
            log.error("could not move the damaged cache database aside: %s", e)
            try:
                db.unlink()
            except OSError:
                return None
            moved: Path | None = None
        else:
            moved = target
        for suffix in ("-wal", "-shm", "-journal"):
            side = db.with_name(db.name + suffix)
            try:
                if moved is not None:
                    side.rename(moved.with_name(moved.name + suffix))
                else:
                    side.unlink()
            except OSError:
                pass
        self._prune_damaged()
        self._drop_value_files()
        return moved

    def _prune_damaged(self) -> None:
        kept = sorted(self.directory.glob("cache.db.damaged-*[0-9]"), key=lambda p: p.stat().st_mtime)
        for old in kept[:-_KEEP_DAMAGED]:
            for f in [old, *(old.with_name(old.name + s) for s in ("-wal", "-shm", "-journal"))]:
                try:
                    f.unlink()
                except OSError:
                    pass

    def _drop_value_files(self) -> None:
        """The value files the damaged database pointed to can no longer be found: their folders
        are renamed out of the way at once and removed in the background."""
        trash = self.directory / f"trash-{time.time_ns()}"
        try:
            for d in self.directory.iterdir():
                if d.is_dir() and len(d.name) == 2 and all(c in "0123456789abcdef" for c in d.name):
                    trash.mkdir(exist_ok=True)
                    d.rename(trash / d.name)
        except OSError:
            pass
        for old in self.directory.glob("trash-*"):
            threading.Thread(target=shutil.rmtree, args=(old, True), daemon=True, name="imgopt-trash").start()

    def _degrade(self, e: BaseException) -> None:
        reason = degraded_reason(e)
        if reason == "cache dir not writable":  # sqlite does not say why: ask the filesystem
            try:
                with tempfile.TemporaryFile(dir=self.directory):
                    pass
            except OSError as probe:
                reason = degraded_reason(probe)
        self._retry_at = time.monotonic() + _RETRY_SECONDS
        if self.degraded != reason:
            log.error("disk cache degraded (%s: %s): responses are kept in memory only, retrying every %.0fs",
                      reason, e, _RETRY_SECONDS)
        self.degraded = reason
        metrics.CACHE_DEGRADED.labels("disk").set(1)

    def _recovered(self) -> None:
        if self.degraded is not None:
            log.warning("disk cache usable again (was: %s)", self.degraded)
        self.degraded = None
        metrics.CACHE_DEGRADED.labels("disk").set(0)

    def _failed(self, cache: diskcache.Cache, e: BaseException) -> None:
        metrics.CACHE_ERRORS.labels("disk", "error").inc()
        if isinstance(e, diskcache.Timeout):
            return  # the database was busy for a while: this operation is skipped, nothing more
        with self._lock:
            if cache is not self._cache:
                return  # already healed or reopened by another thread
            if is_damage(e):
                try:
                    if cache is not None:
                        cache.close()
                except Exception:
                    pass
                self._heal(e)
            else:
                self._degrade(e)

    def _usable(self, writing: bool) -> diskcache.Cache | None:
        """The cache to use now, or None: degraded stores only let one write through per interval."""
        if self.degraded is None and self._cache is not None:
            return self._cache
        if not writing or time.monotonic() < self._retry_at:
            return None
        with self._lock:
            if time.monotonic() < self._retry_at:
                return None
            self._retry_at = time.monotonic() + _RETRY_SECONDS
            if self._cache is None:
                self._open()
            return self._cache

    # -- Store ---------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        cache = self._usable(writing=False)
        if cache is None:
            return None
        try:
            raw = cache.get(key, default=None, retry=True)
        except Exception as e:  # a damaged store must not take the request down
            self._failed(cache, e)
            return None
        if raw is None:
            return None
        entry = decode_entry(key, raw) if isinstance(raw, bytes) else None
        if entry is None:
            metrics.CACHE_ERRORS.labels("disk", "corrupt").inc()
            self.delete(key)
        return entry

    def set(self, key: str, entry: Entry) -> None:
        cache = self._usable(writing=True)
        if cache is None:
            return
        try:
            cache.set(key, encode_entry(key, entry), retry=True)
        except Exception as e:
            self._failed(cache, e)
            return
        if self.degraded is not None:
            with self._lock:
                if cache is self._cache:
                    self._recovered()

    def delete(self, key: str) -> None:
        cache = self._usable(writing=False)
        if cache is None:
            return
        try:
            cache.delete(key, retry=True)
        except Exception:
            pass

    def volume(self) -> int:
        return self._cache.volume() if self._cache is not None else 0

    def close(self) -> None:
        with self._lock:
            if self._cache is not None:
                self._cache.close()
