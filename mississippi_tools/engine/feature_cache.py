"""An LRU cache of projected image features, bounded in bytes.

An agent asks several things about one image (read it, then a field, then a chart): the vision
encoder is the most expensive stage, so its output is kept, keyed by the image's content hash, its
tiling and the model revision (see :meth:`~mississippi_tools.models.base.VLMBackend.prepare`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["CacheStats", "FeatureCache"]


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of the cache's counters."""

    hits: int
    misses: int
    entries: int
    bytes: int
    max_bytes: int
    evictions: int


class FeatureCache:
    """Keeps tensors by key, evicting the least recently used beyond ``max_bytes``.

    A tensor larger than the whole budget is not stored. ``max_bytes=0`` disables the cache.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> torch.Tensor | None:
        """The tensor for ``key`` (now most recently used), or ``None``."""
        with self._lock:
            tensor = self._items.get(key)
            if tensor is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return tensor

    def put(self, key: str, tensor: torch.Tensor) -> None:
        """Store ``tensor``, evicting old entries to stay within budget."""
        size = tensor.numel() * tensor.element_size()
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.numel() * old.element_size()
            while self._items and self._bytes + size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.numel() * evicted.element_size()
                self._evictions += 1
            self._items[key] = tensor
            self._bytes += size

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        """Counters and size."""
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                entries=len(self._items),
                bytes=self._bytes,
                max_bytes=self.max_bytes,
                evictions=self._evictions,
            )
