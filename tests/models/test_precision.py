"""bfloat16 weights with float32 large products, for CPUs without bfloat16 arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mississippi_tools.models import precision
from mississippi_tools.models.precision import (
    FLOAT32_ATTENTION,
    UPCAST_MIN_ROWS,
    UpcastConv2d,
    UpcastLinear,
    attention_in_float32,
    compute_large_products_in_float32,
)


def _linear() -> nn.Linear:
    layer = nn.Linear(64, 32).to(torch.bfloat16)
    compute_large_products_in_float32(layer)
    return layer


def test_few_rows_use_the_bfloat16_kernel() -> None:
    layer = _linear()
    x = torch.randn(UPCAST_MIN_ROWS - 1, 64).to(torch.bfloat16)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


def test_many_rows_are_computed_in_float32() -> None:
    layer = _linear()
    x = torch.randn(2, UPCAST_MIN_ROWS, 64).to(torch.bfloat16)
    expected = F.linear(x.float(), layer.weight.float(), layer.bias.float()).to(torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)
    assert layer.weight.dtype == torch.bfloat16  # the weights stay in half precision


def test_conv_is_computed_in_float32() -> None:
    conv = nn.Conv2d(3, 8, 14, stride=14).to(torch.bfloat16)
    assert compute_large_products_in_float32(conv) == 1 and isinstance(conv, UpcastConv2d)
    x = torch.randn(1, 3, 28, 28).to(torch.bfloat16)
    expected = F.conv2d(x.float(), conv.weight.float(), conv.bias.float(), stride=14).to(
        torch.bfloat16
    )
    assert torch.equal(conv(x), expected)


def test_switch_counts_every_linear_and_conv() -> None:
    model = nn.Sequential(
        nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2), nn.Conv2d(1, 1, 1))
    )
    assert compute_large_products_in_float32(model) == 3
    assert isinstance(model[0], UpcastLinear) and isinstance(model[2][1], UpcastConv2d)


def test_attention_runs_in_float32_and_returns_the_query_dtype() -> None:
    module = nn.Module()
    module.is_causal = True  # type: ignore[assignment]
    module.num_key_value_groups = 2  # type: ignore[assignment]
    q = torch.randn(1, 4, 3, 8).to(torch.bfloat16)
    k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8)  # a float32 cache
    out, _ = attention_in_float32(module, q, k, v, None)
    expected = F.scaled_dot_product_attention(
        q.float(), k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True
    )
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, expected.transpose(1, 2).to(torch.bfloat16))


def test_bf16_backend_uses_it_only_without_native_bf16(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mississippi_tools.models import devices
    from mississippi_tools.models.registry import load_backend

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    emulated = load_backend(tiny_checkpoint, device="cpu", dtype="bfloat16")
    assert isinstance(emulated.model.language_model.lm_head, precision.UpcastLinear)
    assert emulated.model.language_model.config._attn_implementation == FLOAT32_ATTENTION
    assert emulated.new_cache().dtype == torch.float32
    assert isinstance(
        emulated.model.vision_model.embeddings.patch_embeddings.projection, UpcastConv2d
    )
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    native = load_backend(tiny_checkpoint, device="cpu", dtype="bfloat16")
    assert type(native.model.language_model.lm_head) is nn.Linear
    assert native.new_cache().dtype is None
    float32 = load_backend(tiny_checkpoint, device="cpu", dtype="float32")
    assert type(float32.model.mlp1[1]) is nn.Linear
    ids = torch.tensor([float32.prepare("hello", []).input_ids])
    mask, positions = torch.ones_like(ids), torch.arange(ids.shape[1]).unsqueeze(0)
    logits = []
    for backend in (emulated, float32):  # the engine's path: the backend's cache and attention
        cache = backend.new_cache()
        embeds = backend.embed(ids, None)
        logits.append(backend.forward(embeds, mask, positions, cache, last_only=False))
        assert cache.growing_layers[0].keys.dtype == torch.float32  # type: ignore[union-attr]
    a, b = logits
    assert a.shape == b.shape
    assert torch.allclose(a, b, atol=0.05 * b.abs().max().item())  # bfloat16 rounding only
