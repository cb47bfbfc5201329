"""Load the published VLM_WebSight_finetuned checkpoint (original tensor names) without remote code.

The published safetensors name tensors as the remote ``modeling_vmistral.py`` builds its modules
(``VMistralForVisionText2Text``: ``model.*`` and ``lm_head.*``). The table below maps each onto
our assembly of native parts (:mod:`mississippi_tools.models.websight.modeling`):

* ``model.vision_model.vision_model.*`` — the remote ``SiglipVisionModel`` wraps a
  ``SiglipVisionTransformer``; transformers 5's ``SiglipVisionModel`` holds the same modules one
  level up. The attention-pooling ``head.*`` is stored but never used (VMistral reads the last
  hidden state), so it is skipped.
* ``model.modality_projection.*`` and ``model.perceiver_resampler.*`` keep their names.
* ``model.layers.*``, ``model.norm.weight`` — the Mistral decoder.
* The decoupled embedding and head: ``model.embed_tokens.weight`` (rows ``[0, vocab)``) and
  ``model.embed_tokens.additional_embedding.weight`` (rows ``[vocab, vocab + 2)``) become one
  embedding of ``vocab + additional`` rows; likewise ``lm_head.weight`` and
  ``lm_head.additional_fc.weight`` become one head. Looking up id ``i >= vocab`` in the
  concatenation reads ``additional_embedding[i - vocab]``, which is what ``DecoupledEmbedding``
  does, and the concatenated head's logits are ``cat(lm_head(h), additional_fc(h))``, which is
  what ``DecoupledLinear`` returns.

Names and shapes are checked from the file headers before any tensor data is read; every problem
is reported at once in a :class:`~mississippi_tools.errors.CheckpointError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mississippi_tools.errors import CheckpointError
from mississippi_tools.models.h2ovl.loading import (
    _header_shapes,
    _iter_tensors,
    _preview,
    find_checkpoint_files,
)
from mississippi_tools.models.websight.configuration import WebSightConfig

if TYPE_CHECKING:
    import torch

    from mississippi_tools.models.websight.modeling import VMistralForConditionalGeneration

__all__ = [
    "CHECKPOINT_KEY_MAPPING",
    "IGNORED_KEYS",
    "KeyTarget",
    "load_config",
    "load_weights",
    "map_checkpoint_key",
]


@dataclass(frozen=True)
class KeyTarget:
    """Where a published tensor goes.

    Attributes:
        name: Our parameter's name.
        part: ``None`` for the whole parameter; ``"base"`` or ``"additional"`` for the rows
            ``[0, vocab)`` or ``[vocab, vocab + additional)`` of a concatenated one.
    """

    name: str
    part: str | None = None


#: Published tensor name pattern -> (our name as a ``re.sub`` replacement, row part). In order.
CHECKPOINT_KEY_MAPPING: tuple[tuple[str, str, str | None], ...] = (
    (r"^model\.vision_model\.vision_model\.(.+)$", r"vision_model.\1", None),
    (r"^model\.modality_projection\.(.+)$", r"modality_projection.\1", None),
    (r"^model\.perceiver_resampler\.(.+)$", r"perceiver_resampler.\1", None),
    (r"^model\.layers\.(.+)$", r"language_model.model.layers.\1", None),
    (r"^model\.norm\.weight$", "language_model.model.norm.weight", None),
    (r"^model\.embed_tokens\.weight$", "language_model.model.embed_tokens.weight", "base"),
    (
        r"^model\.embed_tokens\.additional_embedding\.weight$",
        "language_model.model.embed_tokens.weight",
        "additional",
    ),
    (r"^lm_head\.weight$", "language_model.lm_head.weight", "base"),
    (r"^lm_head\.additional_fc\.weight$", "language_model.lm_head.weight", "additional"),
)

#: Published tensors that the computation never reads.
IGNORED_KEYS: tuple[str, ...] = (
    r"^model\.vision_model\.vision_model\.head\.",  # SigLIP's attention pooling
    r"rotary_emb\.inv_freq$",  # stale buffer of older saves
)

_COMPILED = tuple((re.compile(p), repl, part) for p, repl, part in CHECKPOINT_KEY_MAPPING)
_IGNORED = tuple(re.compile(p) for p in IGNORED_KEYS)


def map_checkpoint_key(name: str) -> KeyTarget | None:
    """Our target for a published tensor name; ``None`` when nothing maps it."""
    for pattern, repl, part in _COMPILED:
        if pattern.match(name):
            return KeyTarget(pattern.sub(repl, name), part)
    return None


def _row_range(config: WebSightConfig, part: str | None) -> tuple[int, int] | None:
    if part == "base":
        return 0, config.vocab_size
    if part == "additional":
        return config.vocab_size, config.total_vocab_size
    return None


def _plan(
    model: VMistralForConditionalGeneration, shapes: dict[str, tuple[int, ...]]
) -> dict[str, KeyTarget]:
    """Check names and shapes; return published name -> target for the tensors to load."""
    config = model.config
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    plan: dict[str, KeyTarget] = {}
    unexpected: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    covered: dict[str, set[str | None]] = {}
    for name, shape in shapes.items():
        if any(pattern.search(name) for pattern in _IGNORED):
            continue
        target = map_checkpoint_key(name)
        if target is None or target.name not in expected:
            unexpected.append(name)
            continue
        want = expected[target.name]
        rows = _row_range(config, target.part)
        if rows is not None:
            want = (rows[1] - rows[0], *want[1:])
        covered.setdefault(target.name, set()).add(target.part)
        if tuple(shape) != want:
            mismatched.append((name, want, tuple(shape)))
            continue
        plan[name] = target
    missing = [n for n in sorted(expected) if n not in covered]
    for name, parts in covered.items():
        if None not in parts and config.additional_vocab_size and parts != {"base", "additional"}:
            lacking = "additional" if "base" in parts else "base"
            missing.append(f"{name} ({lacking} rows)")
    if config.tie_word_embeddings:
        missing = [m for m in missing if not m.startswith("language_model.lm_head.weight")]
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
    model: VMistralForConditionalGeneration,
    directory: Path,
    *,
    dtype: torch.dtype,
    allow_pickle: bool = False,
) -> None:
    """Fill ``model`` (built on the meta device) with a checkpoint's tensors, cast to ``dtype``."""
    import torch

    config = model.config
    files = find_checkpoint_files(directory, allow_pickle=allow_pickle)
    plan = _plan(model, _header_shapes(files))
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    state: dict[str, torch.Tensor] = {}
    for name, tensor in _iter_tensors(files):
        target = plan.get(name)
        if target is None:
            continue
        tensor = tensor.to(dtype)
        rows = _row_range(config, target.part)
        if rows is None:
            state[target.name] = tensor
            continue
        whole = state.get(target.name)
        if whole is None:
            whole = state[target.name] = torch.empty(expected[target.name], dtype=dtype)
        whole[rows[0] : rows[1]] = tensor
    if config.tie_word_embeddings:
        state.pop("language_model.lm_head.weight", None)
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.language_model.tie_weights()
    _materialise_buffers(model)


def _materialise_buffers(model: torch.nn.Module) -> None:
    """Recreate the non-persistent buffers left on the meta device by building on ``meta``.

    Rotary embeddings (modules with buffers and no parameters) are rebuilt from their config;
    SigLIP's ``position_ids`` is ``arange(num_positions)``. Anything else left on ``meta`` is
    reported.
    """
    import torch

    for name, module in list(model.named_modules()):
        meta = [b for b, t in module.named_buffers(recurse=False) if t.is_meta]
        if not meta:
            continue
        if not any(True for _ in module.parameters()) and hasattr(module, "config"):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, type(module)(config=module.config))
        elif meta == ["position_ids"]:
            count = module.get_buffer("position_ids").shape[-1]
            module.register_buffer(
                "position_ids", torch.arange(count).expand((1, -1)), persistent=False
            )
    leftover = [n for n, t in model.state_dict().items() if t.is_meta]
    leftover += [n for n, b in model.named_buffers() if b.is_meta]
    if leftover:
        raise CheckpointError(
            f"tensors left uninitialised after loading: {_preview(leftover)}", missing=leftover
        )


def load_config(directory: Path) -> WebSightConfig:
    """The checkpoint's configuration."""
    return WebSightConfig.from_file(directory / "config.json")
