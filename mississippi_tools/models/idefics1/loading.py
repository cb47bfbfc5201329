"""Load published IDEFICS 1 checkpoints into transformers' native ``IdeficsForVisionText2Text``.

The published tensor names (transformers 4.32: ``model.embed_tokens.weight`` and its
``additional_embedding``, ``model.vision_model.*``, ``model.perceiver_resampler.*``,
``model.layers.*``, ``model.gated_cross_attn_layers.*``, ``model.norm.weight``, ``lm_head.weight``
and ``lm_head.additional_fc.weight``) are the native names in transformers 5 too. The table below
is the identity, kept explicit so that a renamed tensor is one more line, not a silent miss;
names, shapes and every mismatch are checked at once by the Idefics2 loader this reuses
(:func:`mississippi_tools.models.idefics2.loading.load_weights`).

The model is built with its parameters on the meta device (nothing allocated, nothing randomly
initialised: 80B parameters would take minutes) but its buffers real, because the rotary and
position-id buffers are not stored in the checkpoint and differ between transformers releases.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["CHECKPOINT_KEY_MAPPING", "build_empty_model", "map_checkpoint_key", "move_buffers"]

#: Published tensor name pattern -> native name (``re.sub`` replacement), checked in order.
CHECKPOINT_KEY_MAPPING: tuple[tuple[str, str], ...] = (
    (r"^model\.embed_tokens\.(weight|additional_embedding\.weight)$", r"model.embed_tokens.\1"),
    (r"^model\.vision_model\.(.+)$", r"model.vision_model.\1"),
    (r"^model\.perceiver_resampler\.(.+)$", r"model.perceiver_resampler.\1"),
    (r"^model\.layers\.(.+)$", r"model.layers.\1"),
    (r"^model\.gated_cross_attn_layers\.(.+)$", r"model.gated_cross_attn_layers.\1"),
    (r"^model\.norm\.weight$", "model.norm.weight"),
    (r"^lm_head\.(weight|additional_fc\.weight)$", r"lm_head.\1"),
)
_COMPILED = tuple((re.compile(pattern), repl) for pattern, repl in CHECKPOINT_KEY_MAPPING)

#: transformers' IDEFICS layers that accelerate must keep whole on one device.
NO_SPLIT = ("IdeficsDecoderLayer", "IdeficsGatedCrossAttentionLayer", "IdeficsVisionEncoderLayer")


def map_checkpoint_key(name: str) -> str | None:
    """The native parameter name of a published tensor name; ``None`` when nothing maps it."""
    for pattern, repl in _COMPILED:
        if pattern.match(name):
            return pattern.sub(repl, name)
    return None


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Every parameter registered inside goes to the meta device; buffers stay where made."""
    import torch
    from torch import nn

    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = nn.Parameter(
                param.to(torch.device("meta")), requires_grad=False
            )

    nn.Module.register_parameter = register  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def build_empty_model(native_config: Any) -> nn.Module:
    """Transformers' ``IdeficsForVisionText2Text`` with meta parameters and real buffers."""
    from transformers import IdeficsForVisionText2Text

    with _parameters_on_meta():
        model: nn.Module = IdeficsForVisionText2Text(native_config)
    return model


def move_buffers(model: nn.Module, device: torch.device) -> None:
    """Move every buffer (rotary frequencies, position ids) to ``device``."""
    for module in model.modules():
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.device != device:
                module._buffers[name] = buffer.to(device)
