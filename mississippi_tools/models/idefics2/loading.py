"""Load published Idefics2 / Idefics3 checkpoints into transformers' native classes.

The published tensor names (``model.vision_model.*``, ``model.connector.*``,
``model.text_model.*``, ``lm_head.weight``; transformers 4.40 / 4.46) are the native classes'
names in transformers 5 too, so the mapping table below is the identity, kept explicit so that a
renamed tensor is one more line here, not a silent miss. Names and shapes are checked from the
file headers before any data is read; every missing, unexpected or mis-shaped tensor is reported
at once in a :class:`~mississippi_tools.errors.CheckpointError`.

Tensors are read one at a time and cast to the target dtype as they come, so idefics2-8b's
float32 files (33.6 GB) load into bfloat16 holding one float32 tensor at a time, never a
float32 copy of the model. With a device map (:mod:`~mississippi_tools.models.idefics2.placement`)
each tensor goes straight to its device.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mississippi_tools.errors import CheckpointError
from mississippi_tools.models.h2ovl.loading import CheckpointFiles, find_checkpoint_files

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "CHECKPOINT_KEY_MAPPING",
    "header_shapes",
    "load_weights",
    "map_checkpoint_key",
    "plan_tensors",
    "rebuild_meta_buffers",
]

#: Published tensor name pattern -> native name (``re.sub`` replacement), checked in order.
CHECKPOINT_KEY_MAPPING: tuple[tuple[str, str], ...] = (
    (r"^model\.vision_model\.(.+)$", r"model.vision_model.\1"),
    (r"^model\.connector\.(.+)$", r"model.connector.\1"),
    (r"^model\.text_model\.(.+)$", r"model.text_model.\1"),
    (r"^lm_head\.weight$", "lm_head.weight"),
)
_COMPILED = tuple((re.compile(pattern), repl) for pattern, repl in CHECKPOINT_KEY_MAPPING)
#: Buffers older files may carry that the native classes recompute.
_IGNORED = re.compile(r"rotary_emb\.inv_freq$")


def map_checkpoint_key(name: str) -> str | None:
    """The native parameter name of a published tensor name; ``None`` when nothing maps it."""
    for pattern, repl in _COMPILED:
        if pattern.match(name):
            return pattern.sub(repl, name)
    return None


def header_shapes(files: CheckpointFiles) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, from the file headers (pickles are read with ``weights_only``)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for name, tensor in _iter_tensors(files) if files.pickled else ():
        shapes[name] = tuple(tensor.shape)
    if files.pickled:
        return shapes
    for path in files.files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes


def _iter_tensors(files: CheckpointFiles) -> Iterator[tuple[str, torch.Tensor]]:
    import torch
    from safetensors import safe_open

    for path in files.files:
        if files.pickled:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            yield from state.items()
            continue
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118
                yield name, handle.get_tensor(name)


def _preview(names: list[str], limit: int = 10) -> str:
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def plan_tensors(
    expected: Mapping[str, tuple[int, ...]],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    tied: bool,
    key_map: Callable[[str], str | None] = map_checkpoint_key,
) -> dict[str, str]:
    """Published name -> native name for every tensor to load; all mismatches at once.

    ``key_map`` maps a published name to the native one (default: this family's table).

    Raises:
        CheckpointError: Missing, unexpected or mis-shaped tensors.
    """
    plan: dict[str, str] = {}
    unexpected: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for name, shape in shapes.items():
        target = key_map(name)
        if target is None or target not in expected:
            if not _IGNORED.search(name):
                unexpected.append(name)
            continue
        if tuple(shape) != tuple(expected[target]):
            mismatched.append((name, tuple(expected[target]), tuple(shape)))
            continue
        plan[name] = target
    provided = set(plan.values()) | {key_map(n) for n, _, _ in mismatched}
    missing = sorted(set(expected) - provided)
    if tied:
        missing = [m for m in missing if m != "lm_head.weight"]
    if missing or unexpected or mismatched:
        lines = []
        if missing:
            lines.append(f"missing {len(missing)}: {_preview(missing)}")
        if unexpected:
            lines.append(f"unexpected {len(unexpected)}: {_preview(sorted(unexpected))}")
        if mismatched:
            shown = [f"{n} expected {e} found {f}" for n, e, f in mismatched[:10]]
            lines.append(f"mis-shaped {len(mismatched)}: {shown}")
        raise CheckpointError(
            "the checkpoint does not match its config.json: " + "; ".join(lines),
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )
    return plan


def load_weights(
    model: nn.Module,
    directory: Path,
    *,
    dtype: torch.dtype,
    device_map: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    allow_pickle: bool = False,
    key_map: Callable[[str], str | None] = map_checkpoint_key,
) -> dict[str, torch.Tensor]:
    """Fill ``model`` (built on the meta device) with a checkpoint's tensors, cast to ``dtype``.

    Args:
        model: The native model, on the meta device.
        directory: The checkpoint directory.
        dtype: Floating-point dtype of the loaded weights.
        device_map: Module name prefix -> device (``"cpu"``, ``0``, ``"cuda:1"``, ``"disk"``), as
            accelerate writes it; tensors under ``"disk"`` are returned, not placed.
        device: Where everything goes without a device map.
        allow_pickle: Accept ``pytorch_model*.bin`` files (read with ``weights_only=True``).
        key_map: Published tensor name -> native name (another family's table).

    Returns:
        The tensors the device map sends to ``"disk"`` (empty without one), by native name.
    """
    files = find_checkpoint_files(directory, allow_pickle=allow_pickle)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    plan = plan_tensors(expected, header_shapes(files), tied=tied, key_map=key_map)
    state: dict[str, torch.Tensor] = {}
    offloaded: dict[str, torch.Tensor] = {}
    for name, tensor in _iter_tensors(files):
        target = plan.get(name)
        if target is None:
            continue
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        where = _device_for(target, device_map) if device_map is not None else device
        if where == "disk":
            offloaded[target] = tensor
            continue
        state[target] = tensor.to(_torch_device(where))
    model.load_state_dict(state, strict=False, assign=True)
    if tied:
        model.tie_weights()  # type: ignore[operator]
    return offloaded


def _device_for(name: str, device_map: Mapping[str, Any]) -> Any:
    best, where = -1, "cpu"
    for prefix, device in device_map.items():
        if (prefix == "" or name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
            best, where = len(prefix), device
    return where


def _torch_device(where: Any) -> torch.device:
    import torch

    return torch.device(f"cuda:{where}" if isinstance(where, int) else where)


def rebuild_meta_buffers(
    model: nn.Module, device: torch.device | str = "cpu", *, allowed_meta: Iterable[str] = ()
) -> None:
    """Recreate non-persistent buffers (rotary ``inv_freq``) left on the meta device.

    Raises:
        CheckpointError: A parameter or buffer is still uninitialised.
    """
    import torch

    for name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)) and hasattr(module, "config"):
            parameter = next(module.parameters(), None)
            target = parameter.device if parameter is not None else device
            with torch.device(target):
                fresh = type(module)(config=module.config)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, fresh)
    allowed = set(allowed_meta)  # offloaded to disk: accelerate's hooks load them
    leftover = [n for n, t in model.named_parameters() if t.is_meta and n not in allowed]
    leftover += [n for n, b in model.named_buffers() if b.is_meta]
    if leftover:
        raise CheckpointError(
            f"tensors left uninitialised after loading: {_preview(leftover)}", missing=leftover
        )
