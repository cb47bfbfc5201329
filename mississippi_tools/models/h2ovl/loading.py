"""Load published H2OVL-Mississippi checkpoints (original tensor names) without remote code.

The published files name tensors as the original InternVL code does (``vision_model.*``,
``mlp1.*``, ``language_model.*``). The table below maps them onto our modules, which reuse
transformers' InternVL vision tower and Llama/Mistral decoders. The original's fused ``qkv``
projection is split into ``q_proj``/``k_proj``/``v_proj`` rows [0:C], [C:2C], [2C:3C].

Checkpoints are read from safetensors (one file or shards with an index); pickled ``.bin`` files
only when the caller opts in (``allow_pickle=True``, read with ``weights_only=True``). Names and
shapes are checked from the file headers before any tensor data is read, and every mismatch is
reported at once in a :class:`~mississippi_tools.errors.CheckpointError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mississippi_tools.errors import CheckpointError, ModelLoadError
from mississippi_tools.models.h2ovl.configuration import H2OVLConfig

if TYPE_CHECKING:
    import torch

    from mississippi_tools.models.h2ovl.modeling import H2OVLForConditionalGeneration

__all__ = [
    "CHECKPOINT_KEY_MAPPING",
    "CheckpointFiles",
    "TensorConsumer",
    "find_checkpoint_files",
    "load_config",
    "load_weights",
    "map_checkpoint_key",
    "read_generation_defaults",
]

_VIT = r"^vision_model\.encoder\.layers\.(\d+)\."
_OUR_VIT = r"vision_model.encoder.layer.\1."

#: Original tensor name pattern -> our name (``re.sub`` replacement). Checked in order.
CHECKPOINT_KEY_MAPPING: tuple[tuple[str, str], ...] = (
    (r"^vision_model\.embeddings\.class_embedding$", "vision_model.embeddings.cls_token"),
    (
        r"^vision_model\.embeddings\.position_embedding$",
        "vision_model.embeddings.position_embeddings",
    ),
    (
        r"^vision_model\.embeddings\.patch_embedding\.(weight|bias)$",
        r"vision_model.embeddings.patch_embeddings.projection.\1",
    ),
    (_VIT + r"attn\.proj\.(weight|bias)$", _OUR_VIT + r"attention.projection_layer.\2"),
    (_VIT + r"attn\.q_norm\.(weight|bias)$", _OUR_VIT + r"attention.q_norm.\2"),
    (_VIT + r"attn\.k_norm\.(weight|bias)$", _OUR_VIT + r"attention.k_norm.\2"),
    (_VIT + r"ls1$", _OUR_VIT + "lambda_1"),
    (_VIT + r"ls2$", _OUR_VIT + "lambda_2"),
    (_VIT + r"norm1\.(weight|bias)$", _OUR_VIT + r"layernorm_before.\2"),
    (_VIT + r"norm2\.(weight|bias)$", _OUR_VIT + r"layernorm_after.\2"),
    (_VIT + r"mlp\.(fc1|fc2)\.(weight|bias)$", _OUR_VIT + r"mlp.\2.\3"),
    (r"^mlp1\.([013])\.(weight|bias)$", r"mlp1.\1.\2"),
    (r"^language_model\.(.+)$", r"language_model.\1"),
)
#: The fused projection that becomes three of ours.
_FUSED_QKV = re.compile(_VIT + r"attn\.qkv\.(weight|bias)$")
_LAYER_INDEX = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.")
_COMPILED = tuple((re.compile(pattern), repl) for pattern, repl in CHECKPOINT_KEY_MAPPING)


def map_checkpoint_key(name: str) -> list[str] | None:
    """Our parameter name(s) for an original tensor name; ``None`` when nothing maps it.

    A fused ``qkv`` tensor maps to three names (q, k, v in that order).
    """
    fused = _FUSED_QKV.match(name)
    if fused:
        layer, kind = fused.group(1), fused.group(2)
        prefix = f"vision_model.encoder.layer.{layer}.attention."
        return [f"{prefix}{proj}.{kind}" for proj in ("q_proj", "k_proj", "v_proj")]
    for pattern, repl in _COMPILED:
        if pattern.match(name):
            return [pattern.sub(repl, name)]
    return None


@dataclass(frozen=True)
class CheckpointFiles:
    """Where a checkpoint's tensors are: file -> tensor names in it."""

    files: dict[Path, list[str]] = field(default_factory=dict)
    pickled: bool = False


def find_checkpoint_files(directory: Path, *, allow_pickle: bool = False) -> CheckpointFiles:
    """Locate the weight files of a checkpoint directory (safetensors first)."""
    index = directory / "model.safetensors.index.json"
    single = directory / "model.safetensors"
    if index.is_file():
        return CheckpointFiles(_files_from_index(index))
    if single.is_file():
        return CheckpointFiles({single: _safetensors_names(single)})
    shards = sorted(directory.glob("*.safetensors"))
    if shards:
        return CheckpointFiles({shard: _safetensors_names(shard) for shard in shards})
    pickles = sorted(directory.glob("pytorch_model*.bin"))
    if pickles and not allow_pickle:
        raise ModelLoadError(
            f"{directory} holds only pickled weights ({pickles[0].name}); loading pickles can run "
            "code, so it is off by default. Pass allow_pickle=True (read with weights_only=True) "
            "or convert the checkpoint to safetensors"
        )
    if pickles:
        return CheckpointFiles({path: [] for path in pickles}, pickled=True)
    raise ModelLoadError(f"{directory} has no weights (model.safetensors or shards)")


def _files_from_index(index: Path) -> dict[Path, list[str]]:
    try:
        weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{index} is not a valid safetensors index: {e}") from e
    files: dict[Path, list[str]] = {}
    for name, filename in weight_map.items():
        files.setdefault(index.parent / filename, []).append(name)
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise ModelLoadError(f"shard(s) listed in {index.name} are missing: {missing}")
    return files


def _safetensors_names(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception as e:  # safetensors raises its own untyped errors on corrupt headers
        raise ModelLoadError(f"{path} is not a readable safetensors file: {e}") from e


#: safetensors dtype names -> torch dtype names.
_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def _read_unmapped(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """A safetensors file's tensors, each read into its own memory (no memory map).

    A mapped file keeps every page it touched resident (and counted in the process's peak
    RSS) while any tensor still points into it; the int8 path reads each tensor once, quantizes
    it and drops it, so plain reads keep the peak to what is alive.
    """
    import struct

    import torch

    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        start = 8 + length
        entries = sorted(
            ((k, v) for k, v in header.items() if k != "__metadata__"),
            key=lambda item: item[1]["data_offsets"][0],
        )
        for name, entry in entries:
            first, last = entry["data_offsets"]
            raw = torch.empty(last - first, dtype=torch.uint8)
            handle.seek(start + first)
            buffer: Any = raw.numpy()  # a writable buffer over the tensor's bytes
            if handle.readinto(buffer) != last - first:
                raise ModelLoadError(f"{path} is truncated at tensor {name}")
            dtype = getattr(torch, _SAFETENSORS_DTYPES[entry["dtype"]])
            yield name, raw.view(dtype).reshape(entry["shape"])


def _iter_tensors(
    files: CheckpointFiles, *, mapped: bool = True
) -> Iterator[tuple[str, torch.Tensor]]:
    import torch
    from safetensors import safe_open

    for path in files.files:
        if not mapped and not files.pickled:
            yield from _read_unmapped(path)
            continue
        if files.pickled:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            yield from state.items()
            continue
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                yield name, handle.get_tensor(name)


def _header_shapes(files: CheckpointFiles) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    if files.pickled:
        for name, tensor in _iter_tensors(files):
            shapes[name] = tuple(tensor.shape)
        return shapes
    for path in files.files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes


def _plan(
    model: H2OVLForConditionalGeneration, shapes: dict[str, tuple[int, ...]]
) -> dict[str, list[str]]:
    """Check names and shapes; return original name -> our names for tensors to load."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    layers_used = model.config.encoder_layers_used
    plan: dict[str, list[str]] = {}
    unexpected: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    provided: set[str] = set()
    for name, shape in shapes.items():
        targets = map_checkpoint_key(name)
        if targets is None:
            if not name.endswith("rotary_emb.inv_freq"):  # stale buffer in old checkpoints
                unexpected.append(name)
            continue
        layer = _LAYER_INDEX.match(name)
        if layer and int(layer.group(1)) >= layers_used:
            continue  # blocks above select_layer are never run
        if any(t not in expected for t in targets):
            unexpected.append(name)
            continue
        want = tuple(expected[targets[0]])
        if len(targets) == 3:
            want = (want[0] * 3, *want[1:])
        provided.update(targets)
        if tuple(shape) != want:
            mismatched.append((name, want, tuple(shape)))
            continue
        plan[name] = targets
    missing = sorted(set(expected) - provided)
    if model.language_model.config.tie_word_embeddings:
        missing = [m for m in missing if m != "language_model.lm_head.weight"]
    if missing or unexpected or mismatched:
        lines = []
        if missing:
            lines.append(f"missing {len(missing)}: {_preview(missing)}")
        if unexpected:
            lines.append(f"unexpected {len(unexpected)}: {_preview(sorted(unexpected))}")
        if mismatched:
            shown = [f"{n} expected {tuple(e)} found {tuple(f)}" for n, e, f in mismatched[:10]]
            lines.append(f"mis-shaped {len(mismatched)}: {shown}")
        raise CheckpointError(
            "the checkpoint does not match its config.json: " + "; ".join(lines),
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )
    return plan


def _preview(names: list[str], limit: int = 10) -> str:
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class TensorConsumer(Protocol):
    """Takes tensors out of the state being read (see :func:`load_weights`)."""

    def take_from(self, state: dict[str, torch.Tensor]) -> None:
        """Remove the tensors it uses from ``state`` (called after each tensor is read)."""
        ...

    def finish(self) -> None:
        """Called once every tensor has been read, before the model is checked."""
        ...


def load_weights(
    model: H2OVLForConditionalGeneration,
    directory: Path,
    *,
    dtype: torch.dtype | None,
    allow_pickle: bool = False,
    consumer: TensorConsumer | None = None,
) -> None:
    """Fill ``model`` (built on the meta device) with a checkpoint's tensors, cast to ``dtype``.

    ``dtype=None`` keeps each tensor in the file's dtype and reads it without a memory map (the
    int8 path quantizes from it and frees it; see :func:`_read_unmapped`). A ``consumer`` sees
    the tensors read so far after each one and may take some out, putting modules of its own in
    their place (the int8 path:
    :class:`~mississippi_tools.models.quantization.Int8Converter`).
    """
    files = find_checkpoint_files(directory, allow_pickle=allow_pickle)
    plan = _plan(model, _header_shapes(files))
    state: dict[str, torch.Tensor] = {}
    for name, tensor in _iter_tensors(files, mapped=dtype is not None):
        targets = plan.get(name)
        if targets is None:
            continue
        if dtype is not None:
            tensor = tensor.to(dtype)
        if len(targets) == 3:
            for target, part in zip(targets, tensor.chunk(3, dim=0), strict=True):
                state[target] = part.contiguous()
        else:
            state[targets[0]] = tensor
        del tensor
        if consumer is not None:
            consumer.take_from(state)
    if consumer is not None:
        consumer.finish()
    if model.language_model.config.tie_word_embeddings:
        state.pop("language_model.lm_head.weight", None)
    model.load_state_dict(state, strict=False, assign=True)
    if model.language_model.config.tie_word_embeddings:
        model.language_model.tie_weights()
    _rebuild_meta_buffers(model)


def _rebuild_meta_buffers(model: torch.nn.Module) -> None:
    """Recreate non-persistent buffers (rotary ``inv_freq``) left on the meta device."""
    for name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)) and hasattr(module, "config"):
            fresh = type(module)(config=module.config)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, fresh)
    leftover = [n for n, t in model.state_dict().items() if t.is_meta]
    leftover += [n for n, b in model.named_buffers() if b.is_meta]
    if leftover:
        raise CheckpointError(
            f"tensors left uninitialised after loading: {_preview(leftover)}", missing=leftover
        )


def read_generation_defaults(directory: Path) -> dict[str, Any]:
    """The checkpoint's ``generation_config.json`` (empty when absent)."""
    path = directory / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def load_config(directory: Path) -> H2OVLConfig:
    """The checkpoint's configuration."""
    return H2OVLConfig.from_file(directory / "config.json")
