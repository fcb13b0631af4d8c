"""A least-recently-used map bounded by the total size of its values in bytes.

Shared by the in-memory cache tier (encoded responses, imgopt/stores/memory.py) and the memo of resized
pixels (imgopt/transform.py): each gives the size of a value and the share of the budget one
value may take at most (larger values are not kept, so one cannot crowd out the rest).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BytesLRU(Generic[K, V]):
    max_share = 8  # one value may take at most max_bytes // max_share

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def size_of(self, value: V) -> int:
        raise NotImplementedError

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
            return
        self._items[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes and self._items:
            _key, (_value, n) = self._items.popitem(last=False)
            self.bytes -= n

    def discard(self, key: K) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
