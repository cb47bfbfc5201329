"""Build Idefics3 checkpoints in the published on-disk format with random weights.

What is written is what ``HuggingFaceM4/Idefics3-8B-Llama3`` publishes: a ``config.json`` of the
transformers 4.46 era (``scale_factor``, a ``vision_config`` with ``"model_type": "idefics3"``,
a Llama 3.1 ``text_config`` with ``llama3`` rope scaling), the published tensor names in
safetensors (bfloat16), ``preprocessor_config.json`` and ``processor_config.json``, and the
Llama 3 style ``tokenizer.json``: byte-level BPE with Llama 3's pre-tokenizer, trained locally on a
small corpus and padded with unreachable pieces to 128000, the 256 special tokens at 128000-128255
(``<|begin_of_text|>`` 128000, ``<|end_of_text|>`` 128001, ``<|eot_id|>`` 128009 ...) and
``<fake_token_around_image>`` 128256, ``<image>`` 128257, ``<end_of_utterance>`` 128258.

Example:
    .. code-block:: python

        from mississippi_tools.models.idefics3.testing import build_tiny_checkpoint
        path = build_tiny_checkpoint("/tmp/tiny-idefics3")
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from mississippi_tools.models.checkpoint_files import save_weights, write_json
from mississippi_tools.models.idefics2.testing import CORPUS, random_weights

__all__ = [
    "CHAT_TEMPLATE",
    "IDEFICS3_8B_CONFIG",
    "TINY_CONFIG",
    "build_checkpoint",
    "build_tiny_checkpoint",
    "build_tokenizer_files",
]

#: The published chat template: Idefics2's, with ``<|begin_of_text|>`` in front.
CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'].capitalize()}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

#: Llama 3's pre-tokenizer pattern.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_BASE_VOCAB = 128000
_NAMED_SPECIALS = {
    128000: "<|begin_of_text|>",
    128001: "<|end_of_text|>",
    128004: "<|finetune_right_pad_id|>",
    128006: "<|start_header_id|>",
    128007: "<|end_header_id|>",
    128008: "<|eom_id|>",
    128009: "<|eot_id|>",
    128010: "<|python_tag|>",
}
_ADDED = ("<fake_token_around_image>", "<image>", "<end_of_utterance>")

_TEXT_8B: dict[str, Any] = {
    "_name_or_path": "meta-llama/Meta-Llama-3.1-8B-Instruct",
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pad_token_id": 128002,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 128259,
}

#: Idefics3-8B-Llama3's ``config.json`` (the keys that matter, the published layout).
IDEFICS3_8B_CONFIG: dict[str, Any] = {
    "architectures": ["Idefics3ForConditionalGeneration"],
    "image_seq_len": 169,
    "image_token_id": 128257,
    "model_type": "idefics3",
    "scale_factor": 2,
    "text_config": _TEXT_8B,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.0.dev0",
    "use_cache": True,
    "vision_config": {
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 1152,
        "image_size": 364,
        "intermediate_size": 4304,
        "layer_norm_eps": 1e-06,
        "max_image_size": {"longest_edge": 364},
        "model_type": "idefics3",
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "patch_size": 14,
        "size": {"longest_edge": 1820},
    },
}

#: A tiny configuration: real vocabulary, tile size and token ids; 2 layers everywhere.
TINY_CONFIG: dict[str, Any] = {
    **copy.deepcopy(IDEFICS3_8B_CONFIG),
    "text_config": {
        **_TEXT_8B,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
    },
    "vision_config": {
        **IDEFICS3_8B_CONFIG["vision_config"],
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
    },
}

_GENERATION = {
    "_from_model_config": True,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009, 128258],
    "pad_token_id": 128002,
    "transformers_version": "4.46.0.dev0",
}


def _special_names() -> dict[int, str]:
    names: dict[int, str] = {}
    reserved = 0
    for idx in range(_BASE_VOCAB, _BASE_VOCAB + 256):
        if idx in _NAMED_SPECIALS:
            names[idx] = _NAMED_SPECIALS[idx]
        else:
            names[idx] = f"<|reserved_special_token_{reserved}|>"
            reserved += 1
    return names


def build_tokenizer_files(directory: str | Path) -> Path:
    """Write ``tokenizer.json`` and the tokenizer JSON files in the published layout."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trained = Tokenizer(models.BPE(ignore_merges=True))
    trained.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    trained.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    trained.train_from_iterator(list(CORPUS) * 20, trainer)
    data = json.loads(trained.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    # Unreachable pieces (no merge makes them): the private-use character U+E000 in byte-level
    # spelling, then a number, up to Llama 3's 128000 pieces, so every real id lines up.
    for idx in range(len(vocab), _BASE_VOCAB):
        vocab[f"îĢĢ{idx:06d}"] = idx
    names = _special_names()
    names.update({128256 + i: t for i, t in enumerate(_ADDED)})

    def entry(idx: int, content: str) -> dict[str, Any]:
        return {
            "id": idx,
            "content": content,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }

    data["added_tokens"] = [entry(idx, content) for idx, content in sorted(names.items())]
    data["normalizer"] = None
    data["post_processor"] = {
        "type": "Sequence",
        "processors": [
            {
                "type": "ByteLevel",
                "add_prefix_space": True,
                "trim_offsets": False,
                "use_regex": True,
            },
            {
                "type": "TemplateProcessing",
                "single": [
                    {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                ],
                "pair": [
                    {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                    {"Sequence": {"id": "B", "type_id": 1}},
                ],
                "special_tokens": {
                    "<|begin_of_text|>": {
                        "id": "<|begin_of_text|>",
                        "ids": [128000],
                        "tokens": ["<|begin_of_text|>"],
                    }
                },
            },
        ],
    }
    write_json(directory / "tokenizer.json", data)
    decoder = {
        str(idx): {k: v for k, v in entry(idx, content).items() if k != "id"}
        for idx, content in sorted(names.items())
    }
    write_json(
        directory / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": decoder,
            "additional_special_tokens": list(_ADDED),
            "bos_token": "<|begin_of_text|>",
            "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": True,
            "eos_token": "<|end_of_text|>",
            "legacy": False,
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": 131072,
            "pad_token": "<|reserved_special_token_0|>",
            "processor_class": "Idefics3Processor",
            "tokenizer_class": "PreTrainedTokenizerFast",
        },
    )
    write_json(
        directory / "special_tokens_map.json",
        {
            "additional_special_tokens": list(_ADDED),
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|end_of_text|>",
            "pad_token": "<|reserved_special_token_0|>",
        },
    )
    return directory


def build_checkpoint(
    directory: str | Path,
    config: dict[str, Any],
    *,
    dtype: str = "bfloat16",
    seed: int = 0,
    init_std: float = 0.02,
    longest_edge: int = 4 * 364,
    do_image_splitting: bool = True,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write a random-weight Idefics3 checkpoint in the published format for ``config``.

    Args:
        directory: Where to write (created if needed).
        config: The ``config.json`` content (:data:`TINY_CONFIG`, :data:`IDEFICS3_8B_CONFIG`).
        dtype: Storage dtype (``bfloat16`` as published).
        seed: Seed of the random weights.
        init_std: Standard deviation of the random matrices.
        longest_edge: ``size.longest_edge`` of the image processor (a multiple of 364).
        do_image_splitting: The processor's default.
        max_shard_bytes: Shard the weights above this size.
    """
    import torch

    from mississippi_tools.models.idefics2.testing import _native_shapes
    from mississippi_tools.models.idefics3.configuration import Idefics3Config

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shapes = _native_shapes(config, Idefics3Config, "Idefics3ForConditionalGeneration")
    tensors = random_weights(shapes, dtype=getattr(torch, dtype), seed=seed, std=init_std)
    save_weights(directory, tensors, max_shard_bytes)
    written = copy.deepcopy(config)
    written["torch_dtype"] = dtype
    write_json(directory / "config.json", written)
    write_json(directory / "generation_config.json", _GENERATION)
    write_json(
        directory / "preprocessor_config.json",
        {
            "do_convert_rgb": True,
            "do_image_splitting": do_image_splitting,
            "do_normalize": True,
            "do_pad": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "Idefics3ImageProcessor",
            "image_std": [0.5, 0.5, 0.5],
            "max_image_size": {"longest_edge": 364},
            "processor_class": "Idefics3Processor",
            "resample": 1,
            "rescale_factor": 0.00392156862745098,
            "size": {"longest_edge": longest_edge},
        },
    )
    write_json(
        directory / "processor_config.json",
        {"image_seq_len": 169, "processor_class": "Idefics3Processor"},
    )
    build_tokenizer_files(directory)
    return directory


def build_tiny_checkpoint(
    directory: str | Path,
    *,
    seed: int = 0,
    dtype: str = "float32",
    longest_edge: int = 2 * 364,
    do_image_splitting: bool = True,
    max_shard_bytes: int | None = None,
) -> Path:
    """A tiny random Idefics3 checkpoint (2 layers each; real vocabulary, tiles and token ids).

    ``longest_edge`` defaults to 2 tiles across (the published 4 gives prompts of up to 2873
    image tokens, slow for tests); it is an option per request as well.
    """
    return build_checkpoint(
        directory,
        TINY_CONFIG,
        dtype=dtype,
        seed=seed,
        init_std=0.2,
        longest_edge=longest_edge,
        do_image_splitting=do_image_splitting,
        max_shard_bytes=max_shard_bytes,
    )
