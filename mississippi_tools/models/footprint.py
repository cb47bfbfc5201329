"""How much memory a checkpoint will take once loaded, known before loading it.

The estimate reads only the safetensors headers (the tensors' dtypes and shapes, a few KiB): the
weights' element count times the size of the dtype they are loaded in (floating-point tensors are
cast to it; integer tensors keep theirs). Pickled ``.bin`` weights count their file size. What the
estimate leaves out (activations of a batch, the allocator's slack) is small next to the weights
and the engine's cache budgets, which callers add (:func:`check_footprint`).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from mississippi_tools.errors import CheckpointError, ModelTooLargeError, Remedy

__all__ = [
    "ELEMENT_SIZES",
    "check_footprint",
    "estimate_weight_bytes",
    "format_bytes",
    "parse_bytes",
]

ELEMENT_SIZES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
"""Bytes per element of each safetensors dtype."""
_FLOATS = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
#: Largest safetensors header read (the format caps it at 100 MB; real ones are KiBs to MiBs).
_MAX_HEADER = 100_000_000
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_bytes(value: str | int | float) -> int:
    """A size such as ``8GB``, ``512MiB``, ``2.5g`` or a number of bytes, in bytes.

    Raises:
        ValueError: Not a size (pydantic turns it into a validation error naming the setting).
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        text = str(value).strip().lower().replace(" ", "")
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        number, unit = float(digits or "nan"), text[len(digits) :]
    if unit not in _UNITS or not number > 0:
        raise ValueError(
            f"{value!r} is not a memory size; write it like 8GB, 512MiB or a number of bytes"
        )
    return int(number * _UNITS[unit])


def format_bytes(count: int) -> str:
    """``count`` bytes for people: ``1.6 GB``, ``350 MB``."""
    for unit, size in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def _safetensors_bytes(path: Path, element_size: int) -> int:
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{path.name} is not a safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_HEADER:
            raise CheckpointError(f"{path.name} declares a {length}-byte header; not safetensors")
        try:
            header = json.loads(handle.read(length))
        except ValueError as e:
            raise CheckpointError(f"{path.name} has an unreadable safetensors header: {e}") from e
    total = 0
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        count = 1
        for dim in entry.get("shape", []):
            count *= int(dim)
        stored = str(entry.get("dtype", "F32"))
        total += count * (element_size if stored in _FLOATS else ELEMENT_SIZES.get(stored, 4))
    return total


def estimate_weight_bytes(directory: Path, element_size: int) -> int:
    """Bytes of a checkpoint's weights once loaded with floats of ``element_size`` bytes.

    Args:
        directory: The checkpoint directory (``*.safetensors``, else ``*.bin``).
        element_size: Bytes per floating-point element of the load dtype (4 for float32).

    Raises:
        CheckpointError: A safetensors file whose header cannot be read.
    """
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return sum(_safetensors_bytes(path, element_size) for path in files)
    return sum(path.stat().st_size for path in directory.glob("*.bin"))


def check_footprint(
    directory: Path, element_size: int, *, max_memory: int, reserved: int = 0, name: str
) -> int:
    """The estimated footprint (weights plus ``reserved``); refuses one over ``max_memory``.

    Raises:
        ModelTooLargeError: The estimate exceeds ``max_memory`` (the message gives both).
    """
    weights = estimate_weight_bytes(directory, element_size)
    estimate = weights + reserved
    if estimate > max_memory:
        raise ModelTooLargeError(
            f"{name} needs about {format_bytes(estimate)} ({format_bytes(weights)} of weights at "
            f"{element_size * 8}-bit, {format_bytes(reserved)} of cache budgets) and the memory "
            f"ceiling is {format_bytes(max_memory)}; raise the ceiling, load in a smaller dtype "
            "(bfloat16 or float16), or lower the cache budgets",
            estimate=estimate,
            limit=max_memory,
            remedy=Remedy("memory_limit", format_bytes(estimate).replace(" ", "")),
        )
    return estimate
