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

        from mississippi_tools.testing import build_tiny_checkpoint
        path = build_tiny_checkpoint("/tmp/tiny-h2ovl")
        vlm = MississippiVLM.load(path)
"""

from __future__ import annotations

import copy
import io
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEMO_ANSWERS",
    "DEMO_EXTRACT_SCHEMA",
    "DEMO_EXTRACT_TEMPLATE",
    "H2OVL_2B_LIKE_CONFIG",
    "H2OVL_800M_CONFIG",
    "TINY_CONFIG",
    "build_checkpoint",
    "build_demo_checkpoint",
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

#: The 2B's shape: H2O-Danube2-1.8B (Mistral architecture, no sliding window) and MSAC on.
H2OVL_2B_LIKE_CONFIG: dict[str, Any] = {
    **copy.deepcopy(H2OVL_800M_CONFIG),
    "use_msac": True,
    "llm_config": {
        **_LLM_800M,
        "_name_or_path": "h2oai/h2o-danube2-1.8b-chat",
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "hidden_size": 2560,
        "intermediate_size": 6912,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "rope_theta": 10000,
        "sliding_window": None,
    },
}

#: A tiny configuration with the real vocabulary, tile size and structure (2 layers each).
TINY_CONFIG: dict[str, Any] = {
    **copy.deepcopy(H2OVL_800M_CONFIG),
    "llm_config": {
        **_LLM_800M,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
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


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _piece_message(piece: str, score: float) -> bytes:
    # ModelProto.pieces entry: piece (1, string), score (2, float), type (3, enum NORMAL=1).
    text = piece.encode("utf-8")
    body = b"\x0a" + _varint(len(text)) + text + b"\x15" + struct.pack("<f", score) + b"\x18\x01"
    return b"\x0a" + _varint(len(body)) + body


def _train_sentencepiece(corpus: Iterable[str], vocab_size: int) -> bytes:
    import sentencepiece as spm

    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(corpus) * 20),
        model_writer=writer,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        hard_vocab_limit=False,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
        num_threads=1,
    )
    model = writer.getvalue()
    processor = spm.SentencePieceProcessor(model_proto=model)
    trained = int(processor.get_piece_size())
    # Pad to the real vocabulary with pieces made of a private-use character, which no text the
    # tests feed contains, so they are never produced; repeated fields append in order.
    filler = b"".join(
        _piece_message(f"\ue000{i:05d}", -1e9 - i) for i in range(_BASE_VOCAB - trained)
    )
    return model + filler


def build_tokenizer_files(directory: str | Path) -> Path:
    """Write ``tokenizer.model`` and the tokenizer JSON files of the original layout."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(_train_sentencepiece(_CORPUS, 600))

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
    _write_json(directory / "tokenizer_config.json", tokenizer_config)
    _write_json(directory / "special_tokens_map.json", special_map)
    _write_json(directory / "added_tokens.json", dict(sorted(added.items())))
    return directory


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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
    from safetensors.torch import save_file

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
    _save_weights(directory, tensors, max_shard_bytes, save_file)
    written = copy.deepcopy(config)
    written["torch_dtype"] = dtype
    _write_json(directory / "config.json", written)
    _write_json(directory / "generation_config.json", _GENERATION_CONFIG)
    build_tokenizer_files(directory)
    return directory


def _save_weights(
    directory: Path,
    tensors: dict[str, torch.Tensor],
    max_shard_bytes: int | None,
    save_file: Any,
) -> None:
    metadata = {"format": "pt"}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(tensors, str(directory / "model.safetensors"), metadata=metadata)
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards, start=1):
        filename = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / filename), metadata=metadata)
        weight_map.update(dict.fromkeys(shard, filename))
    _write_json(
        directory / "model.safetensors.index.json",
        {"metadata": {"total_size": total}, "weight_map": weight_map},
    )


def build_tiny_checkpoint(
    directory: str | Path,
    *,
    seed: int = 0,
    use_msac: bool = False,
    decoder: str = "llama",
    dtype: str = "float32",
    max_shard_bytes: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """A tiny random checkpoint (2+2 layers, real vocabulary and tiling) for tests and demos.

    Args:
        directory: Where to write.
        seed: Seed of the random weights.
        use_msac: Turn on MSAC (as the 2B does).
        decoder: ``"llama"`` (Danube3, as the 800M) or ``"mistral"`` (Danube2, as the 2B).
        dtype: Storage dtype.
        max_shard_bytes: Shard the weights above this size.
        overrides: Top-level ``config.json`` keys to replace.
    """
    config = copy.deepcopy(TINY_CONFIG)
    config["use_msac"] = use_msac
    if decoder == "mistral":
        config["llm_config"].update(
            {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "rope_theta": 10000}
        )
    elif decoder != "llama":
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

    Tests use it where an answer must parse (charts, tables) without a trained model.

    Raises:
        ValueError: ``answer`` repeats a token (a bigram model cannot write it) or is longer
            than the model's hidden size allows.
    """
    import shutil

    from safetensors.torch import load_file, save_file

    from mississippi_tools.models.h2ovl.processing import ROLE_ANSWER
    from mississippi_tools.models.h2ovl.tokenization import H2OVLTokenizer

    source, target = Path(source), Path(target)
    shutil.copytree(source, target)
    tokenizer = H2OVLTokenizer.from_pretrained(target)
    answer_ids = tokenizer.encode(answer)
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


# --------------------------------------------------------------------------------------------------
# Demo checkpoints: a tiny model whose weights answer every task with a fixed, well-formed answer
# --------------------------------------------------------------------------------------------------

#: The extraction template the demo checkpoint answers (``--schema`` file of the README's demo).
DEMO_EXTRACT_TEMPLATE: dict[str, Any] = {
    "invoice_number": "",
    "date": "",
    "total": 0.0,
    "paid": False,
}

#: The same fields as a JSON Schema (what pydantic writes for the README's ``Invoice`` model).
DEMO_EXTRACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string"},
        "date": {"type": "string", "format": "date"},
        "total": {"type": "number"},
        "paid": {"type": "boolean"},
    },
    "required": ["invoice_number", "date", "total", "paid"],
}

#: What the demo checkpoint answers, per task, whatever the image. ``ask`` is also the answer to
#: any other prompt (questions, ``generate``, chat completions).
DEMO_ANSWERS: dict[str, str] = {
    "ocr": "Invoice 12345\nDate: 17 Oct 2024\nTotal due: $1,200.00",
    "chart": (
        '{"chart": {"title": "Monthly sales", "type": "bar", "x_axis": "Month", '
        '"y_axis": "Sales (in $)", "series": [{"name": "Sales", "data_points": ['
        '{"label": "January", "value": 1000}, {"label": "February", "value": 1200}, '
        '{"label": "March", "value": 900}]}]}}'
    ),
    "table": (
        "| Product | Price | Quantity |\n| --- | --- | --- |\n| Shoes | $80 | 5 |\n"
        "| T-Shirts | $20 | 10 |"
    ),
    "extract": '{"invoice_number": "12345", "date": "2024-10-17", "total": 1200.0, "paid": false}',
    "ask": "The total is $1,200.",
}

# The decoder of the demo: one layer whose 8 attention heads each copy the token 1..8 positions
# back, so that with the current token the MLP sees the last 9 tokens and looks up the next one.
_DEMO_CONTEXT = 9
_DEMO_CODE_BITS = 8  # each token of the scripts gets an 8-bit code of +-1 values (255 tokens)
_DEMO_HIDDEN = 256
_DEMO_HEAD_DIM = _DEMO_HIDDEN // (_DEMO_CONTEXT - 1)  # 32: 16 RoPE frequencies
# Weight of each RoPE frequency in the heads' scores (they sum to 1): a random search over the
# 16 frequencies of a 32-wide head (rope_theta 1e5), keeping the weights whose score at the
# wanted distance beats every other distance up to 16,384 by the most (13% of the peak).
_ROPE_WEIGHTS = (
    0.236, 0.201, 0.128, 0.024, 0.066, 0.003, 0.004, 0.111,
    0.028, 0.053, 0.035, 0.064, 0.003, 0.0, 0.001, 0.043,
)  # fmt: skip
_PEAK_SCORE = 270.0  # attention score at the wanted distance; 13% of it is a margin of 35
_GATE_SCALE = 16.0  # an MLP unit's gate is +-16 x the norm's gain: fully on or off
_OUTPUT_SIZE = 8.0  # what a firing unit writes into its token's output dimension
_LOGIT_SCALE = 3.0


@dataclass(frozen=True)
class _Script:
    """One scripted answer.

    After a prompt ending in ``prompt`` (``None``: any token), the model writes ``answer``, then
    ``<|end|>``. Where two scripts could both apply, the higher ``priority`` wins.
    """

    name: str
    prompt: tuple[int | None, ...]
    answer: tuple[int, ...]
    priority: int


def build_demo_checkpoint(directory: str | Path, *, seed: int = 0) -> Path:
    """A tiny checkpoint whose greedy answers are well-formed for every task, without a hub.

    The vision tower and tokenizer are those of :func:`build_tiny_checkpoint`; the decoder's
    weights are set by hand so that it writes :data:`DEMO_ANSWERS`: the chart (JSON valid under
    the chart grammar, so ``--plot`` and ``--csv`` work), the table, the OCR text, the invoice of
    :data:`DEMO_EXTRACT_TEMPLATE` (or :data:`DEMO_EXTRACT_SCHEMA`) for extraction, and
    ``DEMO_ANSWERS["ask"]`` for every other prompt. The answers do not depend on the image: the
    image features are zeroed, so the model shows the tools working end to end, not reading.

    How: the decoder is one layer. Its eight attention heads attend, through RoPE, to the token
    exactly 1, 2 ... 8 positions back and copy an 8-bit code of it; with the current token, the
    MLP sees the last nine tokens, and one MLP unit per step of each answer fires when they are
    that step's context, writing the next token. The task is told by the end of its prompt
    (every task has a fixed prompt; extraction the template above). The arithmetic is exact with
    margins that hold in bfloat16, and the weights are stored in bfloat16 like the real model's.

    Args:
        directory: Where to write (created if needed).
        seed: Seed of the (unused, random) vision weights.

    Returns:
        The checkpoint directory.
    """
    from mississippi_tools.models.h2ovl.tokenization import H2OVLTokenizer

    directory = Path(directory)
    build_tokenizer_files(directory)
    tokenizer = H2OVLTokenizer.from_pretrained(directory)
    scripts = _demo_scripts(tokenizer)
    contexts = _script_contexts(scripts, tokenizer.eos_token_id)
    config = copy.deepcopy(TINY_CONFIG)
    config["llm_config"].update(
        {
            "hidden_size": _DEMO_HIDDEN,
            "num_attention_heads": _DEMO_CONTEXT - 1,
            "num_key_value_heads": 1,
            "num_hidden_layers": 1,
            "intermediate_size": -(-len(contexts) // 64) * 64,
        }
    )
    build_checkpoint(directory, config, dtype="bfloat16", seed=seed)
    _write_lookup_decoder(directory, contexts, tokenizer)
    return directory


def _demo_scripts(tokenizer: Any) -> list[_Script]:
    """The demo's answers, each keyed by the end of the prompt its task sends."""
    from mississippi_tools.models.h2ovl import processing
    from mississippi_tools.models.h2ovl.tokenization import TURN_END
    from mississippi_tools.tasks.chart import build_chart_prompt
    from mississippi_tools.tasks.extract import build_extract_prompt
    from mississippi_tools.tasks.ocr import build_ocr_prompt
    from mississippi_tools.tasks.table import build_table_prompt

    def prompt_ids(question: str) -> tuple[int | None, ...]:
        parts = processing.build_prompt(question, num_images=1)
        parts = processing.expand_image_placeholders(parts, [1], 1)
        return tuple(tokenizer.encode_segments(processing.prompt_segments(parts)))

    suffix = tuple(tokenizer.encode(TURN_END + processing.ROLE_ANSWER))
    anything: tuple[int | None, ...] = (None,) * _DEMO_CONTEXT + suffix
    prompts = [
        ("ocr", build_ocr_prompt("text")),
        ("ocr", build_ocr_prompt("markdown")),
        ("chart", build_chart_prompt()),
        ("table", build_table_prompt()),
        ("extract", build_extract_prompt(DEMO_EXTRACT_TEMPLATE)),
        ("extract", build_extract_prompt(DEMO_EXTRACT_SCHEMA)),
    ]
    scripts = [
        _Script(task, prompt_ids(text), _answer_ids(tokenizer, DEMO_ANSWERS[task]), priority=2)
        for task, text in prompts
    ]
    scripts.append(_Script("ask", anything, _answer_ids(tokenizer, DEMO_ANSWERS["ask"]), 1))
    return scripts


def _answer_ids(tokenizer: Any, text: str) -> tuple[int, ...]:
    """The tokens of an answer; JSON starts without SentencePiece's leading space.

    The JSON grammar allows no whitespace before the value, and it would refuse a first piece
    such as ``▁{"``; plain text keeps the space, which decoding drops, as the real model writes.
    """
    ids = list(tokenizer.encode(text))
    if text.startswith(("{", "[")):
        first = tokenizer.id_to_token(ids[0])
        rest = first.removeprefix("▁")
        if rest != first:
            try:
                ids[:1] = [tokenizer.token_to_id(rest)] if rest else []
            except KeyError:
                ids[:1] = tokenizer.encode(rest)[1:] if rest else []
    return tuple(ids)


@dataclass(frozen=True)
class _Context:
    """One MLP unit: fires on ``tokens`` (the last tokens, newest first; ``None``: any)."""

    tokens: tuple[int | None, ...]
    next_token: int
    priority: int
    script: str


def _script_contexts(scripts: list[_Script], eos: int) -> list[_Context]:
    """One unit per distinct (context, next token); raises where a script could go wrong.

    At each step of each answer, the unit of that step must outweigh every unit that could fire
    there for another token (a unit writes ``_amplitude(priority)``). The catch-all script,
    whose prompt is unknown, may lose to a task whose prompt ending it cannot rule out: a
    question that ends like a task's prompt gets that task's answer.
    """
    steps: list[tuple[_Script, tuple[int | None, ...], int]] = []
    for script in scripts:
        sequence = (*script.prompt, *script.answer, eos)
        for i, token in enumerate((*script.answer, eos)):
            position = len(script.prompt) + i
            window = tuple(
                sequence[position - 1 - j] if position > j else None for j in range(_DEMO_CONTEXT)
            )
            steps.append((script, window, token))
    units: dict[tuple[int | None, ...], _Context] = {}
    for script, window, token in steps:
        known = units.get(window)
        if known is not None and known.next_token != token:
            raise ValueError(
                f"the {script.name!r} and {known.script!r} answers continue the same "
                f"{_DEMO_CONTEXT} tokens differently; vary one of them"
            )
        if known is None or known.priority < script.priority:
            units[window] = _Context(window, token, script.priority, script.name)
    contexts = list(units.values())
    for script, window, token in steps:
        own = _amplitude(script.priority)
        rivals: dict[int, float] = {}
        for unit in contexts:
            if unit.next_token == token:
                continue
            if not all(
                u is None or w is None or u == w for u, w in zip(unit.tokens, window, strict=True)
            ):
                continue
            if unit.priority > script.priority and None in window:
                continue
            rivals[unit.next_token] = rivals.get(unit.next_token, 0.0) + _amplitude(unit.priority)
        if rivals and max(rivals.values()) >= own:
            rival = next(u for u in contexts if u.next_token == max(rivals, key=rivals.__getitem__))
            raise ValueError(
                f"the {rival.script!r} answer could take over the {script.name!r} answer; "
                "vary one of them"
            )
    return contexts


def _amplitude(priority: int) -> float:
    """What a unit of a script of this priority writes into its token's output dimension."""
    return _OUTPUT_SIZE * priority


def _write_lookup_decoder(directory: Path, contexts: list[_Context], tokenizer: Any) -> None:
    """Set the decoder's weights so that it writes the next token of each context.

    Residual dimensions: 0 is 1 for every text token (0 for image tokens); then the current
    token's code; then one code per attention head (the token that many positions back); then
    one dimension per token the answers write. A unit's gate adds +-1 per code bit that agrees
    or not with its context and subtracts (bits - 1), so it is +1 times the norm's gain on its
    context and at most -1 elsewhere. Under a JSON grammar that forbids the scripted token, the
    head prefers ``"``, then closing brackets, then ``<|end|>``, so the JSON ends quickly.
    """
    import math

    import torch
    from safetensors.torch import load_file, save_file

    bits, heads, width = _DEMO_CODE_BITS, _DEMO_CONTEXT - 1, _DEMO_HEAD_DIM
    inputs = sorted({t for c in contexts for t in c.tokens if t is not None})
    outputs = sorted({c.next_token for c in contexts})
    if len(inputs) >= 2**bits:
        raise ValueError(f"the answers use {len(inputs)} tokens; at most {2**bits - 1} fit")
    first_output = 1 + bits * _DEMO_CONTEXT
    if first_output + len(outputs) > _DEMO_HIDDEN:
        raise ValueError(f"the answers write {len(outputs)} distinct tokens; too many to fit")
    number = {token: i + 1 for i, token in enumerate(inputs)}  # 0: every other token

    def code(token: int | None) -> torch.Tensor:
        n = number.get(token, 0) if token is not None else 0
        return torch.tensor([1.0 if (n >> b) & 1 else -1.0 for b in range(bits)])

    weights_file = directory / "model.safetensors"
    weights = load_file(str(weights_file))
    vocab = weights["language_model.model.embed_tokens.weight"].shape[0]
    f64 = torch.float64
    embed = torch.zeros(vocab, _DEMO_HIDDEN, dtype=f64)
    embed[:, 0] = 1.0
    embed[:, 1 : 1 + bits] = code(None)
    for token in inputs:
        embed[token, 1 : 1 + bits] = code(token)

    # Attention: a constant query and key (from dimension 0) whose RoPE phases peak at distance
    # h + 1 for head h; the value is the token's code, written to the head's own dimensions.
    gain = math.sqrt(_DEMO_HIDDEN / (1 + bits))  # RMSNorm's gain on a token's embedding
    half = width // 2
    theta = float(TINY_CONFIG["llm_config"]["rope_theta"])
    freqs = theta ** (-torch.arange(0, width, 2, dtype=f64) / width)
    amplitude = torch.tensor(_ROPE_WEIGHTS, dtype=f64).sqrt()
    k_proj = torch.zeros(width, _DEMO_HIDDEN, dtype=f64)
    k_proj[:half, 0] = amplitude / gain
    v_proj = torch.zeros(width, _DEMO_HIDDEN, dtype=f64)
    v_proj[torch.arange(bits), 1 + torch.arange(bits)] = 1.0 / gain
    q_proj = torch.zeros(heads * width, _DEMO_HIDDEN, dtype=f64)
    o_proj = torch.zeros(_DEMO_HIDDEN, heads * width, dtype=f64)
    q_scale = _PEAK_SCORE * math.sqrt(width) / gain
    for h in range(heads):
        distance = h + 1
        q_proj[h * width : h * width + half, 0] = q_scale * amplitude * torch.cos(freqs * distance)
        q_proj[h * width + half : (h + 1) * width, 0] = (
            -q_scale * amplitude * torch.sin(freqs * distance)
        )
        for b in range(bits):
            o_proj[1 + bits * distance + b, h * width + b] = 1.0

    # MLP: one unit per context.
    units = weights["language_model.model.layers.0.mlp.gate_proj.weight"].shape[0]
    gate = torch.zeros(units, _DEMO_HIDDEN, dtype=f64)
    up = torch.zeros(units, _DEMO_HIDDEN, dtype=f64)
    down = torch.zeros(_DEMO_HIDDEN, units, dtype=f64)
    mid_gain = math.sqrt(_DEMO_HIDDEN / (1 + bits * _DEMO_CONTEXT))
    for u, context in enumerate(contexts):
        cared = [(j, t) for j, t in enumerate(context.tokens) if t is not None]
        for j, token in cared:
            gate[u, 1 + bits * j : 1 + bits * (j + 1)] = _GATE_SCALE * code(token)
        gate[u, 0] = -_GATE_SCALE * (bits * len(cared) - 1)
        up[u, 0] = 1.0
        down[first_output + outputs.index(context.next_token), u] = _amplitude(context.priority) / (
            _GATE_SCALE * mid_gain**2
        )

    head = torch.zeros(vocab, _DEMO_HIDDEN, dtype=f64)
    for i, token in enumerate(outputs):
        head[token, first_output + i] = _LOGIT_SCALE
    for token, piece in enumerate(tokenizer.vocab_pieces(vocab)):
        if piece == '"':
            head[token, 0] = 2.0
        elif piece and all(c in '"}]' for c in piece):
            head[token, 0] = 1.5
    head[tokenizer.eos_token_id, 0] += 1.0

    layer = "language_model.model.layers.0."
    dtype = weights[layer + "self_attn.q_proj.weight"].dtype
    new = {
        "language_model.model.embed_tokens.weight": embed,
        "language_model.lm_head.weight": head,
        layer + "self_attn.q_proj.weight": q_proj,
        layer + "self_attn.k_proj.weight": k_proj,
        layer + "self_attn.v_proj.weight": v_proj,
        layer + "self_attn.o_proj.weight": o_proj,
        layer + "mlp.gate_proj.weight": gate,
        layer + "mlp.up_proj.weight": up,
        layer + "mlp.down_proj.weight": down,
        layer + "input_layernorm.weight": torch.ones(_DEMO_HIDDEN, dtype=f64),
        layer + "post_attention_layernorm.weight": torch.ones(_DEMO_HIDDEN, dtype=f64),
        "language_model.model.norm.weight": torch.ones(_DEMO_HIDDEN, dtype=f64),
        # no image features: the answers are the same whatever the image
        "mlp1.3.weight": torch.zeros_like(weights["mlp1.3.weight"], dtype=f64),
        "mlp1.3.bias": torch.zeros_like(weights["mlp1.3.bias"], dtype=f64),
    }
    for name, tensor in new.items():
        if weights[name].shape != tensor.shape:
            raise AssertionError(f"{name}: {tuple(tensor.shape)} != {tuple(weights[name].shape)}")
        weights[name] = tensor.to(dtype)
    save_file(weights, str(weights_file), metadata={"format": "pt"})
