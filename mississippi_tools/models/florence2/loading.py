"""Load Microsoft-layout Florence-2 weights into transformers' native Florence-2 class.

Microsoft's remote code names the tensors after its own modules: the DaViT tower
(``vision_tower.convs.N.proj``, blocks whose sub-layers are wrapped as ``conv1.fn.dw``,
``window_attn.norm`` / ``window_attn.fn.qkv``, ``ffn.fn.net.fc1`` ...), the projector's pieces at
the top level (``image_projection`` as a bare ``[in, out]`` matrix, ``image_proj_norm``,
``image_pos_embed``, ``visual_temporal_embed``), and the BART under ``language_model.model``.
transformers 5's ``Florence2ForConditionalGeneration`` names them ``model.vision_tower.*``,
``model.multi_modal_projector.*`` and ``model.language_model.*``. The table below
(:data:`CHECKPOINT_KEY_MAPPING`) is the same renaming transformers' own
``convert_florence2_original_pytorch_to_hf.py`` does, applied at load time, including its one
transposition (``image_projection`` is used as ``x @ W`` by Microsoft, as a ``Linear`` natively).

Some published tensors have no native counterpart and are only accepted when dropping them
changes nothing (:data:`CONDITIONAL_KEYS`): BART's ``final_logits_bias`` must be zero (the native
head has no bias), tied copies of the embedding must equal ``shared``, and the DaViT
classification head (``norms``, ``head``) is never used by Florence-2's image path. Anything else
that does not map, and every missing or mis-shaped tensor, is listed in one
:class:`~mississippi_tools.errors.CheckpointError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mississippi_tools.errors import CheckpointError
from mississippi_tools.models.h2ovl.loading import CheckpointFiles, find_checkpoint_files

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "CHECKPOINT_KEY_MAPPING",
    "CONDITIONAL_KEYS",
    "TRANSPOSED",
    "load_weights",
    "map_checkpoint_key",
]

_BLOCK = r"^vision_tower\.blocks\.(\d+)\.(\d+)\.(spatial_block|channel_block)\."
_MODEL_BLOCK = r"model.vision_tower.blocks.\1.\2.\3."

#: Microsoft tensor name pattern -> native name (``re.sub`` replacement), checked in order.
CHECKPOINT_KEY_MAPPING: tuple[tuple[str, str], ...] = (
    (r"^vision_tower\.convs\.(\d+)\.proj\.(weight|bias)$", r"model.vision_tower.convs.\1.conv.\2"),
    (r"^vision_tower\.convs\.(\d+)\.norm\.(weight|bias)$", r"model.vision_tower.convs.\1.norm.\2"),
    (_BLOCK + r"conv([12])\.fn\.dw\.(weight|bias)$", _MODEL_BLOCK + r"conv\4.\5"),
    (_BLOCK + r"(window_attn|channel_attn)\.norm\.(weight|bias)$", _MODEL_BLOCK + r"norm1.\5"),
    (
        _BLOCK + r"(window_attn|channel_attn)\.fn\.(qkv|proj)\.(weight|bias)$",
        _MODEL_BLOCK + r"\4.\5.\6",
    ),
    (_BLOCK + r"ffn\.norm\.(weight|bias)$", _MODEL_BLOCK + r"norm2.\4"),
    (_BLOCK + r"ffn\.fn\.net\.(fc[12])\.(weight|bias)$", _MODEL_BLOCK + r"ffn.\4.\5"),
    (r"^image_projection$", "model.multi_modal_projector.image_projection.weight"),
    (r"^image_proj_norm\.(weight|bias)$", r"model.multi_modal_projector.image_proj_norm.\1"),
    (
        r"^image_pos_embed\.(row|column)_embeddings\.weight$",
        r"model.multi_modal_projector.image_position_embed.\1_embeddings.weight",
    ),
    (
        r"^visual_temporal_embed\.pos_idx_to_embed$",
        "model.multi_modal_projector.visual_temporal_embed.pos_idx_to_embed",
    ),
    (r"^language_model\.model\.shared\.weight$", "model.language_model.shared.weight"),
    (
        r"^language_model\.model\.(encoder|decoder)\.(?!embed_tokens\.)(.+)$",
        r"model.language_model.\1.\2",
    ),
)
_COMPILED = tuple((re.compile(pattern), repl) for pattern, repl in CHECKPOINT_KEY_MAPPING)

#: Microsoft tensors stored as ``[in, out]`` and used as ``x @ W``: transposed for ``Linear``.
TRANSPOSED = frozenset({"image_projection"})

#: Published tensors without a native counterpart, and when dropping them changes nothing.
CONDITIONAL_KEYS: Mapping[str, str] = {
    r"^language_model\.final_logits_bias$": "zero",
    r"^language_model\.lm_head\.weight$": "shared",
    r"^language_model\.model\.(encoder|decoder)\.embed_tokens\.weight$": "shared",
    r"^vision_tower\.(norms|head)\.(weight|bias)$": "unused",
}
_SHARED = "language_model.model.shared.weight"
#: Native tensors that are tied to ``shared`` and so come with it.
_TIED_NATIVE = frozenset(
    {
        "lm_head.weight",
        "model.language_model.encoder.embed_tokens.weight",
        "model.language_model.decoder.embed_tokens.weight",
    }
)


def map_checkpoint_key(name: str) -> str | None:
    """The native name of a Microsoft tensor name; ``None`` when nothing maps it."""
    for pattern, repl in _COMPILED:
        if pattern.match(name):
            return pattern.sub(repl, name)
    return None


def _condition(name: str) -> str | None:
    return next(
        (rule for pattern, rule in CONDITIONAL_KEYS.items() if re.match(pattern, name)), None
    )


def _iter_tensors(files: CheckpointFiles) -> Iterator[tuple[str, torch.Tensor]]:
    import torch
    from safetensors import safe_open

    for path in files.files:
        if files.pickled:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            yield from state.items()
            continue
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                yield name, handle.get_tensor(name)


def _preview(names: list[str], limit: int = 10) -> str:
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def read_native_state(
    directory: Path, expected: Mapping[str, tuple[int, ...]], *, allow_pickle: bool = False
) -> dict[str, torch.Tensor]:
    """Every tensor of a Microsoft-layout checkpoint under its native name, checked.

    Args:
        directory: The checkpoint directory.
        expected: Native name -> shape, from the native model's ``state_dict``.
        allow_pickle: Accept ``pytorch_model*.bin`` files (read with ``weights_only=True``).

    Raises:
        CheckpointError: Missing, unexpected (unmapped) or mis-shaped tensors, or a dropped
            tensor whose value would have mattered; all listed at once.
    """
    import torch

    files = find_checkpoint_files(directory, allow_pickle=allow_pickle)
    state: dict[str, torch.Tensor] = {}
    held: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for name, tensor in _iter_tensors(files):
        rule = _condition(name)
        if rule is not None:
            if rule != "unused":
                held[name] = tensor
            continue
        target = map_checkpoint_key(name)
        if target is None or target not in expected:
            unexpected.append(name)
            continue
        if name in TRANSPOSED:
            tensor = tensor.transpose(0, 1).contiguous()
        if tuple(tensor.shape) != tuple(expected[target]):
            mismatched.append((name, tuple(expected[target]), tuple(tensor.shape)))
            continue
        state[target] = tensor
    shared = state.get("model.language_model.shared.weight")
    for name, tensor in held.items():
        rule = _condition(name)
        if rule == "zero" and bool(torch.any(tensor != 0)):
            unexpected.append(f"{name} (non-zero; the native head has no logits bias)")
        elif rule == "shared" and (shared is None or not torch.equal(tensor, shared)):
            unexpected.append(f"{name} (differs from {_SHARED}; the native model ties them)")
    missing = sorted(set(expected) - set(state) - _TIED_NATIVE)
    mapped_mismatch = {map_checkpoint_key(n) for n, _, _ in mismatched}
    missing = [m for m in missing if m not in mapped_mismatch]
    if missing or unexpected or mismatched:
        lines = []
        if missing:
            lines.append(f"missing {len(missing)}: {_preview(missing)}")
        if unexpected:
            lines.append(f"not mappable {len(unexpected)}: {_preview(sorted(unexpected))}")
        if mismatched:
            shown = [f"{n} expected {e} found {f}" for n, e, f in mismatched[:10]]
            lines.append(f"mis-shaped {len(mismatched)}: {shown}")
        raise CheckpointError(
            "the Florence-2 checkpoint does not map onto transformers' native "
            "Florence2ForConditionalGeneration: " + "; ".join(lines),
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )
    return state


def load_weights(
    model: nn.Module,
    directory: Path,
    *,
    dtype: torch.dtype,
    device: torch.device,
    allow_pickle: bool = False,
) -> None:
    """Fill ``model`` (built on the meta device) with a Microsoft-layout checkpoint's tensors.

    Raises:
        CheckpointError: See :func:`read_native_state`.
    """
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    state = read_native_state(directory, expected, allow_pickle=allow_pickle)
    placed = {
        name: (t.to(dtype) if t.is_floating_point() else t).to(device) for name, t in state.items()
    }
    model.load_state_dict(placed, strict=False, assign=True)
    model.tie_weights()  # type: ignore[operator]
    shared = model.get_submodule("model.language_model.shared").weight
    for name in sorted(_TIED_NATIVE):  # transformers 5.0 leaves lm_head untied here
        module_name, _, attribute = name.rpartition(".")
        module = model.get_submodule(module_name)
        if getattr(module, attribute).is_meta:
            setattr(module, attribute, shared)
    leftover = [n for n, t in model.named_parameters() if t.is_meta]
    leftover += [n for n, b in model.named_buffers() if b.is_meta]
    if leftover:
        raise CheckpointError(
            f"tensors left uninitialised after loading: {_preview(leftover)}", missing=leftover
        )
