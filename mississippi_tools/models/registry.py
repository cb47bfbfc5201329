"""Model families by configuration: which backend loads a checkpoint.

A checkpoint's ``config.json`` names its family (``model_type``, or ``architectures``). Each
family registers a loader here; further backends (Idefics, Florence-2, ...) plug in the same way.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mississippi_tools.errors import ConfigError, ModelNotFoundError

if TYPE_CHECKING:
    import torch

    from mississippi_tools.models.base import VLMBackend

__all__ = ["BACKENDS", "backend_for_config", "load_backend", "register_backend"]

#: ``model_type`` or architecture name -> "module:Class" of a backend with ``from_directory``.
BACKENDS: dict[str, str] = {
    "h2ovl_chat": "mississippi_tools.models.h2ovl.backend:H2OVLBackend",
    "H2OVLChatModel": "mississippi_tools.models.h2ovl.backend:H2OVLBackend",
}


def register_backend(key: str, target: str) -> None:
    """Route checkpoints whose ``model_type`` or architecture is ``key`` to ``module:Class``."""
    BACKENDS[key] = target


def backend_for_config(config: dict[str, Any]) -> Callable[..., VLMBackend]:
    """The backend class for a parsed ``config.json``."""
    candidates = [config.get("model_type"), *(config.get("architectures") or [])]
    for key in candidates:
        if isinstance(key, str) and key in BACKENDS:
            module_name, _, class_name = BACKENDS[key].partition(":")
            backend: Callable[..., VLMBackend] = getattr(
                importlib.import_module(module_name), class_name
            )
            return backend
    raise ConfigError(
        f"no backend for model_type {config.get('model_type')!r} / architectures "
        f"{config.get('architectures')}; supported: {sorted(BACKENDS)}"
    )


def load_backend(
    model: str | Path,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    attention: str = "auto",
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    allow_pickle: bool = False,
    progress: bool = True,
) -> VLMBackend:
    """Find, read and load a checkpoint with the backend its config names."""
    from mississippi_tools.models.devices import resolve_attention, resolve_device, resolve_dtype
    from mississippi_tools.models.hub import resolve_model_dir

    directory = resolve_model_dir(
        model,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        allow_pickle=allow_pickle,
        progress=progress,
    )
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelNotFoundError(f"cannot read {path}: {e}") from e
    if not isinstance(config, dict):
        raise ConfigError(
            f"{path} holds a JSON {_json_type(config)}, not an object; a checkpoint's "
            'config.json is an object such as {"model_type": "h2ovl_chat", ...}'
        )
    backend_cls = backend_for_config(config)
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    return backend_cls.from_directory(  # type: ignore[attr-defined,no-any-return]
        directory,
        model_id=str(model),
        device=resolved_device,
        dtype=resolved_dtype,
        attn_implementation=resolve_attention(attention, resolved_device, resolved_dtype),
        allow_pickle=allow_pickle,
    )


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type."""
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
