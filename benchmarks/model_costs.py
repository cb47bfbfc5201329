"""What a request costs in principle: FLOPs of the vision encoder and prefill, bytes per token.

Computed from the checkpoint's config, so the stage timings can be put against the machine's
limits: compute-bound stages against matmul throughput, decoding against memory bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass

from mississippi_tools.models.h2ovl.configuration import H2OVLConfig


@dataclass(frozen=True)
class ModelCosts:
    """Per-unit costs of one H2OVL configuration."""

    vision_flops_per_tile: float
    projector_flops_per_tile: float
    decoder_flops_per_token: float
    decoder_attention_flops_per_pair: float
    decoder_weight_params: int
    lm_head_params: int

    def prefill_flops(self, tokens: int) -> float:
        """Causal prefill of ``tokens`` positions, last-position logits only."""
        pairs = tokens * (tokens + 1) / 2
        return (
            self.decoder_flops_per_token * tokens
            + self.decoder_attention_flops_per_pair * pairs
            + 2 * self.lm_head_params
        )

    def decode_bytes_per_token(self, bytes_per_param: int) -> float:
        """Weight bytes read for one decoding step (layers, final norm, lm_head)."""
        return (self.decoder_weight_params + self.lm_head_params) * bytes_per_param


def model_costs(config: H2OVLConfig) -> ModelCosts:
    """FLOPs (multiply-add = 2) and parameter counts for ``config``."""
    vision = config.vision_config
    c, inner = vision.hidden_size, vision.intermediate_size
    patches = (config.image_size // vision.patch_size) ** 2
    n = patches + 1
    layers = config.encoder_layers_used
    per_layer = 2 * n * (c * 3 * c + c * c + 2 * c * inner) + 2 * 2 * n * n * c
    patch_embed = 2 * patches * c * (3 * vision.patch_size**2)
    llm = config.llm_config
    h, ffn = int(llm["hidden_size"]), int(llm["intermediate_size"])
    heads, kv_heads = int(llm["num_attention_heads"]), int(llm["num_key_value_heads"])
    head_dim = int(llm.get("head_dim") or h // heads)
    n_layers, vocab = int(llm["num_hidden_layers"]), int(llm["vocab_size"])
    attn_params = h * heads * head_dim * 2 + h * kv_heads * head_dim * 2
    layer_params = attn_params + 3 * h * ffn + 2 * h
    tokens = config.num_image_token
    projector_in = config.projector_input_size
    return ModelCosts(
        vision_flops_per_tile=float(layers * per_layer + patch_embed),
        projector_flops_per_tile=float(2 * tokens * (projector_in * h + h * h)),
        decoder_flops_per_token=float(2 * n_layers * layer_params),
        decoder_attention_flops_per_pair=float(2 * 2 * n_layers * heads * head_dim),
        decoder_weight_params=n_layers * layer_params + h,
        lm_head_params=vocab * h,
    )
