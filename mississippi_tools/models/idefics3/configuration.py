"""Idefics3 configuration, read from the published ``config.json`` (transformers 4.46 era).

``HuggingFaceM4/Idefics3-8B-Llama3`` pairs the Idefics2 vision encoder (SigLIP-derived, 364-px
inputs, 14-px patches) with a pixel-shuffle connector (``scale_factor`` 2: 26 x 26 patches become
13 x 13 = 169 tokens of 4 x the width, projected by one linear layer) and a Llama 3.1 decoder
(``text_config``, ``llama3`` rope scaling). The settings are read key by key, as for Idefics2
(:mod:`mississippi_tools.models.idefics2.configuration`), which this module extends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mississippi_tools.errors import ConfigError
from mississippi_tools.models.idefics2.configuration import (
    Idefics2Config,
    build_text_config,
    read_json,
)

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = ["Idefics3Config", "Idefics3ProcessorSettings"]


@dataclass
class Idefics3Config(Idefics2Config):
    """An Idefics3 ``config.json`` as published (the keys that matter, typed)."""

    image_token_id: int = 128257
    """Id of ``<image>``, whose embeddings the image features replace."""
    scale_factor: int = 2
    """Pixel-shuffle factor of the connector (tokens per tile shrink by its square)."""

    supported_decoders: ClassVar[tuple[str, ...]] = ("llama",)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Idefics3Config:
        """Parse a published ``config.json``.

        Raises:
            ConfigError: A key this implementation does not understand, with its value.
        """
        config = super().from_dict(data)
        assert isinstance(config, Idefics3Config)
        config.scale_factor = int(data.get("scale_factor", 2))
        config.validate()
        return config

    def validate(self) -> None:
        """Check the values this implementation depends on."""
        super().validate()
        vision = self.vision_config
        side = vision.image_size // vision.patch_size
        if self.scale_factor < 1 or side % self.scale_factor:
            raise ConfigError(
                f"scale_factor {self.scale_factor} does not divide the {side} x {side} patch grid "
                f"of vision_config (image_size {vision.image_size}, patch_size {vision.patch_size})"
            )

    @property
    def max_context(self) -> int:
        """Positions the decoder supports."""
        return int(self.text_config.get("max_position_embeddings", 131072))

    @property
    def tokens_per_image(self) -> int:
        """Prompt positions one tile fills: 169 for 364-px tiles."""
        side = self.vision_config.image_size // self.vision_config.patch_size
        return (side // self.scale_factor) ** 2

    def native(self, *, attn_implementation: str = "sdpa") -> PretrainedConfig:
        """The transformers ``Idefics3Config`` for these settings, built key by key."""
        from transformers import Idefics3Config as NativeConfig

        vision = self.vision_config
        native = NativeConfig(
            image_token_id=self.image_token_id,
            tie_word_embeddings=self.tie_word_embeddings,
            scale_factor=self.scale_factor,
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
            text_config=build_text_config(self.text_config).to_dict(),
        )
        native._attn_implementation = attn_implementation
        for sub in ("vision_config", "text_config"):
            getattr(native, sub)._attn_implementation = attn_implementation
        return native


@dataclass
class Idefics3ProcessorSettings:
    """The image processor and processor files (``preprocessor_config.json`` ...)."""

    do_image_splitting: bool = True
    """Tile the image (rows x columns of 364-px tiles, then a 364-px global view)."""
    longest_edge: int = 4 * 364
    """Longest side the image is resized to first (up *or* down)."""
    tile_size: int = 364
    """``max_image_size.longest_edge``: the side of a tile."""
    resample: int = 1
    """PIL resampling filter (1: Lanczos)."""
    rescale_factor: float = 1 / 255
    """Pixel scale before normalising."""
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Per-channel mean."""
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Per-channel standard deviation."""

    @classmethod
    def from_directory(cls, directory: Path) -> Idefics3ProcessorSettings:
        """Read ``preprocessor_config.json`` (defaults if absent)."""
        pre = read_json(directory / "preprocessor_config.json")
        settings = cls(
            do_image_splitting=bool(pre.get("do_image_splitting", True)),
            longest_edge=int((pre.get("size") or {}).get("longest_edge", 4 * 364)),
            tile_size=int((pre.get("max_image_size") or {}).get("longest_edge", 364)),
            resample=int(pre.get("resample", 1)),
            rescale_factor=float(pre.get("rescale_factor", 1 / 255)),
            image_mean=tuple(pre.get("image_mean", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
            image_std=tuple(pre.get("image_std", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
        )
        if settings.longest_edge % settings.tile_size:
            raise ConfigError(
                f"preprocessor_config.json size.longest_edge {settings.longest_edge} is not a "
                f"multiple of max_image_size.longest_edge {settings.tile_size}"
            )
        return settings
