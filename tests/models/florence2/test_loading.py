"""Microsoft's Florence-2 config and tensor names mapped onto the native class; typed errors."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mississippi_tools.errors import CheckpointError, ConfigError
from mississippi_tools.models.florence2.configuration import (
    decoder_prefix,
    native_config,
    read_processor_settings,
)
from mississippi_tools.models.florence2.loading import map_checkpoint_key
from mississippi_tools.models.florence2.testing import FLORENCE2_DOCVQA_CONFIG, microsoft_name
from mississippi_tools.models.registry import load_backend


def test_the_published_config_maps_onto_the_native_one() -> None:
    config = native_config(FLORENCE2_DOCVQA_CONFIG, image_token_id=51289)
    vision, text = config.vision_config, config.text_config
    assert list(vision.embed_dim) == [128, 256, 512, 1024]
    assert list(vision.depths) == [1, 1, 9, 1]
    assert vision.max_position_embeddings == 50 and vision.max_temporal_embeddings == 100
    assert vision.projection_dim == 768 == text.d_model
    assert (text.encoder_layers, text.decoder_layers, text.vocab_size) == (6, 6, 51289)
    assert text.max_position_embeddings == 1024 and config.image_token_id == 51289
    assert decoder_prefix(FLORENCE2_DOCVQA_CONFIG, {}) == [2, 0]
    assert decoder_prefix(FLORENCE2_DOCVQA_CONFIG, {"forced_bos_token_id": None}) == [2]


def test_values_the_native_classes_cannot_honour_are_all_listed() -> None:
    raw = copy.deepcopy(FLORENCE2_DOCVQA_CONFIG)
    raw["text_config"]["normalize_before"] = True
    raw["text_config"]["rotary_embeddings"] = True
    raw["vision_config"]["image_feature_source"] = ["last_frame"]
    raw["vision_config"]["visual_temporal_embedding"] = {"type": "LEARNED"}
    with pytest.raises(ConfigError) as caught:
        native_config(raw, image_token_id=51289)
    message = str(caught.value)
    for part in (
        "text_config.normalize_before=True",
        "text_config.rotary_embeddings",
        "image_feature_source=['last_frame']",
        "visual_temporal_embedding",
    ):
        assert part in message


def test_a_native_layout_config_is_refused_clearly() -> None:
    native = {
        "model_type": "florence2",
        "text_config": {"model_type": "bart"},
        "vision_config": {"model_type": "florence_vision", "embed_dim": [16, 32]},
    }
    with pytest.raises(ConfigError, match=r"vision_config.model_type='florence_vision'.*embed_dim"):
        native_config(native, image_token_id=10)


def test_every_native_tensor_has_one_microsoft_name_and_maps_back(florence2_backend) -> None:  # type: ignore[no-untyped-def]
    names = list(florence2_backend.model.state_dict())
    for native in names:
        microsoft = microsoft_name(native)
        if microsoft is None:  # tied copies of the shared embedding
            assert native == "lm_head.weight" or native.endswith("embed_tokens.weight")
            continue
        assert map_checkpoint_key(microsoft) == native, microsoft
    assert map_checkpoint_key(
        "vision_tower.blocks.0.0.spatial_block.window_attn.fn.qkv.weight"
    ) == ("model.vision_tower.blocks.0.0.spatial_block.window_attn.qkv.weight")
    assert map_checkpoint_key("language_model.model.encoder.embed_tokens.weight") is None


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _edit_weights(directory: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = directory / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_unmappable_missing_and_misshaped_tensors_are_listed(
    florence2_checkpoint: Path, tmp_path: Path
) -> None:
    broken = _copy(florence2_checkpoint, tmp_path / "broken")

    def edit(tensors: dict[str, torch.Tensor]) -> None:
        tensors["vision_tower.extra_head.weight"] = torch.zeros(2)
        del tensors["image_proj_norm.bias"]
        tensors["image_projection"] = tensors["image_projection"][:, :8].contiguous()
        tensors["language_model.final_logits_bias"] = torch.ones_like(
            tensors["language_model.final_logits_bias"]
        )

    _edit_weights(broken, edit)
    with pytest.raises(CheckpointError) as caught:
        load_backend(broken, device="cpu", dtype="float32")
    error = caught.value
    assert "model.multi_modal_projector.image_proj_norm.bias" in error.missing
    assert "vision_tower.extra_head.weight" in error.unexpected
    assert any("final_logits_bias (non-zero" in u for u in error.unexpected)
    assert [m[0] for m in error.mismatched] == ["image_projection"]


def test_unused_davit_head_and_tied_copies_are_accepted(
    florence2_checkpoint: Path, tmp_path: Path
) -> None:
    extra = _copy(florence2_checkpoint, tmp_path / "extra")

    def edit(tensors: dict[str, torch.Tensor]) -> None:
        shared = tensors["language_model.model.shared.weight"]
        tensors["language_model.lm_head.weight"] = shared.clone()
        tensors["language_model.model.decoder.embed_tokens.weight"] = shared.clone()
        tensors["vision_tower.norms.weight"] = torch.ones(32)

    _edit_weights(extra, edit)
    backend = load_backend(extra, device="cpu", dtype="float32")
    assert backend.vocab_size == json.loads((extra / "config.json").read_text())["vocab_size"]

    def untie(tensors: dict[str, torch.Tensor]) -> None:
        tensors["language_model.lm_head.weight"] = tensors["language_model.lm_head.weight"] + 1

    _edit_weights(extra, untie)
    with pytest.raises(CheckpointError, match=r"lm_head.weight \(differs from"):
        load_backend(extra, device="cpu", dtype="float32")


def test_processor_settings_and_their_errors(florence2_checkpoint: Path, tmp_path: Path) -> None:
    settings = read_processor_settings(florence2_checkpoint)
    assert (settings.height, settings.width, settings.image_seq_length) == (64, 64, 65)
    assert settings.resample == 3
    bad = _copy(florence2_checkpoint, tmp_path / "crop")
    data = json.loads((bad / "preprocessor_config.json").read_text())
    data["do_center_crop"] = True
    (bad / "preprocessor_config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="do_center_crop=True"):
        read_processor_settings(bad)


def test_a_tokenizer_larger_than_the_model_is_a_config_error(
    florence2_checkpoint: Path, tmp_path: Path
) -> None:
    small = _copy(florence2_checkpoint, tmp_path / "small-vocab")
    config = json.loads((small / "config.json").read_text())
    config["vocab_size"] = config["text_config"]["vocab_size"] = config["vocab_size"] - 5
    (small / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="have no embedding"):
        load_backend(small, device="cpu", dtype="float32")


def test_tokenizer_files_without_the_florence_tokens_get_them_in_order(
    florence2_checkpoint: Path,
    florence2_backend,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """microsoft/Florence-2-base ships BART's plain tokenizer; the processor adds the rest."""
    from mississippi_tools.models.florence2.tokenization import load_tokenizer

    plain = _copy(florence2_checkpoint, tmp_path / "plain-tokenizer")
    data = json.loads((plain / "tokenizer.json").read_text())
    bart = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in bart]
    (plain / "tokenizer.json").write_text(json.dumps(data))
    rebuilt = load_tokenizer(plain)
    assert rebuilt.added_tokens == florence2_backend.tokenizer.added_tokens
    assert rebuilt.token_to_id("<loc_0>") + 999 == rebuilt.token_to_id("<loc_999>")
