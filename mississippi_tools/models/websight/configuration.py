"""VLM_WebSight_finetuned ("VMistral") configuration, read from the published ``config.json``.

The published file (``HuggingFaceM4/VLM_WebSight_finetuned``, ``model_type: vmistral``, saved by
transformers 4.34) holds the Mistral-7B decoder's keys at the top level, a ``vision_config``
block (SigLIP-so400m at 960 px: width 1152, 27 layers, patch 14) and a ``perceiver_config`` block
(3 blocks, 16 heads of 96, 64 latents, qk layer norms). Keys absent from the file take the
defaults of the published ``configuration_vmistral.py`` (for the vision tower:
``hidden_act="gelu_pytorch_tanh"``, ``layer_norm_eps=1e-6``, ``num_channels=3``).

Keys that only steered training (``freeze_*``, ``alpha_*``, ``cross_layer_interval``) or that
name a layer the published modeling code never builds (``qk_layer_norms``: the decoder layers
are built without it) are read and ignored. This module has no torch dependency.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mississippi_tools.errors import ConfigError

__all__ = [
    "MODEL_TYPE",
    "WebSightConfig",
    "WebSightPerceiverConfig",
    "WebSightVisionConfig",
]

#: ``model_type`` of the published checkpoint.
MODEL_TYPE = "vmistral"


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class WebSightVisionConfig:
    """The SigLIP vision tower (``vision_config``; defaults of ``VMistralVisionConfig``)."""

    hidden_size: int = 768
    """Width of the tower."""
    intermediate_size: int = 3072
    """Width of each block's MLP."""
    num_hidden_layers: int = 12
    """Encoder blocks."""
    num_attention_heads: int = 12
    """Attention heads per block."""
    num_channels: int = 3
    """Input channels."""
    image_size: int = 224
    """Side of the square input in pixels (960 in the published checkpoint)."""
    patch_size: int = 32
    """Side of a patch (14 in the published checkpoint: 68 x 68 patches at 960 px)."""
    hidden_act: str = "gelu_pytorch_tanh"
    """MLP activation."""
    layer_norm_eps: float = 1e-6
    """Epsilon of the tower's layer norms."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WebSightVisionConfig:
        """Build from a ``vision_config`` block, refusing shapes that cannot work."""
        config = cls(**_known(cls, data))
        if config.hidden_size % config.num_attention_heads:
            raise ConfigError(
                f"vision_config.hidden_size {config.hidden_size} is not divisible by "
                f"num_attention_heads {config.num_attention_heads}"
            )
        if config.image_size < config.patch_size:
            raise ConfigError(
                f"vision_config.image_size {config.image_size} is smaller than patch_size "
                f"{config.patch_size}"
            )
        return config

    @property
    def patches_per_side(self) -> int:
        """Patches along one side (the strided convolution drops the remainder pixels)."""
        return self.image_size // self.patch_size


@dataclass
class WebSightPerceiverConfig:
    """The IDEFICS-style perceiver resampler (``perceiver_config``)."""

    resampler_n_latents: int = 64
    """Latents, i.e. prompt positions per image."""
    resampler_depth: int = 6
    """Cross-attention blocks."""
    resampler_n_heads: int = 16
    """Heads per block."""
    resampler_head_dim: int = 96
    """Width of each head."""
    qk_layer_norms_perceiver: bool = False
    """Layer-normalise queries and keys per head."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WebSightPerceiverConfig:
        """Build from a ``perceiver_config`` block."""
        config = cls(**_known(cls, data))
        if config.resampler_n_latents < 1 or config.resampler_depth < 1:
            raise ConfigError(
                f"perceiver_config needs at least one latent and one block, got "
                f"resampler_n_latents={config.resampler_n_latents}, "
                f"resampler_depth={config.resampler_depth}"
            )
        return config


@dataclass
class WebSightConfig:
    """The whole model: Mistral decoder keys at the top level, plus the two blocks."""

    vocab_size: int = 32000
    """Rows of the base embedding and of ``lm_head``."""
    additional_vocab_size: int = 0
    """Rows of the decoupled extra embedding (``<fake_token_around_image>``, ``<image>``)."""
    hidden_size: int = 4096
    """Decoder width."""
    intermediate_size: int = 14336
    """Decoder MLP width."""
    num_hidden_layers: int = 32
    """Decoder layers."""
    num_attention_heads: int = 32
    """Query heads."""
    num_key_value_heads: int = 8
    """Key/value heads (grouped-query attention)."""
    hidden_act: str = "silu"
    """Decoder MLP activation."""
    max_position_embeddings: int = 4096 * 32
    """Longest sequence the rotary table covers."""
    rms_norm_eps: float = 1e-6
    """Epsilon of the decoder's RMS norms."""
    rope_theta: float = 10000.0
    """Rotary base."""
    sliding_window: int | None = 4096
    """Attention window of the decoder."""
    tie_word_embeddings: bool = False
    """Whether ``lm_head`` shares the embedding's weights."""
    pad_token_id: int | None = 0
    """Padding id (``<unk>``)."""
    bos_token_id: int = 1
    """``<s>``."""
    eos_token_id: int = 2
    """``</s>``, which ends an answer."""
    image_token_id: int = 32001
    """``<image>``, whose positions the image's latents fill."""
    use_resampler: bool = False
    """Must be true: the published code has no path without the perceiver."""
    model_type: str = MODEL_TYPE
    """Always ``vmistral``."""
    vision_config: WebSightVisionConfig = field(default_factory=WebSightVisionConfig)
    """The vision tower."""
    perceiver_config: WebSightPerceiverConfig = field(default_factory=WebSightPerceiverConfig)
    """The resampler."""

    def __post_init__(self) -> None:
        if self.model_type != MODEL_TYPE:
            raise ConfigError(
                f"model_type {self.model_type!r} is not a VLM_WebSight checkpoint "
                f"(expected {MODEL_TYPE!r})"
            )
        if not self.use_resampler:
            raise ConfigError(
                "use_resampler is false; the published VMistral code always resamples an image "
                "to perceiver_config.resampler_n_latents latents, set it to true"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if not self.vocab_size <= self.image_token_id < self.total_vocab_size:
            raise ConfigError(
                f"image_token_id {self.image_token_id} is outside the additional vocabulary "
                f"[{self.vocab_size}, {self.total_vocab_size}); the published checkpoint has "
                "<fake_token_around_image> 32000 and <image> 32001 with additional_vocab_size 2"
            )

    @property
    def total_vocab_size(self) -> int:
        """Rows of the model's output: base plus additional vocabulary."""
        return self.vocab_size + self.additional_vocab_size

    @property
    def image_seq_len(self) -> int:
        """Prompt positions one image fills."""
        return self.perceiver_config.resampler_n_latents

    @property
    def head_dim(self) -> int:
        """Width of a decoder attention head."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WebSightConfig:
        """Build from the parsed ``config.json``; unknown keys are ignored, wrong ones refused."""
        if data.get("model_type") != MODEL_TYPE:
            raise ConfigError(
                f"model_type {data.get('model_type')!r} is not a VLM_WebSight checkpoint "
                f"(expected {MODEL_TYPE!r})"
            )
        for block in ("vision_config", "perceiver_config"):
            if not isinstance(data.get(block), dict):
                raise ConfigError(f"config.json lacks the {block} block (got {data.get(block)!r})")
        kwargs = _known(cls, data)
        kwargs.pop("vision_config")
        kwargs.pop("perceiver_config")
        return cls(
            vision_config=WebSightVisionConfig.from_dict(dict(data["vision_config"])),
            perceiver_config=WebSightPerceiverConfig.from_dict(dict(data["perceiver_config"])),
            **kwargs,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> WebSightConfig:
        """Read a ``config.json`` (or the directory holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"no config.json at {path}") from e
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path} does not hold a JSON object")
        return cls.from_dict(data)
