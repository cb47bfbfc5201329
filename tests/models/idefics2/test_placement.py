"""Placement across devices with accelerate, on the CPU: a memory budget that sends layers to disk.

No GPU here: the GPU + CPU split (device="cuda" on a GPU too small for the model) is the same
code path with a CUDA entry in the budget, and is untested on this machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine
from mississippi_tools.errors import InvalidInputError
from mississippi_tools.models.idefics2.backend import Idefics2Backend
from mississippi_tools.vlm import MississippiVLM
from tests.support import loaded_image


def test_a_cpu_budget_offloads_layers_to_disk_and_answers_the_same(
    idefics2_checkpoint: Path, idefics2_backend, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    placed = Idefics2Backend.from_directory(
        idefics2_checkpoint,
        device=torch.device("cpu"),
        dtype=torch.float32,
        max_memory={"cpu": 9_000_000},  # the embeddings alone take 8.2 MB
        offload_dir=tmp_path / "offload",
    )
    device_map = placed.model.hf_device_map
    assert "disk" in set(device_map.values()) and "cpu" in set(device_map.values())
    assert any(tmp_path.joinpath("offload").iterdir())
    request = GenerationRequest(
        "What is written?",
        images=[loaded_image(Image.new("RGB", (300, 200), "white"))],
        sampling=SamplingParams(max_new_tokens=6, ignore_eos=True),
    )
    with LocalEngine(placed) as engine:
        offloaded = engine.generate(request)
    with LocalEngine(idefics2_backend) as engine:
        whole = engine.generate(request)
    assert offloaded.token_ids == whole.token_ids


def test_the_public_load_places_and_other_families_refuse_by_name(
    idefics2_checkpoint: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    with MississippiVLM.load(
        idefics2_checkpoint,
        device="cpu",
        dtype="float32",
        max_memory={"cpu": 9_000_000},
        offload_dir=tmp_path / "offload",
    ) as vlm:
        assert "disk" in set(vlm.engine.backend.model.hf_device_map.values())  # type: ignore[attr-defined]
        assert (
            vlm.ask(Image.new("RGB", (64, 64), "white"), "What?", max_new_tokens=2).text is not None
        )
    with pytest.raises(InvalidInputError, match="the h2ovl backend loads on one device") as info:
        MississippiVLM.load(tiny_checkpoint, device="cpu", max_memory={"cpu": "1GiB"})
    assert "placement is for: idefics1, idefics2, idefics3" in str(info.value)
