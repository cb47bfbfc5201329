"""Build VLM_WebSight_finetuned checkpoints in the published on-disk format with random weights.

A checkpoint written here has what the published one has: ``config.json`` with the published keys
(``model_type: vmistral``, ``vision_config``, ``perceiver_config``, ``additional_vocab_size`` ...
and the ``auto_map`` we never follow), ``generation_config.json``, ``preprocessor_config.json``
(``IdeficsImageProcessor``, mean and std 0.5), the published tensor names
(``model.vision_model.vision_model.*`` with SigLIP's pooling head, ``model.modality_projection.*``,
``model.perceiver_resampler.*``, the decoupled ``model.embed_tokens.additional_embedding`` and
``lm_head.additional_fc``) in safetensors (one file or shards with an index), and a fast
``tokenizer.json`` of the published layout (Mistral's byte-fallback BPE: ``<unk>`` 0, ``<s>`` 1,
``</s>`` 2, ``<0x00>``.. at 3..258, ``<fake_token_around_image>`` 32000 and ``<image>`` 32001).
The BPE merges are trained locally on a little HTML; the vocabulary is padded with unreachable
pieces to the real 32000, so every id lines up with the real model's.

Example:
    .. code-block:: python

        from mississippi_tools.models.websight.testing import build_tiny_checkpoint
        path = build_tiny_checkpoint("/tmp/tiny-websight")
        MississippiVLM.load(path).to_html("screenshot.png").html
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mississippi_tools.models.checkpoint_files import write_json

if TYPE_CHECKING:
    import torch

__all__ = [
    "TINY_CONFIG",
    "WEBSIGHT_CONFIG",
    "build_checkpoint",
    "build_tiny_checkpoint",
    "build_tokenizer_json",
    "published_tensor_shapes",
]

_BASE_VOCAB = 32000
_ADDED = ("<fake_token_around_image>", "<image>")

#: The published ``config.json`` of ``HuggingFaceM4/VLM_WebSight_finetuned``.
WEBSIGHT_CONFIG: dict[str, Any] = {
    "_commit_hash": None,
    "_name_or_path": "None",
    "additional_vocab_size": 2,
    "alpha_initializer": "zeros",
    "alpha_type": "float",
    "alphas_initializer_range": 0.0,
    "architectures": ["VMistralForVisionText2Text"],
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_vmistral.VMistralConfig",
        "AutoModelForCausalLM": "modeling_vmistral.VMistralForVisionText2Text",
    },
    "bos_token_id": 1,
    "cross_layer_interval": 1,
    "eos_token_id": 2,
    "freeze_lm_head": False,
    "freeze_text_layers": False,
    "freeze_text_module_exceptions": [],
    "freeze_vision_layers": False,
    "freeze_vision_module_exceptions": [],
    "hidden_act": "silu",
    "hidden_size": 4096,
    "image_token_id": 32001,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "vmistral",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pad_token_id": 0,
    "perceiver_config": {
        "resampler_depth": 3,
        "resampler_head_dim": 96,
        "resampler_n_heads": 16,
        "resampler_n_latents": 64,
        "qk_layer_norms_perceiver": True,
    },
    "qk_layer_norms": True,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.34.0.dev0",
    "use_cache": True,
    "use_resampler": True,
    "vision_config": {
        "hidden_size": 1152,
        "image_size": 960,
        "intermediate_size": 4304,
        "model_type": "vmistral",
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "patch_size": 14,
    },
    "vocab_size": 32000,
}

#: Tiny sizes with the published structure, vocabulary, token ids and 64 latents per image.
TINY_CONFIG: dict[str, Any] = {
    **copy.deepcopy(WEBSIGHT_CONFIG),
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "perceiver_config": {
        **WEBSIGHT_CONFIG["perceiver_config"],
        "resampler_depth": 2,
        "resampler_head_dim": 8,
        "resampler_n_heads": 2,
    },
    "vision_config": {
        **WEBSIGHT_CONFIG["vision_config"],
        "hidden_size": 24,
        "image_size": 56,
        "intermediate_size": 48,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
    },
}

_GENERATION_CONFIG = {
    "_from_model_config": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "transformers_version": "4.35.2",
}

# Text the tiny tokenizer learns its merges from: what the model writes.
_CORPUS = (
    "<html>\n<head>\n<title>Landing page</title>\n"
    '<link href="https://cdn.jsdelivr.net/npm/tailwindcss@2.2.19/dist/tailwind.min.css" '
    'rel="stylesheet">\n</head>\n<body class="bg-gray-100">\n',
    '<div class="container mx-auto px-4 py-8">\n<h1 class="text-3xl font-bold">Welcome</h1>\n'
    '<p class="text-gray-700">Fresh coffee and pastries every morning.</p>\n</div>\n',
    '<nav class="flex justify-between items-center p-4 bg-white shadow">\n'
    '<a href="#" class="text-blue-500 hover:underline">Home</a>\n</nav>\n',
    "<style>\nbody { font-family: Arial, sans-serif; margin: 0; padding: 0; }\n"
    ".header { background-color: #333; color: white; text-align: center; }\n</style>\n",
    '<button class="bg-blue-500 text-white px-4 py-2 rounded">Sign up</button>\n'
    "<footer>&copy; 2024 Company. All rights reserved.</footer>\n</body>\n</html>",
    '<ul><li>One</li><li>Two</li><li>Three</li></ul> <img src="logo.png" alt="logo"> '
    "<table><tr><td>1</td><td>2</td></tr></table> 0 1 2 3 4 5 6 7 8 9 100 50% 12px",
)

_PUBLISHED_TOKENIZER_CONFIG: dict[str, Any] = {
    "additional_special_tokens": [],
    "bos_token": "<s>",
    "clean_up_tokenization_spaces": False,
    "eos_token": "</s>",
    "legacy": False,
    "model_max_length": 1000000000000000019884624838656,
    "pad_token": "<unk>",
    "sp_model_kwargs": {},
    "spaces_between_special_tokens": False,
    "tokenizer_class": "LlamaTokenizer",
    "unk_token": "<unk>",
    "use_default_system_prompt": True,
}


def _entry(content: str, idx: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {} if idx is None else {"id": idx}
    entry.update(
        {
            "content": content,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
    )
    return entry


def build_tokenizer_json(directory: str | Path) -> Path:
    """Write ``tokenizer.json`` and the tokenizer side files of the published layout."""
    from tokenizers import Tokenizer, models, normalizers, trainers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trained = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    trained.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
    )
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>"], show_progress=False)
    trained.train_from_iterator(list(_CORPUS) * 20, trainer)
    learned = json.loads(trained.to_str())["model"]
    fixed = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    pieces = fixed + [p for p, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1])]
    pieces = list(dict.fromkeys(pieces))
    # Pad to the real vocabulary with pieces no merge produces and no single character spells,
    # so they are never produced; the added tokens then sit at their real ids.
    pieces += [f"\ue000{i:05d}" for i in range(_BASE_VOCAB - len(pieces))]
    specials = [("<unk>", 0), ("<s>", 1), ("</s>", 2)]
    specials += [(token, _BASE_VOCAB + i) for i, token in enumerate(_ADDED)]
    data = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_entry(token, idx) for token, idx in specials],
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
            "vocab": {piece: idx for idx, piece in enumerate(pieces)},
            "merges": learned["merges"],
        },
    }
    write_json(directory / "tokenizer.json", data)
    Tokenizer.from_file(str(directory / "tokenizer.json"))  # fails loudly on a bad file
    decoder = {str(idx): _entry(token) for token, idx in specials}
    write_json(
        directory / "tokenizer_config.json",
        {"added_tokens_decoder": decoder, **_PUBLISHED_TOKENIZER_CONFIG},
    )

    def token(content: str) -> dict[str, Any]:
        return {k: v for k, v in _entry(content).items() if k not in ("special",)}

    write_json(
        directory / "special_tokens_map.json",
        {
            "bos_token": token("<s>"),
            "eos_token": token("</s>"),
            "pad_token": token("<unk>"),
            "unk_token": token("<unk>"),
        },
    )
    write_json(directory / "added_tokens.json", {t: _BASE_VOCAB + i for i, t in enumerate(_ADDED)})
    return directory


def published_tensor_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor of the published checkpoint for ``config``, as the remote code names it."""
    vision, perceiver = config["vision_config"], config["perceiver_config"]
    hv, iv = vision["hidden_size"], vision["intermediate_size"]
    patch, channels = vision["patch_size"], vision.get("num_channels", 3)
    positions = (vision["image_size"] // patch) ** 2
    d, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = d // heads
    vocab, extra = config["vocab_size"], config["additional_vocab_size"]
    shapes: dict[str, tuple[int, ...]] = {}
    tower = "model.vision_model.vision_model."
    shapes[tower + "embeddings.patch_embedding.weight"] = (hv, channels, patch, patch)
    shapes[tower + "embeddings.patch_embedding.bias"] = (hv,)
    shapes[tower + "embeddings.position_embedding.weight"] = (positions, hv)

    def linear(prefix: str, out_features: int, in_features: int, bias: bool = True) -> None:
        shapes[f"{prefix}.weight"] = (out_features, in_features)
        if bias:
            shapes[f"{prefix}.bias"] = (out_features,)

    def layer_norm(prefix: str, width: int) -> None:
        shapes[f"{prefix}.weight"] = (width,)
        shapes[f"{prefix}.bias"] = (width,)

    for i in range(vision["num_hidden_layers"]):
        layer = f"{tower}encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            linear(layer + f"self_attn.{proj}", hv, hv)
        layer_norm(layer + "layer_norm1", hv)
        linear(layer + "mlp.fc1", iv, hv)
        linear(layer + "mlp.fc2", hv, iv)
        layer_norm(layer + "layer_norm2", hv)
    layer_norm(tower + "post_layernorm", hv)
    shapes[tower + "head.probe"] = (1, 1, hv)
    shapes[tower + "head.attention.in_proj_weight"] = (3 * hv, hv)
    shapes[tower + "head.attention.in_proj_bias"] = (3 * hv,)
    linear(tower + "head.attention.out_proj", hv, hv)
    layer_norm(tower + "head.layernorm", hv)
    linear(tower + "head.mlp.fc1", iv, hv)
    linear(tower + "head.mlp.fc2", hv, iv)
    linear("model.modality_projection.fc1", d, hv, bias=False)
    linear("model.modality_projection.act.fc1", d, d, bias=False)
    linear("model.modality_projection.act.fc2", d, d, bias=False)
    linear("model.modality_projection.fc2", d, d, bias=False)
    resampler = "model.perceiver_resampler."
    p_heads, p_dim = perceiver["resampler_n_heads"], perceiver["resampler_head_dim"]
    shapes[resampler + "latents"] = (perceiver["resampler_n_latents"], d)
    for i in range(perceiver["resampler_depth"]):
        attn, mlp = f"{resampler}blocks.{i}.0.", f"{resampler}blocks.{i}.1."
        layer_norm(attn + "context_layer_norm", d)
        layer_norm(attn + "latents_layer_norm", d)
        if perceiver.get("qk_layer_norms_perceiver"):
            layer_norm(attn + "q_layer_norm", p_dim)
            layer_norm(attn + "k_layer_norm", p_dim)
        for proj in ("q_proj", "k_proj", "v_proj"):
            linear(attn + proj, p_heads * p_dim, d, bias=False)
        linear(attn + "output_proj", d, p_heads * p_dim, bias=False)
        layer_norm(mlp + "ln", d)
        linear(mlp + "fc", 4 * d, d, bias=False)
        linear(mlp + "c_proj", d, 4 * d, bias=False)
    layer_norm(resampler + "layer_norm", d)
    shapes["model.embed_tokens.weight"] = (vocab, d)
    if extra:
        shapes["model.embed_tokens.additional_embedding.weight"] = (extra, d)
    for i in range(config["num_hidden_layers"]):
        layer = f"model.layers.{i}."
        linear(layer + "self_attn.q_proj", heads * head_dim, d, bias=False)
        linear(layer + "self_attn.k_proj", kv_heads * head_dim, d, bias=False)
        linear(layer + "self_attn.v_proj", kv_heads * head_dim, d, bias=False)
        linear(layer + "self_attn.o_proj", d, heads * head_dim, bias=False)
        linear(layer + "mlp.gate_proj", inter, d, bias=False)
        linear(layer + "mlp.up_proj", inter, d, bias=False)
        linear(layer + "mlp.down_proj", d, inter, bias=False)
        shapes[layer + "input_layernorm.weight"] = (d,)
        shapes[layer + "post_attention_layernorm.weight"] = (d,)
    shapes["model.norm.weight"] = (d,)
    if not config.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = (vocab, d)
        if extra:
            shapes["lm_head.additional_fc.weight"] = (extra, d)
    return shapes


def _random_tensor(
    name: str, shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator, std: float
) -> torch.Tensor:
    import torch

    tensor = torch.empty(shape, dtype=torch.float32)
    last = name.rsplit(".", 1)[-1]
    is_norm = ("norm" in name or name.endswith((".ln.weight", ".ln.bias"))) and len(shape) == 1
    if is_norm and last == "weight":
        tensor.normal_(1.0, 0.1, generator=generator)  # not exactly 1: swapped norms show
    elif last in ("bias", "in_proj_bias"):
        tensor.normal_(0.0, 0.1, generator=generator)
    else:
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
    """Write a random-weight checkpoint in the published format for ``config``.

    Args:
        directory: Where to write (created if needed).
        config: The ``config.json`` content (:data:`TINY_CONFIG`, :data:`WEBSIGHT_CONFIG` ...).
        dtype: Storage dtype of the weights (``bfloat16`` as published, or ``float32``).
        seed: Seed of the random weights; the same seed gives the same files.
        init_std: Standard deviation of the random matrices.
        max_shard_bytes: Split the weights into shards with an index file above this size.

    Returns:
        The checkpoint directory.
    """
    import torch

    from mississippi_tools.models.checkpoint_files import save_weights

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        name: _random_tensor(name, shape, torch_dtype, generator, init_std)
        for name, shape in published_tensor_shapes(config).items()
    }
    save_weights(directory, tensors, max_shard_bytes)
    written = copy.deepcopy(config)
    written["torch_dtype"] = dtype
    write_json(directory / "config.json", written)
    write_json(directory / "generation_config.json", _GENERATION_CONFIG)
    write_json(
        directory / "preprocessor_config.json",
        {
            "auto_map": {
                "AutoProcessor": "IdeficsProcessor",
                "AutoImageProcessor": "IdeficsImageProcessor",
            },
            "image_num_channels": 3,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "IdeficsImageProcessor",
            "image_size": config["vision_config"]["image_size"],
            "image_std": [0.5, 0.5, 0.5],
            "processor_class": "IdeficsProcessor",
        },
    )
    build_tokenizer_json(directory)
    return directory


def build_tiny_checkpoint(
    directory: str | Path,
    *,
    seed: int = 0,
    dtype: str = "float32",
    max_shard_bytes: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """A tiny random checkpoint (2 decoder, 2 vision, 2 perceiver layers) for tests and demos.

    Args:
        directory: Where to write.
        seed: Seed of the random weights.
        dtype: Storage dtype.
        max_shard_bytes: Shard the weights above this size.
        overrides: Top-level ``config.json`` keys to replace (``sliding_window``,
            ``vision_config`` ...).
    """
    config = copy.deepcopy(TINY_CONFIG)
    config.update(copy.deepcopy(overrides or {}))
    return build_checkpoint(
        directory, config, dtype=dtype, seed=seed, init_std=0.3, max_shard_bytes=max_shard_bytes
    )
