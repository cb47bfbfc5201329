"""LRU caches of tensors bounded in bytes: image features, and the KV of image prefixes.

An agent asks several things about one image (read it, then a field, then a chart). The engine
keeps two things so that later questions skip work:

* the projected image features, keyed by the image's content hash, its tiling and the model
  revision (see :meth:`~mississippi_tools.models.base.VLMBackend.prepare`): no vision encoder;
* the decoder's keys and values for the prompt prefix that ends after the last image, keyed by
  those images and the tokens before them: no prefill of the ~256 tokens per tile either.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import torch

    #: A tensor, or a tuple of tensors (a prefix's keys and values, layer after layer).
    CachedValue: TypeAlias = torch.Tensor | tuple[torch.Tensor, ...]

__all__ = ["CacheStats", "TensorCache"]


def nbytes(value: CachedValue) -> int:
    """Bytes held by a cached value."""
    tensors = value if isinstance(value, tuple) else (value,)
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of the cache's counters."""

    hits: int
    misses: int
    entries: int
    bytes: int
    max_bytes: int
    evictions: int


class TensorCache:
    """Keeps tensors (or tuples of tensors) by key; least recently used go beyond ``max_bytes``.

    A value larger than the whole budget is not stored. ``max_bytes=0`` disables the cache.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._items: OrderedDict[str, CachedValue] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> CachedValue | None:
        """The value for ``key`` (now most recently used), or ``None``."""
        with self._lock:
            tensor = self._items.get(key)
            if tensor is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return tensor

    def put(self, key: str, value: CachedValue) -> None:
        """Store ``value``, evicting old entries to stay within budget."""
        size = nbytes(value)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= nbytes(old)
            while self._items and self._bytes + size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= nbytes(evicted)
                self._evictions += 1
            self._items[key] = value
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
