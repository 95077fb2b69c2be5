"""A least-recently-used map bounded in entries and in bytes: what the content caches in `memo.py` are made of."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A least-recently-used map bounded in entries and, given `size`, in the bytes its values hold.

    A value over `max_entry_bytes` is returned but not kept.
    """

    def __init__(
        self,
        max_entries: int,
        *,
        size: Callable[[V], int] | None = None,
        key_size: Callable[[K], int] | None = None,
        max_bytes: int = 0,
        max_entry_bytes: int = 0,
    ) -> None:
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._max_entries = max_entries
        self._size: Callable[[V], int] = size or _unsized
        self._key_size: Callable[[K], int] = key_size or _unsized
        self._max_bytes = max_bytes
        self._max_entry_bytes = max_entry_bytes
        self.bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: K, compute: Callable[[], V], keep: Callable[[V], bool] | None = None) -> V:
        """The value for `key`, computed on a miss and kept unless `keep` says otherwise.

        The bookkeeping runs under a lock (the large-body worker thread admits beside the event loop);
        `compute` runs outside it, so two threads may compute one key, and the second result is kept.
        """
        with self._lock:
            if key in self._entries:
                self.hits += 1
                self._entries.move_to_end(key)
                return self._entries[key]
            self.misses += 1
        value = compute()
        if keep is not None and not keep(value):
            return value
        size = self._size(value) + self._key_size(key)
        if size > self._max_entry_bytes:
            return value
        with self._lock:
            if key in self._entries:  # the other thread computed it meanwhile
                self.bytes -= self._size(self._entries.pop(key)) + self._key_size(key)
            self._entries[key] = value
            self.bytes += size
            while len(self._entries) > self._max_entries or self.bytes > self._max_bytes:
                evicted, old = self._entries.popitem(last=False)
                self.bytes -= self._size(old) + self._key_size(evicted)
        return value

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = self.bytes = 0


def _unsized(value: object) -> int:
    return 0
