"""Loading original-format checkpoints: files, tensor names, errors, hub resolution."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine
from mississippi_tools.errors import CheckpointError, ModelLoadError, ModelNotFoundError
from mississippi_tools.models.h2ovl.loading import CHECKPOINT_KEY_MAPPING, map_checkpoint_key
from mississippi_tools.models.registry import load_backend
from mississippi_tools.testing import build_tiny_checkpoint
from tests.support import loaded_image


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_key_mapping_covers_the_original_names() -> None:
    assert map_checkpoint_key("vision_model.encoder.layers.3.attn.qkv.weight") == [
        "vision_model.encoder.layer.3.attention.q_proj.weight",
        "vision_model.encoder.layer.3.attention.k_proj.weight",
        "vision_model.encoder.layer.3.attention.v_proj.weight",
    ]
    assert map_checkpoint_key("vision_model.encoder.layers.0.ls1") == [
        "vision_model.encoder.layer.0.lambda_1"
    ]
    assert map_checkpoint_key("vision_model.embeddings.class_embedding") == [
        "vision_model.embeddings.cls_token"
    ]
    assert map_checkpoint_key("mlp1.3.bias") == ["mlp1.3.bias"]
    assert map_checkpoint_key("language_model.model.norm.weight") == [
        "language_model.model.norm.weight"
    ]
    assert map_checkpoint_key("something.else") is None
    assert len(CHECKPOINT_KEY_MAPPING) >= 10


def test_original_tensor_names_on_disk(tiny_checkpoint: Path) -> None:
    names = set(load_file(str(tiny_checkpoint / "model.safetensors")))
    assert "vision_model.encoder.layers.1.attn.qkv.weight" in names
    assert "vision_model.embeddings.position_embedding" in names
    assert {"mlp1.0.weight", "mlp1.1.weight", "mlp1.3.weight"} <= names
    assert "language_model.lm_head.weight" in names
    assert not any(".layer." in n or ("q_proj" in n and n.startswith("vision")) for n in names)


def test_sharded_checkpoint_loads_the_same_weights(tmp_path: Path, tiny_backend) -> None:  # type: ignore[no-untyped-def]
    sharded = build_tiny_checkpoint(tmp_path / "sharded", max_shard_bytes=2_000_000)
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 2
    backend = load_backend(sharded, device="cpu", dtype="float32")
    for (name, ours), (_, theirs) in zip(
        backend.model.state_dict().items(), tiny_backend.model.state_dict().items(), strict=True
    ):
        assert torch.equal(ours, theirs), name


def _rewrite(directory: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_missing_unexpected_and_misshaped_tensors_are_listed(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    broken = _copy(tiny_checkpoint, tmp_path / "broken")

    def change(t: dict[str, torch.Tensor]) -> None:
        del t["mlp1.1.weight"]
        t["vision_model.extra.weight"] = torch.zeros(2)
        t["language_model.model.norm.weight"] = torch.zeros(3)

    _rewrite(broken, change)
    with pytest.raises(CheckpointError) as caught:
        load_backend(broken, device="cpu", dtype="float32")
    error = caught.value
    assert error.missing == ["mlp1.1.weight"]
    assert error.unexpected == ["vision_model.extra.weight"]
    assert error.mismatched == [("language_model.model.norm.weight", (64,), (3,))]
    assert "mlp1.1.weight" in str(error)
    assert "expected (64,) found (3,)" in str(error)


def test_pickled_weights_need_an_explicit_opt_in(tmp_path: Path, tiny_checkpoint: Path) -> None:
    pickled = _copy(tiny_checkpoint, tmp_path / "pickled")
    tensors = load_file(str(pickled / "model.safetensors"))
    (pickled / "model.safetensors").unlink()
    torch.save(tensors, pickled / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="allow_pickle=True"):
        load_backend(pickled, device="cpu", dtype="float32")
    backend = load_backend(pickled, device="cpu", dtype="float32", allow_pickle=True)
    assert backend.model.mlp1[1].weight.shape == (64, 128)


def test_no_weights_at_all(tmp_path: Path, tiny_checkpoint: Path) -> None:
    empty = _copy(tiny_checkpoint, tmp_path / "empty")
    (empty / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        load_backend(empty, device="cpu", dtype="float32")


def test_offline_without_cache_names_model_cache_and_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError) as caught:
        load_backend("h2oai/h2ovl-mississippi-800m", cache_dir=tmp_path / "cache", device="cpu")
    message = str(caught.value)
    assert "h2oai/h2ovl-mississippi-800m" in message
    assert str(tmp_path / "cache") in message
    assert "mississippi-tools download" in message


def test_unreachable_hub_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 2, raising=False)
    with pytest.raises(ModelNotFoundError, match="mississippi-tools download"):
        load_backend(
            "h2oai/h2ovl-mississippi-800m",
            cache_dir=tmp_path / "cache",
            device="cpu",
            progress=False,
        )


def test_not_a_directory_nor_a_hub_id(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="neither a checkpoint directory nor a hub id"):
        load_backend(str(tmp_path / "no" / "such" / "dir"), device="cpu")


def test_mistral_decoder_with_msac_loads_and_generates(tmp_path: Path) -> None:
    from PIL import Image

    path = build_tiny_checkpoint(tmp_path / "mistral", decoder="mistral", use_msac=True, seed=3)
    backend = load_backend(path, device="cpu", dtype="float32")
    assert type(backend.model.language_model).__name__ == "MistralForCausalLM"
    with LocalEngine(backend) as engine:
        out = engine.generate(
            GenerationRequest(
                "x",
                images=[loaded_image(Image.new("RGB", (800, 1000), "white"))],
                sampling=SamplingParams(max_new_tokens=4),
            )
        )
        assert out.tiles_per_image == [13]  # MSAC: 3x2 + 2x3 + thumbnail
        two = engine.generate(
            GenerationRequest(
                "x",
                images=[loaded_image(Image.new("RGB", (800, 1000)))] * 2,
                sampling=SamplingParams(max_new_tokens=2),
            )
        )
        assert two.tiles_per_image == [7, 7]  # MSAC is off with several images


def test_select_layer_runs_only_the_needed_blocks(tmp_path: Path) -> None:
    path = build_tiny_checkpoint(tmp_path / "select", overrides={"select_layer": -2})
    backend = load_backend(path, device="cpu", dtype="float32")
    assert len(backend.model.vision_model.encoder.layer) == 1
