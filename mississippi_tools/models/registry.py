"""Model families: which backend loads a checkpoint, and which family a model name belongs to.

A checkpoint's ``config.json`` names its family (``model_type``, or ``architectures``); each family
registers its backend here (:data:`BACKENDS`, :func:`register_backend`). :data:`KNOWN_MODELS` lists
the published checkpoints by hub id, so that a model served elsewhere (vLLM) can be recognised by
its name (:func:`family_for_model_name`) and prompted the way its family expects.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mississippi_tools.errors import ConfigError, InvalidInputError, ModelNotFoundError, Remedy

if TYPE_CHECKING:
    import torch

    from mississippi_tools.models.base import Backend

__all__ = [
    "BACKENDS",
    "GENERIC_FAMILY",
    "KNOWN_MODELS",
    "backend_for_config",
    "family_for_model_name",
    "family_of",
    "load_backend",
    "register_backend",
]

#: The family of a model nobody registered (an OpenAI-compatible VLM served elsewhere): plain
#: chat prompts, no model options.
GENERIC_FAMILY = "generic"

#: Published checkpoints by hub id -> family.
KNOWN_MODELS: dict[str, str] = {
    "h2oai/h2ovl-mississippi-800m": "h2ovl",
    "h2oai/h2ovl-mississippi-2b": "h2ovl",
    # -- websight (VLM_WebSight_finetuned) --
    "HuggingFaceM4/VLM_WebSight_finetuned": "websight",
    # -- Idefics2 / Idefics3 (HuggingFaceM4) --------------------------------------------------
    "HuggingFaceM4/idefics2-8b": "idefics2",
    "HuggingFaceM4/idefics2-8b-chatty": "idefics2",
    "HuggingFaceM4/idefics2-8b-AWQ": "idefics2",
    "HuggingFaceM4/Idefics3-8B-Llama3": "idefics3",
    # -- Florence-2 (Microsoft's remote-code layout, loaded into the native class) -------------
    "HuggingFaceM4/Florence-2-DocVQA": "florence2",
    # -- IDEFICS 1 (HuggingFaceM4, gated cross-attention); the pretrained-only idefics-9b and
    # idefics-80b are known by the "idefics-" name hint, so that error messages listing the
    # models that can do a task never suggest them --
    "HuggingFaceM4/idefics-9b-instruct": "idefics1",
    "HuggingFaceM4/idefics-80b-instruct": "idefics1",
}

#: Name fragments (lower case) that tell a family when the exact hub id is not known, most
#: specific first (a local path or a served model name such as ``/models/h2ovl-mississippi-2b``).
_NAME_HINTS: list[tuple[str, str]] = [
    ("h2ovl", "h2ovl"),
    # -- websight --
    ("websight", "websight"),
    # -- Idefics2 / Idefics3 --
    ("idefics3", "idefics3"),
    ("idefics2", "idefics2"),
    # -- Florence-2 --
    ("florence-2", "florence2"),
    ("florence2", "florence2"),
    # -- IDEFICS 1: "idefics-9b", "idefics-80b" (after the numbered families) --
    ("idefics-", "idefics1"),
]

#: ``model_type`` or architecture name -> "module:Class" of a backend with ``from_directory``.
BACKENDS: dict[str, str] = {
    "h2ovl_chat": "mississippi_tools.models.h2ovl.backend:H2OVLBackend",
    "H2OVLChatModel": "mississippi_tools.models.h2ovl.backend:H2OVLBackend",
    # -- websight: model_type "vmistral", VMistralForVisionText2Text --
    "vmistral": "mississippi_tools.models.websight.backend:WebSightBackend",
    "VMistralForVisionText2Text": "mississippi_tools.models.websight.backend:WebSightBackend",
    # -- Idefics2 / Idefics3 (transformers' native classes, published configs) ----------------
    "idefics2": "mississippi_tools.models.idefics2.backend:Idefics2Backend",
    "Idefics2ForConditionalGeneration": "mississippi_tools.models.idefics2.backend:Idefics2Backend",
    "idefics3": "mississippi_tools.models.idefics3.backend:Idefics3Backend",
    "Idefics3ForConditionalGeneration": "mississippi_tools.models.idefics3.backend:Idefics3Backend",
    # -- Florence-2: model_type "florence2", Florence2ForConditionalGeneration --
    "florence2": "mississippi_tools.models.florence2.backend:Florence2Backend",
    "Florence2ForConditionalGeneration": (
        "mississippi_tools.models.florence2.backend:Florence2Backend"
    ),
    # -- IDEFICS 1: model_type "idefics", IdeficsForVisionText2Text (generate kind) -----------
    "idefics": "mississippi_tools.models.idefics1.backend:Idefics1Backend",
    "IdeficsForVisionText2Text": "mississippi_tools.models.idefics1.backend:Idefics1Backend",
}


def register_backend(
    key: str,
    target: str,
    *,
    family: str | None = None,
    hub_ids: tuple[str, ...] = (),
    name_hints: tuple[str, ...] = (),
) -> None:
    """Route checkpoints whose ``model_type`` or architecture is ``key`` to ``module:Class``.

    Args:
        key: A ``model_type`` or an ``architectures`` entry of the family's ``config.json``.
        target: ``"package.module:BackendClass"``, imported only when such a checkpoint loads.
        family: The family's name, for :func:`family_for_model_name`.
        hub_ids: The family's published checkpoints.
        name_hints: Lower-case fragments of model names that mean this family.
    """
    BACKENDS[key] = target
    if family is not None:
        KNOWN_MODELS.update(dict.fromkeys(hub_ids, family))
        _NAME_HINTS[:0] = [(hint, family) for hint in name_hints]


def family_of(model: str | Path) -> str:
    """The family of a model to be loaded, without loading it.

    A local directory (or a hub snapshot already in the cache) tells by its ``config.json``;
    otherwise the name does (:func:`family_for_model_name`). Nothing is downloaded.
    """
    config_path = Path(model).expanduser() / "config.json"
    if not config_path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(model), "config.json")
            config_path = Path(cached) if isinstance(cached, str) else config_path
        except Exception:  # not a hub id, or huggingface_hub not installed
            pass
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        family = getattr(backend_for_config(config), "family", None)
        if isinstance(family, str):
            return family
    except (OSError, ValueError, ConfigError, ImportError, AttributeError, TypeError):
        pass
    return family_for_model_name(str(model))


def family_for_model_name(name: str) -> str:
    """The family a model name or path belongs to, or :data:`GENERIC_FAMILY`."""
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name]
    lowered = name.lower()
    return next((family for hint, family in _NAME_HINTS if hint in lowered), GENERIC_FAMILY)


def backend_for_config(config: dict[str, Any]) -> type[Backend]:
    """The backend class for a parsed ``config.json``."""
    candidates = [config.get("model_type"), *(config.get("architectures") or [])]
    for key in candidates:
        if isinstance(key, str) and key in BACKENDS:
            module_name, _, class_name = BACKENDS[key].partition(":")
            backend: type[Backend] = getattr(importlib.import_module(module_name), class_name)
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
    max_memory: Mapping[str | int, int | str] | None = None,
    offload_dir: str | Path | None = None,
    memory_limit: int | None = None,
    reserved_memory: int = 0,
    quantization: str | None = None,
) -> Backend:
    """Find, read and load a checkpoint with the backend its config names.

    ``max_memory`` and ``offload_dir`` place a model larger than one device across GPUs, the CPU
    and disk (accelerate), for the backends that support it. With ``memory_limit`` (bytes), a
    checkpoint whose estimated footprint (its weights at the load dtype plus ``reserved_memory``)
    exceeds it is refused before any weight is read.

    ``quantization="int8"`` loads the linear layers as int8 on the CPU
    (:mod:`mississippi_tools.models.quantization`); the rest of the model then computes in
    bfloat16 where the CPU computes it natively, else float32 (``dtype="auto"``), or in float32
    when ``dtype="float32"``.

    Raises:
        InvalidInputError: A placement asked of a backend that loads on one device; a
            quantization that is unknown, not on the CPU, with a dtype the CPU does not compute
            natively, or for a backend without it.
        ModelTooLargeError: The estimated footprint exceeds ``memory_limit``.
    """
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
    placement: dict[str, Any] = {}
    if max_memory is not None or offload_dir is not None:
        if not backend_cls.supports_placement:
            placed = sorted({c.family for c in _loaded_backends() if c.supports_placement})
            raise InvalidInputError(
                f"max_memory and offload_dir place a model across devices and disk; the "
                f"{backend_cls.family} backend loads on one device (placement is for: "
                f"{', '.join(placed) or 'none'}); leave them out and choose device="
            )
        placement = {"max_memory": max_memory, "offload_dir": offload_dir}
    resolved_device = resolve_device(device)
    extra: dict[str, Any] = dict(placement)
    if quantization is not None:
        from mississippi_tools.models.quantization import check_quantization

        extra["quantization"] = check_quantization(
            quantization,
            device=resolved_device,
            family=backend_cls.family,
            supported=backend_cls.supports_quantization,
            families=()
            if backend_cls.supports_quantization
            else tuple(sorted({c.family for c in _loaded_backends() if c.supports_quantization})),
        )
        dtype = _quantized_dtype(quantization, dtype)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    if memory_limit is not None:
        from mississippi_tools.models.footprint import check_footprint

        # int8 layers plus half- or single-precision embeddings average under 2 bytes a weight.
        check_footprint(
            directory,
            2 if quantization is not None else resolved_dtype.itemsize,
            max_memory=memory_limit,
            reserved=reserved_memory,
            name=str(model),
        )
    return backend_cls.from_directory(
        directory,
        model_id=str(model),
        device=resolved_device,
        dtype=resolved_dtype,
        attn_implementation=resolve_attention(attention, resolved_device, resolved_dtype),
        allow_pickle=allow_pickle,
        **extra,
    )


def _quantized_dtype(quantization: str, dtype: str | torch.dtype) -> str:
    """The dtype around int8 layers: ``auto``'s choice, or one this CPU computes natively.

    ``"auto"`` is :func:`~mississippi_tools.models.quantization.int8_compute_dtype` (bfloat16
    where the CPU computes it natively, else float32); ``"float32"`` is always accepted and
    ``"bfloat16"`` where it is native; any other dtype is refused.
    """
    from mississippi_tools.models.quantization import int8_compute_dtype

    name = str(dtype).removeprefix("torch.")
    automatic = int8_compute_dtype()
    if name == "auto":
        return automatic
    if name in ("float32", "fp32"):
        return "float32"
    if name in ("bfloat16", "bf16") and automatic == "bfloat16":
        return "bfloat16"
    raise InvalidInputError(
        f"quantization={quantization!r} computes everything but the int8 layers in "
        f"{automatic} on this CPU (bfloat16 only where the CPU computes it natively), so dtype "
        f"{str(dtype)!r} does not apply: leave dtype 'auto' or set 'float32'",
        remedy=Remedy("no_quantization"),
    )


def _loaded_backends() -> list[type[Backend]]:
    """The backend classes of every registered family (imported to read their attributes)."""
    classes: dict[str, type[Backend]] = {}
    for target in BACKENDS.values():
        if target not in classes:
            module, _, name = target.partition(":")
            classes[target] = getattr(importlib.import_module(module), name)
    return list(classes.values())


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type."""
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
