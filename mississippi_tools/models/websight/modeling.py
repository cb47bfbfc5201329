"""VMistral (VLM_WebSight_finetuned) assembled from transformers' native parts.

Re-stated from the published remote code (``modeling_vmistral.py`` and ``vision.py`` of
``HuggingFaceM4/VLM_WebSight_finetuned``, Copyright 2023 Mistral AI and the HuggingFace Inc. team,
Apache-2.0), read in a public near-verbatim copy (lt-asset/Waffle, ``vlm_websight/VLM_WebSight``;
its config file differs from the hub's by one added key) and checked against the hub's pages and
the m4 training code. The computation, in order:

1. ``vision_model``: SigLIP on the 960 x 960 image (68 x 68 patches of 14 px, learned position
   embeddings, no interpolation), ``last_hidden_state`` after ``post_layernorm``; the attention
   pooling head is not used. transformers' ``SiglipVisionModel`` computes the same.
2. ``modality_projection``: ``fc2(swiglu(fc1(x)))`` with ``swiglu(x) = silu(act.fc1(x)) *
   act.fc2(x)``, all linear layers without bias, from the vision width to the decoder's (no
   native class has this exact shape, so it is written here).
3. ``perceiver_resampler``: the IDEFICS perceiver (latents attend to the concatenation of context
   and latents, per-head LayerNorm on queries and keys, ReLU MLP with a LayerNorm in front, final
   LayerNorm), running at the decoder's width: transformers' ``IdeficsPerceiverResampler``.
4. The 64 latents replace the embeddings of the 64 ``<image>`` tokens; the Mistral decoder runs
   over the sequence (positions 0..N-1, sliding window 4096) and the head gives logits over the
   base and the additional vocabulary: transformers' ``MistralForCausalLM`` with the decoupled
   embedding and head concatenated (see :mod:`~mississippi_tools.models.websight.loading`).

The published config's ``qk_layer_norms: true`` is not used by the decoder: the remote code builds
its decoder layers without query/key norms, and the published weights have none.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mississippi_tools.models.websight.configuration import WebSightConfig

if TYPE_CHECKING:
    from transformers import MistralConfig, PreTrainedModel

__all__ = [
    "VMistralForConditionalGeneration",
    "VMistralModalityProjection",
    "build_decoder_config",
]


class _SwiGLU(nn.Module):
    """``silu(fc1(x)) * fc2(x)``, with the original's ``x * sigmoid(x)`` spelling of SiLU."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width, bias=False)
        self.fc2 = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate: torch.Tensor = self.fc1(x)
        out: torch.Tensor = gate * torch.sigmoid(gate) * self.fc2(x)
        return out


class VMistralModalityProjection(nn.Module):
    """Vision width to decoder width: ``fc1``, SwiGLU (``act``), ``fc2``; no biases."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, out_features, bias=False)
        self.act = _SwiGLU(out_features)
        self.fc2 = nn.Linear(out_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``[..., in_features]`` to ``[..., out_features]``."""
        out: torch.Tensor = self.fc2(self.act(self.fc1(x)))
        return out


def build_decoder_config(config: WebSightConfig, *, attn_implementation: str) -> MistralConfig:
    """The native Mistral config: the published top-level keys, one vocabulary of base + extra."""
    from transformers import MistralConfig

    hf_config = MistralConfig(
        vocab_size=config.total_vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        sliding_window=config.sliding_window,
        tie_word_embeddings=config.tie_word_embeddings,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        attention_dropout=0.0,
        rope_parameters={"rope_type": "default", "rope_theta": float(config.rope_theta)},
    )
    hf_config._attn_implementation = attn_implementation
    return hf_config


def _build_vision_model(config: WebSightConfig, *, attn_implementation: str) -> nn.Module:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    vision = config.vision_config
    hf_config = SiglipVisionConfig(
        hidden_size=vision.hidden_size,
        intermediate_size=vision.intermediate_size,
        num_hidden_layers=vision.num_hidden_layers,
        num_attention_heads=vision.num_attention_heads,
        num_channels=vision.num_channels,
        image_size=vision.image_size,
        patch_size=vision.patch_size,
        hidden_act=vision.hidden_act,
        layer_norm_eps=vision.layer_norm_eps,
        attention_dropout=0.0,
        vision_use_head=False,
    )
    hf_config._attn_implementation = attn_implementation
    model = SiglipVisionModel(hf_config)
    # Before transformers 5.x flattened it, the model wrapped a ``vision_model`` transformer;
    # the inner one has the same parameter names as the flat model and the same outputs.
    inner: nn.Module = getattr(model, "vision_model", model)
    return inner


def _build_perceiver(config: WebSightConfig) -> nn.Module:
    from transformers.models.idefics.perceiver import IdeficsPerceiverResampler

    perceiver = config.perceiver_config
    # The native class reads two config values: the qk-norm switch, and the MLP width
    # (``vision_config.embed_dim``), which in VMistral is the decoder's width.
    shim: Any = SimpleNamespace(
        perceiver_config=SimpleNamespace(
            qk_layer_norms_perceiver=perceiver.qk_layer_norms_perceiver
        ),
        vision_config=SimpleNamespace(embed_dim=config.hidden_size),
    )
    module: nn.Module = IdeficsPerceiverResampler(
        shim,
        config.hidden_size,
        perceiver.resampler_depth,
        perceiver.resampler_n_heads,
        perceiver.resampler_head_dim,
        perceiver.resampler_n_latents,
    )
    return module


class VMistralForConditionalGeneration(nn.Module):
    """The whole model with parts named after the published modules (``model.`` dropped).

    Args:
        config: The model configuration.
        attn_implementation: ``"sdpa"`` (default), ``"eager"`` or ``"flash_attention_2"``.
    """

    def __init__(self, config: WebSightConfig, *, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        from transformers import MistralForCausalLM

        self.config = config
        self.vision_model = _build_vision_model(config, attn_implementation=attn_implementation)
        self.modality_projection = VMistralModalityProjection(
            config.vision_config.hidden_size, config.hidden_size
        )
        self.perceiver_resampler = _build_perceiver(config)
        decoder_config = build_decoder_config(config, attn_implementation=attn_implementation)
        self.language_model: PreTrainedModel = MistralForCausalLM(decoder_config)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights."""
        return self.modality_projection.fc1.weight.dtype

    @property
    def device(self) -> torch.device:
        """The device of the weights."""
        return self.modality_projection.fc1.weight.device

    def extract_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image latents: ``[n, 3, S, S]`` pixels to ``[n, n_latents, hidden]``."""
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        hidden: torch.Tensor = self.vision_model(pixel_values=pixel_values).last_hidden_state
        features: torch.Tensor = self.perceiver_resampler(self.modality_projection(hidden))
        return features

    def embed(
        self,
        input_ids: torch.Tensor,
        image_features: torch.Tensor | None = None,
        *,
        image_token_id: int | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the image latents written over the ``<image>`` positions.

        Args:
            input_ids: ``[batch, seq]`` token ids.
            image_features: ``[num_image_tokens, hidden]`` (or any shape flattening to it), in
                prompt order.
            image_token_id: Id of ``<image>``; required with ``image_features``.

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
                f"{int(selected.sum())} <image> tokens for {features.shape[0]} image latents"
            )
        embeds = embeds.clone()
        embeds[selected] = features
        return embeds

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reference full forward: logits for every position, ``[batch, seq, vocab]``.

        The engine uses the pieces (:meth:`extract_features`, :meth:`embed`, the decoder with a
        KV cache); this path exists for parity checks.
        """
        features = self.extract_features(pixel_values) if pixel_values is not None else None
        embeds = self.embed(input_ids, features, image_token_id=self.config.image_token_id)
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
