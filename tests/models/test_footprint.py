"""The memory estimate read from safetensors headers, and the ceiling that refuses a load."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open

from mississippi_tools import MississippiVLM
from mississippi_tools.errors import ModelTooLargeError
from mississippi_tools.models.footprint import estimate_weight_bytes, parse_bytes


def _tensor_bytes(directory: Path, float_size: int) -> int:
    """The same count by reading every tensor with the safetensors library."""
    total = 0
    for path in directory.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                tensor = handle.get_tensor(name)
                size = float_size if tensor.is_floating_point() else tensor.element_size()
                total += tensor.numel() * size
    return total


def test_the_estimate_matches_the_tensors_at_the_load_dtype(tiny_checkpoint: Path) -> None:
    for size in (4, 2):
        assert estimate_weight_bytes(tiny_checkpoint, size) == _tensor_bytes(tiny_checkpoint, size)
    assert estimate_weight_bytes(tiny_checkpoint, 2) < estimate_weight_bytes(tiny_checkpoint, 4)


def test_sizes_are_parsed_with_their_units() -> None:
    assert parse_bytes("8GB") == 8 * 1000**3
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes(" 2.5 g ") == 2_500_000_000
    assert parse_bytes(4096) == 4096
    for bad in ("lots", "-1GB", "0", "12 parsecs"):
        with pytest.raises(ValueError, match="not a memory size"):
            parse_bytes(bad)


def test_a_load_over_the_ceiling_is_refused_with_the_numbers(tiny_checkpoint: Path) -> None:
    weights = estimate_weight_bytes(tiny_checkpoint, 4)
    with pytest.raises(ModelTooLargeError) as caught:
        MississippiVLM.load(tiny_checkpoint, device="cpu", dtype="float32", memory_limit="1kB")
    error = caught.value
    assert error.code == "model_too_large" and isinstance(error, MemoryError)
    assert error.limit == 1000 and error.estimate > weights  # plus the cache budgets
    assert "ceiling is 1.0 kB" in str(error) and "memory_limit=" in str(error)
    with MississippiVLM.load(
        tiny_checkpoint, device="cpu", dtype="float32", memory_limit=error.estimate
    ) as vlm:
        assert vlm.model_id
