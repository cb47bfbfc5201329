"""A decoder key/value cache for a changing batch: rows join and leave between decoding steps.

transformers' ``DynamicCache`` concatenates on every step, copying the whole cache for each new
token; with image prompts of ~2000 tokens that copy costs as much memory traffic as reading the
weights. Here each layer keeps a preallocated buffer that grows geometrically, ``update`` writes in
place and returns views, and the batch can be re-formed: :meth:`BatchKVCache.merge` appends rows
(left-padding the shorter side, so every row's newest token sits at the same position) and
:meth:`BatchKVCache.keep_rows` drops finished ones.

The cache implements transformers' ``Cache`` interface, so the transformers decoders use it as is.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

__all__ = ["BatchKVCache", "GrowingLayer"]

_GROWTH = 1.5
_MIN_CAPACITY = 64


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """One layer's keys and values in a buffer ``[batch, heads, capacity, head_dim]``.

    ``keys`` and ``values`` are views of the used part, as transformers expects. With
    ``dtype``, the buffers hold that dtype whatever the model writes (float32 keys and values for
    a bfloat16 model whose attention runs in float32).
    """

    def __init__(self, dtype: torch.dtype | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.storage_dtype = dtype
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate for the first update."""
        self.dtype, self.device = self.storage_dtype or key_states.dtype, key_states.device
        self._allocate(key_states, value_states, max(_MIN_CAPACITY, key_states.shape[-2]))
        self.is_initialized = True

    def _allocate(self, key_like: torch.Tensor, value_like: torch.Tensor, capacity: int) -> None:
        b, h, _, d = key_like.shape
        dtype = self.storage_dtype or key_like.dtype
        keys = key_like.new_empty((b, h, capacity, d), dtype=dtype)
        values = value_like.new_empty(
            (b, value_like.shape[1], capacity, value_like.shape[-1]), dtype=dtype
        )
        if self._key_buffer is not None and self._value_buffer is not None and self.length:
            keys[:, :, : self.length] = self._key_buffer[:, :, : self.length]
            values[:, :, : self.length] = self._value_buffer[:, :, : self.length]
        self._key_buffer, self._value_buffer = keys, values
        self._refresh_views()

    def _refresh_views(self) -> None:
        assert self._key_buffer is not None
        assert self._value_buffer is not None
        self.keys = self._key_buffer[:, :, : self.length]
        self.values = self._value_buffer[:, :, : self.length]

    @property
    def capacity(self) -> int:
        """Positions the buffer holds before it must grow."""
        return 0 if self._key_buffer is None else self._key_buffer.shape[-2]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new positions and return all keys and values (views)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self.length + new > self.capacity:
            self._allocate(key_states, value_states, int((self.length + new) * _GROWTH) + 1)
        assert self._key_buffer is not None
        assert self._value_buffer is not None
        self._key_buffer[:, :, self.length : self.length + new] = key_states
        self._value_buffer[:, :, self.length : self.length + new] = value_states
        self.length += new
        self._refresh_views()
        assert self.keys is not None
        assert self.values is not None
        return self.keys, self.values

    def get_seq_length(self) -> int:
        """Cached positions (padding included)."""
        return self.length

    def reset(self) -> None:
        """Forget everything."""
        self._key_buffer = self._value_buffer = None
        self.length = 0
        self.keys = self.values = None
        self.is_initialized = False

    def set_state(self, keys: torch.Tensor, values: torch.Tensor, extra: int = 0) -> None:
        """Replace the contents with ``keys``/``values`` ``[batch, heads, length, dim]``."""
        self.dtype, self.device = self.storage_dtype or keys.dtype, keys.device
        self._key_buffer = self._value_buffer = None
        self.length = 0
        self._allocate(keys, values, max(_MIN_CAPACITY, keys.shape[-2] + extra))
        assert self._key_buffer is not None
        assert self._value_buffer is not None
        self._key_buffer[:, :, : keys.shape[-2]] = keys
        self._value_buffer[:, :, : values.shape[-2]] = values
        self.length = keys.shape[-2]
        self.is_initialized = True
        self._refresh_views()


class BatchKVCache(Cache):
    """Key/value cache for a batch whose membership changes between steps.

    Attributes:
        attention_mask: ``[batch, length]`` long tensor, 0 on left padding, kept in step with
            the cached positions; callers append 1s for the positions they add.
        dtype: The dtype keys and values are stored in (``None``: the model's).
    """

    def __init__(self, num_layers: int, *, dtype: torch.dtype | None = None) -> None:
        super().__init__(layers=[GrowingLayer(dtype) for _ in range(num_layers)])
        self.dtype = dtype
        self.attention_mask: torch.Tensor | None = None

    @property
    def growing_layers(self) -> list[GrowingLayer]:
        """The layers, typed."""
        return [layer for layer in self.layers if isinstance(layer, GrowingLayer)]

    @property
    def batch_size(self) -> int:
        """Rows in the cache."""
        return 0 if self.attention_mask is None else int(self.attention_mask.shape[0])

    @property
    def length(self) -> int:
        """Cached positions per row, padding included."""
        return self.growing_layers[0].length if self.layers else 0

    def nbytes(self) -> int:
        """Bytes of the used part of the cache."""
        total = 0
        for layer in self.growing_layers:
            if layer.keys is not None and layer.values is not None:
                total += layer.keys.numel() * layer.keys.element_size() * 2
        return total

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order); trims padding every remaining row shares."""
        if self.attention_mask is None:
            return
        if not rows:
            for layer in self.growing_layers:
                layer.reset()
            self.attention_mask = None
            return
        index = torch.tensor(rows, device=self.attention_mask.device)
        mask = self.attention_mask.index_select(0, index)
        # Columns that are padding for every remaining row can go.
        real = mask.any(dim=0).nonzero()
        start = int(real[0]) if real.numel() else mask.shape[1]
        self.attention_mask = mask[:, start:].contiguous()
        for layer in self.growing_layers:
            if layer.keys is None or layer.values is None:
                continue
            layer.set_state(
                layer.keys.index_select(0, index)[:, :, start:],
                layer.values.index_select(0, index)[:, :, start:],
                extra=32,
            )

    def merge(self, other: BatchKVCache) -> None:
        """Append ``other``'s rows after this cache's rows (left-padding to a common length)."""
        if other.attention_mask is None:
            return
        if self.attention_mask is None:
            self.attention_mask = other.attention_mask.clone()
            for mine, theirs in zip(self.growing_layers, other.growing_layers, strict=True):
                assert theirs.keys is not None
                assert theirs.values is not None
                mine.set_state(theirs.keys, theirs.values, extra=32)
            return
        length = max(self.length, other.length)
        self.attention_mask = torch.cat(
            [_pad_left(self.attention_mask, length), _pad_left(other.attention_mask, length)]
        )
        for mine, theirs in zip(self.growing_layers, other.growing_layers, strict=True):
            assert mine.keys is not None
            assert mine.values is not None
            assert theirs.keys is not None
            assert theirs.values is not None
            keys = torch.cat([_pad_left(mine.keys, length, -2), _pad_left(theirs.keys, length, -2)])
            values = torch.cat(
                [_pad_left(mine.values, length, -2), _pad_left(theirs.values, length, -2)]
            )
            mine.set_state(keys, values, extra=32)

    def copy_rows(self) -> BatchKVCache:
        """A copy of the cache (used to keep a reusable prefix)."""
        clone = BatchKVCache(len(self.layers), dtype=self.dtype)
        if self.attention_mask is None:
            return clone
        clone.attention_mask = self.attention_mask.clone()
        for mine, theirs in zip(clone.growing_layers, self.growing_layers, strict=True):
            assert theirs.keys is not None
            assert theirs.values is not None
            mine.set_state(theirs.keys.clone(), theirs.values.clone())
        return clone


def _pad_left(tensor: torch.Tensor, length: int, dim: int = -1) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
