"""H2OVL-Mississippi: InternViT, pixel shuffle, the MLP projector and a Llama/Mistral decoder.

Adapted from the published H2OVL-Mississippi remote code (``modeling_h2ovl_chat.py``;
Copyright (c) 2024 H2O.AI, Apache-2.0). The decoder is transformers' own ``LlamaForCausalLM`` or
``MistralForCausalLM``; the vision tower is transformers' InternVL vision model. This module only
assembles them the way the original does: image features replace the ``<IMG_CONTEXT>`` token
embeddings in order (tile-major, then token-major), and position ids run 0..N-1 over the prompt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mississippi_tools.models.h2ovl.configuration import H2OVLConfig
from mississippi_tools.models.h2ovl.projector import H2OVLProjector
from mississippi_tools.models.h2ovl.vision import build_vision_model, pixel_shuffle

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

__all__ = ["H2OVLForConditionalGeneration", "build_decoder_config", "cast_model"]

_DECODER_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
    "attention_bias",
    "attention_dropout",
    "mlp_bias",
    "pretraining_tp",
)


def build_decoder_config(config: H2OVLConfig, *, attn_implementation: str) -> PretrainedConfig:
    """The transformers config of the decoder, built explicitly from the original ``llm_config``.

    The original was saved by transformers 4.x with ``rope_theta`` and ``"rope_scaling": null``;
    passing that dict through naively can leave ``rope_parameters`` empty in transformers 5, so the
    rope parameters are set here from the two keys.
    """
    from transformers import LlamaConfig, MistralConfig

    llm = config.llm_config
    kwargs: dict[str, Any] = {k: llm[k] for k in _DECODER_KEYS if llm.get(k) is not None}
    scaling = llm.get("rope_scaling")
    theta = float(llm.get("rope_theta", 10000.0))
    if scaling:
        rope = {k: v for k, v in scaling.items() if k != "type"}
        rope["rope_type"] = scaling.get("rope_type", scaling.get("type", "default"))
        rope["rope_theta"] = theta
    else:
        rope = {"rope_type": "default", "rope_theta": theta}
    kwargs["rope_parameters"] = rope
    hf_config: PretrainedConfig
    if config.decoder_type == "mistral":
        # Danube2 removed Mistral's sliding window: keep an explicit null as "no window".
        if "sliding_window" in llm:
            kwargs["sliding_window"] = llm["sliding_window"]
        kwargs.pop("mlp_bias", None)
        kwargs.pop("pretraining_tp", None)
        kwargs.pop("attention_bias", None)
        hf_config = MistralConfig(**kwargs)
    else:
        hf_config = LlamaConfig(**kwargs)
    hf_config._attn_implementation = attn_implementation
    return hf_config


class H2OVLForConditionalGeneration(nn.Module):
    """The whole model, with the original's module names.

    The parts are ``vision_model``, ``mlp1`` and ``language_model``, as in the published code.

    Args:
        config: The model configuration.
        attn_implementation: ``"sdpa"`` (default), ``"eager"`` (the reference path) or
            ``"flash_attention_2"`` (CUDA with flash-attn installed).
    """

    def __init__(self, config: H2OVLConfig, *, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        from transformers import LlamaForCausalLM, MistralForCausalLM

        self.config = config
        self.attn_implementation = attn_implementation
        self.vision_model = build_vision_model(config, attn_implementation=attn_implementation)
        self.mlp1 = H2OVLProjector(config.projector_input_size, config.llm_hidden_size)
        decoder_config = build_decoder_config(config, attn_implementation=attn_implementation)
        decoder_cls: Any = (
            MistralForCausalLM if config.decoder_type == "mistral" else LlamaForCausalLM
        )
        self.language_model: PreTrainedModel = decoder_cls(decoder_config)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights."""
        return self._reference_weight().dtype

    @property
    def device(self) -> torch.device:
        """The device of the weights."""
        return self._reference_weight().device

    def _reference_weight(self) -> torch.Tensor:
        # The projector's norm: a float weight even when the linear layers are int8.
        norm = self.mlp1[0]
        assert isinstance(norm, nn.LayerNorm)
        assert norm.weight is not None
        return norm.weight

    def extract_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image tokens for tiles.

        Args:
            pixel_values: Normalised tiles, ``[num_tiles, 3, 448, 448]``.

        Returns:
            Projected features, ``[num_tiles, 256, llm_hidden_size]``.
        """
        return self.project(self.encode_vision(pixel_values))

    def encode_vision(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The vision encoder's last used layer, ``[num_tiles, 1 + patches, vision_hidden]``."""
        # The vision tower's own dtype: int8 loading may keep it bfloat16 around a float32 rest.
        vision_dtype = self.vision_model.embeddings.patch_embeddings.projection.weight.dtype
        pixel_values = pixel_values.to(device=self.device, dtype=vision_dtype)
        hidden: torch.Tensor = self.vision_model(pixel_values=pixel_values).last_hidden_state
        return hidden

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Drop CLS, pixel-shuffle, project: ``[tiles, 1 + patches, C]`` -> ``[tiles, 256, H]``."""
        hidden = hidden[:, 1:, :].to(self.dtype)
        side = int(hidden.shape[1] ** 0.5)
        hidden = hidden.reshape(hidden.shape[0], side, side, -1)
        hidden = pixel_shuffle(hidden, self.config.downsample_ratio, self.config.ps_version)
        hidden = hidden.reshape(hidden.shape[0], -1, hidden.shape[-1])
        features: torch.Tensor = self.mlp1(hidden)
        return features

    def embed(
        self,
        input_ids: torch.Tensor,
        image_features: torch.Tensor | None = None,
        *,
        image_token_id: int | None = None,
    ) -> torch.Tensor:
        """Token embeddings with image features written over the ``<IMG_CONTEXT>`` positions.

        Args:
            input_ids: ``[batch, seq]`` token ids.
            image_features: ``[num_image_tokens, hidden]`` (or any shape flattening to it), in
                prompt order.
            image_token_id: Id of ``<IMG_CONTEXT>``; required with ``image_features``.

        Returns:
            ``[batch, seq, hidden]`` input embeddings.
        """
        embeds: torch.Tensor = self.language_model.get_input_embeddings()(input_ids)
        if image_features is None:
            return embeds
        if image_token_id is None:
            raise ValueError("image_token_id is required with image_features")
        selected = input_ids == image_token_id
        features = image_features.reshape(-1, embeds.shape[-1]).to(embeds.dtype)
        if int(selected.sum()) != features.shape[0]:
            raise ValueError(
                f"{int(selected.sum())} <IMG_CONTEXT> tokens for {features.shape[0]} image features"
            )
        embeds = embeds.clone()
        embeds[selected] = features
        return embeds

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        image_token_id: int | None = None,
    ) -> torch.Tensor:
        """Reference full forward: logits for every position, ``[batch, seq, vocab]``.

        The engine uses the pieces (:meth:`extract_features`, :meth:`embed`, the decoder with a
        KV cache); this path exists for parity checks against the original implementation.
        """
        features = self.extract_features(pixel_values) if pixel_values is not None else None
        embeds = self.embed(input_ids, features, image_token_id=image_token_id)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.language_model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=False,
        )
        logits: torch.Tensor = out.logits
        return logits


def cast_model(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast weights to ``dtype`` while keeping rotary ``inv_freq`` buffers in float32.

    Rounding ``inv_freq`` to half precision changes the rotary angles and greedy tokens; the
    original keeps them in float32.
    """
    saved = {
        name: buffer.detach().clone()
        for name, buffer in model.named_buffers()
        if name.endswith("inv_freq") and buffer.is_floating_point()
    }
    model.to(dtype)
    for name, buffer in saved.items():
        module_name, _, buffer_name = name.rpartition(".")
        module = model.get_submodule(module_name)
        module.register_buffer(buffer_name, buffer.to(torch.float32), persistent=False)
