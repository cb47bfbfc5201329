"""The lean decoding step against transformers' own Llama and Mistral classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from mississippi_tools.engine.cache import TensorCache
from mississippi_tools.engine.runner import ModelRunner
from mississippi_tools.images import load_image
from mississippi_tools.models.compat import decoder_cache_kwargs
from mississippi_tools.models.h2ovl.backend import H2OVLBackend
from mississippi_tools.models.kv_cache import BatchKVCache
from mississippi_tools.models.lean_decode import LeanDecodeStep, _product, lean_step_unsupported
from mississippi_tools.models.precision import UpcastLinear, register_float32_attention
from mississippi_tools.models.registry import load_backend
from tests.server.live import png_bytes

SIZES: dict[str, Any] = {
    "vocab_size": 96,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
}


def _llama(**overrides: Any) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(**{**SIZES, **overrides})
    config._attn_implementation = overrides.pop("attn", "sdpa")
    return LlamaForCausalLM(config).eval()


def _mistral(**overrides: Any) -> MistralForCausalLM:
    torch.manual_seed(0)
    config = MistralConfig(**{**SIZES, "sliding_window": None, **overrides})
    config._attn_implementation = "sdpa"
    return MistralForCausalLM(config).eval()


def _prefill(model: Any, prompts: list[list[int]], kv_dtype: torch.dtype | None) -> BatchKVCache:
    """Each prompt through transformers into its own cache, merged into one (left-padded)."""
    batch = BatchKVCache(model.config.num_hidden_layers, dtype=kv_dtype)
    for ids in prompts:
        cache = BatchKVCache(model.config.num_hidden_layers, dtype=kv_dtype)
        mask = torch.ones((1, len(ids)), dtype=torch.long)
        with torch.inference_mode():
            model.model(
                input_ids=torch.tensor([ids]),
                attention_mask=mask,
                position_ids=torch.arange(len(ids))[None],
                use_cache=True,
                **decoder_cache_kwargs(model.model, cache),
            )
        cache.attention_mask = mask
        batch.merge(cache)
    return batch


def _reference_step(
    model: Any, tokens: torch.Tensor, positions: torch.Tensor, cache: BatchKVCache
) -> torch.Tensor:
    """One step the way the backends ran it before: transformers' decoder with our cache."""
    assert cache.attention_mask is not None
    mask = torch.cat([cache.attention_mask, cache.attention_mask.new_ones((len(tokens), 1))], 1)
    with torch.inference_mode():
        out = model.model(
            inputs_embeds=model.model.embed_tokens(tokens[:, None]),
            attention_mask=mask,
            position_ids=positions[:, None],
            use_cache=True,
            **decoder_cache_kwargs(model.model, cache),
        )
        logits: torch.Tensor = model.lm_head(out.last_hidden_state[:, -1]).float()
    cache.attention_mask = mask
    return logits


def _lean_step(
    step: LeanDecodeStep,
    model: Any,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    cache: BatchKVCache,
) -> torch.Tensor:
    assert cache.attention_mask is not None
    mask = torch.cat([cache.attention_mask, cache.attention_mask.new_ones((len(tokens), 1))], 1)
    with torch.inference_mode():
        logits = step(model.model.embed_tokens(tokens[:, None]), positions, cache, mask)
    cache.attention_mask = mask
    return logits


def _run_both(
    model: Any,
    prompts: list[list[int]],
    steps: int,
    *,
    dtype: torch.dtype = torch.float32,
    kv_dtype: torch.dtype | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Greedy decoding from the same prefill, each step from the reference's tokens."""
    model = model.to(dtype)
    reference_cache = _prefill(model, prompts, kv_dtype)
    lean_cache = reference_cache.copy_rows()
    step = LeanDecodeStep(model)
    tokens = torch.tensor([ids[-1] for ids in prompts])
    positions = torch.tensor([len(ids) for ids in prompts])
    reference, lean = [], []
    for _ in range(steps):
        reference.append(_reference_step(model, tokens, positions, reference_cache))
        lean.append(_lean_step(step, model, tokens, positions, lean_cache))
        tokens, positions = reference[-1].argmax(-1), positions + 1
    return reference, lean


PROMPTS = [[1, 5, 9, 14, 3, 7, 22, 40, 41], [1, 8, 2, 60]]


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(_llama, id="llama"),
        pytest.param(lambda: _llama(attention_bias=True, mlp_bias=True), id="llama-biases"),
        pytest.param(
            lambda: _llama(rope_parameters={"rope_type": "linear", "factor": 2.0}),
            id="llama-linear-rope",
        ),
        pytest.param(
            lambda: _llama(
                rope_parameters={
                    "rope_type": "llama3",
                    "rope_theta": 10000.0,
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 64,
                }
            ),
            id="llama3-rope",
        ),
        pytest.param(_mistral, id="mistral"),
    ],
)
def test_steps_equal_transformers_in_float32(build: Any) -> None:
    # Two rows of different lengths: the shorter is left-padded, as in the engine's batch.
    reference, lean = _run_both(build(), PROMPTS, steps=6)
    for ours, theirs in zip(lean, reference, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_one_unpadded_row_equals_transformers() -> None:
    reference, lean = _run_both(_llama(), PROMPTS[:1], steps=6)
    for ours, theirs in zip(lean, reference, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prompts", [PROMPTS, PROMPTS[:1]], ids=["two-rows", "one-row"])
def test_bfloat16_steps_pick_the_same_tokens(prompts: list[list[int]]) -> None:
    # One row runs its products as matrix-vector products, several rows as matrix products.
    reference, lean = _run_both(_llama(), prompts, steps=6, dtype=torch.bfloat16)
    for ours, theirs in zip(lean, reference, strict=True):
        assert torch.equal(ours.argmax(-1), theirs.argmax(-1))
        torch.testing.assert_close(ours, theirs, rtol=0.02, atol=0.02)


def test_float32_cache_of_a_bfloat16_model_attends_in_float32() -> None:
    # The emulated-bfloat16 path: keys and values kept in float32, attention computed there.
    model = _llama(attn=register_float32_attention())
    reference, lean = _run_both(
        model, PROMPTS, steps=4, dtype=torch.bfloat16, kv_dtype=torch.float32
    )
    for ours, theirs in zip(lean, reference, strict=True):
        assert torch.equal(ours.argmax(-1), theirs.argmax(-1))
        torch.testing.assert_close(ours, theirs, rtol=0.02, atol=0.02)


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: _mistral(sliding_window=16), "sliding window"),
        (
            lambda: _llama(rope_parameters={"rope_type": "dynamic", "factor": 2.0}),
            "rotary kind 'dynamic'",
        ),
        (lambda: torch.nn.Linear(2, 2), "not a Llama or Mistral decoder"),
    ],
)
def test_other_decoders_keep_transformers_step(build: Any, words: str) -> None:
    model = build()
    reason = lean_step_unsupported(model)
    assert reason is not None and words in reason
    with pytest.raises(ValueError, match="no lean decoding step"):
        LeanDecodeStep(model)


def _greedy(backend: H2OVLBackend, steps: int) -> tuple[list[int], list[torch.Tensor]]:
    prepared = backend.prepare("Read the text in the image.", [load_image(png_bytes())])
    pixels = prepared.images[0].render()
    runner = ModelRunner(backend, TensorCache(0))
    with torch.inference_mode():
        features = backend.model.extract_features(pixels)
    logits, cache = runner.prefill(prepared, [features])
    runner.join(cache)
    token, position, tokens, all_logits = int(logits.argmax()), len(prepared.input_ids), [], []
    for _ in range(steps):
        tokens.append(token)
        step = runner.decode([token], [position])
        all_logits.append(step[0])
        token, position = int(step[0].argmax()), position + 1
    return tokens, all_logits


@pytest.mark.parametrize("quantization", [None, "int8"])
def test_the_backend_decodes_with_it_as_transformers_would(
    tiny_checkpoint: Path, quantization: str | None
) -> None:
    backend = load_backend(
        tiny_checkpoint, device="cpu", dtype="float32", quantization=quantization
    )
    assert isinstance(backend, H2OVLBackend)
    assert backend.lean_step is not None
    lean_tokens, lean_logits = _greedy(backend, 8)
    backend.lean_step = None
    tokens, logits = _greedy(backend, 8)
    assert lean_tokens == tokens
    for ours, theirs in zip(lean_logits, logits, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layer_type", [torch.nn.Linear, UpcastLinear])
def test_a_one_row_product_equals_the_layers_own(dtype: torch.dtype, layer_type: type) -> None:
    torch.manual_seed(0)
    layer = layer_type(384, 1000).to(dtype)
    x = torch.randn(1, 1, 384).to(dtype)
    with torch.inference_mode():
        assert torch.equal(_product(layer, x), layer(x))
        rows = torch.randn(3, 1, 384).to(dtype)
        assert torch.equal(_product(layer, rows), layer(rows))
