"""Build H2OVL-Mississippi checkpoints in the original on-disk format with random weights.

Used by the test suite (tiny models that load and generate in milliseconds), by the benchmarks
(full-size configurations: compute cost does not depend on the weight values), and by users who
want to try the tools without downloading a model.

A checkpoint written here has what the published one has: ``config.json`` with the original
keys (``llm_config``, ``vision_config``, ``template`` ...), ``generation_config.json``, the
original tensor names (``vision_model.encoder.layers.N.attn.qkv`` ...) in safetensors (one file or
shards), and SentencePiece tokenizer files with the same special tokens and ids (``<img>`` 32000
... ``<|end|>`` 32009; ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2). The tokenizer is a small BPE model
trained locally and padded with unreachable pieces to the real model's 32000 pieces, so every id
lines up.

Example:
    .. code-block:: python

        from mississippi_tools.models.h2ovl.testing import build_tiny_checkpoint
        path = build_tiny_checkpoint("/tmp/tiny-h2ovl")
        vlm = MississippiVLM.load(path)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mississippi_tools.models.checkpoint_files import save_weights, train_sentencepiece, write_json

if TYPE_CHECKING:
    import torch

    from mississippi_tools.models.h2ovl.tokenization import H2OVLTokenizer

__all__ = [
    "H2OVL_2B_CONFIG",
    "H2OVL_800M_CONFIG",
    "TINY_2B_CONFIG",
    "TINY_CONFIG",
    "build_checkpoint",
    "build_scripted_checkpoint",
    "build_tiny_checkpoint",
    "build_tokenizer_files",
]

_SPECIAL_TOKENS = (
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
    "<|end|>",
)
_BASE_VOCAB = 32000

_LLM_800M: dict[str, Any] = {
    "_name_or_path": "h2oai/h2o-danube3-500m-chat",
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 1536,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "max_position_embeddings": 8192,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 16,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "pad_token_id": 0,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 100000,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.42.0.dev0",
    "use_cache": True,
    "vocab_size": 32010,
}
_VISION_300M: dict[str, Any] = {
    "_name_or_path": "OpenGVLab/InternViT-300M-448px",
    "architectures": ["InternVisionModel"],
    "attention_dropout": 0.0,
    "drop_path_rate": 0.0,
    "dropout": 0.0,
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "image_size": 448,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-06,
    "model_type": "intern_vit_6b",
    "norm_type": "layer_norm",
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "qk_normalization": False,
    "qkv_bias": True,
    "torch_dtype": "bfloat16",
    "use_flash_attn": True,
}

#: The published H2OVL-Mississippi-800M ``config.json`` (the keys that matter, same values).
H2OVL_800M_CONFIG: dict[str, Any] = {
    "architectures": ["H2OVLChatModel"],
    "auto_map": {
        "AutoConfig": "configuration_h2ovl_chat.H2OVLChatConfig",
        "AutoModel": "modelling_h2ovl_chat.H2OVLChatModel",
        "AutoModelForCausalLM": "modelling_h2ovl_chat.H2OVLChatModel",
    },
    "downsample_ratio": 0.5,
    "dynamic_image_size": True,
    "force_image_size": 448,
    "llm_config": _LLM_800M,
    "max_dynamic_patch": 6,
    "min_dynamic_patch": 1,
    "model_type": "h2ovl_chat",
    "pad2square": False,
    "ps_version": "v2",
    "select_layer": -1,
    "template": "h2ogpt2",
    "torch_dtype": "bfloat16",
    "use_backbone_lora": 0,
    "use_llm_lora": 0,
    "use_thumbnail": True,
    "use_msac": False,
    "vision_config": _VISION_300M,
}

_LLM_2B: dict[str, Any] = {
    "_name_or_path": "h2oai/h2o-danube2-1.8b-chat",
    "architectures": ["MistralForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 2560,
    "initializer_range": 0.02,
    "intermediate_size": 6912,
    "max_position_embeddings": 8192,
    "model_type": "mistral",
    "num_attention_heads": 32,
    "num_hidden_layers": 24,
    "num_key_value_heads": 8,
    "pad_token_id": 0,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.38.2",
    "use_cache": True,
    "vocab_size": 32010,
}

#: The published H2OVL-Mississippi-2B ``config.json`` (the keys that matter, same values).
#:
#: Verified: the decoder block is H2O-Danube2-1.8B-chat's own published ``config.json``
#: (huggingface.co/h2oai/h2o-danube2-1.8b-chat: Mistral, hidden 2560, intermediate 6912,
#: 24 layers, 32 heads / 8 KV heads, rope_theta 1e4, ``sliding_window`` null, 8192 positions,
#: rms_norm_eps 1e-5, untied head, transformers 4.38.2), with the vocabulary grown to 32010 by the
#: ten H2OVL tokens (issue 16); ``use_msac`` on and template ``h2ogpt2`` (issue 16, model card);
#: the vision tower is the 800M's InternViT-300M; the repository's remote-code file is
#: ``modeling_h2ovl_chat.py`` (vLLM's port cites it by that name, unlike the 800M's
#: ``modelling_``). NOT verified (the 2B repository's own ``config.json``,
#: ``generation_config.json`` and ``tokenizer_config.json`` could not be read): the top-level
#: tiling keys (taken from the 800M: 448 px, 1..6 tiles, thumbnail, ps v2, select_layer -1),
#: and the generation and tokenizer files, which the builder writes as the 800M's.
H2OVL_2B_CONFIG: dict[str, Any] = {
    **copy.deepcopy(H2OVL_800M_CONFIG),
    "auto_map": {
        "AutoConfig": "configuration_h2ovl_chat.H2OVLChatConfig",
        "AutoModel": "modeling_h2ovl_chat.H2OVLChatModel",
        "AutoModelForCausalLM": "modeling_h2ovl_chat.H2OVLChatModel",
    },
    "use_msac": True,
    "llm_config": _LLM_2B,
}

#: The decoder sizes of the tiny presets (2 layers, 64 wide); everything else is the real config's.
_TINY_LLM_SIZES: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}

#: A tiny configuration with the real vocabulary, tile size and structure (2 layers each).
TINY_CONFIG: dict[str, Any] = {
    **copy.deepcopy(H2OVL_800M_CONFIG),
    "llm_config": {
        **_LLM_800M,
        **_TINY_LLM_SIZES,
        "max_position_embeddings": 16384,
    },
    "vision_config": {
        **_VISION_300M,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
    },
}

#: :data:`H2OVL_2B_CONFIG` with only the sizes shrunk (2 layers each): the same vocabulary, tile
#: size, template, MSAC and Mistral decoder keys (no sliding window, rope_theta 1e4).
TINY_2B_CONFIG: dict[str, Any] = {
    **copy.deepcopy(H2OVL_2B_CONFIG),
    "llm_config": {
        **_LLM_2B,
        **_TINY_LLM_SIZES,
    },
    "vision_config": copy.deepcopy(TINY_CONFIG["vision_config"]),
}

#: The tiny configuration of each preset of :func:`build_tiny_checkpoint`.
_TINY_PRESETS: dict[str, dict[str, Any]] = {"800m": TINY_CONFIG, "2b": TINY_2B_CONFIG}

_GENERATION_CONFIG = {
    "do_sample": True,
    "repetition_penalty": 1.0,
    "temperature": 0.01,
    "top_p": 0.001,
    "top_k": 1,
    "max_length": 1024,
    "eos_token_id": [2, 32009],
    "transformers_version": "4.44.0",
}

_TOKENIZER_CONFIG_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% if ((message['role'] == 'user') != (loop.index0 % 2 == 0)) or "
    "((message['role'] == 'assistant') != (loop.index0 % 2 == 1)) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}"
    "{{ '<|prompt|>' + message['content'].strip() + eos_token }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|answer|>' + message['content'].strip() + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|answer|>' }}{% endif %}"
)

# Text the tiny tokenizer learns its merges from: the prompts, the card's JSON examples, numbers.
_CORPUS = (
    "Read the text in the image. Extract the details from the image of a form that contains "
    "basic details like Name, Date of Birth and Address. Format the output as JSON.",
    '{"name": "Emily Johnson", "date_of_birth": "1995-05-12", '
    '"address": "4567 Oak Street, New York"}',
    '{"products": [{"product_name": "Shoes", "price": "$80", "quantity": 5}]}',
    '{"chart": {"title": "Monthly Sales", "x_axis": "Months", "y_axis": "Sales (in $)", '
    '"data_points": [{"label": "January", "value": 1000}, {"label": "February", "value": 1200}]}}',
    "| Product | Price | Quantity | | --- | --- | --- | | Shoes | $80 | 5 |",
    "| T-Shirts | $20 | 10 |",
    "The quick brown fox jumps over the lazy dog. Invoice number 12345, total due 1,200.00 USD.",
    "Answer the question about the image. What is the title of the chart? The answer is yes or no.",
    "true false null 0 1 2 3 4 5 6 7 8 9 10 100 3.14 -42 12% $1,200 2024-10-17 09:00 AM",
    "<|prompt|> <|answer|> Image-1: Image-2: Convert the document to markdown. # Heading - item",
)


def build_tokenizer_files(directory: str | Path) -> Path:
    """Write ``tokenizer.model`` and the tokenizer JSON files of the original layout."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(
        train_sentencepiece(_CORPUS, 600, pad_to=_BASE_VOCAB)
    )

    def entry(content: str) -> dict[str, Any]:
        return {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }

    decoder = {"0": entry("<unk>"), "1": entry("<s>"), "2": entry("</s>")}
    decoder.update({str(_BASE_VOCAB + i): entry(t) for i, t in enumerate(_SPECIAL_TOKENS)})
    tokenizer_config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": list(_SPECIAL_TOKENS),
        "bos_token": "<s>",
        "chat_template": _TOKENIZER_CONFIG_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "cls_token": "</s>",
        "eos_token": "<|end|>",
        "legacy": True,
        "model_max_length": 8192,
        "pad_token": "<unk>",
        "sep_token": "</s>",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }

    def token(content: str) -> dict[str, Any]:
        return {k: v for k, v in entry(content).items() if k != "special"}

    special_map = {
        "additional_special_tokens": list(_SPECIAL_TOKENS),
        "bos_token": token("<s>"),
        "cls_token": token("</s>"),
        "eos_token": token("</s>"),
        "pad_token": token("<unk>"),
        "sep_token": token("</s>"),
        "unk_token": token("<unk>"),
    }
    added = {t: _BASE_VOCAB + i for i, t in enumerate(_SPECIAL_TOKENS)}
    write_json(directory / "tokenizer_config.json", tokenizer_config)
    write_json(directory / "special_tokens_map.json", special_map)
    write_json(directory / "added_tokens.json", dict(sorted(added.items())))
    return directory


def _original_names(config: Any, language_model_names: Iterable[str]) -> list[str]:
    """Every tensor name of an original checkpoint for ``config`` (an ``H2OVLConfig``)."""
    vision = config.vision_config
    names = [
        "vision_model.embeddings.class_embedding",
        "vision_model.embeddings.position_embedding",
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.embeddings.patch_embedding.bias",
    ]
    per_layer = ["attn.qkv.weight", "attn.proj.weight", "attn.proj.bias", "ls1", "ls2"]
    per_layer += ["mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
    per_layer += ["norm1.weight", "norm2.weight"]
    if vision.qkv_bias:
        per_layer.append("attn.qkv.bias")
    if vision.norm_type == "layer_norm":
        per_layer += ["norm1.bias", "norm2.bias"]
    if vision.qk_normalization:
        per_layer += ["attn.q_norm.weight", "attn.k_norm.weight"]
    for i in range(vision.num_hidden_layers):
        names += [f"vision_model.encoder.layers.{i}.{p}" for p in per_layer]
    names += [f"mlp1.{i}.{kind}" for i in (0, 1, 3) for kind in ("weight", "bias")]
    names += [f"language_model.{n}" for n in language_model_names]
    return names


def _random_tensor(
    name: str, shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator, std: float
) -> torch.Tensor:
    import torch

    last = name.rsplit(".", 1)[-1]
    is_norm = any(k in name for k in ("norm", "mlp1.0.")) and last in ("weight", "bias")
    if last in ("ls1", "ls2"):
        return torch.full(shape, 0.1, dtype=dtype)
    if is_norm:
        return (torch.ones if last == "weight" else torch.zeros)(shape, dtype=dtype)
    if last == "bias":
        return torch.zeros(shape, dtype=dtype)
    tensor = torch.empty(shape, dtype=torch.float32)
    tensor.normal_(0.0, std, generator=generator)
    return tensor.to(dtype)


def build_checkpoint(
    directory: str | Path,
    config: dict[str, Any],
    *,
    dtype: str = "bfloat16",
    seed: int = 0,
    init_std: float = 0.02,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write a random-weight checkpoint in the original format for ``config`` (a config.json dict).

    Args:
        directory: Where to write (created if needed).
        config: The ``config.json`` content, e.g. :data:`TINY_CONFIG` or :data:`H2OVL_800M_CONFIG`.
        dtype: Storage dtype of the weights (``bfloat16`` as published, or ``float32``).
        seed: Seed of the random weights; the same seed gives the same files.
        init_std: Standard deviation of the random matrices.
        max_shard_bytes: Split the weights into shards with an index file above this size.

    Returns:
        The checkpoint directory.
    """
    import torch

    from mississippi_tools.models.h2ovl.configuration import H2OVLConfig
    from mississippi_tools.models.h2ovl.loading import map_checkpoint_key
    from mississippi_tools.models.h2ovl.modeling import H2OVLForConditionalGeneration

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    parsed = H2OVLConfig.from_dict(copy.deepcopy(config))
    torch_dtype = getattr(torch, dtype)
    with torch.device("meta"):
        skeleton = H2OVLForConditionalGeneration(parsed)
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    lm_names = [
        n.removeprefix("language_model.") for n in expected if n.startswith("language_model.")
    ]
    if parsed.llm_config.get("tie_word_embeddings"):
        lm_names = [n for n in lm_names if n != "lm_head.weight"]
    vision = parsed.vision_config
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name in _original_names(parsed, lm_names):
        targets = map_checkpoint_key(name)
        if targets is None:
            raise AssertionError(f"no mapping for original tensor {name}")
        if targets[0] in expected:
            shape = expected[targets[0]]
        else:  # layers above select_layer: not in our module, same shape as layer 0
            layer_zero = targets[0].split(".", 4)
            layer_zero[3] = "0"
            shape = expected[".".join(layer_zero)]
        if len(targets) == 3:
            shape = (shape[0] * 3, *shape[1:])
        if name == "vision_model.embeddings.class_embedding":
            shape = (1, 1, vision.hidden_size)
        tensors[name] = _random_tensor(name, shape, torch_dtype, generator, init_std)
    save_weights(directory, tensors, max_shard_bytes)
    written = copy.deepcopy(config)
    written["torch_dtype"] = dtype
    write_json(directory / "config.json", written)
    write_json(directory / "generation_config.json", _GENERATION_CONFIG)
    build_tokenizer_files(directory)
    return directory


def build_tiny_checkpoint(
    directory: str | Path,
    *,
    preset: str = "800m",
    seed: int = 0,
    use_msac: bool | None = None,
    decoder: str | None = None,
    dtype: str = "float32",
    max_shard_bytes: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """A tiny random checkpoint (2+2 layers, real vocabulary and tiling) for tests and demos.

    Args:
        directory: Where to write.
        preset: Which published model to shrink: ``"800m"`` (:data:`TINY_CONFIG`: Danube3
            decoder, no MSAC) or ``"2b"`` (:data:`TINY_2B_CONFIG`: Danube2 decoder, MSAC on).
        seed: Seed of the random weights.
        use_msac: Turn MSAC on or off; the preset's value when left out.
        decoder: ``"llama"`` (Danube3, as the 800M) or ``"mistral"`` (Danube2, as the 2B); the
            preset's when left out.
        dtype: Storage dtype.
        max_shard_bytes: Shard the weights above this size.
        overrides: Top-level ``config.json`` keys to replace.

    Raises:
        ValueError: ``preset`` or ``decoder`` is not one of the names above.
    """
    if preset not in _TINY_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(_TINY_PRESETS)}, not {preset!r}")
    config = copy.deepcopy(_TINY_PRESETS[preset])
    if use_msac is not None:
        config["use_msac"] = use_msac
    if decoder == "mistral":
        config["llm_config"].update(
            {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "rope_theta": 10000}
        )
    elif decoder == "llama":
        config["llm_config"].update({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    elif decoder is not None:
        raise ValueError(f"decoder must be 'llama' or 'mistral', not {decoder!r}")
    config.update(overrides or {})
    return build_checkpoint(
        directory, config, dtype=dtype, seed=seed, init_std=0.5, max_shard_bytes=max_shard_bytes
    )


def build_scripted_checkpoint(
    source: str | Path, target: str | Path, answer: str, *, loop: bool = False
) -> Path:
    """Copy a tiny checkpoint and set its weights so that greedy decoding writes ``answer``.

    The result is a real checkpoint in the original format, loaded and run by the same code as
    any other; only its weight values are chosen. Every decoder layer's output projections are
    zeroed, so the next token depends on the current one alone (a bigram model), and the
    embeddings and LM head lead from the prompt's last token through ``answer`` to ``<|end|>``.
    Under a JSON grammar, where the scripted token is often not allowed, the head prefers
    ``"`` and closing brackets, so constrained JSON finishes quickly (with empty strings).

    With ``loop``, the last token of ``answer`` leads back to its first instead of ``<|end|>``:
    the model writes ``answer`` again and again, the way small models fall into loops (tests of
    the repetition check). Where a token is banned, the model falls back to ``"``, which it then
    repeats.

    A character that recurs (the commas of ``[[12, 34, 56, 78]]``) is written the second time
    with its byte-fallback piece (``<0x2C>``), which decodes to the same text: the chain needs
    each token once, the answer does not.

    Tests use it where an answer must parse (charts, tables, text regions) without a trained
    model.

    Raises:
        ValueError: ``answer`` repeats a token that has no unused spelling (a bigram model
            cannot write it) or is longer than the model's hidden size allows.
    """
    import shutil

    from safetensors.torch import load_file, save_file

    from mississippi_tools.models.h2ovl.processing import ROLE_ANSWER
    from mississippi_tools.models.h2ovl.tokenization import H2OVLTokenizer

    source, target = Path(source), Path(target)
    shutil.copytree(source, target)
    tokenizer = H2OVLTokenizer.from_pretrained(target)
    answer_ids = _distinct_spelling(tokenizer, tokenizer.encode(answer))
    last = answer_ids[0] if loop else tokenizer.eos_token_id
    chain = [tokenizer.encode(ROLE_ANSWER)[-1], *answer_ids, last]
    if len(set(chain[:-1])) != len(chain) - 1:
        raise ValueError(f"{answer!r} repeats a token ({chain}); a bigram model cannot write it")
    weights_file = target / "model.safetensors"
    weights = load_file(str(weights_file))
    embed = weights["language_model.model.embed_tokens.weight"]
    head = weights["language_model.lm_head.weight"]
    if len(chain) >= embed.shape[1]:
        raise ValueError(f"{answer!r} is too long for a hidden size of {embed.shape[1]}")
    embed.zero_()
    head.zero_()
    embed[:, 0] = 1.0  # a direction every token shares: the fallback preferences below
    for k, token in enumerate(chain[:-1], start=1):
        embed[token, k] = 4.0
        head[chain[k], k] = 50.0
    for token, piece in enumerate(tokenizer.vocab_pieces()):
        if piece == '"':
            head[token, 0] = 6.0
        elif piece and all(c in '"}]' for c in piece):
            head[token, 0] = 5.0
    for name, tensor in weights.items():
        if name.startswith("language_model.model.layers.") and name.endswith(
            ("o_proj.weight", "down_proj.weight")
        ):
            tensor.zero_()
    save_file(weights, str(weights_file), metadata={"format": "pt"})
    return target


def _distinct_spelling(tokenizer: H2OVLTokenizer, ids: list[int]) -> list[int]:
    """``ids`` with each repeat of a one-character piece spelt with its byte-fallback pieces."""
    used: set[int] = set()
    spelt: list[int] = []
    for idx in ids:
        char = tokenizer.id_to_token(idx).replace("\u2581", " ")
        if idx in used and len(char) == 1:
            try:
                alternative = [tokenizer.token_to_id(f"<0x{b:02X}>") for b in char.encode()]
            except KeyError:
                alternative = [idx]
            if not used.intersection(alternative):
                spelt.extend(alternative)
                used.update(alternative)
                continue
        spelt.append(idx)
        used.add(idx)
    return spelt
