"""The InternViT-300M vision encoder of H2OVL-Mississippi, on transformers' InternVL vision tower.

transformers' ``InternVLVisionModel`` computes what InternViT computes (pre-norm blocks with
layer scale, exact GELU, no final norm, CLS token first); only the parameter names differ, and the
original's fused ``qkv`` projection is split into ``q_proj``/``k_proj``/``v_proj`` when loading
(see :mod:`mississippi_tools.models.h2ovl.loading`). We build the tower with only the blocks that
``select_layer`` needs, so the unused top blocks are never run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mississippi_tools.models.h2ovl.configuration import H2OVLConfig

if TYPE_CHECKING:
    import torch
    from transformers import InternVLVisionModel

__all__ = ["build_vision_model", "pixel_shuffle"]


def build_vision_model(config: H2OVLConfig, *, attn_implementation: str) -> InternVLVisionModel:
    """An InternViT tower for ``config`` (random or meta weights; load the checkpoint after)."""
    from transformers import InternVLVisionConfig, InternVLVisionModel

    vision = config.vision_config
    hf_config = InternVLVisionConfig(
        hidden_size=vision.hidden_size,
        num_hidden_layers=config.encoder_layers_used,
        num_attention_heads=vision.num_attention_heads,
        intermediate_size=vision.intermediate_size,
        hidden_act=vision.hidden_act,
        layer_norm_eps=vision.layer_norm_eps,
        norm_type=vision.norm_type,
        attention_bias=vision.qkv_bias,
        use_qk_norm=vision.qk_normalization,
        image_size=[config.image_size, config.image_size],
        patch_size=[vision.patch_size, vision.patch_size],
        num_channels=vision.num_channels,
        hidden_dropout_prob=0.0,
        attention_dropout=0.0,
        projection_dropout=0.0,
        use_mask_token=False,
        use_absolute_position_embeddings=True,
        layer_scale_init_value=0.1 * vision.initializer_factor,
        use_mean_pooling=True,  # makes the final norm an identity: InternViT has none
        initializer_range=vision.initializer_range,
    )
    hf_config._attn_implementation = attn_implementation
    return InternVLVisionModel(hf_config)


def pixel_shuffle(features: torch.Tensor, scale: float = 0.5, version: str = "v2") -> torch.Tensor:
    """Merge neighbouring patches into channels.

    ``[N, S, S, C]`` becomes ``[N, S*scale, S*scale, C/scale²]``.

    With v2 and scale 0.5, token ``(r, c)`` concatenates patches ``(2r, 2c)``, ``(2r, 2c+1)``,
    ``(2r+1, 2c)``, ``(2r+1, 2c+1)`` and tokens are row-major; v1 leaves them transposed.
    """
    n, w, h, c = features.shape
    x = features.reshape(n, w, int(h * scale), int(c / scale))
    x = x.permute(0, 2, 1, 3)
    x = x.reshape(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
    if version == "v2":
        x = x.permute(0, 2, 1, 3)
    return x.contiguous()
