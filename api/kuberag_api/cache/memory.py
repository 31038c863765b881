"""L1: an in-process LRU with a TTL, both resizable while running.

(cachetools' TTLCache fixes maxsize and ttl at construction and Litestar's MemoryStore has no
size bound; the live config changes both, so this is a small OrderedDict of our own.)
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class MemoryCache(Generic[V]):
    def __init__(self, max_entries: int, ttl_seconds: float, clock=time.monotonic) -> None:
        self._data: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def get(self, key: str) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < self._clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def set(self, key: str, value: V) -> None:
        if self.max_entries <= 0:
            return
        self._data[key] = (self._clock() + self.ttl_seconds, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def resize(self, max_entries: int, ttl_seconds: float) -> None:
        """Apply new live limits; entries already stored keep their expiry time."""
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        while len(self._data) > max(0, max_entries):
            self._data.popitem(last=False)

    def clear(self) -> int:
        n = len(self._data)
        self._data.clear()
        return n

    def __len__(self) -> int:
        return len(self._data)
