"""IDEFICS across devices with accelerate, on the CPU: a memory budget that sends layers to disk.

This is the 80B recipe (``max_memory`` per GPU plus CPU and disk) at tiny scale; no GPU here, so
the GPU entries of the budget are untested on this machine (same code path, other device names).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine
from mississippi_tools.models.idefics1.backend import Idefics1Backend
from mississippi_tools.vlm import MississippiVLM
from tests.support import loaded_image


def test_a_cpu_budget_offloads_layers_to_disk_and_answers_the_same(
    idefics1_checkpoint: Path, idefics1_backend, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    vlm = MississippiVLM.load(  # the recipe through the public API
        idefics1_checkpoint,
        device="cpu",
        dtype="float32",
        max_memory={"cpu": 9_000_000},  # the embeddings alone take 8.2 MB
        offload_dir=tmp_path / "offload",
    )
    placed = vlm.engine.backend  # type: ignore[attr-defined]
    assert isinstance(placed, Idefics1Backend)
    device_map = placed.model.hf_device_map
    assert "disk" in set(device_map.values()) and "cpu" in set(device_map.values())
    assert any(tmp_path.joinpath("offload").iterdir())
    request = GenerationRequest(
        "What is written?",
        images=[loaded_image(Image.new("RGB", (300, 200), "white"))],
        sampling=SamplingParams(max_new_tokens=6, ignore_eos=True),
    )
    with vlm:
        offloaded = vlm.engine.generate(request)
    with LocalEngine(idefics1_backend) as engine:
        whole = engine.generate(request)
    assert offloaded.token_ids == whole.token_ids
