"""A thread-safe LRU mapping weighed in bytes: the plugin's caches stay bounded."""

from __future__ import annotations

import collections
import threading
from typing import Any


class ByteBoundedLru:
    """Keeps the most recently used entries whose sizes add up to `max_bytes`.

    An entry larger than the whole budget is kept alone until the next `put`.
    """

    def __init__(self, max_bytes: int):
        self._max_bytes = max_bytes
        self._entries: collections.OrderedDict[Any, tuple[Any, int]] = (
            collections.OrderedDict()
        )
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Any, value: Any, size: int) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self._max_bytes and len(self._entries) > 1:
                _, (_, evicted_size) = self._entries.popitem(last=False)
                self._bytes -= evicted_size

    def held_bytes(self) -> int:
        """The sizes of the entries held now, added up."""
        with self._lock:
            return self._bytes
