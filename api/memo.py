"""A small in-process memo: values by key, each for `ttl_s` (None: until pushed out), at most `size` of them
(the oldest go first). What this API process may keep of things that change rarely or never: image rows (never
change once stored) and the weight revisions ready workers advertise (a heartbeat's interval is seconds)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    def __init__(self, *, ttl_s: float | None, size: int) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if self.ttl_s is not None and item[0] < time.monotonic():
            self._items.pop(key, None)
            return None
        return item[1]

    def put(self, key: K, value: V) -> V:
        self._items[key] = (time.monotonic() + (self.ttl_s or 0.0), value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value
