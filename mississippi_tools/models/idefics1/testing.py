"""Build IDEFICS 1 checkpoints in the published on-disk format, with random weights.

What is written follows ``HuggingFaceM4/idefics-9b`` and ``idefics-9b-instruct`` as published:
the ``config.json`` of the transformers-4.32-era integration (written by the M4 team's
pre-release transformers, ``"transformers_version": "4.28.0.dev0"``), which nests the vision
tower under ``vision_config`` with its width as ``embed_dim`` and the resampler under
``perceiver_config``, and keeps the ``freeze_*`` training switches, ``use_resampler``,
``cross_layer_interval`` and ``additional_vocab_size`` at the top. It also writes the published
tensor names in safetensors, a ``preprocessor_config.json`` (224 px, CLIP normalisation), a
``generation_config.json``, and the LLaMA tokenizer files: ``tokenizer.model`` (SentencePiece
with byte fallback, trained locally on a small corpus, padded to LLaMA's 32000 pieces) and
``tokenizer.json`` with ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2 and the added
``<fake_token_around_image>`` 32000 and ``<image>`` 32001. The instruct variant adds
``<end_of_utterance>`` 32002, listed among the additional special tokens (which is how the
published processor recognises an instruct tokenizer), and sets ``additional_vocab_size`` to 3,
as idefics-9b-instruct's config does, so that the decoupled embedding has a row for it.

The full-size constants (:data:`IDEFICS_9B_CONFIG`, :data:`IDEFICS_80B_CONFIG`) give the
published values. They drive the memory figures and the benchmark.

Example:
    .. code-block:: python

        from mississippi_tools.models.idefics1.testing import build_tiny_checkpoint
        path = build_tiny_checkpoint("/tmp/tiny-idefics")
        vlm = MississippiVLM.load(path)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from mississippi_tools.models.checkpoint_files import save_weights, write_json

__all__ = [
    "IDEFICS_9B_CONFIG",
    "IDEFICS_80B_CONFIG",
    "TINY_CONFIG",
    "build_checkpoint",
    "build_scripted_checkpoint",
    "build_tiny_checkpoint",
    "build_tokenizer_files",
]

_FAKE, _IMAGE, _EOU = "<fake_token_around_image>", "<image>", "<end_of_utterance>"

#: idefics-9b's ``config.json`` as published (the nested layout of August 2023, written by the
#: M4 team's pre-release transformers: ``"transformers_version": "4.28.0.dev0"``). LLaMA-7B
#: decoder, CLIP ViT-H/14 vision tower, a gated cross-attention block every 4 layers, query/key
#: layer norms in the cross-attention and the perceiver. idefics-9b-instruct differs only in
#: ``additional_vocab_size`` (3: "fix because we added a 3rd additional token",
#: ``<end_of_utterance>``), which :func:`build_checkpoint` sets per variant.
IDEFICS_9B_CONFIG: dict[str, Any] = {
    "_name_or_path": "None",
    "additional_vocab_size": 2,
    "alpha_initializer": "zeros",
    "alpha_type": "float",
    "alphas_initializer_range": 0.0,
    "architectures": ["IdeficsForVisionText2Text"],
    "bos_token_id": 1,
    "cross_layer_activation_function": "swiglu",
    "cross_layer_interval": 4,
    "dropout": 0.0,
    "eos_token_id": 2,
    "freeze_lm_head": False,
    "freeze_text_layers": False,
    "freeze_text_module_exceptions": [],
    "freeze_vision_layers": False,
    "freeze_vision_module_exceptions": [],
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 2048,
    "max_sequence_length": 2048,
    "model_type": "idefics",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "pad_token_id": 0,
    "qk_layer_norms": True,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.28.0.dev0",
    "use_cache": True,
    "use_resampler": True,
    "vocab_size": 32000,
    "vision_config": {
        "hidden_act": "gelu",
        "embed_dim": 1280,
        "image_size": 224,
        "intermediate_size": 5120,
        "patch_size": 14,
        "num_attention_heads": 16,
        "num_hidden_layers": 32,
    },
    "perceiver_config": {
        "qk_layer_norms_perceiver": True,
        "resampler_depth": 6,
        "resampler_head_dim": 96,
        "resampler_n_heads": 16,
        "resampler_n_latents": 64,
    },
}

#: idefics-80b(-instruct): the LLaMA-65B decoder (8192 wide, 80 layers, 64 heads, RMS norm
#: epsilon 1e-5, ``max_sequence_length`` only); the same vision tower and perceiver.
IDEFICS_80B_CONFIG: dict[str, Any] = {
    **{k: v for k, v in copy.deepcopy(IDEFICS_9B_CONFIG).items() if k != "max_position_embeddings"},
    "hidden_size": 8192,
    "intermediate_size": 22016,
    "num_attention_heads": 64,
    "num_hidden_layers": 80,
    "rms_norm_eps": 1e-05,
}

#: Tiny: real vocabulary, image size, token ids and layout; 4 decoder layers with a
#: cross-attention block every 2, 2 vision layers, a 2-block perceiver.
TINY_CONFIG: dict[str, Any] = {
    **copy.deepcopy(IDEFICS_9B_CONFIG),
    "cross_layer_interval": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 4,
    "perceiver_config": {
        **IDEFICS_9B_CONFIG["perceiver_config"],
        "resampler_depth": 2,
        "resampler_head_dim": 8,
        "resampler_n_heads": 2,
        "resampler_n_latents": 8,
    },
    "vision_config": {
        **IDEFICS_9B_CONFIG["vision_config"],
        "embed_dim": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
    },
}

_PREPROCESSOR = {
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_num_channels": 3,
    "image_processor_type": "IdeficsImageProcessor",
    "image_size": 224,
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "processor_class": "IdeficsProcessor",
}

_GENERATION = {
    "_from_model_config": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "transformers_version": "4.32.0.dev0",
}


def build_tokenizer_files(directory: str | Path, *, instruct: bool = True) -> Path:
    """Write the LLaMA tokenizer files with IDEFICS's added tokens, as published."""
    from mississippi_tools.models.idefics2.testing import build_tokenizer_files as llama_files

    directory = Path(directory)
    llama_files(directory, chat_template=False)  # the same LLaMA pipeline and added-token ids
    added = [_FAKE, _IMAGE, *([_EOU] if instruct else [])]
    path = directory / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["added_tokens"] = [
        t for t in data["added_tokens"] if t["content"] in ("<unk>", "<s>", "</s>", *added)
    ]
    write_json(path, data)
    decoder = {
        str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in data["added_tokens"]
    }

    def token(content: str) -> dict[str, Any]:
        return {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
        }

    write_json(
        directory / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": decoder,
            "additional_special_tokens": added,
            "bos_token": token("<s>"),
            "clean_up_tokenization_spaces": False,
            "eos_token": token("</s>"),
            "legacy": False,
            "model_max_length": 1000000000000000019884624838656,
            "pad_token": token("<unk>"),
            "processor_class": "IdeficsProcessor",
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
            "unk_token": token("<unk>"),
        },
    )
    write_json(
        directory / "special_tokens_map.json",
        {
            "additional_special_tokens": [token(t) for t in added],
            "bos_token": token("<s>"),
            "eos_token": token("</s>"),
            "pad_token": token("<unk>"),
            "unk_token": token("<unk>"),
        },
    )
    return directory


def _native_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    from mississippi_tools.models.idefics1.configuration import Idefics1Config
    from mississippi_tools.models.idefics1.loading import build_empty_model

    parsed = Idefics1Config.from_dict(copy.deepcopy(config))
    skeleton = build_empty_model(parsed.native())
    names = {name for name, _ in skeleton.named_parameters()}
    return {name: tuple(t.shape) for name, t in skeleton.state_dict().items() if name in names}


def build_checkpoint(
    directory: str | Path,
    config: dict[str, Any],
    *,
    variant: str = "instruct",
    dtype: str = "float32",
    seed: int = 0,
    init_std: float = 0.02,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write a random-weight IDEFICS checkpoint in the published format for ``config``.

    Args:
        directory: Where to write (created if needed).
        config: The ``config.json`` content (:data:`TINY_CONFIG`, :data:`IDEFICS_9B_CONFIG` ...).
        variant: ``instruct`` (idefics-9b-instruct: ``<end_of_utterance>`` in the tokenizer) or
            ``base`` (idefics-9b: pretrained only).
        dtype: Storage dtype.
        seed: Seed of the random weights.
        init_std: Standard deviation of the random matrices.
        max_shard_bytes: Shard the weights above this size.

    Raises:
        ValueError: An unknown ``variant``.
    """
    import torch

    from mississippi_tools.models.idefics2.testing import random_weights

    if variant not in ("instruct", "base"):
        raise ValueError(f"variant must be 'instruct' or 'base', not {variant!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = copy.deepcopy(config)
    written["additional_vocab_size"] = 3 if variant == "instruct" else 2
    written["torch_dtype"] = dtype
    shapes = _native_shapes(written)
    tensors = random_weights(shapes, dtype=getattr(torch, dtype), seed=seed, std=init_std)
    for name, tensor in tensors.items():
        if name.endswith(("alpha_cross_attn", "alpha_dense")):
            # Trained gates are open (tanh(alpha) != 0); zeros would hide the images entirely.
            tensor.fill_(0.5)
    save_weights(directory, tensors, max_shard_bytes)
    write_json(directory / "config.json", written)
    write_json(directory / "generation_config.json", _GENERATION)
    write_json(directory / "preprocessor_config.json", _PREPROCESSOR)
    build_tokenizer_files(directory, instruct=variant == "instruct")
    return directory


def build_tiny_checkpoint(
    directory: str | Path,
    *,
    seed: int = 0,
    variant: str = "instruct",
    dtype: str = "float32",
    max_shard_bytes: int | None = None,
) -> Path:
    """A tiny random IDEFICS checkpoint (real vocabulary, image size and token ids).

    Args:
        directory: Where to write.
        seed: Seed of the random weights.
        variant: ``instruct`` or ``base`` (pretrained only).
        dtype: Storage dtype.
        max_shard_bytes: Shard the weights above this size.
    """
    return build_checkpoint(
        directory,
        TINY_CONFIG,
        variant=variant,
        dtype=dtype,
        seed=seed,
        init_std=0.2,
        max_shard_bytes=max_shard_bytes,
    )


def build_scripted_checkpoint(source: str | Path, target: str | Path, answer: str) -> Path:
    """Copy a tiny IDEFICS checkpoint and set its weights so that greedy decoding writes ``answer``.

    The IDEFICS counterpart of the Idefics2 scripted builder: every decoder layer's and gated
    cross-attention block's output projections are zeroed (a bigram model), and the embeddings
    and LM head lead from the prompt's last token (``:`` of ``Assistant:``) through ``answer`` to
    ``<end_of_utterance>``. Under a JSON grammar the head prefers ``"`` and closing brackets, so
    constrained JSON finishes quickly.

    Raises:
        ValueError: ``answer`` repeats a token, or is too long for the hidden size.
    """
    import shutil

    from safetensors.torch import load_file, save_file

    from mississippi_tools.models.idefics2.tokenization import IdeficsTokenizer, Segment

    source, target = Path(source), Path(target)
    shutil.copytree(source, target)
    tokenizer = IdeficsTokenizer.from_pretrained(target)
    last = tokenizer.encode_segments([Segment("Assistant:")], bos=False)[-1]
    stop = tokenizer.token_to_id(_EOU)
    chain = [last, *tokenizer.encode(answer)]
    if len(set(chain)) != len(chain):
        raise ValueError(f"{answer!r} repeats a token ({chain}); a bigram model cannot write it")
    weights_file = target / "model.safetensors"
    weights = load_file(str(weights_file))
    embed = weights["model.embed_tokens.weight"]
    head = weights["lm_head.weight"]
    extra_embed = weights["model.embed_tokens.additional_embedding.weight"]
    extra_head = weights["lm_head.additional_fc.weight"]
    if len(chain) >= embed.shape[1]:
        raise ValueError(f"{answer!r} is too long for a hidden size of {embed.shape[1]}")
    for tensor in (embed, head, extra_embed, extra_head):
        tensor.zero_()
    embed[:, 0] = 1.0
    extra_embed[:, 0] = 1.0
    base_rows = embed.shape[0]
    for k, token in enumerate(chain, start=1):
        embed[token, k] = 4.0
        following = chain[k] if k < len(chain) else stop
        if following >= base_rows:
            extra_head[following - base_rows, k] = 50.0
        else:
            head[following, k] = 50.0
    for token, piece in enumerate(tokenizer.vocab_pieces(base_rows)):
        text = piece.replace("▁", " ")
        if text == '"':
            head[token, 0] = 6.0
        elif text and all(c in '"}]' for c in text):
            head[token, 0] = 5.0
    for name, tensor in weights.items():
        if name.startswith(("model.layers.", "model.gated_cross_attn_layers.")) and name.endswith(
            ("o_proj.weight", "down_proj.weight")
        ):
            tensor.zero_()
    save_file(weights, str(weights_file), metadata={"format": "pt"})
    return target
