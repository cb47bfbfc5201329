"""A dynamic int8 linear layer over PyTorch's quantized CPU kernels, packed once.

:class:`Int8Linear` holds a weight rounded to int8 per output channel and packed for the CPU's
int8 kernel (``torch.ops.quantized.linear_prepack``); each call quantizes its input with one
scale and computes ``torch.ops.quantized.linear_dynamic``: int8 products, int32 accumulation,
float32 out. It imports torch, so it is imported only when a model loads with int8.

These are the kernels behind ``torch.ao.nn.quantized.dynamic.Linear``; this module
exists because that class packs an empty weight of the full shape in its constructor and packs
again when the real weight arrives, which tripled the 800M model's int8 load time (packing is
most of it: ~27 ms a ``[4096, 1536]`` layer with FBGEMM).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

__all__ = ["Int8Linear", "as_quantized", "pack_weight", "quantize_weight", "round_per_channel"]


def round_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` rounded to int8 per output channel: PyTorch's symmetric per-channel rule.

    Each row's scale is its largest magnitude over 127.5 (never below float32's epsilon), zero
    point 0, values clamped to [-128, 127], as ``torch.ao``'s per-channel weight observer gives.
    Returns the int8 values and the float64 scales; plain tensors, so any thread may compute
    them (see :func:`as_quantized`).
    """
    low, high = torch.aminmax(weight.detach(), dim=1)
    largest = torch.maximum(low.float().neg_(), high.float())
    scales = (largest / 127.5).clamp_min_(torch.finfo(torch.float32).eps)
    values = weight.detach().to(torch.float32, copy=True).div_(scales[:, None])
    values = values.round_().clamp_(-128, 127)
    return values.to(torch.int8), scales.double()


def as_quantized(values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The ``torch.qint8`` per-channel tensor (zero points 0) the packing kernel takes.

    torch 2.10+ marks quantized tensor types deprecated in favour of torchao (the packing
    kernel still takes them, and torchao's CPU int8 paths lost here: see ``quantization.py``)
    and warns once per process when the first one is made; that warning is silenced with
    ``warnings.catch_warnings``, which swaps the process's filters and so must not run on two
    threads at once: call this from one thread only.
    """
    zero_points = torch.zeros(values.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._make_per_channel_quantized_tensor(values, scales, zero_points, 0)


def quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as a ``torch.qint8`` per-channel tensor (:func:`round_per_channel`)."""
    return as_quantized(*round_per_channel(weight))


def pack_weight(quantized: torch.Tensor, bias: torch.Tensor | None) -> Any:
    """Pack an int8 weight (and a float32 bias) for the engine in ``torch.backends.quantized``.

    Releases the GIL while it packs, so layers can be packed on several threads at once.
    """
    return torch.ops.quantized.linear_prepack(quantized, bias)


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with ``W`` in int8 (packed) and ``x`` quantized to uint8 per call.

    Args:
        packed: The packed weight and bias (:func:`pack_weight`).
        in_features: Columns of the weight.
        out_features: Rows of the weight.
        reduce_range: Quantize activations to 7 bits, as PyTorch's dynamic linear does on x86
            (keeps AVX2's 16-bit multiply-add from saturating).
    """

    def __init__(
        self, packed: Any, in_features: int, out_features: int, *, reduce_range: bool = True
    ) -> None:
        super().__init__()
        self.packed = packed
        self.in_features = in_features
        self.out_features = out_features
        self.reduce_range = reduce_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The product in int8, returned in ``x``'s dtype."""
        out: torch.Tensor = torch.ops.quantized.linear_dynamic(
            x.float(), self.packed, self.reduce_range
        )
        return out if out.dtype == x.dtype else out.to(x.dtype)

    def extra_repr(self) -> str:
        """The shape, as ``nn.Linear`` prints it, and the int8 mark."""
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"
