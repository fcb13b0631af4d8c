"""A least-recently-used map bounded by the total size of its values in bytes.

Shared by the in-memory cache tier (encoded responses, imgopt/stores/memory.py) and the memos of
resized pixels (imgopt/transform.py for threads, imgopt/workers.py for worker processes): each
gives the size of a value and the share of the budget one value may take at most (larger values
are not kept, so one cannot crowd out the rest), and may bound the number of values and act on
a value that leaves (``dropped``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BytesLRU(Generic[K, V]):
    max_share = 8  # one value may take at most max_bytes // max_share
    max_entries: int | None = None  # at most this many values (None: only the bytes bound)

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def size_of(self, value: V) -> int:
        raise NotImplementedError

    def dropped(self, value: V) -> None:
        """A value left the map (evicted, replaced, discarded, or never kept for its size)."""

    def fits(self, value: V) -> bool:
        return self.size_of(value) <= self.max_bytes // self.max_share

    def get(self, key: K) -> V | None:
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` as the most recent (replacing ``key``'s old value); too large: drop both."""
        self.discard(key)
        size = self.size_of(value)
        if size > self.max_bytes // self.max_share:
            self.dropped(value)
            return
        self._items[key] = (value, size)
        self.bytes += size
        while self._items and (self.bytes > self.max_bytes
                               or (self.max_entries is not None and len(self._items) > self.max_entries)):
            _key, (old, n) = self._items.popitem(last=False)
            self.bytes -= n
            self.dropped(old)

    def discard(self, key: K) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
            self.dropped(old[0])

    def clear(self) -> None:
        while self._items:
            self.discard(next(iter(self._items)))
