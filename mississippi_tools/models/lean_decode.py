"""One decoding step of a Llama or Mistral decoder, without transformers' per-call machinery.

A decoding step multiplies one new token per row by every weight of the decoder; on a CPU
the products should be nearly all of its time. Through transformers' ``LlamaModel.forward``
each step also builds a 4-D attention mask (``masking_utils``), recomputes the rotary angles,
and goes through the decorators, keyword plumbing and output hooks of every layer and
attention call. :class:`LeanDecodeStep` computes the same step from the same modules and
weights (any linear layer the model holds: float, float32-upcasting or int8) with only what
one new position needs:

- the rotary cosines and sines come from a table built once per length (the same float32
  ``position * inv_freq`` products, as transformers computes them);
- the attention mask is the cache's padding mask, or none when no row is padded;
- grouped-query attention runs on the key/value heads as they are cached: each key/value
  head's queries become that head's query rows, so keys and values are never repeated;
- a single row's products with float weights run as matrix-vector products (``torch.mv``,
  ``torch.addmv`` with a bias), which stream the weights at nearly the memory's speed where
  the matrix product kernel for one row did not: measured on a 2-core Xeon (AMX), bfloat16
  ``[1, 1536] x [1536, 4096]`` at 23-24 GB/s against 17-21 GB/s, with the same result bit
  for bit (both accumulate in float32);
- residual additions and the MLP's gate product run in place.

It covers the decoders H2OVL uses (``LlamaForCausalLM``, ``MistralForCausalLM`` without a
sliding window) with the static rotary kinds; :func:`lean_step_unsupported` says why any other
decoder keeps transformers' step. Prefill stays with transformers: a prompt's many positions
make those overheads negligible there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from mississippi_tools.models.precision import UpcastLinear

if TYPE_CHECKING:
    from mississippi_tools.models.kv_cache import BatchKVCache

__all__ = ["LeanDecodeStep", "lean_step_unsupported"]

#: Rotary kinds whose angles depend on the position alone (no rescaling with the length).
_STATIC_ROPE = frozenset({"default", "linear", "llama3"})
_SUPPORTED = frozenset({"LlamaForCausalLM", "MistralForCausalLM"})
#: Layers whose one-row product is ``weight @ x + bias`` in the weight's dtype.
_VECTOR_LAYERS = (nn.Linear, UpcastLinear)
#: Rows of the rotary table added at a time.
_TABLE_STEP = 1024


def lean_step_unsupported(causal_lm: nn.Module) -> str | None:
    """Why :class:`LeanDecodeStep` cannot run ``causal_lm`` (``None``: it can)."""
    name = type(causal_lm).__name__
    if name not in _SUPPORTED:
        return f"{name} is not a Llama or Mistral decoder"
    config: Any = causal_lm.config
    if getattr(config, "sliding_window", None) is not None:
        return "the decoder attends through a sliding window"
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") not in _STATIC_ROPE:
        return f"rotary kind {rope.get('rope_type')!r} rescales with the length"
    if getattr(config, "pretraining_tp", 1) > 1:
        return "the decoder splits its products (pretraining_tp > 1)"
    return None


class LeanDecodeStep:
    """Next-token logits for rows that each add one position, from a decoder's own modules.

    Args:
        causal_lm: A transformers ``LlamaForCausalLM`` or ``MistralForCausalLM`` (see
            :func:`lean_step_unsupported`); its modules are used as they are, not copied.

    Raises:
        ValueError: The decoder is not one this step computes.
    """

    def __init__(self, causal_lm: nn.Module) -> None:
        reason = lean_step_unsupported(causal_lm)
        if reason is not None:
            raise ValueError(f"no lean decoding step: {reason}")
        model: Any = causal_lm
        config, decoder = model.config, model.model
        self.lm_head: nn.Module = model.lm_head
        self.layers: list[Any] = list(decoder.layers[: config.num_hidden_layers])
        self.final_norm: Any = decoder.norm
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        attention = self.layers[0].self_attn
        self.head_dim = int(attention.head_dim)
        self.scaling = float(attention.scaling)
        self._rotary: Any = decoder.rotary_emb
        self._cos: torch.Tensor | None = None
        self._sin: torch.Tensor | None = None

    def __call__(
        self,
        inputs_embeds: torch.Tensor,
        positions: torch.Tensor,
        cache: BatchKVCache,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """One step: float32 logits ``[rows, vocab]``.

        Args:
            inputs_embeds: ``[rows, 1, hidden]``, the new token of each row.
            positions: ``[rows]`` (or ``[rows, 1]``) rotary positions of those tokens.
            cache: The rows' keys and values; each layer gains the new position.
            attention_mask: ``[rows, cached + 1]``, 0 on left padding, for the cache after
                this step.
        """
        rows = inputs_embeds.shape[0]
        # A copy: the residual additions below run in place.
        hidden = inputs_embeds.reshape(rows, 1, -1).clone()
        cos, sin = self._angles(positions.reshape(rows), hidden.dtype)
        padding = self._padding_mask(attention_mask)
        for layer, cached in zip(self.layers, cache.growing_layers, strict=True):
            hidden = self._attention_block(layer, cached, hidden, cos, sin, padding)
            hidden = self._mlp_block(layer, hidden)
        hidden = self.final_norm(hidden)
        return _product(self.lm_head, hidden).view(rows, -1).float()

    def _attention_block(
        self,
        layer: Any,
        cached: Any,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        padding: torch.Tensor | None,
    ) -> torch.Tensor:
        attention = layer.self_attn
        rows, dim = hidden.shape[0], self.head_dim
        normed = layer.input_layernorm(hidden)
        queries = _product(attention.q_proj, normed).view(rows, self.heads, 1, dim)
        keys = _product(attention.k_proj, normed).view(rows, self.kv_heads, 1, dim)
        values = _product(attention.v_proj, normed).view(rows, self.kv_heads, 1, dim)
        queries, keys = _rotate(queries, cos, sin), _rotate(keys, cos, sin)
        all_keys, all_values = cached.update(keys, values)
        # Each key/value head's queries as its query rows: [rows, kv_heads, group, dim].
        grouped = queries.view(rows, self.kv_heads, self.heads // self.kv_heads, dim)
        out = F.scaled_dot_product_attention(
            grouped.to(all_keys.dtype), all_keys, all_values, attn_mask=padding, scale=self.scaling
        )
        out = out.reshape(rows, 1, self.heads * dim).to(hidden.dtype)
        return hidden.add_(_product(attention.o_proj, out))

    @staticmethod
    def _mlp_block(layer: Any, hidden: torch.Tensor) -> torch.Tensor:
        mlp = layer.mlp
        normed = layer.post_attention_layernorm(hidden)
        gate = mlp.act_fn(_product(mlp.gate_proj, normed))
        return hidden.add_(_product(mlp.down_proj, gate.mul_(_product(mlp.up_proj, normed))))

    @staticmethod
    def _padding_mask(attention_mask: torch.Tensor) -> torch.Tensor | None:
        """``[rows, 1, 1, length]`` booleans (True: attend), or ``None`` when no row is padded."""
        if bool(attention_mask.all()):
            return None
        return attention_mask.bool()[:, None, None, :]

    def _angles(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosines and sines for ``positions``, ``[rows, 1, 1, head_dim]`` in ``dtype``."""
        needed = int(positions.max()) + 1
        if self._cos is None or self._sin is None or self._cos.shape[0] < needed:
            self._build_table(needed)
        assert self._cos is not None
        assert self._sin is not None
        cos = self._cos.index_select(0, positions).to(dtype)
        sin = self._sin.index_select(0, positions).to(dtype)
        return cos[:, None, None, :], sin[:, None, None, :]

    def _build_table(self, needed: int) -> None:
        """float32 cosines and sines of positions 0 .. ``needed`` (rounded up).

        As transformers' rotary module computes them: ``position * inv_freq`` in float32,
        the halves repeated, times the attention scaling.
        """
        length = -(-needed // _TABLE_STEP) * _TABLE_STEP
        rotary = self._rotary
        inv_freq = rotary.inv_freq.float()
        positions = torch.arange(length, device=inv_freq.device, dtype=torch.float32)
        freqs = positions[:, None] * inv_freq[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)
        scaling = float(getattr(rotary, "attention_scaling", 1.0))
        self._cos, self._sin = angles.cos() * scaling, angles.sin() * scaling


def _rotate(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of ``[rows, heads, 1, dim]`` (the halves convention)."""
    half = states.shape[-1] // 2
    turned = torch.cat((states[..., half:].neg(), states[..., :half]), dim=-1)
    return turned.mul_(sin).add_(states * cos)


def _product(layer: Any, inputs: torch.Tensor) -> torch.Tensor:
    """``layer(inputs)`` for ``[rows, 1, features]``; one row of a float layer as ``torch.mv``."""
    if inputs.shape[0] == 1 and type(layer) in _VECTOR_LAYERS:
        weight = layer.weight
        if weight.dtype == inputs.dtype:
            vector = inputs.reshape(-1)
            bias = layer.bias
            out = torch.mv(weight, vector) if bias is None else torch.addmv(bias, weight, vector)
            return out.view(1, 1, -1)
    result: torch.Tensor = layer(inputs)
    return result
