"""Loading the published layout: config, tensor names, shards, errors, tokenizer, registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mississippi_tools.errors import CheckpointError, ConfigError, InvalidInputError
from mississippi_tools.images import load_image
from mississippi_tools.models.registry import (
    backend_for_config,
    family_for_model_name,
    load_backend,
)
from mississippi_tools.models.websight.backend import WebSightBackend
from mississippi_tools.models.websight.configuration import WebSightConfig
from mississippi_tools.models.websight.loading import map_checkpoint_key
from mississippi_tools.models.websight.testing import (
    WEBSIGHT_CONFIG,
    build_tiny_checkpoint,
    published_tensor_shapes,
)
from mississippi_tools.models.websight.tokenization import WebSightTokenizer


def test_published_config_reads_and_routes_to_the_websight_backend() -> None:
    config = WebSightConfig.from_dict(json.loads(json.dumps(WEBSIGHT_CONFIG)))
    assert config.total_vocab_size == 32002
    assert config.image_seq_len == 64
    assert config.vision_config.patches_per_side == 68  # 960 // 14: the last 8 px are dropped
    assert config.vision_config.hidden_act == "gelu_pytorch_tanh"  # a default, not in the file
    assert backend_for_config(WEBSIGHT_CONFIG) is WebSightBackend
    assert family_for_model_name("HuggingFaceM4/VLM_WebSight_finetuned") == "websight"
    assert family_for_model_name("/models/vlm_websight_finetuned") == "websight"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "idefics2"}, "not a VLM_WebSight checkpoint"),
        ({"use_resampler": False}, "use_resampler"),
        ({"image_token_id": 5}, "image_token_id 5"),
        ({"perceiver_config": None}, "perceiver_config"),
        ({"num_key_value_heads": 5}, "num_key_value_heads 5"),
    ],
)
def test_configs_we_cannot_run_are_refused_with_the_key(change: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=message):
        WebSightConfig.from_dict({**json.loads(json.dumps(WEBSIGHT_CONFIG)), **change})


def test_every_published_name_maps_and_the_full_index_has_the_published_size() -> None:
    shapes = published_tensor_shapes(WEBSIGHT_CONFIG)
    assert len(shapes) == 796
    unmapped = [n for n in shapes if map_checkpoint_key(n) is None and ".head." not in n]
    assert unmapped == []
    # The hub lists model.safetensors.index.json at 79.5 kB: these 796 names, as transformers
    # writes an index (indent 2, sorted keys), give 79,506 bytes; without SigLIP's pooling head
    # (11 tensors) it would be 78.4 kB.
    total = sum(torch.Size(s).numel() for s in shapes.values()) * 2
    index = {
        "metadata": {"total_size": total},
        "weight_map": dict.fromkeys(shapes, "model-00001-of-00004.safetensors"),
    }
    assert 79_450 <= len(json.dumps(index, indent=2, sort_keys=True) + "\n") < 79_550
    assert 16.40e9 < total < 16.45e9  # the four shards: 4.9 + 4.92 + 4.92 + 1.69 GB


def test_original_names_on_disk(websight_checkpoint: Path) -> None:
    names = set(load_file(str(websight_checkpoint / "model.safetensors")))
    assert "model.embed_tokens.additional_embedding.weight" in names
    assert "lm_head.additional_fc.weight" in names
    assert "model.vision_model.vision_model.head.probe" in names
    assert "model.perceiver_resampler.blocks.0.0.q_layer_norm.weight" in names
    assert not any(n.startswith("language_model.") for n in names)


def test_decoupled_rows_are_concatenated(
    websight_backend: WebSightBackend, websight_checkpoint: Path
) -> None:
    stored = load_file(str(websight_checkpoint / "model.safetensors"))
    embed = websight_backend.model.language_model.get_input_embeddings().weight
    head = websight_backend.model.language_model.lm_head.weight
    assert torch.equal(embed[:32000], stored["model.embed_tokens.weight"])
    assert torch.equal(embed[32000:], stored["model.embed_tokens.additional_embedding.weight"])
    assert torch.equal(head[32000:], stored["lm_head.additional_fc.weight"])


def test_sharded_checkpoint_gives_the_same_logits(
    tmp_path: Path, websight_backend: WebSightBackend
) -> None:
    sharded = build_tiny_checkpoint(tmp_path / "sharded", max_shard_bytes=2_000_000)
    assert (sharded / "model.safetensors.index.json").is_file()
    backend = load_backend(sharded, device="cpu", dtype="float32")
    ids = torch.tensor([[1, 500, 600, 700]])
    torch.testing.assert_close(backend.model(ids), websight_backend.model(ids), atol=0, rtol=0)


def _rewrite(directory: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_missing_unexpected_and_misshaped_tensors_are_listed(
    tmp_path: Path, websight_checkpoint: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(websight_checkpoint, broken)

    def change(t: dict[str, torch.Tensor]) -> None:
        del t["model.embed_tokens.additional_embedding.weight"]
        del t["model.perceiver_resampler.latents"]
        t["model.surprise.weight"] = torch.zeros(2)
        t["model.norm.weight"] = torch.zeros(7)

    _rewrite(broken, change)
    with pytest.raises(CheckpointError) as caught:
        load_backend(broken, device="cpu", dtype="float32")
    message = str(caught.value)
    assert "perceiver_resampler.latents" in message
    assert "embed_tokens.weight (additional rows)" in message
    assert "model.surprise.weight" in message
    assert "model.norm.weight expected (32,) found (7,)" in message


def test_tokenizer_user_text_never_makes_control_tokens(websight_checkpoint: Path) -> None:
    tokenizer = WebSightTokenizer.from_pretrained(websight_checkpoint)
    typed = tokenizer.encode("<image><fake_token_around_image><s></s> <div>")
    assert not {0, 1, 2, 32000, 32001} & set(typed)
    assert tokenizer.decode(typed) == "<image><fake_token_around_image><s></s> <div>"
    assert tokenizer.token_to_id("<image>") == 32001
    assert tokenizer.token_to_id("<fake_token_around_image>") == 32000
    assert tokenizer.vocab_type == "byte_fallback"
    pieces = tokenizer.vocab_pieces(32010)
    assert len(pieces) == 32010
    assert pieces[3] == "<0x00>"
    assert pieces[32001] == "<image>"
    assert tokenizer.is_whitespace_token(tokenizer.token_to_id("<0x0A>"))
    assert not tokenizer.is_whitespace_token(32001)
    assert tokenizer.decode([1, 32000, *typed, 2]) == tokenizer.decode(typed)


def test_one_screenshot_no_history_no_options(websight_backend: WebSightBackend) -> None:
    from PIL import Image

    image = load_image(Image.new("RGB", (40, 30), "white"))
    with pytest.raises(InvalidInputError, match="max_images=1"):
        websight_backend.prepare("", [image, image])
    with pytest.raises(InvalidInputError, match="no conversation history"):
        websight_backend.prepare("x", [image], history=[("q", "a")])
    with pytest.raises(InvalidInputError, match="max_tiles is not an option of websight"):
        websight_backend.prepare("", [image], options={"max_tiles": 4})
    info = websight_backend.info
    assert (info.family, info.max_images, info.instruction_tuned) == ("websight", 1, False)


def test_cache_key_holds_content_size_and_revision(websight_backend: WebSightBackend) -> None:
    from PIL import Image

    a = load_image(Image.new("RGB", (40, 30), "white"))
    b = load_image(Image.new("RGB", (40, 30), "black"))
    key_a = websight_backend.prepare("", [a]).images[0].cache_key
    assert key_a != websight_backend.prepare("", [b]).images[0].cache_key
    assert websight_backend.revision in key_a
    assert "|56|" in key_a
