"""Idefics2 configuration, read from the published ``config.json`` (transformers 4.40 era).

The published files (``HuggingFaceM4/idefics2-8b``, ``-base``, ``-chatty``, ``-AWQ``) were saved by
transformers 4.40: ``vision_config`` and ``perceiver_config`` carry ``"model_type": "idefics2"``
and the perceiver block has no ``hidden_size`` / ``rms_norm_eps`` (the 4.40 perceiver read both
from ``text_config``; transformers 5 asks for them in the perceiver block and warns when they
are missing). This module reads the published keys into typed settings and builds the native
transformers configuration explicitly from them, so nothing depends on how a newer transformers
interprets an old file. It imports no torch: a config can be checked before anything loads.

The processor settings live beside the model config: ``preprocessor_config.json`` (image sizes,
``do_image_splitting``, normalisation) and ``processor_config.json`` (``image_seq_len``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mississippi_tools.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = [
    "DECODER_KEYS",
    "Idefics2Config",
    "Idefics2PerceiverSettings",
    "Idefics2ProcessorSettings",
    "Idefics2VisionSettings",
    "build_text_config",
    "read_json",
]

#: Decoder keys passed through from ``text_config`` to the transformers decoder config.
DECODER_KEYS = (
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
    "attention_dropout",
    "attention_bias",
    "mlp_bias",
)


def read_json(path: Path, *, required: bool = False) -> dict[str, Any]:
    """A JSON object file (empty when absent and not required).

    Raises:
        ConfigError: The file is missing (when required), not JSON, or not an object.
    """
    if not path.is_file():
        if required:
            raise ConfigError(f"{path} is missing")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def _pick(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in known}


@dataclass
class Idefics2VisionSettings:
    """The SigLIP-derived vision encoder (``vision_config``)."""

    hidden_size: int = 768
    """Width of the encoder."""
    intermediate_size: int = 3072
    """Width of each block's MLP."""
    num_hidden_layers: int = 12
    """Encoder blocks."""
    num_attention_heads: int = 12
    """Attention heads per block."""
    num_channels: int = 3
    """Input channels."""
    image_size: int = 224
    """Largest image side the position embeddings cover (980 in idefics2-8b)."""
    patch_size: int = 32
    """Side of a patch in pixels (14 in idefics2-8b)."""
    hidden_act: str = "gelu_pytorch_tanh"
    """MLP activation."""
    layer_norm_eps: float = 1e-6
    """Epsilon of the layer norms."""
    initializer_range: float = 0.02
    """Standard deviation for random weights."""


@dataclass
class Idefics2PerceiverSettings:
    """The perceiver resampler that turns each image into ``resampler_n_latents`` tokens."""

    hidden_act: str = "silu"
    """MLP activation."""
    resampler_n_latents: int = 64
    """Tokens per image (or per image piece with splitting)."""
    resampler_depth: int = 3
    """Perceiver layers."""
    resampler_n_heads: int = 16
    """Attention heads."""
    resampler_head_dim: int = 96
    """Width of one head."""
    num_key_value_heads: int = 4
    """Key/value heads (grouped-query attention)."""


@dataclass
class Idefics2ProcessorSettings:
    """The image processor and processor files (``preprocessor_config.json`` ...)."""

    do_image_splitting: bool = False
    """Split each image into 4 quarters plus the whole (5 pieces, 5 x 64 tokens)."""
    shortest_edge: int = 378
    """Smallest side after resizing (each side is raised to at least this)."""
    longest_edge: int = 980
    """Largest side after resizing."""
    resample: int = 2
    """PIL resampling filter (2: bilinear)."""
    rescale_factor: float = 1 / 255
    """Pixel scale before normalising."""
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Per-channel mean."""
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Per-channel standard deviation."""
    image_seq_len: int | None = None
    """``processor_config.json``'s tokens per image (the perceiver's latents when absent)."""

    @classmethod
    def from_directory(cls, directory: Path) -> Idefics2ProcessorSettings:
        """Read ``preprocessor_config.json`` and ``processor_config.json`` (defaults if absent)."""
        pre = read_json(directory / "preprocessor_config.json")
        proc = read_json(directory / "processor_config.json")
        size = pre.get("size") or {}
        settings = cls(
            do_image_splitting=bool(pre.get("do_image_splitting", False)),
            shortest_edge=int(size.get("shortest_edge", 378)),
            longest_edge=int(size.get("longest_edge", 980)),
            resample=int(pre.get("resample", 2)),
            rescale_factor=float(pre.get("rescale_factor", 1 / 255)),
            image_mean=tuple(pre.get("image_mean", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
            image_std=tuple(pre.get("image_std", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
            image_seq_len=proc.get("image_seq_len"),
        )
        if not 1 <= settings.shortest_edge <= settings.longest_edge:
            raise ConfigError(
                f"preprocessor_config.json size {size} needs 1 <= shortest_edge <= longest_edge"
            )
        return settings


@dataclass
class Idefics2Config:
    """An Idefics2 ``config.json`` as published (the keys that matter, typed)."""

    text_config: dict[str, Any]
    """The Mistral decoder's settings, as published."""
    vision_config: Idefics2VisionSettings = field(default_factory=Idefics2VisionSettings)
    """The vision encoder."""
    perceiver_config: Idefics2PerceiverSettings = field(default_factory=Idefics2PerceiverSettings)
    """The perceiver resampler."""
    image_token_id: int = 32001
    """Id of ``<image>``, whose embeddings the image features replace."""
    tie_word_embeddings: bool = False
    """Whether the LM head shares the input embedding."""
    quantization_config: dict[str, Any] | None = None
    """Set by quantized checkpoints (``idefics2-8b-AWQ``)."""
    torch_dtype: str | None = None
    """The dtype the weights were saved in (``float32`` for idefics2-8b)."""
    model_type: str = "idefics2"
    """As in the published file."""

    #: Decoder architectures this family is published with.
    supported_decoders: ClassVar[tuple[str, ...]] = ("mistral",)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Idefics2Config:
        """Parse a published ``config.json``.

        Raises:
            ConfigError: A key this implementation does not understand, with its value.
        """
        text = data.get("text_config")
        if not isinstance(text, dict):
            raise ConfigError(
                f"config.json of model_type {data.get('model_type')!r} has no text_config object"
            )
        config = cls(
            text_config=dict(text),
            vision_config=Idefics2VisionSettings(
                **_pick(Idefics2VisionSettings, data.get("vision_config") or {})
            ),
            perceiver_config=Idefics2PerceiverSettings(
                **_pick(Idefics2PerceiverSettings, data.get("perceiver_config") or {})
            ),
            image_token_id=int(data.get("image_token_id", cls.image_token_id)),
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            quantization_config=data.get("quantization_config"),
            torch_dtype=data.get("torch_dtype"),
            model_type=str(data.get("model_type", "idefics2")),
        )
        config.validate()
        return config

    @classmethod
    def from_file(cls, path: Path) -> Idefics2Config:
        """Parse the ``config.json`` at ``path``."""
        return cls.from_dict(read_json(path, required=True))

    def validate(self) -> None:
        """Check the values this implementation depends on."""
        decoder = self.text_config.get("model_type", self.supported_decoders[0])
        if decoder not in self.supported_decoders:
            raise ConfigError(
                f"text_config.model_type is {decoder!r}; {self.model_type} checkpoints use "
                f"{'/'.join(self.supported_decoders)}"
            )
        for key in ("hidden_size", "vocab_size", "num_hidden_layers", "num_attention_heads"):
            if not isinstance(self.text_config.get(key), int):
                raise ConfigError(
                    f"text_config.{key} is {self.text_config.get(key)!r}; an integer is needed"
                )
        vision = self.vision_config
        if vision.hidden_size % vision.num_attention_heads:
            raise ConfigError(
                f"vision_config.hidden_size {vision.hidden_size} is not a multiple of "
                f"num_attention_heads {vision.num_attention_heads}"
            )
        if not 0 <= self.image_token_id < self.vocab_size:
            raise ConfigError(
                f"image_token_id {self.image_token_id} is outside the vocabulary of "
                f"{self.vocab_size}"
            )

    @property
    def vocab_size(self) -> int:
        """Rows of the decoder's embedding and LM head."""
        return int(self.text_config["vocab_size"])

    @property
    def hidden_size(self) -> int:
        """Width of the decoder."""
        return int(self.text_config["hidden_size"])

    @property
    def num_layers(self) -> int:
        """Decoder layers."""
        return int(self.text_config["num_hidden_layers"])

    @property
    def max_context(self) -> int:
        """Positions the decoder supports."""
        return int(self.text_config.get("max_position_embeddings", 32768))

    @property
    def tokens_per_image(self) -> int:
        """Prompt positions one image (piece) fills: the perceiver's latents."""
        return self.perceiver_config.resampler_n_latents

    def native(self, *, attn_implementation: str = "sdpa") -> PretrainedConfig:
        """The transformers ``Idefics2Config`` for these settings, built key by key."""
        from transformers import Idefics2Config as NativeConfig

        vision = self.vision_config
        perceiver = self.perceiver_config
        text = build_text_config(self.text_config)
        native = NativeConfig(
            image_token_id=self.image_token_id,
            tie_word_embeddings=self.tie_word_embeddings,
            vision_config={
                "hidden_size": vision.hidden_size,
                "intermediate_size": vision.intermediate_size,
                "num_hidden_layers": vision.num_hidden_layers,
                "num_attention_heads": vision.num_attention_heads,
                "num_channels": vision.num_channels,
                "image_size": vision.image_size,
                "patch_size": vision.patch_size,
                "hidden_act": vision.hidden_act,
                "layer_norm_eps": vision.layer_norm_eps,
                "initializer_range": vision.initializer_range,
            },
            # The 4.40 perceiver took its width and norm epsilon from the text model.
            perceiver_config={
                "hidden_act": perceiver.hidden_act,
                "hidden_size": self.hidden_size,
                "rms_norm_eps": float(self.text_config.get("rms_norm_eps", 1e-5)),
                "resampler_n_latents": perceiver.resampler_n_latents,
                "resampler_depth": perceiver.resampler_depth,
                "resampler_n_heads": perceiver.resampler_n_heads,
                "resampler_head_dim": perceiver.resampler_head_dim,
                "num_key_value_heads": perceiver.num_key_value_heads,
            },
            text_config=text.to_dict(),
        )
        native._attn_implementation = attn_implementation
        for sub in ("vision_config", "perceiver_config", "text_config"):
            getattr(native, sub)._attn_implementation = attn_implementation
        return native


def build_text_config(text: dict[str, Any]) -> PretrainedConfig:
    """The transformers decoder config (Mistral or Llama) from a published ``text_config``.

    transformers 4.x files carry ``rope_theta`` and ``rope_scaling``; transformers 5 reads
    ``rope_parameters``, so they are set here from those two keys (Llama 3.1's ``llama3``
    scaling included).
    """
    from transformers import LlamaConfig, MistralConfig

    kwargs: dict[str, Any] = {k: text[k] for k in DECODER_KEYS if text.get(k) is not None}
    theta = float(text.get("rope_theta", 10000.0))
    scaling = text.get("rope_scaling")
    if scaling:
        rope = {k: v for k, v in scaling.items() if k != "type"}
        rope["rope_type"] = scaling.get("rope_type", scaling.get("type", "default"))
        rope["rope_theta"] = theta
    else:
        rope = {"rope_type": "default", "rope_theta": theta}
    kwargs["rope_parameters"] = rope
    kwargs["tie_word_embeddings"] = bool(text.get("tie_word_embeddings", False))
    if text.get("model_type", "mistral") == "mistral":
        kwargs["sliding_window"] = text.get("sliding_window")
        for key in ("mlp_bias", "attention_bias"):
            kwargs.pop(key, None)
        return MistralConfig(**kwargs)
    return LlamaConfig(**kwargs)
