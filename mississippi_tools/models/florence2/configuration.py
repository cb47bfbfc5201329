"""Read Microsoft's Florence-2 ``config.json`` and restate it as transformers' native config.

The published Florence-2 checkpoints (``microsoft/Florence-2-base``, ``-large``, their ``-ft``
fine-tunes and ``HuggingFaceM4/Florence-2-DocVQA``) carry the remote-code configuration of
Microsoft's ``configuration_florence2.py``: a ``florence2_language`` text config (BART fields plus
a few legacy mBART flags) and a ``davit`` vision config (``dim_embed``, a nested
``image_pos_embed`` and ``visual_temporal_embedding``, ``image_feature_source`` ...).
transformers 5 (5.0 and later) has a native ``Florence2ForConditionalGeneration`` with a
``Florence2VisionConfig`` and a plain ``BartConfig``; this module maps one onto the other, as
transformers' own ``convert_florence2_original_pytorch_to_hf.py`` does, and raises a
:class:`~mississippi_tools.errors.ConfigError` naming every value the native classes cannot
honour (a flag that changes the architecture, a pooling the native projector does not do) rather
than dropping it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mississippi_tools.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    from transformers import Florence2Config

__all__ = [
    "FLORENCE2_IMAGE_FEATURE_SOURCE",
    "Florence2ProcessorSettings",
    "decoder_prefix",
    "native_config",
    "read_json",
    "read_processor_settings",
]

#: The only image pooling the native projector implements (spatial then temporal average).
FLORENCE2_IMAGE_FEATURE_SOURCE = ["spatial_avg_pool", "temporal_avg_pool"]

#: ``PretrainedConfig`` bookkeeping keys a saved config may carry; none changes the computation.
_GENERIC_KEYS = frozenset(
    {
        "_name_or_path",
        "_commit_hash",
        "_attn_implementation_autoset",
        "architectures",
        "auto_map",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "model_type",
        "return_dict",
        "output_hidden_states",
        "output_attentions",
        "torchscript",
        "use_bfloat16",
        "tf_legacy_loss",
        "pruned_heads",
        "tie_word_embeddings",
        "chunk_size_feed_forward",
        "is_decoder",
        "cross_attention_hidden_size",
        "add_cross_attention",
        "tie_encoder_decoder",
        "finetuning_task",
        "id2label",
        "label2id",
        "num_labels",
        "tokenizer_class",
        "prefix",
        "sep_token_id",
        "task_specific_params",
        "problem_type",
        "max_length",
        "min_length",
        "do_sample",
        "early_stopping",
        "num_beams",
        "num_beam_groups",
        "diversity_penalty",
        "temperature",
        "top_k",
        "top_p",
        "typical_p",
        "repetition_penalty",
        "length_penalty",
        "no_repeat_ngram_size",
        "encoder_no_repeat_ngram_size",
        "bad_words_ids",
        "num_return_sequences",
        "output_scores",
        "return_dict_in_generate",
        "remove_invalid_values",
        "exponential_decay_length_penalty",
        "suppress_tokens",
        "begin_suppress_tokens",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "output_router_logits",
        "ignore_index",
        "is_encoder_decoder",
        "vocab_size",
        "projection_dim",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "decoder_start_token_id",
        "text_config",
        "vision_config",
        "use_cache",
    }
)
#: BART fields of Microsoft's ``Florence2LanguageConfig`` that the native ``BartConfig`` takes.
_BART_KEYS = frozenset(
    {
        "vocab_size",
        "max_position_embeddings",
        "encoder_layers",
        "encoder_ffn_dim",
        "encoder_attention_heads",
        "decoder_layers",
        "decoder_ffn_dim",
        "decoder_attention_heads",
        "encoder_layerdrop",
        "decoder_layerdrop",
        "activation_function",
        "d_model",
        "dropout",
        "attention_dropout",
        "activation_dropout",
        "init_std",
        "classifier_dropout",
        "scale_embedding",
        "use_cache",
        "num_labels",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "is_encoder_decoder",
        "decoder_start_token_id",
    }
)
#: Training-only fields of Microsoft's text config (dropout of a classifier head, checkpointing).
_TRAINING_ONLY = frozenset({"classif_dropout", "gradient_checkpointing", "num_hidden_layers"})
#: Legacy mBART flags the BART architecture of the native class has only one value for.
_FIXED_FLAGS: Mapping[str, Any] = {
    "normalize_before": False,
    "add_final_layer_norm": False,
    "add_bias_logits": False,
    "static_position_embeddings": False,
}
#: Microsoft DaViT keys -> native ``Florence2VisionConfig`` keys (same meaning).
_VISION_KEYS: Mapping[str, str] = {
    "dim_embed": "embed_dim",
    "depths": "depths",
    "patch_size": "patch_size",
    "patch_stride": "patch_stride",
    "patch_padding": "patch_padding",
    "patch_prenorm": "patch_prenorm",
    "num_heads": "num_heads",
    "num_groups": "num_groups",
    "window_size": "window_size",
    "drop_path_rate": "drop_path_rate",
    "projection_dim": "projection_dim",
    "mlp_ratio": "mlp_ratio",
    "qkv_bias": "qkv_bias",
    "in_chans": "in_channels",
}
_VISION_IGNORED = frozenset({"enable_checkpoint", "model_type", "conv_at_attn", "conv_at_ffn"})


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, ``{}`` when absent.

    Raises:
        ModelLoadError: The file is not valid JSON or not an object.
    """
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def _text_kwargs(text: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for key, value in text.items():
        if key in _FIXED_FLAGS:
            if bool(value) != _FIXED_FLAGS[key]:
                problems.append(
                    f"text_config.{key}={value!r} (the native BART has only {_FIXED_FLAGS[key]})"
                )
        elif key in _BART_KEYS:
            kwargs[key] = value
        elif key not in _TRAINING_ONLY and key not in _GENERIC_KEYS:
            problems.append(f"text_config.{key}={value!r} (unknown to the native BART config)")
    layers = text.get("num_hidden_layers")
    if layers is not None and layers != text.get("encoder_layers", layers):
        problems.append(
            f"text_config.num_hidden_layers={layers} differs from encoder_layers="
            f"{text.get('encoder_layers')}"
        )
    return kwargs


def _vision_kwargs(vision: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for key, value in vision.items():
        if key in _VISION_KEYS:
            kwargs[_VISION_KEYS[key]] = value
        elif key == "image_pos_embed":
            if not isinstance(value, dict) or value.get("type") != "learned_abs_2d":
                problems.append(f"vision_config.image_pos_embed={value!r} (native: learned_abs_2d)")
            else:
                kwargs["max_position_embeddings"] = int(value.get("max_pos_embeddings", 50))
        elif key == "visual_temporal_embedding":
            if not isinstance(value, dict) or value.get("type") != "COSINE":
                problems.append(
                    f"vision_config.visual_temporal_embedding={value!r} (native: COSINE)"
                )
            else:
                kwargs["max_temporal_embeddings"] = int(value.get("max_temporal_embeddings", 100))
        elif key == "image_feature_source":
            if list(value) != FLORENCE2_IMAGE_FEATURE_SOURCE:
                problems.append(
                    f"vision_config.image_feature_source={value!r} (native: "
                    f"{FLORENCE2_IMAGE_FEATURE_SOURCE})"
                )
        elif key not in _VISION_IGNORED and key not in _GENERIC_KEYS:
            problems.append(f"vision_config.{key}={value!r} (unknown to the native DaViT config)")
    stages = len(kwargs.get("embed_dim", ()))
    for key in ("depths", "num_heads", "num_groups", "patch_size", "patch_stride"):
        if key in kwargs and len(kwargs[key]) != stages:
            problems.append(
                f"vision_config.{key} has {len(kwargs[key])} stages, dim_embed {stages}"
            )
    return kwargs


def native_config(raw: Mapping[str, Any], *, image_token_id: int) -> Florence2Config:
    """The native (transformers) ``Florence2Config`` for Microsoft's ``config.json`` contents.

    Args:
        raw: The parsed ``config.json`` (``model_type`` ``florence2``).
        image_token_id: The id the prompt's image placeholders carry (one past the checkpoint's
            vocabulary: the published files have no image token).

    Raises:
        ConfigError: Every value that does not map onto the native classes, listed at once.
    """
    from transformers import BartConfig, Florence2Config, Florence2VisionConfig

    if raw.get("model_type") != "florence2":
        raise ConfigError(f"model_type is {raw.get('model_type')!r}, not 'florence2'")
    text = raw.get("text_config")
    vision = raw.get("vision_config")
    if not isinstance(text, dict) or not isinstance(vision, dict):
        raise ConfigError(
            "a Florence-2 config.json needs text_config and vision_config objects "
            f"(got {type(text).__name__} and {type(vision).__name__})"
        )
    problems: list[str] = []
    text_type = text.get("model_type", "florence2_language")
    if text_type not in ("florence2_language", "bart"):
        problems.append(f"text_config.model_type={text_type!r} (expected florence2_language)")
    vision_type = vision.get("model_type", "davit")
    if vision_type != "davit":
        problems.append(f"vision_config.model_type={vision_type!r} (expected davit)")
    text_kwargs = _text_kwargs(text, problems)
    vision_kwargs = _vision_kwargs(vision, problems)
    d_model = text_kwargs.get("d_model", 1024)
    projections = {
        "projection_dim": raw.get("projection_dim", d_model),
        "vision_config.projection_dim": vision_kwargs.get("projection_dim", d_model),
        "text_config.d_model": d_model,
    }
    if len(set(projections.values())) != 1:
        problems.append(f"the image projection must output d_model: {projections}")
    vocab = text_kwargs.get("vocab_size")
    if "vocab_size" in raw and vocab is not None and raw["vocab_size"] != vocab:
        problems.append(f"vocab_size={raw['vocab_size']} but text_config.vocab_size={vocab}")
    if problems:
        raise ConfigError(
            "this Florence-2 config.json does not map onto transformers' native "
            "Florence2ForConditionalGeneration: " + "; ".join(problems)
        )
    try:
        return Florence2Config(
            text_config=BartConfig(**text_kwargs),
            vision_config=Florence2VisionConfig(**vision_kwargs),
            image_token_id=image_token_id,
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid Florence-2 config values: {e}") from e


@dataclass(frozen=True)
class Florence2ProcessorSettings:
    """What ``preprocessor_config.json`` says about the images (a ``CLIPImageProcessor``).

    Attributes:
        height: Resized height in pixels (768 published).
        width: Resized width in pixels (768 published).
        resample: PIL filter number (3, bicubic, published).
        rescale_factor: Multiplier from ``uint8`` to ``[0, 1]``.
        mean: Per-channel mean (ImageNet's, published).
        std: Per-channel standard deviation.
        image_seq_length: Image positions in the prompt (577 published: 24 x 24 + 1).
    """

    height: int = 768
    width: int = 768
    resample: int = 3
    rescale_factor: float = 1 / 255
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    image_seq_length: int = 577


def read_processor_settings(directory: Path) -> Florence2ProcessorSettings:
    """The image settings of a checkpoint's ``preprocessor_config.json``.

    Raises:
        ConfigError: Settings the Florence-2 processor does not have (center crop, no resize,
            no normalisation) or malformed values.
    """
    path = directory / "preprocessor_config.json"
    data = read_json(path)
    if not data:
        raise ConfigError(
            f"{directory} has no preprocessor_config.json (Florence-2's image settings)"
        )
    problems = [
        f"{key}={data[key]!r}"
        for key, wanted in (("do_center_crop", False), ("do_resize", True), ("do_rescale", True))
        if key in data and bool(data[key]) != wanted
    ]
    if data.get("do_normalize") is False:
        problems.append("do_normalize=False")
    if problems:
        raise ConfigError(f"{path}: unsupported image settings: {', '.join(problems)}")
    try:
        size = data.get("size") or {"height": 768, "width": 768}
        mean = tuple(float(v) for v in data.get("image_mean", (0.485, 0.456, 0.406)))
        std = tuple(float(v) for v in data.get("image_std", (0.229, 0.224, 0.225)))
        settings = Florence2ProcessorSettings(
            height=int(size["height"]),
            width=int(size["width"]),
            resample=int(data.get("resample", 3)),
            rescale_factor=float(data.get("rescale_factor", 1 / 255)),
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
            image_seq_length=int(data.get("image_seq_length", 577)),
        )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ConfigError(f"{path} has malformed image settings: {e}") from e
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or min(settings.height, settings.width) < 1:
        raise ConfigError(f"{path}: need 3 means, 3 positive stds and a positive size")
    return settings


def decoder_prefix(raw: Mapping[str, Any], generation: Mapping[str, Any]) -> list[int]:
    """The decoder's first ids: the start token, then the forced ``<s>`` when the model has one.

    Microsoft's Florence-2 generates through BART's generation settings: the decoder starts from
    ``decoder_start_token_id`` (``</s>``, 2) and the first generated token is forced to
    ``forced_bos_token_id`` (``<s>``, 0), so every answer is ``</s><s>...</s>``.
    ``generation_config.json`` wins over the text config, as in transformers.
    """
    text = raw.get("text_config") or {}
    start = generation.get("decoder_start_token_id", text.get("decoder_start_token_id", 2))
    forced = generation.get("forced_bos_token_id", text.get("forced_bos_token_id"))
    return [int(start)] + ([] if forced is None else [int(forced)])
