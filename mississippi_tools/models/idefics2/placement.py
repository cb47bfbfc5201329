"""Where an 8B model's weights go when one device is not enough, and quantized checkpoints.

An Idefics model in bfloat16 needs about 16 GiB for its weights (README "Models"). On a GPU with
less free memory, the layers that do not fit are placed on the CPU, and past a CPU budget on
disk, the way transformers' ``device_map="auto"`` does it: accelerate plans the placement
(``infer_auto_device_map``, never splitting a decoder, vision or perceiver layer) and its hooks
move activations between devices (``dispatch_model``). Layers on the CPU run there (slow);
layers on disk are read for every forward pass (slower still, but a model larger than the RAM
runs).

accelerate is imported only when a placement is needed (``pip install "mississippi-tools[gpu]"``).
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mississippi_tools.errors import ConfigError, MissingDependencyError, MississippiError
from mississippi_tools.extras import require

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "QuantizationBackendMissing",
    "dispatch",
    "plan_device_map",
    "require_quantization_backend",
]

logger = logging.getLogger(__name__)

#: Memory kept free on a GPU for activations, the key/value cache and the CUDA context.
GPU_HEADROOM = 2 * 1024**3

#: Layers accelerate must keep whole on one device (their residual streams cross inside).
NO_SPLIT = [
    "MistralDecoderLayer",
    "LlamaDecoderLayer",
    "Idefics2EncoderLayer",
    "Idefics3EncoderLayer",
    "Idefics2PerceiverLayer",
]


def model_bytes(model: nn.Module, dtype: torch.dtype) -> int:
    """Bytes of the model's parameters in ``dtype`` (meta tensors count by shape)."""
    import torch

    size = torch.empty((), dtype=dtype).element_size()
    return sum(p.numel() for p in model.parameters()) * size


def plan_device_map(
    model: nn.Module,
    *,
    device: torch.device,
    dtype: torch.dtype,
    max_memory: Mapping[str | int, int | str] | None = None,
    no_split: Sequence[str] = (),
) -> dict[str, Any] | None:
    """A device map for ``model`` (on the meta device), or ``None`` when one device holds it.

    ``no_split`` names further layer classes to keep whole (another family's, beside
    :data:`NO_SPLIT`).

    Without ``max_memory``: ``None`` on the CPU, and on a GPU unless the weights (plus
    :data:`GPU_HEADROOM`) exceed its free memory, in which case the rest goes to the CPU.

    Raises:
        MissingDependencyError: A placement is needed and accelerate is not installed.
    """
    import torch

    if max_memory is None:
        if device.type != "cuda":
            return None
        free, _ = torch.cuda.mem_get_info(device)
        needed = model_bytes(model, dtype) + GPU_HEADROOM
        if needed <= free:
            return None
        logger.warning(
            "the weights need %.1f GiB but %s has %.1f GiB free: layers that do not fit run on "
            "the CPU (slower); pass max_memory to control the split",
            needed / 1024**3,
            device,
            free / 1024**3,
        )
        import psutil  # type: ignore[import-untyped]

        max_memory = {
            device.index or 0: max(0, free - GPU_HEADROOM),
            "cpu": psutil.virtual_memory().available,
        }
    require("accelerate", "gpu", purpose="placing a model across devices")
    from accelerate import infer_auto_device_map  # type: ignore[import-untyped]

    device_map: dict[str, Any] = infer_auto_device_map(
        model,
        max_memory=dict(max_memory),
        no_split_module_classes=[*NO_SPLIT, *no_split],
        dtype=dtype,
    )
    return device_map


def dispatch(
    model: nn.Module,
    device_map: Mapping[str, Any],
    offloaded: Mapping[str, torch.Tensor],
    *,
    offload_dir: str | Path | None = None,
) -> None:
    """Attach accelerate's hooks so each layer runs where the map put it.

    Weights mapped to ``"disk"`` (``offloaded``) are written to ``offload_dir`` (a temporary
    directory when not given) and read back for every forward pass.
    """
    from accelerate import dispatch_model
    from accelerate.utils import offload_state_dict

    folder: str | None = None
    if offloaded:
        folder = str(offload_dir or tempfile.mkdtemp(prefix="mississippi-offload-"))
        offload_state_dict(folder, dict(offloaded))
    main = next((d for d in device_map.values() if d != "disk"), "cpu")
    dispatch_model(
        model,
        device_map=dict(device_map),
        main_device=main if main != "cpu" or not offloaded else "cpu",
        offload_dir=folder,
        skip_keys=["cache", "past_key_values"],
        force_hooks=True,
    )


class QuantizationBackendMissing(MissingDependencyError):
    """A quantized checkpoint (AWQ) needs kernels that are not installed."""

    def __init__(self, method: str, packages: str, directory: Path) -> None:
        MississippiError.__init__(
            self,
            f"{directory.name} is a {method.upper()} 4-bit checkpoint; loading it needs "
            f"{packages} (GPU kernels: pip install {packages}, on a CUDA machine). Or load "
            "the unquantized checkpoint (HuggingFaceM4/idefics2-8b) with dtype='bfloat16'",
        )
        self.package = packages
        self.extra = ""


def require_quantization_backend(quantization: Mapping[str, Any], directory: Path) -> None:
    """Check that a quantized checkpoint's kernels are installed.

    transformers 5 loads AWQ checkpoints through gptqmodel (its ``quantizer_awq``) and needs
    accelerate; neither installs on a CPU-only machine here (gptqmodel is a source distribution
    with CUDA kernels), so this is a typed error rather than a failure deep in loading.

    Raises:
        ConfigError: A quantization method this backend does not know.
        QuantizationBackendMissing: The kernels are not installed.
        NotImplementedError: They are installed: loading quantized Idefics checkpoints through
            the engine is not implemented (untested without a GPU).
    """
    method = str(quantization.get("quant_method", "")).lower()
    if method != "awq":
        raise ConfigError(
            f"quantization_config.quant_method is {method!r}; only 'awq' checkpoints are known "
            "for this family"
        )
    missing = [m for m in ("gptqmodel", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise QuantizationBackendMissing(method, " ".join(missing), directory)
    raise NotImplementedError(
        f"{directory.name}: AWQ kernels are installed, but running AWQ checkpoints in the local "
        "engine is not implemented; serve it with vLLM (MississippiVLM.connect) instead"
    )
