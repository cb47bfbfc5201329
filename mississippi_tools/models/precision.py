"""bfloat16 weights on CPUs without bfloat16 arithmetic: large products computed in float32.

On CPUs without AVX512-BF16 or AMX (most AMD CPUs and older Intel ones), PyTorch's bfloat16
matrix products fall back to slow kernels: measured on a 2-core AMD EPYC (AVX2), a ``[1025, 1024]
x [1024, 4096]`` product ran at 20 GFLOP/s in bfloat16 against 159 in float32. Matrix-vector
products are the exception: reading half the bytes, bfloat16 decoding steps ran 1.5-2x faster
than float32 ones.

So bfloat16 weights are kept (half the memory; exact for checkpoints published in bfloat16), and
each linear layer picks its kernel by the number of rows it multiplies: few rows (decoding) use
the bfloat16 kernel, many rows (the vision encoder, prefill) convert the weight to float32 for the
call and compute in float32. The conversion costs about 1 ns per weight, a few percent of a
vision or prefill pass.

Attention is the other slow bfloat16 kernel: one decoding step's attention over 1,800 cached
positions took 3.4 ms per layer in bfloat16 and 0.44 ms in float32. So attention runs in float32
(:data:`FLOAT32_ATTENTION`, a transformers attention implementation) and the key/value cache is
kept in float32, which doubles its memory but spares converting it on every step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FLOAT32_ATTENTION",
    "UPCAST_MIN_ROWS",
    "UpcastConv2d",
    "UpcastLinear",
    "attention_in_float32",
    "compute_large_products_in_float32",
    "emulates_bfloat16",
    "register_float32_attention",
]

#: The name under which :func:`attention_in_float32` is registered with transformers.
FLOAT32_ATTENTION = "sdpa_float32"

#: Rows from which converting the weight and computing in float32 beats the bfloat16 kernel
#: (measured crossover on AVX2: about 16 rows for a 4096 x 1536 weight).
UPCAST_MIN_ROWS = 16


class UpcastLinear(nn.Linear):
    """A linear layer whose large products run in float32 (weights stay in half precision)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``F.linear`` in the weight's dtype for few rows, in float32 for many."""
        rows = input.numel() // max(1, input.shape[-1])
        if rows < UPCAST_MIN_ROWS or input.dtype == torch.float32:
            return F.linear(input, self.weight, self.bias)
        bias = None if self.bias is None else self.bias.float()
        return F.linear(input.float(), self.weight.float(), bias).to(input.dtype)


class UpcastConv2d(nn.Conv2d):
    """A convolution computed in float32 (the patch embedding: always a large product)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """The convolution in float32, returned in the input's dtype."""
        bias = None if self.bias is None else self.bias.float()
        output: torch.Tensor = self._conv_forward(input.float(), self.weight.float(), bias)
        return output.to(input.dtype)


def emulates_bfloat16(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``dtype`` on ``device`` is bfloat16 on a CPU without bfloat16 arithmetic."""
    from mississippi_tools.models.devices import cpu_has_native_bf16

    return device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_native_bf16()


def attention_in_float32(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDPA attention (transformers') computed in float32, returned in the query's dtype."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    output, weights = sdpa_attention_forward(
        module, query.float(), key.float(), value.float(), attention_mask, **kwargs
    )
    return output.to(query.dtype), weights


def register_float32_attention() -> str:
    """Register :func:`attention_in_float32` (and SDPA's masks) with transformers; its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(FLOAT32_ATTENTION, attention_in_float32)
    AttentionMaskInterface.register(FLOAT32_ATTENTION, sdpa_mask)
    return FLOAT32_ATTENTION


def compute_large_products_in_float32(model: nn.Module) -> int:
    """Switch ``model``'s linear and conv layers to the row-dependent kernels, in place.

    Returns:
        How many layers were switched.
    """
    switched = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = UpcastLinear
            switched += 1
        elif type(module) is nn.Conv2d:
            module.__class__ = UpcastConv2d
            switched += 1
    return switched
