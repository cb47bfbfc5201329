"""Loading the published IDEFICS layout by hub id and from a local copy; typed config errors."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from mississippi_tools.errors import CheckpointError, ConfigError
from mississippi_tools.models.idefics1.backend import Idefics1Backend
from mississippi_tools.models.idefics1.configuration import Idefics1Config, parameter_count
from mississippi_tools.models.idefics1.testing import (
    IDEFICS_9B_CONFIG,
    IDEFICS_80B_CONFIG,
    TINY_CONFIG,
)
from mississippi_tools.models.registry import family_of, load_backend
from tests.support import loaded_image


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_published_config_keys_are_read_as_published(idefics1_checkpoint: Path) -> None:
    written = json.loads((idefics1_checkpoint / "config.json").read_text())
    assert written["model_type"] == "idefics"
    assert written["additional_vocab_size"] == 3  # idefics-9b-instruct's: <end_of_utterance>
    assert "embed_dim" in written["vision_config"] and "hidden_size" not in written["vision_config"]
    native = Idefics1Config.from_dict(written).native()
    assert native.vision_config.embed_dim == 32
    assert native.perceiver_config.resampler_n_latents == 8
    assert native.use_resampler and native.cross_layer_interval == 2
    assert native.qk_layer_norms and native.perceiver_config.qk_layer_norms_perceiver
    assert family_of(idefics1_checkpoint) == "idefics1"


def test_the_first_snapshots_flat_layout_reads_the_same() -> None:
    flat = {k: v for k, v in copy.deepcopy(TINY_CONFIG).items() if not k.endswith("_config")}
    flat.update({f"vision_{k}": v for k, v in TINY_CONFIG["vision_config"].items()})
    flat.update(TINY_CONFIG["perceiver_config"])
    del flat["max_position_embeddings"]  # the first snapshots name only max_sequence_length
    nested = Idefics1Config.from_dict(copy.deepcopy(TINY_CONFIG))
    read = Idefics1Config.from_dict(flat)
    assert (read.vision, read.perceiver, read.max_context) == (
        nested.vision,
        nested.perceiver,
        nested.max_context,
    )


@pytest.mark.parametrize("config", [TINY_CONFIG, IDEFICS_9B_CONFIG, IDEFICS_80B_CONFIG])
def test_parameter_count_from_the_config_matches_the_built_model(config: dict) -> None:  # type: ignore[type-arg]
    from transformers import IdeficsForVisionText2Text

    parsed = Idefics1Config.from_dict(copy.deepcopy(config))
    with torch.device("meta"):
        model = IdeficsForVisionText2Text(parsed.native())
    assert sum(parameter_count(parsed).values()) == sum(p.numel() for p in model.parameters())


def test_full_size_figures() -> None:
    nine = sum(parameter_count(Idefics1Config.from_dict(IDEFICS_9B_CONFIG)).values())
    eighty = sum(parameter_count(Idefics1Config.from_dict(IDEFICS_80B_CONFIG)).values())
    assert 8.9e9 < nine < 9.0e9
    assert 79.9e9 < eighty < 80.1e9


def test_loads_by_hub_id_from_the_hub_cache_offline(
    idefics1_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--HuggingFaceM4--idefics-9b-instruct"
    _copy(idefics1_checkpoint, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    backend = load_backend(
        "HuggingFaceM4/idefics-9b-instruct",
        cache_dir=tmp_path / "cache",
        device="cpu",
        dtype="float32",
        progress=False,
    )
    assert isinstance(backend, Idefics1Backend)
    assert backend.model_id == "HuggingFaceM4/idefics-9b-instruct"
    assert backend.revision == commit[:12]
    assert backend.info.instruction_tuned


def test_a_missing_tensor_is_named(idefics1_checkpoint: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    broken = _copy(idefics1_checkpoint, tmp_path / "broken")
    weights = load_file(str(broken / "model.safetensors"))
    del weights["model.gated_cross_attn_layers.1.alpha_dense"]
    weights["model.norm.bias"] = torch.zeros(64)
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing 1: model.gated_cross_attn_layers.1") as e:
        load_backend(broken, device="cpu", dtype="float32")
    assert e.value.unexpected == ["model.norm.bias"]


def test_a_tokenizer_beyond_the_embedding_rows_is_a_config_error(
    idefics1_checkpoint: Path, tmp_path: Path
) -> None:
    path = _copy(idefics1_checkpoint, tmp_path / "short")
    config = json.loads((path / "config.json").read_text())
    config["additional_vocab_size"] = 2  # no row for <end_of_utterance> (id 32002)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"<end_of_utterance> id 32002.*32002 embedding rows"):
        load_backend(path, device="cpu", dtype="float32")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "llama"}, "model_type is 'llama'"),
        ({"cross_layer_interval": 3}, "cross_layer_interval 3 must divide num_hidden_layers 4"),
        ({"hidden_size": 66}, "not divisible by num_attention_heads"),
        ({"num_hidden_layers": "4"}, "num_hidden_layers must be a positive integer"),
    ],
)
def test_bad_configs_are_typed_errors(change: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=message):
        Idefics1Config.from_dict({**copy.deepcopy(TINY_CONFIG), **change})


def test_image_features_are_cached_across_requests(idefics1_backend) -> None:  # type: ignore[no-untyped-def]
    image = loaded_image(Image.new("RGB", (120, 90), (10, 200, 30)))
    first = idefics1_backend.prepare("What colour?", [image])
    second = idefics1_backend.prepare("And the shape?", [image])
    a = idefics1_backend.image_features(first.images)
    rendered: list[int] = []
    original = second.images[0].render
    second.images[0].render = lambda: rendered.append(1) or original()
    b = idefics1_backend.image_features(second.images)
    assert rendered == []  # the vision tower did not run again
    assert torch.equal(a, b)
