"""Build Florence-2 checkpoints in Microsoft's published layout with random weights.

A checkpoint written here has what ``HuggingFaceM4/Florence-2-DocVQA`` has: a remote-code
``config.json`` (``model_type: florence2``, a ``florence2_language`` text config with BART's
fields and the legacy mBART flags, a ``davit`` vision config with ``dim_embed``,
``image_pos_embed``, ``visual_temporal_embedding`` and ``image_feature_source``, and the
``auto_map`` we never follow), ``generation_config.json``, ``preprocessor_config.json`` (a
``CLIPImageProcessor`` of ``Florence2Processor``), Microsoft's tensor names in
``model.safetensors`` (``vision_tower.convs.0.proj.weight``,
``vision_tower.blocks.0.0.spatial_block.window_attn.fn.qkv.weight``, a bare ``image_projection``
matrix ``[in, out]``, ``image_pos_embed.*``, ``visual_temporal_embed.pos_idx_to_embed``,
``language_model.model.*`` and BART's zero ``language_model.final_logits_bias``), and BART's
byte-level BPE tokenizer files (``vocab.json``, ``merges.txt``, ``tokenizer.json``,
``tokenizer_config.json``) with the 1024 Florence-2 special tokens after the base vocabulary, as
Microsoft's processor adds them. The base vocabulary is a small byte-level BPE trained here (the
published one has BART's 50265 pieces), so ``text_config.vocab_size`` is that plus 1024.

The weights are drawn by transformers' native ``Florence2ForConditionalGeneration`` initialiser
(seeded) and written under Microsoft's names by :func:`microsoft_name`, the inverse of the
loader's table, written out separately here from Microsoft's module structure.

Example:
    .. code-block:: python

        from mississippi_tools.models.florence2.testing import build_tiny_checkpoint
        path = build_tiny_checkpoint("/tmp/tiny-florence2")
        MississippiVLM.load(path).ask("page.png", "What is the total?").answer
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mississippi_tools.models.checkpoint_files import save_weights, write_json

if TYPE_CHECKING:
    import torch

__all__ = [
    "FLORENCE2_DOCVQA_CONFIG",
    "PUBLISHED_PREPROCESSOR",
    "TINY_CONFIG",
    "TINY_PREPROCESSOR",
    "build_checkpoint",
    "build_tiny_checkpoint",
    "build_tokenizer_files",
    "microsoft_name",
]

#: ``config.json`` of the Florence-2-base family (Florence-2-DocVQA is a base-size fine-tune).
FLORENCE2_DOCVQA_CONFIG: dict[str, Any] = {
    "_name_or_path": "microsoft/Florence-2-base-ft",
    "architectures": ["Florence2ForConditionalGeneration"],
    "auto_map": {
        "AutoConfig": "microsoft/Florence-2-base-ft--configuration_florence2.Florence2Config",
        "AutoModelForCausalLM": (
            "microsoft/Florence-2-base-ft--modeling_florence2.Florence2ForConditionalGeneration"
        ),
    },
    "bos_token_id": 0,
    "eos_token_id": 2,
    "ignore_index": -100,
    "is_encoder_decoder": True,
    "model_type": "florence2",
    "pad_token_id": 1,
    "projection_dim": 768,
    "text_config": {
        "_name_or_path": "",
        "activation_dropout": 0.1,
        "activation_function": "gelu",
        "add_bias_logits": False,
        "add_final_layer_norm": False,
        "attention_dropout": 0.1,
        "bos_token_id": 0,
        "classif_dropout": 0.1,
        "classifier_dropout": 0.0,
        "d_model": 768,
        "decoder_attention_heads": 12,
        "decoder_ffn_dim": 3072,
        "decoder_layerdrop": 0.0,
        "decoder_layers": 6,
        "decoder_start_token_id": 2,
        "dropout": 0.1,
        "early_stopping": True,
        "encoder_attention_heads": 12,
        "encoder_ffn_dim": 3072,
        "encoder_layerdrop": 0.0,
        "encoder_layers": 6,
        "eos_token_id": 2,
        "forced_bos_token_id": 0,
        "forced_eos_token_id": 2,
        "gradient_checkpointing": False,
        "init_std": 0.02,
        "is_encoder_decoder": True,
        "label2id": {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2},
        "id2label": {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"},
        "max_position_embeddings": 1024,
        "model_type": "florence2_language",
        "no_repeat_ngram_size": 3,
        "normalize_before": False,
        "num_beams": 3,
        "num_hidden_layers": 6,
        "pad_token_id": 1,
        "scale_embedding": False,
        "use_cache": True,
        "vocab_size": 51289,
    },
    "torch_dtype": "float32",
    "transformers_version": "4.42.3",
    "vision_config": {
        "_name_or_path": "",
        "depths": [1, 1, 9, 1],
        "dim_embed": [128, 256, 512, 1024],
        "drop_path_rate": 0.1,
        "enable_checkpoint": False,
        "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
        "image_pos_embed": {"max_pos_embeddings": 50, "type": "learned_abs_2d"},
        "model_type": "davit",
        "num_groups": [4, 8, 16, 32],
        "num_heads": [4, 8, 16, 32],
        "patch_padding": [3, 1, 1, 1],
        "patch_prenorm": [False, True, True, True],
        "patch_size": [7, 3, 3, 3],
        "patch_stride": [4, 2, 2, 2],
        "projection_dim": 768,
        "visual_temporal_embedding": {"max_temporal_embeddings": 100, "type": "COSINE"},
        "window_size": 12,
    },
    "vocab_size": 51289,
}

#: Tiny sizes with the published structure, vocabulary and token ids (65 image positions).
TINY_CONFIG: dict[str, Any] = copy.deepcopy(FLORENCE2_DOCVQA_CONFIG)
TINY_CONFIG["projection_dim"] = 32
TINY_CONFIG["text_config"].update(
    d_model=32,
    decoder_attention_heads=2,
    decoder_ffn_dim=64,
    decoder_layers=2,
    encoder_attention_heads=2,
    encoder_ffn_dim=64,
    encoder_layers=2,
    num_hidden_layers=2,
)
TINY_CONFIG["vision_config"].update(
    depths=[1, 1],
    dim_embed=[16, 32],
    num_groups=[2, 4],
    num_heads=[2, 4],
    patch_padding=[3, 1],
    patch_prenorm=[False, True],
    patch_size=[7, 3],
    patch_stride=[4, 2],
    projection_dim=32,
    window_size=2,
    image_pos_embed={"max_pos_embeddings": 10, "type": "learned_abs_2d"},
)

#: The published ``preprocessor_config.json`` at the tiny size (64 px: 8 x 8 + 1 positions).
TINY_PREPROCESSOR: dict[str, Any] = {
    "_valid_processor_keys": ["images", "do_resize", "size", "resample", "do_rescale"],
    "auto_map": {
        "AutoProcessor": "microsoft/Florence-2-base-ft--processing_florence2.Florence2Processor"
    },
    "crop_size": {"height": 64, "width": 64},
    "do_center_crop": False,
    "do_convert_rgb": None,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "CLIPImageProcessor",
    "image_seq_length": 65,
    "image_std": [0.229, 0.224, 0.225],
    "processor_class": "Florence2Processor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 64, "width": 64},
}

#: The published ``preprocessor_config.json`` (768 px: 24 x 24 + 1 image positions).
PUBLISHED_PREPROCESSOR: dict[str, Any] = {
    **TINY_PREPROCESSOR,
    "crop_size": {"height": 768, "width": 768},
    "image_seq_length": 577,
    "size": {"height": 768, "width": 768},
}

_GENERATION_CONFIG = {
    "bos_token_id": 0,
    "decoder_start_token_id": 2,
    "early_stopping": True,
    "eos_token_id": 2,
    "forced_bos_token_id": 0,
    "forced_eos_token_id": 2,
    "no_repeat_ngram_size": 3,
    "num_beams": 3,
    "pad_token_id": 1,
    "transformers_version": "4.42.3",
}

# Text the tiny tokenizer learns its merges from: document questions and answers.
_CORPUS = (
    "What is the text in the image? What is the total amount due on the invoice?",
    "Invoice number 2024-117, total $1,234.56, due date March 3. <DocVQA>",
    "Name: Jane Doe. Date: 12/05/2023. Address: 10 Main Street, Springfield.",
    "The quick brown fox jumps over the lazy dog. Page 3 of 7. Table 2: sales by region.",
)

# Microsoft's names, from the native ones (the inverse of the loader's table, kept apart).
_TO_MICROSOFT: tuple[tuple[str, str], ...] = (
    (r"^model\.vision_tower\.convs\.(\d+)\.conv\.", r"vision_tower.convs.\1.proj."),
    (r"^model\.vision_tower\.convs\.(\d+)\.norm\.", r"vision_tower.convs.\1.norm."),
    (
        r"^model\.vision_tower\.blocks\.(\d+)\.(\d+)\.(\w+_block)\.conv([12])\.",
        r"vision_tower.blocks.\1.\2.\3.conv\4.fn.dw.",
    ),
    (
        r"^model\.vision_tower\.blocks\.(\d+)\.(\d+)\.spatial_block\.norm1\.",
        r"vision_tower.blocks.\1.\2.spatial_block.window_attn.norm.",
    ),
    (
        r"^model\.vision_tower\.blocks\.(\d+)\.(\d+)\.channel_block\.norm1\.",
        r"vision_tower.blocks.\1.\2.channel_block.channel_attn.norm.",
    ),
    (
        r"^model\.vision_tower\.blocks\.(\d+)\.(\d+)\.(\w+_block)\.(window_attn|channel_attn)\.",
        r"vision_tower.blocks.\1.\2.\3.\4.fn.",
    ),
    (
        r"^model\.vision_tower\.blocks\.(\d+)\.(\d+)\.(\w+_block)\.norm2\.",
        r"vision_tower.blocks.\1.\2.\3.ffn.norm.",
    ),
    (
        r"^model\.vision_tower\.blocks\.(\d+)\.(\d+)\.(\w+_block)\.ffn\.",
        r"vision_tower.blocks.\1.\2.\3.ffn.fn.net.",
    ),
    (r"^model\.multi_modal_projector\.image_projection\.weight$", "image_projection"),
    (r"^model\.multi_modal_projector\.image_proj_norm\.", "image_proj_norm."),
    (r"^model\.multi_modal_projector\.image_position_embed\.", "image_pos_embed."),
    (r"^model\.multi_modal_projector\.visual_temporal_embed\.", "visual_temporal_embed."),
    (r"^model\.language_model\.", "language_model.model."),
)


def microsoft_name(native: str) -> str | None:
    """Microsoft's name of a native tensor; ``None`` for tied copies Microsoft does not save."""
    if native == "lm_head.weight" or native.endswith(".embed_tokens.weight"):
        return None
    for pattern, repl in _TO_MICROSOFT:
        if re.match(pattern, native):
            return re.sub(pattern, repl, native)
    raise ValueError(f"no Microsoft name for {native}")


def _added(token: str, idx: int, *, special: bool = True) -> dict[str, Any]:
    return {
        "id": idx,
        "content": token,
        "single_word": False,
        "lstrip": token == "<mask>",
        "rstrip": False,
        "normalized": token == "<mask>",
        "special": special,
    }


def build_tokenizer_files(directory: str | Path) -> Path:
    """Write BART's tokenizer files with the Florence-2 special tokens at their published ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from mississippi_tools.models.florence2.tokenization import LEGACY_SPECIAL_TOKENS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=900,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    trained.train_from_iterator(list(_CORPUS) * 20, trainer)
    learned = json.loads(trained.to_str())["model"]
    fixed = ["<s>", "<pad>", "</s>", "<unk>"]
    pieces = fixed + [p for p, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1])]
    pieces = list(dict.fromkeys(pieces))
    pieces.append("<mask>")
    vocab = {piece: i for i, piece in enumerate(pieces)}
    merges = [m if isinstance(m, str) else " ".join(m) for m in learned["merges"]]
    added = [_added(t, vocab[t]) for t in (*fixed, "<mask>")]
    added += [_added(t, len(pieces) + i) for i, t in enumerate(LEGACY_SPECIAL_TOKENS)]
    data = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": True,
        },
        "post_processor": {
            "type": "RobertaProcessing",
            "sep": ["</s>", 2],
            "cls": ["<s>", 0],
            "trim_offsets": True,
            "add_prefix_space": False,
        },
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    write_json(directory / "tokenizer.json", data)
    write_json(directory / "vocab.json", vocab)
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )
    specials = {
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "mask_token": "<mask>",
        "pad_token": "<pad>",
        "sep_token": "</s>",
        "unk_token": "<unk>",
    }
    write_json(
        directory / "special_tokens_map.json",
        {**specials, "additional_special_tokens": list(LEGACY_SPECIAL_TOKENS)},
    )
    write_json(
        directory / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "additional_special_tokens": list(LEGACY_SPECIAL_TOKENS),
            "clean_up_tokenization_spaces": True,
            "errors": "replace",
            "model_max_length": 1024,
            "processor_class": "Florence2Processor",
            "tokenizer_class": "BartTokenizer",
            "trim_offsets": True,
            **specials,
        },
    )
    return directory


def tiny_vocab_size() -> int:
    """Tokens of the tiny tokenizer: its trained base vocabulary plus the 1024 Florence-2 ones."""
    import tempfile

    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory() as scratch:
        path = build_tokenizer_files(scratch) / "tokenizer.json"
        return int(Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True))


def _native_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    import torch
    from transformers import Florence2ForConditionalGeneration

    from mississippi_tools.models.florence2.configuration import native_config

    native = native_config(config, image_token_id=int(config["text_config"]["vocab_size"]))
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(native)
    with torch.no_grad():  # rescaled from BART's 0.02 init, so the tiny model's answers vary
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "embed_positions" not in name:
                param.mul_(0.5 if "shared" in name else 3.0)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def build_checkpoint(
    directory: str | Path,
    config: dict[str, Any],
    *,
    preprocessor: dict[str, Any] | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write a random-weight checkpoint of ``config`` in Microsoft's layout."""
    import torch

    directory = Path(directory)
    build_tokenizer_files(directory)
    write_json(directory / "config.json", config)
    write_json(directory / "generation_config.json", _GENERATION_CONFIG)
    write_json(directory / "preprocessor_config.json", preprocessor or TINY_PREPROCESSOR)
    tensors: dict[str, torch.Tensor] = {}
    for native, tensor in _native_weights(config, seed).items():
        name = microsoft_name(native)
        if name is None:
            continue
        value = tensor.t().contiguous() if name == "image_projection" else tensor
        tensors[name] = (
            value.to(dtype) if dtype is not None and value.is_floating_point() else value
        )
    vocab = int(config["text_config"]["vocab_size"])
    tensors["language_model.final_logits_bias"] = torch.zeros(1, vocab)
    save_weights(directory, tensors, max_shard_bytes)
    return directory


def build_tiny_checkpoint(
    directory: str | Path,
    *,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """A tiny Florence-2 checkpoint (2+2 BART layers, a 2-stage DaViT, 64-px images)."""
    config = copy.deepcopy(TINY_CONFIG)
    for key, value in (overrides or {}).items():
        config[key] = value
    vocab = tiny_vocab_size()
    config["vocab_size"] = config["text_config"]["vocab_size"] = vocab
    return build_checkpoint(
        directory, config, seed=seed, dtype=dtype, max_shard_bytes=max_shard_bytes
    )
