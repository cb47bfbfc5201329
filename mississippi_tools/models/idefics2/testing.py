"""Build Idefics2 checkpoints in the published on-disk format with random weights.

What is written is what ``HuggingFaceM4/idefics2-8b`` publishes: a ``config.json`` of the
transformers 4.40 era (``vision_config`` / ``perceiver_config`` with ``"model_type":
"idefics2"``, no perceiver ``hidden_size``), the published tensor names in safetensors (float32,
as idefics2-8b), ``preprocessor_config.json`` and ``processor_config.json``, and the tokenizer
files: ``tokenizer.model`` (SentencePiece BPE with byte fallback, trained locally on a small
corpus and padded with unreachable pieces to Mistral's 32000) and the ``tokenizer.json`` the
published processor loads (the legacy Llama pipeline: a ``▁`` prepended to every text run,
spaces as ``▁``, byte fallback), with ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2,
``<fake_token_around_image>`` 32000, ``<image>`` 32001 and ``<end_of_utterance>`` 32002 as
published. Instruction-tuned variants carry the chat template; ``variant="base"`` does not, and
``variant="awq"`` writes the AWQ layout (``quantization_config``; ``qweight``/``qzeros``/
``scales`` for the decoder's linear layers) without meaningful values.

Example:
    .. code-block:: python

        from mississippi_tools.models.idefics2.testing import build_tiny_checkpoint
        path = build_tiny_checkpoint("/tmp/tiny-idefics2")
        vlm = MississippiVLM.load(path)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mississippi_tools.models.checkpoint_files import save_weights, write_json

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHAT_TEMPLATE",
    "IDEFICS2_8B_CONFIG",
    "TINY_CONFIG",
    "build_checkpoint",
    "build_scripted_checkpoint",
    "build_tiny_checkpoint",
    "build_tokenizer_files",
    "random_weights",
]

#: The published chat template (the 4.40 processor's default, stored in tokenizer_config.json).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{message['role'].capitalize()}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

_ADDED = ("<fake_token_around_image>", "<image>", "<end_of_utterance>")
_BASE_VOCAB = 32000

_TEXT_8B: dict[str, Any] = {
    "_name_or_path": "./mistral-7b",
    "add_cross_attention": False,
    "architectures": ["MistralForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mistral",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pad_token_id": 0,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "use_cache": True,
    "vocab_size": 32003,
}

#: idefics2-8b's ``config.json`` (the keys that matter, the published values and layout).
IDEFICS2_8B_CONFIG: dict[str, Any] = {
    "_name_or_path": "HuggingFaceM4/idefics2-8b",
    "architectures": ["Idefics2ForConditionalGeneration"],
    "image_token_id": 32001,
    "model_type": "idefics2",
    "perceiver_config": {
        "_name_or_path": "",
        "add_cross_attention": False,
        "hidden_act": "silu",
        "model_type": "idefics2",
        "num_key_value_heads": 4,
        "resampler_depth": 3,
        "resampler_head_dim": 96,
        "resampler_n_heads": 16,
        "resampler_n_latents": 64,
    },
    "text_config": _TEXT_8B,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "transformers_version": "4.40.0.dev0",
    "use_cache": True,
    "vision_config": {
        "_name_or_path": "",
        "add_cross_attention": False,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 1152,
        "image_size": 980,
        "intermediate_size": 4304,
        "layer_norm_eps": 1e-06,
        "model_type": "idefics2",
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "patch_size": 14,
    },
}

#: A tiny configuration: real vocabulary, image sizes and token ids; 2 layers everywhere.
TINY_CONFIG: dict[str, Any] = {
    **copy.deepcopy(IDEFICS2_8B_CONFIG),
    "perceiver_config": {
        **IDEFICS2_8B_CONFIG["perceiver_config"],
        "resampler_depth": 2,
        "resampler_head_dim": 8,
        "resampler_n_heads": 4,
        "num_key_value_heads": 2,
    },
    "text_config": {
        **_TEXT_8B,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
    },
    "vision_config": {
        **IDEFICS2_8B_CONFIG["vision_config"],
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
    },
}

_PREPROCESSOR = {
    "do_convert_rgb": True,
    "do_image_splitting": True,
    "do_normalize": True,
    "do_pad": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "Idefics2ImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "processor_class": "Idefics2Processor",
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"longest_edge": 980, "shortest_edge": 378},
}

_GENERATION = {
    "_from_model_config": True,
    "bos_token_id": 1,
    "eos_token_id": [2, 32002],
    "pad_token_id": 0,
    "transformers_version": "4.40.0.dev0",
}

#: Text the tiny tokenizers learn their merges from: prompts, answers, JSON, numbers.
CORPUS = (
    "User: What do we see in this image? Assistant: In this image, we can see the city.",
    "Read the text in the image. Extract the details from the image as JSON. Answer briefly.",
    '{"name": "Emily Johnson", "date_of_birth": "1995-05-12", "total": 1200.5, "paid": true}',
    '{"chart": {"title": "Monthly Sales", "data_points": [{"label": "Jan", "value": 1000}]}}',
    "| Product | Price | Quantity |\n| --- | --- | --- |\n| Shoes | $80 | 5 |",
    "The quick brown fox jumps over the lazy dog. Invoice number 12345, total due 1,200.00 USD.",
    "true false null 0 1 2 3 4 5 6 7 8 9 10 100 3.14 -42 12% $1,200 2024-10-17 09:00 AM",
    "Convert the document to markdown. # Heading - item\n\n* bullet",
)


def _added_entry(idx: int, content: str, *, special: bool = True) -> dict[str, Any]:
    return {
        "id": idx,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": special,
    }


def _sentencepiece_merges(pieces: list[tuple[str, float]], usable: int) -> list[list[str]]:
    """BPE merges of a SentencePiece BPE model, ranked by the merged piece's score."""
    vocab = {piece: i for i, (piece, _) in enumerate(pieces[:usable])}
    found: list[tuple[float, int, int, str, str]] = []
    for piece, score in pieces[:usable]:
        if piece.startswith("<") and piece.endswith(">"):
            continue  # control and byte pieces are never merged
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                found.append((-score, vocab[left], vocab[right], left, right))
    found.sort()
    return [[left, right] for _, _, _, left, right in found]


def build_tokenizer_files(directory: str | Path, *, chat_template: bool = True) -> Path:
    """Write ``tokenizer.model``, ``tokenizer.json`` and the tokenizer JSON files as published."""
    import sentencepiece as spm

    from mississippi_tools.models.checkpoint_files import train_sentencepiece

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = train_sentencepiece(CORPUS, 600, pad_to=_BASE_VOCAB)
    (directory / "tokenizer.model").write_bytes(model)
    processor = spm.SentencePieceProcessor(model_proto=model)
    pieces = [
        (processor.id_to_piece(i), processor.get_score(i))
        for i in range(processor.get_piece_size())
    ]
    usable = sum(1 for piece, _ in pieces if not piece.startswith("\ue000"))
    added = [_added_entry(0, "<unk>"), _added_entry(1, "<s>"), _added_entry(2, "</s>")]
    added += [_added_entry(_BASE_VOCAB + i, t) for i, t in enumerate(_ADDED)]
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
            ],
        },
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<s>", "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "vocab": {piece: i for i, (piece, _) in enumerate(pieces)},
            "merges": [" ".join(m) for m in _sentencepiece_merges(pieces, usable)],
        },
    }
    write_json(directory / "tokenizer.json", tokenizer_json)

    def token(content: str) -> dict[str, Any]:
        entry = _added_entry(0, content)
        return {k: v for k, v in entry.items() if k not in ("id", "special")}

    decoder = {str(e["id"]): {k: v for k, v in e.items() if k != "id"} for e in added}
    config: dict[str, Any] = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": list(_ADDED),
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "do_image_splitting": False,
        "eos_token": "</s>",
        "legacy": False,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<unk>",
        "processor_class": "Idefics2Processor",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    if chat_template:
        config["chat_template"] = CHAT_TEMPLATE
    write_json(directory / "tokenizer_config.json", config)
    write_json(
        directory / "special_tokens_map.json",
        {
            "additional_special_tokens": [token(t) for t in _ADDED],
            "bos_token": token("<s>"),
            "eos_token": token("</s>"),
            "pad_token": token("<unk>"),
            "unk_token": token("<unk>"),
        },
    )
    return directory


def random_weights(
    shapes: dict[str, tuple[int, ...]], *, dtype: torch.dtype, seed: int, std: float
) -> dict[str, torch.Tensor]:
    """Random tensors for ``shapes``: norms at one, biases at zero, the rest normal(0, std)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        last = name.rsplit(".", 1)[-1]
        if "norm" in name and last in ("weight", "bias"):
            tensor = (torch.ones if last == "weight" else torch.zeros)(shape)
        elif last == "bias":
            tensor = torch.zeros(shape)
        else:
            tensor = torch.empty(shape).normal_(0.0, std, generator=generator)
        tensors[name] = tensor.to(dtype).contiguous()
    return tensors


def _native_shapes(config: dict[str, Any], config_class: Any, native_class: str) -> dict[str, Any]:
    import torch
    import transformers

    parsed = config_class.from_dict(copy.deepcopy(config))
    with torch.device("meta"):
        skeleton = getattr(transformers, native_class)(parsed.native())
    shapes = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    if parsed.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def _awq_tensors(
    tensors: dict[str, torch.Tensor], *, group_size: int, bits: int = 4
) -> dict[str, torch.Tensor]:
    """The AWQ (GEMM) layout of the decoder's linear layers: ``qweight``, ``qzeros``, ``scales``."""
    import torch

    pack = 32 // bits
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        linear = name.startswith("model.text_model.layers.") and name.endswith("proj.weight")
        if not linear:
            out[name] = tensor.to(torch.float16)
            continue
        rows, cols = tensor.shape  # [out_features, in_features]
        prefix = name.removesuffix(".weight")
        out[prefix + ".qweight"] = torch.zeros((cols, rows // pack), dtype=torch.int32)
        out[prefix + ".qzeros"] = torch.zeros((cols // group_size, rows // pack), dtype=torch.int32)
        out[prefix + ".scales"] = torch.ones((cols // group_size, rows), dtype=torch.float16)
    return out


def build_checkpoint(
    directory: str | Path,
    config: dict[str, Any],
    *,
    dtype: str = "float32",
    seed: int = 0,
    init_std: float = 0.02,
    variant: str = "instruct",
    do_image_splitting: bool = True,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write a random-weight Idefics2 checkpoint in the published format for ``config``.

    Args:
        directory: Where to write (created if needed).
        config: The ``config.json`` content (:data:`TINY_CONFIG`, :data:`IDEFICS2_8B_CONFIG`).
        dtype: Storage dtype (``float32`` as idefics2-8b publishes).
        seed: Seed of the random weights.
        init_std: Standard deviation of the random matrices.
        variant: ``instruct`` (idefics2-8b, -chatty), ``base`` (no chat template) or ``awq``.
        do_image_splitting: The processor default written to ``preprocessor_config.json``.
        max_shard_bytes: Shard the weights above this size.
    """
    import torch

    from mississippi_tools.models.idefics2.configuration import Idefics2Config

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shapes = _native_shapes(config, Idefics2Config, "Idefics2ForConditionalGeneration")
    tensors = random_weights(shapes, dtype=getattr(torch, dtype), seed=seed, std=init_std)
    written = copy.deepcopy(config)
    written["torch_dtype"] = dtype
    if variant == "awq":
        group = 32
        tensors = _awq_tensors(tensors, group_size=group)
        written["torch_dtype"] = "float16"
        written["quantization_config"] = {
            "bits": 4,
            "group_size": group,
            "modules_to_not_convert": ["vision_model", "connector", "lm_head"],
            "quant_method": "awq",
            "version": "gemm",
            "zero_point": True,
        }
    elif variant not in ("instruct", "base"):
        raise ValueError(f"variant must be 'instruct', 'base' or 'awq', not {variant!r}")
    save_weights(directory, tensors, max_shard_bytes)
    write_json(directory / "config.json", written)
    write_json(directory / "generation_config.json", _GENERATION)
    write_json(
        directory / "preprocessor_config.json",
        {**_PREPROCESSOR, "do_image_splitting": do_image_splitting},
    )
    write_json(
        directory / "processor_config.json",
        {
            "image_seq_len": config["perceiver_config"]["resampler_n_latents"],
            "processor_class": "Idefics2Processor",
        },
    )
    build_tokenizer_files(directory, chat_template=variant != "base")
    return directory


def build_tiny_checkpoint(
    directory: str | Path,
    *,
    seed: int = 0,
    variant: str = "instruct",
    do_image_splitting: bool = True,
    dtype: str = "float32",
    max_shard_bytes: int | None = None,
) -> Path:
    """A tiny random Idefics2 checkpoint (2 layers each; real vocabulary, sizes and token ids).

    Args:
        directory: Where to write.
        seed: Seed of the random weights.
        variant: ``instruct``, ``base`` (pretrained-only: no chat template) or ``awq``.
        do_image_splitting: The processor's default.
        dtype: Storage dtype.
        max_shard_bytes: Shard the weights above this size.
    """
    return build_checkpoint(
        directory,
        TINY_CONFIG,
        dtype=dtype,
        seed=seed,
        init_std=0.2,
        variant=variant,
        do_image_splitting=do_image_splitting,
        max_shard_bytes=max_shard_bytes,
    )


def build_scripted_checkpoint(source: str | Path, target: str | Path, answer: str) -> Path:
    """Copy a tiny Idefics checkpoint and set its weights so that greedy decoding writes ``answer``.

    The Idefics counterpart of :func:`mississippi_tools.testing.build_scripted_checkpoint`: every
    decoder layer's output projections are zeroed (a bigram model), and the embeddings and LM
    head lead from the prompt's last token (``:`` of ``Assistant:``) through ``answer`` to
    ``<end_of_utterance>``. Under a JSON grammar the head prefers ``"`` and closing brackets, so
    constrained JSON finishes quickly. Works for Idefics2 and Idefics3 checkpoints.

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
    chain = [last, *tokenizer.encode(answer), tokenizer.token_to_id("<end_of_utterance>")]
    if len(set(chain[:-1])) != len(chain) - 1:
        raise ValueError(f"{answer!r} repeats a token ({chain}); a bigram model cannot write it")
    weights_file = target / "model.safetensors"
    weights = load_file(str(weights_file))
    embed = weights["model.text_model.embed_tokens.weight"]
    head = weights["lm_head.weight"]
    if len(chain) >= embed.shape[1]:
        raise ValueError(f"{answer!r} is too long for a hidden size of {embed.shape[1]}")
    embed.zero_()
    head.zero_()
    embed[:, 0] = 1.0
    for k, token in enumerate(chain[:-1], start=1):
        embed[token, k] = 4.0
        head[chain[k], k] = 50.0
    for token, piece in enumerate(tokenizer.vocab_pieces()):
        text = piece.replace("▁", " ").replace("Ġ", " ")
        if text == '"':
            head[token, 0] = 6.0
        elif text and all(c in '"}]' for c in text):
            head[token, 0] = 5.0
    for name, tensor in weights.items():
        if name.startswith("model.text_model.layers.") and name.endswith(
            ("o_proj.weight", "down_proj.weight")
        ):
            tensor.zero_()
    save_file(weights, str(weights_file), metadata={"format": "pt"})
    return target
