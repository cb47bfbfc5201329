"""H2OVL-Mississippi configuration, read from the original ``config.json``.

The attribute names and defaults are those of the published files (``h2ovl_chat`` model type,
``H2OVLChatConfig`` in the hub's remote code), so a config round-trips unchanged. The vision tower
is InternViT (``intern_vit_6b`` model type); the language model is a Llama (H2O-Danube3, in the
800M) or Mistral (H2O-Danube2, in the 2B) decoder described by ``llm_config``.

This module has no torch dependency: it can be read and validated before anything heavy loads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mississippi_tools.errors import ConfigError

__all__ = [
    "LLM_SIZE_LIMITS",
    "SUPPORTED_DECODERS",
    "SUPPORTED_TEMPLATES",
    "TILE_LIMITS",
    "VISION_SIZE_LIMITS",
    "H2OVLConfig",
    "H2OVLVisionConfig",
]

#: Decoder architectures of the published checkpoints (``llm_config.model_type``).
SUPPORTED_DECODERS = ("llama", "mistral")
#: Conversation templates we implement (``config.template``).
SUPPORTED_TEMPLATES = ("h2ogpt2",)

# Upper bounds of the sizes a config.json may declare. Each is about 4x the largest published
# checkpoint of the InternVL lineage H2OVL belongs to (``internvl_chat`` configs parse here too):
# InternVL2-Llama3-76B, whose decoder is Llama-3-70B (80 layers, 8192 wide, 28672-wide MLP, 64
# heads, 128,256 tokens; 131,072 positions in Llama 3.1) and whose encoder is InternViT-6B (48
# layers, 3200 wide, 12800-wide MLP, 25 heads), with 448-px tiles and up to 12 of them. The
# H2OVL 800M and 2B are far below (the 2B: 24 layers, 2560 wide). Bounds that loose admit any real
# or plausible successor, and still refuse a typo or a hostile file (1e6 layers) in microseconds,
# before a module is built or a byte allocated.

#: Largest value of each size in ``llm_config``.
LLM_SIZE_LIMITS: dict[str, int] = {
    "num_hidden_layers": 320,
    "hidden_size": 32_768,
    "intermediate_size": 131_072,
    "num_attention_heads": 256,
    "num_key_value_heads": 256,
    "head_dim": 1024,
    "vocab_size": 524_288,
    "max_position_embeddings": 524_288,
}
#: Largest value of each size in ``vision_config``.
VISION_SIZE_LIMITS: dict[str, int] = {
    "num_hidden_layers": 192,
    "hidden_size": 12_800,
    "intermediate_size": 51_200,
    "num_attention_heads": 100,
    "image_size": 1792,
    "patch_size": 1792,
    "num_channels": 4,
}
#: Largest value of the tiling sizes at the top of ``config.json``.
TILE_LIMITS: dict[str, int] = {
    "min_dynamic_patch": 48,
    "max_dynamic_patch": 48,
    "force_image_size": 1792,
}


def _check_sizes(block: str, data: dict[str, Any], limits: dict[str, int]) -> None:
    """Refuse sizes in ``data`` that are not whole numbers from 1 to their limit."""
    for key, limit in limits.items():
        value = data.get(key)
        if value is None:
            continue
        where = f"{block}{key}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                f"{where} is {value!r}; it must be a whole number from 1 to {limit:,}"
            )
        if not 1 <= value <= limit:
            raise ConfigError(
                f"{where} is {value:,}; it must be from 1 to {limit:,} (about 4x the largest "
                "published model of the H2OVL/InternVL lineage); is this config.json damaged?"
            )


@dataclass
class H2OVLVisionConfig:
    """InternViT vision-encoder settings (the ``vision_config`` block of ``config.json``)."""

    hidden_size: int = 1024
    """Width of the encoder."""
    intermediate_size: int = 4096
    """Width of each block's MLP."""
    num_attention_heads: int = 16
    """Attention heads per block."""
    num_hidden_layers: int = 24
    """Number of encoder blocks in the checkpoint."""
    image_size: int = 448
    """Side of a square input tile in pixels."""
    patch_size: int = 14
    """Side of a patch; 448 / 14 gives a 32 x 32 grid."""
    num_channels: int = 3
    """Input channels."""
    layer_norm_eps: float = 1e-6
    """Epsilon of the blocks' norms."""
    hidden_act: str = "gelu"
    """MLP activation; ``gelu`` is the exact (erf) GELU."""
    qkv_bias: bool = True
    """Whether the fused qkv projection has a bias."""
    qk_normalization: bool = False
    """RMS-normalise queries and keys (InternViT-6B only)."""
    norm_type: str = "layer_norm"
    """``layer_norm`` or ``rms_norm``."""
    initializer_range: float = 0.02
    """Standard deviation used when building random weights."""
    initializer_factor: float = 1.0
    """Scale of the layer-scale init when building random weights."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> H2OVLVisionConfig:
        """Build from a ``vision_config`` dict, ignoring keys that do not affect computation."""
        _check_sizes("vision_config.", data, VISION_SIZE_LIMITS)
        known = {f for f in cls.__dataclass_fields__}
        config = cls(**{k: v for k, v in data.items() if k in known})
        if config.norm_type not in ("layer_norm", "rms_norm"):
            raise ConfigError(
                f"vision_config.norm_type is {config.norm_type!r}; "
                "supported: 'layer_norm', 'rms_norm'"
            )
        if config.hidden_act != "gelu":
            raise ConfigError(
                f"vision_config.hidden_act is {config.hidden_act!r}; only 'gelu' is supported"
            )
        if config.hidden_size % config.num_attention_heads:
            raise ConfigError(
                f"vision_config.hidden_size {config.hidden_size} is not divisible by "
                f"num_attention_heads {config.num_attention_heads}"
            )
        return config

    def to_dict(self) -> dict[str, Any]:
        """The ``vision_config`` block as the original files write it."""
        data = asdict(self)
        data.update(
            {
                "architectures": ["InternVisionModel"],
                "model_type": "intern_vit_6b",
                "attention_dropout": 0.0,
                "dropout": 0.0,
                "drop_path_rate": 0.0,
                "use_flash_attn": True,
            }
        )
        return data


@dataclass
class H2OVLConfig:
    """The whole model's configuration (``config.json`` of an ``h2ovl_chat`` checkpoint)."""

    vision_config: H2OVLVisionConfig = field(default_factory=H2OVLVisionConfig)
    """The InternViT encoder."""
    llm_config: dict[str, Any] = field(default_factory=dict)
    """The decoder's transformers config as the original writes it (llama or mistral)."""
    downsample_ratio: float = 0.5
    """Pixel-shuffle ratio: 0.5 turns 32 x 32 patches into 16 x 16 = 256 tokens per tile."""
    ps_version: str = "v2"
    """Pixel-shuffle variant; v2 adds the final transpose (row-major tokens)."""
    select_layer: int = -1
    """Which encoder layer's output feeds the projector (-1: the last)."""
    template: str = "h2ogpt2"
    """Conversation template name."""
    force_image_size: int | None = 448
    """Tile side in pixels, overriding ``vision_config.image_size`` when set."""
    dynamic_image_size: bool = True
    """Tile images into a grid (otherwise a single tile)."""
    use_thumbnail: bool = True
    """Append a whole-image thumbnail tile when the grid has more than one tile."""
    min_dynamic_patch: int = 1
    """Fewest tiles in a grid."""
    max_dynamic_patch: int = 6
    """Most tiles in a grid (without the thumbnail)."""
    use_msac: bool = False
    """Multi-scale adaptive cropping: a second tiling pass (the 2B uses it)."""
    pad2square: bool = False
    """Unused by H2OVL; must be false."""
    use_backbone_lora: int = 0
    """LoRA rank on the vision tower; merged checkpoints only (must be 0)."""
    use_llm_lora: int = 0
    """LoRA rank on the decoder; merged checkpoints only (must be 0)."""
    architectures: list[str] = field(default_factory=lambda: ["H2OVLChatModel"])
    """As in the original file."""
    torch_dtype: str | None = "bfloat16"
    """The dtype the checkpoint was saved in."""
    model_type: str = "h2ovl_chat"
    """As in the original file."""

    def __post_init__(self) -> None:
        self._validate()

    @property
    def image_size(self) -> int:
        """The tile side in pixels."""
        return self.force_image_size or self.vision_config.image_size

    @property
    def num_image_token(self) -> int:
        """Image tokens per tile after pixel shuffle (256 for 448 px tiles)."""
        patches = self.image_size // self.vision_config.patch_size
        return int(patches * patches * self.downsample_ratio**2)

    @property
    def decoder_type(self) -> str:
        """``llama`` or ``mistral``."""
        return str(self.llm_config.get("model_type", "llama"))

    @property
    def llm_hidden_size(self) -> int:
        """Width of the decoder."""
        return int(self.llm_config["hidden_size"])

    @property
    def vocab_size(self) -> int:
        """Rows of the decoder's embedding matrix."""
        return int(self.llm_config["vocab_size"])

    @property
    def projector_input_size(self) -> int:
        """Width after pixel shuffle: vision width times (1 / downsample_ratio) squared."""
        return self.vision_config.hidden_size * int(1 / self.downsample_ratio) ** 2

    @property
    def encoder_layers_used(self) -> int:
        """How many encoder blocks run: those after ``select_layer`` are never needed."""
        n = self.vision_config.num_hidden_layers
        return n + 1 + self.select_layer if self.select_layer < 0 else self.select_layer

    def _validate(self) -> None:
        if self.template not in SUPPORTED_TEMPLATES:
            raise ConfigError(
                f"template {self.template!r} is not supported; supported: {SUPPORTED_TEMPLATES}"
            )
        if self.decoder_type not in SUPPORTED_DECODERS:
            raise ConfigError(
                f"llm_config.model_type {self.decoder_type!r} is not supported; "
                f"supported decoders: {SUPPORTED_DECODERS}"
            )
        for key in ("hidden_size", "vocab_size", "num_hidden_layers", "num_attention_heads"):
            if key not in self.llm_config:
                raise ConfigError(f"llm_config lacks {key!r}; is this an h2ovl_chat config.json?")
        _check_sizes("llm_config.", self.llm_config, LLM_SIZE_LIMITS)
        _check_sizes("", {k: getattr(self, k) for k in TILE_LIMITS}, TILE_LIMITS)
        if self.ps_version not in ("v1", "v2"):
            raise ConfigError(f"ps_version {self.ps_version!r} is not supported; use 'v1' or 'v2'")
        if self.downsample_ratio not in (0.5, 0.25):
            raise ConfigError(
                f"downsample_ratio {self.downsample_ratio} is not supported; use 0.5 or 0.25"
            )
        if self.pad2square:
            raise ConfigError("pad2square=true is not used by H2OVL and is not supported")
        if self.use_backbone_lora or self.use_llm_lora:
            raise ConfigError(
                "this checkpoint has unmerged LoRA adapters (use_backbone_lora/use_llm_lora); "
                "merge them into the weights first"
            )
        if not 1 <= self.min_dynamic_patch <= self.max_dynamic_patch:
            raise ConfigError(
                f"min_dynamic_patch {self.min_dynamic_patch} and max_dynamic_patch "
                f"{self.max_dynamic_patch} must satisfy 1 <= min <= max"
            )
        layers = self.vision_config.num_hidden_layers
        if not (-layers <= self.select_layer < 0 or 0 < self.select_layer <= layers):
            raise ConfigError(
                f"select_layer {self.select_layer} is outside the {layers} encoder layers"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> H2OVLConfig:
        """Build from the parsed ``config.json``; unknown keys are ignored, wrong ones refused."""
        if data.get("model_type") not in (None, "h2ovl_chat", "internvl_chat"):
            raise ConfigError(
                f"model_type {data.get('model_type')!r} is not an H2OVL-Mississippi checkpoint "
                "(expected 'h2ovl_chat')"
            )
        if "llm_config" not in data or "vision_config" not in data:
            raise ConfigError("config.json lacks llm_config or vision_config")
        for block in ("llm_config", "vision_config"):
            if not isinstance(data[block], dict):
                raise ConfigError(
                    f"config.json's {block} is a JSON {type(data[block]).__name__}; "
                    "it must be an object"
                )
        known = set(cls.__dataclass_fields__) - {"vision_config", "llm_config"}
        kwargs = {k: v for k, v in data.items() if k in known}
        return cls(
            vision_config=H2OVLVisionConfig.from_dict(dict(data["vision_config"])),
            llm_config=dict(data["llm_config"]),
            **kwargs,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> H2OVLConfig:
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

    def to_dict(self) -> dict[str, Any]:
        """The config as the original ``config.json`` writes it."""
        data: dict[str, Any] = {
            k: getattr(self, k) for k in self.__dataclass_fields__ if k != "vision_config"
        }
        data["vision_config"] = self.vision_config.to_dict()
        data["auto_map"] = {
            "AutoConfig": "configuration_h2ovl_chat.H2OVLChatConfig",
            "AutoModel": "modeling_h2ovl_chat.H2OVLChatModel",
            "AutoModelForCausalLM": "modeling_h2ovl_chat.H2OVLChatModel",
        }
        return data
