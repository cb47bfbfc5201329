"""IDEFICS 1 configuration, read from the published ``config.json``.

``HuggingFaceM4/idefics-9b``, ``idefics-9b-instruct``, ``idefics-80b`` and
``idefics-80b-instruct`` were published for the transformers 4.32 integration. Their files were
written by the M4 team's pre-release transformers (``"transformers_version": "4.28.0.dev0"``):
``model_type`` ``"idefics"``, the vision tower nested under ``vision_config`` with its width as
``embed_dim``, the resampler under ``perceiver_config``, training switches (``freeze_*``) and the
LLaMA decoder's keys at the top level (``max_sequence_length`` beside, or instead of,
``max_position_embeddings``), and the rows of the decoupled embedding beyond LLaMA's 32000
(``<fake_token_around_image>``, ``<image>``, and ``<end_of_utterance>`` for the instruct models)
counted by ``additional_vocab_size``. The snapshots from before August 2023 kept everything flat
(``vision_embed_dim``, ``resampler_depth`` ... at the top); both layouts are read.

This module reads the keys that shape the model into typed settings and builds transformers'
``IdeficsConfig`` explicitly from them, so nothing depends on how a newer transformers reads an
old file. It imports no torch.

:func:`parameter_count` gives the model's size from the config alone. It is used for the memory
figures of the placement recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mississippi_tools.errors import ConfigError
from mississippi_tools.models.idefics2.configuration import read_json

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = ["Idefics1Config", "Idefics1PerceiverSettings", "Idefics1VisionSettings", "read_json"]

#: Top-level keys passed through to transformers' ``IdeficsConfig`` as they are.
_TOP_KEYS = (
    "vocab_size",
    "additional_vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "hidden_act",
    "rms_norm_eps",
    "max_position_embeddings",
    "cross_layer_interval",
    "qk_layer_norms",
    "use_resampler",
    "alpha_type",
    "alpha_initializer",
    "alphas_initializer_range",
    "initializer_range",
    "tie_word_embeddings",
    "freeze_text_layers",
    "freeze_lm_head",
    "freeze_vision_layers",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)


def _pick(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in known}


@dataclass
class Idefics1VisionSettings:
    """The CLIP ViT-H/14 tower (``vision_config``), as published."""

    embed_dim: int = 1280
    """Width of the vision tower (the published key; transformers aliases it ``hidden_size``)."""
    image_size: int = 224
    """Side of the square every image is resized to."""
    patch_size: int = 14
    """Patch side in pixels (224 / 14 = 16 x 16 patches + the class token)."""
    intermediate_size: int = 5120
    """MLP width."""
    num_hidden_layers: int = 32
    """Encoder layers."""
    num_attention_heads: int = 16
    """Attention heads."""
    num_channels: int = 3
    """Image channels."""
    hidden_act: str = "gelu"
    """MLP activation."""
    layer_norm_eps: float = 1e-5
    """Layer norm epsilon."""

    @property
    def tokens(self) -> int:
        """Vision tokens per image: the patches plus the class token."""
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclass
class Idefics1PerceiverSettings:
    """The perceiver resampler (``perceiver_config``): 64 latents per image when published."""

    resampler_n_latents: int = 64
    """Latents per image (image tokens the cross-attention sees with ``use_resampler``)."""
    resampler_depth: int = 6
    """Perceiver blocks."""
    resampler_n_heads: int = 16
    """Attention heads."""
    resampler_head_dim: int = 96
    """Width of one head."""
    qk_layer_norms_perceiver: bool = False
    """Layer norms on queries and keys."""


@dataclass
class Idefics1Config:
    """An IDEFICS ``config.json`` as published (the keys that shape the model, typed)."""

    top: dict[str, Any]
    vision: Idefics1VisionSettings
    perceiver: Idefics1PerceiverSettings

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Idefics1Config:
        """Parse a published ``config.json``.

        Raises:
            ConfigError: Not an IDEFICS config, or values that cannot build the model.
        """
        if data.get("model_type") != "idefics":
            raise ConfigError(
                f"model_type is {data.get('model_type')!r}; an IDEFICS checkpoint says 'idefics'"
            )
        vision = data.get("vision_config") or {
            key.removeprefix("vision_"): value
            for key, value in data.items()
            if key.startswith("vision_") and key != "vision_config"
        }  # the flat layout of the first snapshots: vision_embed_dim, vision_image_size ...
        perceiver = data.get("perceiver_config") or {
            key: value
            for key, value in data.items()
            if key.startswith("resampler_") or key == "qk_layer_norms_perceiver"
        }
        if not isinstance(vision, dict) or not isinstance(perceiver, dict):
            raise ConfigError("vision_config and perceiver_config must be JSON objects")
        if "hidden_size" in vision and "embed_dim" not in vision:
            vision = {**vision, "embed_dim": vision["hidden_size"]}
        config = cls(
            top={k: data[k] for k in _TOP_KEYS if k in data},
            vision=Idefics1VisionSettings(**_pick(Idefics1VisionSettings, vision)),
            perceiver=Idefics1PerceiverSettings(**_pick(Idefics1PerceiverSettings, perceiver)),
        )
        config.validate()
        return config

    @classmethod
    def from_file(cls, path: Path) -> Idefics1Config:
        """Read and parse ``config.json``."""
        return cls.from_dict(read_json(path, required=True))

    def validate(self) -> None:
        """Check what transformers would only find deep inside the model's constructor.

        Raises:
            ConfigError: Naming the key and the values that do not fit.
        """
        problems = []
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            value = self.top.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{key} must be a positive integer, got {value!r}")
        if problems:
            raise ConfigError("config.json: " + "; ".join(problems))
        if self.hidden_size % self.num_attention_heads:
            problems.append(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        interval = self.cross_layer_interval
        if interval < 1 or self.num_layers % interval:
            problems.append(
                f"cross_layer_interval {interval} must divide num_hidden_layers {self.num_layers}"
            )
        vision = self.vision
        if vision.image_size % vision.patch_size:
            problems.append(
                f"vision_config image_size {vision.image_size} is not a multiple of patch_size "
                f"{vision.patch_size}"
            )
        if vision.embed_dim % vision.num_attention_heads:
            problems.append(
                f"vision_config embed_dim {vision.embed_dim} is not divisible by "
                f"num_attention_heads {vision.num_attention_heads}"
            )
        if problems:
            raise ConfigError("config.json: " + "; ".join(problems))

    # -- derived ------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Rows of the model's output: the base vocabulary plus the decoupled added rows."""
        return int(self.top["vocab_size"]) + self.additional_vocab_size

    @property
    def additional_vocab_size(self) -> int:
        """Rows of the decoupled (trainable) embedding and LM head beyond ``vocab_size``."""
        return int(self.top.get("additional_vocab_size", 0))

    @property
    def hidden_size(self) -> int:
        """Width of the LLaMA decoder."""
        return int(self.top["hidden_size"])

    @property
    def num_attention_heads(self) -> int:
        """Decoder attention heads."""
        return int(self.top["num_attention_heads"])

    @property
    def num_layers(self) -> int:
        """Decoder layers."""
        return int(self.top["num_hidden_layers"])

    @property
    def cross_layer_interval(self) -> int:
        """A gated cross-attention block before every ``cross_layer_interval``-th decoder layer."""
        return int(self.top.get("cross_layer_interval", 1))

    @property
    def use_resampler(self) -> bool:
        """Whether images pass the perceiver resampler (64 latents) before cross-attention."""
        return bool(self.top.get("use_resampler", False))

    @property
    def max_context(self) -> int:
        """Largest prompt + answer in tokens (LLaMA's 2048)."""
        return int(
            self.top.get("max_position_embeddings", self.top.get("max_sequence_length", 2048))
        )

    @property
    def image_tokens(self) -> int:
        """Positions one image occupies in the cross-attention's keys."""
        if self.use_resampler:
            return self.perceiver.resampler_n_latents
        return self.vision.tokens

    @property
    def image_feature_width(self) -> int:
        """Width of the image features the cross-attention reads (the vision tower's)."""
        return self.vision.embed_dim

    def native(self, *, attn_implementation: str = "eager") -> PretrainedConfig:
        """Transformers' ``IdeficsConfig`` with the same meaning as the published file."""
        from transformers import IdeficsConfig

        vision = {f.name: getattr(self.vision, f.name) for f in fields(self.vision)}
        perceiver = {f.name: getattr(self.perceiver, f.name) for f in fields(self.perceiver)}
        config = IdeficsConfig(
            **{**self.top, "max_position_embeddings": self.max_context},
            vision_config=vision,
            perceiver_config=perceiver,
        )
        config._attn_implementation = attn_implementation
        return config


def parameter_count(config: Idefics1Config) -> dict[str, int]:
    """Parameters per part, from the config alone (no model is built).

    The formulas follow the module shapes transformers builds for the config (they are checked
    against a built model's ``state_dict`` in the tests): CLIP vision tower, perceiver, LLaMA
    decoder, gated cross-attention blocks, decoupled embedding and LM head.
    """
    v, p, top = config.vision, config.perceiver, config.top
    d, dv = config.hidden_size, v.embed_dim
    inter = int(top.get("intermediate_size", 11008))
    vision_layer = 4 * (dv * dv + dv) + 2 * dv * v.intermediate_size + v.intermediate_size + dv
    vision_layer += 4 * dv  # two layer norms
    vision = (
        dv  # class embedding
        + dv * v.num_channels * v.patch_size**2
        + v.tokens * dv
        + 4 * dv  # pre and post layer norms
        + v.num_hidden_layers * vision_layer
    )
    perceiver = 0
    if config.use_resampler:
        inner = p.resampler_n_heads * p.resampler_head_dim
        block = 4 * dv + 4 * dv * inner  # two layer norms; q, k, v, out projections
        if p.qk_layer_norms_perceiver:
            block += 4 * p.resampler_head_dim
        block += 2 * dv + 2 * dv * (4 * dv)  # MLP: layer norm, fc and c_proj (4x width)
        perceiver = p.resampler_n_latents * dv + p.resampler_depth * block + 2 * dv
    decoder_layer = 4 * d * d + 3 * d * inter + 2 * d
    heads = config.num_attention_heads
    cross = 2 * d * d + 2 * d * dv + 3 * d * inter + 2 * d
    cross += 2 if top.get("alpha_type", "float") == "float" else 2 * d
    if top.get("qk_layer_norms", False):
        cross += 2 * (d // heads)
    rows = config.vocab_size
    text = config.num_layers * decoder_layer + d  # final norm
    return {
        "vision": vision,
        "perceiver": perceiver,
        "decoder": text,
        "cross_attention": (config.num_layers // config.cross_layer_interval) * cross,
        "embeddings": rows * d,
        "lm_head": 0 if top.get("tie_word_embeddings", False) else rows * d,
    }
