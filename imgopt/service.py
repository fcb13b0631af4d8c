"""The request's path from a validated request to a cache entry: cache → fetch → transform → cache.

``ImageService.get`` answers with an entry and how it was found (HIT, MISS or STALE). A miss
is worked on once however many requests want it (single flight); a stale entry is served at
once while one background refresh runs, and a failed refresh leaves the stale entry in place.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import extensions, imagetypes, logs, malloc, metrics
from .cache import Entry, cache_key, get_max_age
from .config import Settings
from .errors import ImageError
from .fetch import Original, b64url
from .jobargs import PLACEHOLDER, TRANSFORM
from .params import ImageRequest
from .pool import DEADLINE, MEMO, SingleFlight, WorkerPool
from .sources import Fetcher
from .stores import open_store
from .stores.memory import MemoryTier
from .workers import ProcessPool, SharedMemo, WorkerCrashed

if TYPE_CHECKING:
    from .transform import ResizedMemo

log = logging.getLogger("imgopt")

CRASHED = "The image worker crashed while processing this image"
# How long, and for how many originals, a crash is remembered (answered at once with 500).
CRASH_MEMORY_SECONDS = 300.0
CRASH_MEMORY_ENTRIES = 1024
CRASH_STRIKES = 2  # crashes of one original before it is refused without a worker

# Seconds between the first STALE answer for a key and the start of its background refresh.
REFRESH_DELAY = 0.15
# --fast-first: how often a deferred AVIF looks for a moment when no other image work waits.
IDLE_POLL = 0.05
# --fast-first: AVIFs waiting for a lull at most. Under sustained load they wait for as long as
# it lasts, so each new cold variant would add one for good; past this many a cold AVIF request
# is still answered with the WebP, and a later request for it defers its AVIF once there is room.
DEFERRED_MAX = 1024


@dataclass(frozen=True)
class Served:
    entry: Entry
    state: str  # 'HIT' | 'MISS' | 'STALE'
    max_age: int | None = None  # overrides the entry's (and the immutable) Cache-Control max-age


def quoted(tag: str) -> str:
    return f'"{tag}"'


class ImageService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: WorkerPool | ProcessPool
        self.resized: ResizedMemo | SharedMemo
        if settings.isolation == "thread":
            from . import transform  # libvips in this process only for the threads' sake

            transform.configure_libvips(settings.workers)
            self.resized = transform.ResizedMemo(settings.resized_cache_size)
            self.pool = WorkerPool(settings.workers, settings.queue_limit, on_idle=malloc.idle_trimmer(),
                                   memo=self.resized, observe=metrics.observe_transform)
        else:
            self.pool = ProcessPool(
                settings.workers, settings.queue_limit, max_jobs=settings.worker_max_jobs,
                max_rss=settings.worker_max_rss, memo_bytes=settings.resized_cache_size,
                trim=malloc.idle_trimmer() is not None, observe=metrics.observe_transform,
                log=logs.current(),
                libvips_threads=imagetypes.libvips_threads(settings.workers),
            )
            self.resized = self.pool.memo
        self.fetcher = Fetcher(settings)
        # The store (disk, Redis or a bucket, or a local tier in front of one) and who produces a
        # missing entry (here, or a replica).
        self.store, self.coordinator = open_store(settings)
        # The hot tier is part of the cache: no cache (size 0) means none in memory either.
        no_cache = settings.cache == "disk" and settings.cache_size == 0
        self.memory = MemoryTier(0 if no_cache else settings.memory_cache_size)
        self._flights: SingleFlight[Entry] = SingleFlight()
        # --fast-first: AVIFs to make with spare capacity, one at a time. Without a cache there
        # is nowhere to keep them for the next request, so the flag does nothing.
        self.fast_first = settings.fast_first and not no_cache
        if settings.fast_first and no_cache:
            log.warning("--fast-first does nothing with --cache-size 0: no AVIF made later could be kept")
        self._deferred: dict[str, asyncio.Task[None]] = {}
        self._background = asyncio.Semaphore(1)
        # Originals that crashed a worker: asked for again soon, they get the same 500 at once
        # instead of taking down (and restarting) another worker each time.
        # original -> (crashes, until when they are remembered)
        self._crashed: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()

    async def aclose(self) -> None:
        # The server has already given requests their drain time: what is still in flight now
        # (a refresh nobody waits for, the fetch of a request that was cancelled) gets a moment
        # to finish and is then cancelled, so shutdown never waits for a slow origin.
        for task in list(self._deferred.values()):
            task.cancel()
        await self._flights.drain(timeout=1.0)
        await self.fetcher.aclose()
        self.pool.shutdown()
        self.store.close()

    async def get(self, req: ImageRequest) -> Served:
        key = cache_key(req.href, req.width, req.quality, req.cache_mime)
        entry = self.memory.get(key)
        if entry is None or entry.is_stale():
            entry = await asyncio.to_thread(self.store.get, key) or entry
            if entry is not None:
                self.memory.put(key, entry)
        if entry is not None and not entry.is_stale():
            return Served(entry, "HIT")
        if entry is not None:
            if key not in self._flights:
                refresh = self._flights.run(key, lambda: self._refresh(req, key, entry))
                refresh.add_done_callback(_quiet)
            return Served(entry, "STALE")
        if self.fast_first and req.fast_mime and not req.placeholder:
            return await self._fast_first(req, key)
        fresh = await self._flights.run(key, lambda: self.coordinator.run(key, None, lambda: self._produce(req, key, None)))
        return Served(fresh, "MISS")

    async def _fast_first(self, req: ImageRequest, key: str) -> Served:
        """No AVIF of this variant yet: this request is answered with the WebP variant (from the
        cache, or made now) with a short max-age, so that browsers and CDNs ask again soon, and
        the AVIF (the slowest encode by far) is made in the background with spare capacity."""
        if key not in self._flights and key not in self._deferred and len(self._deferred) < DEFERRED_MAX:
            task = asyncio.ensure_future(self._avif_when_idle(req, key))
            self._deferred[key] = task
            task.add_done_callback(functools.partial(self._undefer, key))
        fast = await self.get(dataclasses.replace(req, mime=req.fast_mime, fast_mime=""))
        if fast.entry.mime != req.fast_mime:
            # Not transcoded (an animation or a type passed through, or the original served as
            # a fallback): the AVIF request gets these same bytes, so they are not a stand-in.
            return Served(fast.entry, "MISS")
        # never kept longer than the image itself may be (a short upstream max-age)
        return Served(fast.entry, "MISS", max_age=min(self.settings.fast_first_max_age, fast.entry.max_age))

    async def _avif_when_idle(self, req: ImageRequest, key: str) -> None:
        """Make a deferred AVIF with spare capacity, one at a time, once no other image work is
        admitted; under sustained load it waits for a lull. With worker processes it runs in a
        process of its own at the lowest CPU priority, so work that arrives meanwhile has every
        worker and takes the CPU back from it at once; with threads it takes a worker."""
        background = isinstance(self.pool, ProcessPool)
        async with self._background:
            while self.pool.admitted > 0:
                await asyncio.sleep(IDLE_POLL)
            if key in self._flights:
                return  # an AVIF request is making it
            if self.memory.get(key) is not None or await asyncio.to_thread(self.store.get, key) is not None:
                return
            try:
                await self._flights.run(key, lambda: self.coordinator.run(
                    key, None, lambda: self._produce(req, key, None, background=background)))
            except Exception as e:  # noqa: BLE001 - a background refinement: the WebP was served
                log.warning("deferred AVIF for %s failed: %s", req.href, e)

    def _undefer(self, key: str, _task: asyncio.Task[None]) -> None:
        self._deferred.pop(key, None)

    async def _refresh(self, req: ImageRequest, key: str, stale: Entry) -> Entry:
        """The background refresh of a stale entry, started after REFRESH_DELAY.

        Until it lands every request for the key is answered at once from the stale entry
        (STALE). The short wait makes a burst on an expired entry one window: Next's batcher
        answers all requests that arrive while its revalidation runs with STALE, and
        imgopt's refresh of a small image can finish in a few milliseconds, before the second
        request of a parallel pair is read. It also keeps the refresh off the burst's CPU.
        """
        await asyncio.sleep(REFRESH_DELAY)
        return await self.coordinator.run(key, stale, lambda: self._produce(req, key, stale))

    async def _produce(self, req: ImageRequest, key: str, previous: Entry | None, background: bool = False) -> Entry:
        """Fetch, transform and store one variant. ``background``: in the process pool's
        background worker, without a place in the queue (the caller runs one at a time)."""
        s = self.settings
        cfg = s.images
        admitted = contextlib.nullcontext() if background else self.pool.admit()
        async with admitted:
            original = await metrics.tracked_fetch(self.fetcher.fetch(req), metrics.fetch_source(req.remote is not None, s.local_root))
            max_age = max(cfg.minimum_cache_ttl, get_max_age(original.cache_control))
            upstream_tag = quoted(original.etag)
            if previous is not None and previous.upstream_etag == original.etag and previous.etag != upstream_tag:
                # Upstream unchanged: keep the optimised bytes, take the new TTL (as Next does).
                entry = Entry(previous.body, previous.mime, previous.etag, original.etag, max_age,
                              time.time() + max_age)
            else:
                try:
                    # The deadline (and the pool's backstop) start when a worker
                    # picks the job up, so time spent queued is not taken from the transform.
                    fingerprint = _fingerprint(req, original)
                    source_id = _source_id(req, original)
                    if self._crashed_recently(fingerprint):
                        raise ImageError(500, CRASHED)
                    step = PLACEHOLDER if req.placeholder else TRANSFORM
                    run = self.pool.run_background if background else self.pool.run  # type: ignore[union-attr]
                    result = await run(
                        step, original.body, req.mime, cfg.dangerously_allow_svg,
                        req.width, req.quality, s.max_input_pixels, DEADLINE,
                        extensions.for_request(cfg, req), MEMO, source_id,
                        timeout=s.transform_timeout, key=None if source_id is None else (source_id, req.width),
                    )
                except (imagetypes.TransformTimeout, TimeoutError):
                    raise ImageError(504, "The image transform timed out") from None
                except WorkerCrashed as e:
                    log.error("the image worker crashed while processing %s (%s)", req.href, e)
                    self._remember_crash(fingerprint)
                    raise ImageError(500, CRASHED) from None
                if result.kind == "optimized":
                    etag = quoted(b64url(hashlib.sha256(result.body).digest()))
                else:
                    etag = upstream_tag
                    if result.kind == "fallback":
                        max_age = cfg.minimum_cache_ttl
                        log.warning("could not optimize %s; serving the original bytes", req.href)
                entry = Entry(result.body, result.mime, etag, original.etag, max_age, time.time() + max_age)
        self.memory.put(key, entry)
        try:
            await asyncio.to_thread(self.store.set, key, entry)
        except Exception as e:  # a full or broken cache must not fail the request
            log.error("cache write failed for %s: %s", req.href, e)
        return entry

    def _remember_crash(self, fingerprint: str) -> None:
        # One crash may not be the image's fault (a worker killed from outside, the OOM killer
        # under pressure from elsewhere): a second one in the window is.
        strikes = self._crashed.get(fingerprint, (0, 0.0))[0] + 1
        self._crashed[fingerprint] = (strikes, time.monotonic() + CRASH_MEMORY_SECONDS)
        self._crashed.move_to_end(fingerprint)
        while len(self._crashed) > CRASH_MEMORY_ENTRIES:
            self._crashed.popitem(last=False)

    def _crashed_recently(self, fingerprint: str) -> bool:
        """Whether this original crashed a worker twice within CRASH_MEMORY_SECONDS: then it is
        answered with the same 500 without reaching a worker again."""
        seen = self._crashed.get(fingerprint)
        if seen is None:
            return False
        strikes, until = seen
        if until < time.monotonic():
            del self._crashed[fingerprint]
            return False
        return strikes >= CRASH_STRIKES


def _fingerprint(req: ImageRequest, original: Original) -> str:
    """Names these original bytes: the url, the length and the upstream's ETag (or the content
    hash). It keys the crash memory, and (with a strong ETag only) the resize shared among
    formats."""
    return f"{req.href}\x00{len(original.body)}\x00{original.etag}"


def _source_id(req: ImageRequest, original: Original) -> str | None:
    """The fingerprint as the id of a resize the formats may share: None for a weak ETag,
    which does not promise the same bytes."""
    return None if original.weak_etag else _fingerprint(req, original)


def _quiet(fut: asyncio.Future[Entry]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("background refresh failed: %s", fut.exception())
