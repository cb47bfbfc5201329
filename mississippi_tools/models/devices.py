"""Choose the device, dtype and attention kernel for a model, with clean fallbacks."""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mississippi_tools.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "CpuFeatures",
    "DeviceAvailability",
    "cpu_features",
    "cpu_has_native_bf16",
    "resolve_attention",
    "resolve_device",
    "resolve_dtype",
]

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}
_ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2")


@dataclass(frozen=True)
class DeviceAvailability:
    """Which accelerators this process can use.

    Attributes:
        cuda: An NVIDIA (or ROCm) GPU through ``torch.cuda``.
        mps: Apple Silicon's GPU through Metal (``torch.backends.mps``).
    """

    cuda: bool = False
    mps: bool = False

    @classmethod
    def detect(cls) -> DeviceAvailability:
        """What torch reports on this machine."""
        import torch

        mps = getattr(torch.backends, "mps", None)
        return cls(
            cuda=torch.cuda.is_available(),
            mps=bool(mps is not None and mps.is_available()),
        )


def resolve_device(
    device: str | torch.device = "auto", *, available: DeviceAvailability | None = None
) -> torch.device:
    """The device to load on.

    ``"auto"`` is CUDA when available, else Apple Silicon's GPU (MPS) when available, else the
    CPU; anything else is checked against what is available.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a torch device.
        available: What this machine has (default: :meth:`DeviceAvailability.detect`).

    Raises:
        InvalidInputError: Not a torch device, or an accelerator this machine lacks.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    has = available or DeviceAvailability.detect()
    if device == "auto":
        return torch.device("cuda" if has.cuda else "mps" if has.mps else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise InvalidInputError(f"device {device!r} is not a torch device: {e}") from e
    if resolved.type == "cuda" and not has.cuda:
        raise InvalidInputError(
            f"device {device!r} was requested but CUDA is not available here; use device='cpu' "
            "or 'auto'"
        )
    if resolved.type == "mps" and not has.mps:
        raise InvalidInputError(
            f"device {device!r} was requested but Apple's Metal (MPS) is not available here "
            "(it needs Apple Silicon and a torch built with MPS); use device='cpu' or 'auto'"
        )
    return resolved


#: The CPU flags (``/proc/cpuinfo`` spelling) that decide the int8 and bfloat16 kernels.
_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU can compute fast, as the kernels see it.

    Attributes:
        model: The CPU's name (``/proc/cpuinfo``'s ``model name``; empty if unknown).
        flags: Those of ``avx2``, ``avx512f``, ``avx512_vnni``, ``avx_vnni``, ``avx512_bf16``,
            ``amx_bf16``, ``amx_int8`` that the CPU has.
        capability: PyTorch's own reading (``torch.backends.cpu.get_cpu_capability()``).
    """

    model: str
    flags: tuple[str, ...]
    capability: str

    def has(self, flag: str) -> bool:
        """Whether the CPU has ``flag``."""
        return flag in self.flags

    @property
    def native_bfloat16(self) -> bool:
        """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX), making bf16 pay off.

        With no flags read (no ``/proc/cpuinfo``), PyTorch's own reading decides.
        """
        if not self.flags:
            return "AMX" in self.capability.upper()
        return self.has("avx512_bf16") or self.has("amx_bf16")


@functools.cache
def cpu_features() -> CpuFeatures:
    """This machine's CPU, read once from ``/proc/cpuinfo`` (empty flags where there is none)."""
    import torch

    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            text = handle.read(200_000)
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags":
            flags.update(value.split())
            break
    capability = torch.backends.cpu.get_cpu_capability()
    if _capped_to_avx2(capability):
        flags &= set(_AVX2_FLAGS)
    return CpuFeatures(
        model=model,
        flags=tuple(flag for flag in _FLAGS if flag in flags),
        capability=capability,
    )


#: The flags an AVX2 machine may have: what is left when the kernels are capped to AVX2.
_AVX2_FLAGS = ("avx2", "avx_vnni")


def _capped_to_avx2(capability: str) -> bool:
    """Whether PyTorch's or oneDNN's kernels were limited to AVX2 by their environment variables.

    ``ATEN_CPU_CAPABILITY=avx2`` (PyTorch's own kernels, which ``capability`` then reports) and
    ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN's, which run the bfloat16 and int8 products) make an
    AVX-512 machine compute as an AVX2 one; the flags must say so too, or bfloat16 would be
    chosen where nothing computes it natively any more (a 256-row bfloat16 product then took
    10 s against 12 ms in float32).
    """
    if capability.upper() in ("AVX2", "DEFAULT"):
        return True
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        limit = os.environ.get(variable, "").upper()
        if limit.startswith(("AVX2", "AVX", "SSE")) and not limit.startswith("AVX512"):
            return True
    return False


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), making bf16 pay off."""
    return cpu_features().native_bfloat16


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype for ``dtype`` on ``device``.

    ``"auto"`` is bfloat16 on GPUs that support it (else float16), float16 on Apple's MPS (which
    computes it on every Apple Silicon chip), and on CPUs bfloat16 only where the CPU computes it
    natively, else float32.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise InvalidInputError(
            f"dtype {dtype!r} is not supported; use 'auto', 'float32', 'bfloat16' or 'float16'"
        )
    return getattr(torch, name)  # type: ignore[no-any-return]


def resolve_attention(attention: str, device: torch.device, dtype: torch.dtype) -> str:
    """``"auto"``: flash-attention 2 on CUDA in half precision when installed, else SDPA."""
    import torch

    if attention not in _ATTENTION:
        raise InvalidInputError(f"attention {attention!r} is not one of {_ATTENTION}")
    flash_available = importlib.util.find_spec("flash_attn") is not None
    half = dtype in (torch.float16, torch.bfloat16)
    if attention == "auto":
        return "flash_attention_2" if device.type == "cuda" and half and flash_available else "sdpa"
    if attention == "flash_attention_2" and not (device.type == "cuda" and flash_available):
        raise InvalidInputError(
            "attention='flash_attention_2' needs a CUDA device and the flash-attn package "
            '(pip install "mississippi-tools[flash-attn]"); use "auto" to fall back to SDPA'
        )
    return attention
