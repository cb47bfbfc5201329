"""int8 linear layers on CPUs: per-channel int8 weights, int8 activations quantized per call.

``quantization="int8"`` replaces the ``nn.Linear`` layers of a model's vision encoder, projector
and decoder with dynamic int8 linears (:class:`~mississippi_tools.models.int8_linear.Int8Linear`,
over the kernels of ``torch.ao.nn.quantized.dynamic.Linear``): each output channel's weights are
rounded to int8 with their own scale once, at load time, and packed for the CPU's int8 kernel;
each call quantizes its float32 input on the fly (one scale per call), multiplies in int8 with
int32 accumulation, and returns float32. These are PyTorch's maintained CPU kernels (oneDNN and
FBGEMM), chosen over torchao because they ran fastest here (see ``benchmarks/quantization.py``).

Around them: the dynamic int8 kernels take and return float32 activations; the layers that stay
in floating point (embeddings, norms, attention and the vocabulary projection ``lm_head``)
compute in bfloat16 where the CPU computes it natively, converting at each int8 layer's
boundaries (cheaper than float32 activations there), and in float32 elsewhere
(:func:`int8_compute_dtype`). Embeddings and ``lm_head`` stay unquantized: the embedding is
a table lookup, and ``lm_head``'s errors land directly on the answer's scores.

The kernel engine (``torch.backends.quantized.engine``) is ``x86`` (FBGEMM's AVX2 / AVX512-VNNI
kernels, PyTorch's default on x86; :func:`choose_engine`), packed when the weights are
quantized. Measured on a 2-core Xeon with AMX (``[rows, 1536] x [1536, 4096]``): ``x86`` took
0.157 ms for one row (a decoding step) against oneDNN's 0.205 and bfloat16's 0.454; oneDNN's AMX
kernels won at 256 rows (0.89 ms against 2.6), but oneDNN keeps a second copy of every int8
weight (the original beside the packed one: 1.3 bytes a weight against 0.5 measured), which
costs the memory int8 is for. ``onednn`` stays available through ``quantize_linears(engine=)``.

Which parts become int8 is measured per CPU (:func:`int8_skips`): where the CPU computes
bfloat16 natively (AVX512-BF16 / AMX), its bfloat16 products beat dynamic int8 on the vision
encoder's large batches (a 6-tile page's encoder: 3.9 s in bfloat16 against 9.8 s in int8 on the
Xeon above), so the vision encoder stays bfloat16 there; on other CPUs (AVX2) it becomes int8.

Memory: while a checkpoint is read, each linear layer is quantized from the file's own dtype
as soon as its tensors are in (:class:`Int8Converter`), and its float weight dropped, so neither
the whole float checkpoint nor a float32 copy of it is ever held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from mississippi_tools.errors import InvalidInputError, Remedy
from mississippi_tools.models.devices import CpuFeatures, cpu_features

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "QUANTIZATION_MODES",
    "CpuFeatures",
    "Int8Converter",
    "Quantization",
    "QuantizationReport",
    "check_quantization",
    "choose_engine",
    "cpu_features",
    "int8_compute_dtype",
    "int8_skips",
    "layer_sqnr",
    "quantize_linears",
]

Quantization: TypeAlias = Literal["int8"]
"""The quantization modes a model can be loaded with."""

#: Every accepted value of the ``quantization`` option (``None`` means off).
QUANTIZATION_MODES: tuple[str, ...] = ("int8",)

#: The fix when int8 cannot apply: load without quantization.
_UNSET = Remedy("no_quantization")


def choose_engine(features: CpuFeatures | None = None) -> str:
    """The quantized kernel engine for this CPU: ``x86`` (see the module docstring).

    Falls back to ``fbgemm``, ``onednn`` or ``qnnpack`` (ARM) when this torch build lacks ``x86``.
    """
    import torch

    supported = torch.backends.quantized.supported_engines
    del features  # x86 on every x86 CPU (see the module docstring); kept for other policies
    for engine in ["x86", "fbgemm", "onednn", "qnnpack"]:
        if engine in supported:
            return engine
    raise InvalidInputError(
        "quantization='int8' needs PyTorch's quantized CPU kernels, which this torch build "
        f"lacks (engines: {supported})",
        remedy=_UNSET,
    )


def int8_compute_dtype(features: CpuFeatures | None = None) -> str:
    """The dtype of everything around the int8 layers for ``dtype="auto"``.

    ``bfloat16`` where the CPU computes it natively (AVX512-BF16 / AMX): norms, attention, the
    embeddings and ``lm_head`` then run at native speed, activations take half the memory, and
    each int8 layer converts its input to float32 and its output back (measured on the 800M
    model with AMX: peak memory 2.70 -> 2.25 GB on a 6-tile page, a decoding step 7% and a
    page's prefill 8% faster than float32 around the same int8 layers). ``float32`` elsewhere,
    where bfloat16 is emulated and slower than float32.
    """
    features = features or cpu_features()
    return "bfloat16" if features.native_bfloat16 else "float32"


def check_quantization(
    quantization: str | None,
    *,
    device: torch.device,
    family: str,
    supported: bool,
    families: tuple[str, ...] = ("h2ovl",),
) -> Quantization | None:
    """``quantization`` if this backend on this device can load with it.

    Raises:
        InvalidInputError: A value other than ``"int8"``/``None``, a non-CPU device, or a
            backend without int8 support (``families``: those with it); the message names
            the option.
    """
    if quantization is None:
        return None
    if quantization not in QUANTIZATION_MODES:
        raise InvalidInputError(
            f"quantization {quantization!r} is not supported: the modes are 'int8' and none",
            remedy=Remedy("quantization", "int8"),
        )
    if device.type != "cpu":
        raise InvalidInputError(
            f"quantization='int8' runs on the CPU (PyTorch's int8 CPU kernels); the model is "
            f"loading on {device}: load it on the CPU, or without quantization",
            remedy=_UNSET,
        )
    if not supported:
        raise InvalidInputError(
            f"quantization='int8' is not available for {family} models yet (it is for: "
            f"{', '.join(families) or 'none'})",
            remedy=_UNSET,
        )
    return "int8"


@dataclass(frozen=True)
class QuantizationReport:
    """What :class:`Int8Converter` (or :func:`quantize_linears`) did.

    Attributes:
        mode: ``"int8"``.
        engine: The kernel engine the weights were packed for (``onednn``, ``x86`` ...).
        layers: How many linear layers became int8.
        skipped: Names of the linear layers left in floating point.
        cpu: The CPU the engine was chosen for.
    """

    mode: Quantization
    engine: str
    layers: int
    skipped: tuple[str, ...]
    cpu: CpuFeatures

    def describe(self) -> str:
        """One line for logs and model info: ``int8 (x86 kernels, 114 layers; CPU avx2, ...)``."""
        flags = ", ".join(self.cpu.flags) or "no SIMD flags read"
        return f"{self.mode} ({self.engine} kernels, {self.layers} layers; CPU {flags})"


class Int8Converter:
    """Turns a model's ``nn.Linear`` layers into :class:`Int8Linear` ones, layer by layer.

    Each layer's float weight is rounded to int8 per output channel
    (:func:`~mississippi_tools.models.int8_linear.round_per_channel`) and packed for the kernel
    engine, both on as many threads as torch computes with; the converter's own thread only
    wraps each rounded weight as a quantized tensor between the two (that wrap silences a
    torch deprecation warning, which is not safe from several threads) and installs the
    layers. At most two layers per thread wait at each stage, so the copies in flight stay a
    few layers' worth. Biases stay float32.

    Two ways in: :meth:`convert_loaded` for a model whose weights are in place, and
    :meth:`take_from` while a checkpoint is read (the model built on the meta device): each
    layer whose tensors have all been read is taken out of the state and converted at once,
    so the whole float checkpoint is never held. Use it as a context manager; leaving it
    waits for the last layers and installs them.

    Args:
        module: The model.
        skip: Layers to leave in floating point: a name matches when it equals a skipped name,
            ends with ``.`` + one, or lies under one (``vision_model`` covers its layers).
        engine: The kernel engine (default: :func:`choose_engine`); it also becomes the
            process's ``torch.backends.quantized.engine``.
    """

    def __init__(
        self, module: nn.Module, *, skip: tuple[str, ...] = ("lm_head",), engine: str | None = None
    ) -> None:
        import torch
        from torch import nn

        self.module = module
        self.engine = engine or choose_engine()
        torch.backends.quantized.engine = self.engine
        linears = {name: m for name, m in module.named_modules() if type(m) is nn.Linear}
        self.skipped = tuple(name for name in linears if _skipped(name, skip))
        #: Layers still to convert: name -> (in_features, out_features, has a bias).
        self._todo = {
            name: (m.in_features, m.out_features, m.bias is not None)
            for name, m in linears.items()
            if name not in self.skipped
        }
        self._workers = max(1, torch.get_num_threads())
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="int8-pack")
        #: Layers being rounded (name, float32 bias, job), then being packed (name, job).
        self._rounding: deque[tuple[str, torch.Tensor | None, Future[Any]]] = deque()
        self._packing: deque[tuple[str, Future[Any]]] = deque()
        self.layers = 0

    def __enter__(self) -> Int8Converter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                self.finish()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def convert_loaded(self) -> None:
        """Convert every remaining layer from the weights the model holds."""
        from torch import nn

        for name in list(self._todo):
            linear = self.module.get_submodule(name)
            assert isinstance(linear, nn.Linear)
            self._submit(name, linear.weight, linear.bias)

    def take_from(self, state: dict[str, torch.Tensor]) -> None:
        """Convert the layers whose tensors are all in ``state``, removing them from it.

        The consumer side of :func:`~mississippi_tools.models.h2ovl.loading.load_weights`.
        """
        for key in [k for k in state if k.endswith(".weight")]:
            name = key.removesuffix(".weight")
            if name not in self._todo or (self._todo[name][2] and f"{name}.bias" not in state):
                continue
            self._submit(name, state.pop(key), state.pop(f"{name}.bias", None))

    def finish(self) -> None:
        """Wait for the layers in flight and install them (all the checkpoint has been read)."""
        self._advance_until(0)

    def report(self) -> QuantizationReport:
        """What was converted (after the ``with`` block)."""
        return QuantizationReport(
            mode="int8", engine=self.engine, layers=self.layers, skipped=self.skipped,
            cpu=cpu_features(),
        )  # fmt: skip

    def _submit(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        from mississippi_tools.models.int8_linear import round_per_channel

        float_bias = None if bias is None else bias.detach().float().clone()
        self._rounding.append((name, float_bias, self._pool.submit(round_per_channel, weight)))
        self._advance_until(2 * self._workers)

    def _advance_until(self, left: int) -> None:
        """Move the oldest layers on until at most ``left`` wait at each stage."""
        from mississippi_tools.models.int8_linear import Int8Linear, as_quantized, pack_weight

        while len(self._rounding) > left:
            name, bias, job = self._rounding.popleft()
            quantized = as_quantized(*job.result())
            self._packing.append((name, self._pool.submit(pack_weight, quantized, bias)))
        while len(self._packing) > left:
            name, job = self._packing.popleft()
            in_features, out_features, _ = self._todo.pop(name)
            parent_name, _, attribute = name.rpartition(".")
            parent = self.module.get_submodule(parent_name) if parent_name else self.module
            setattr(parent, attribute, Int8Linear(job.result(), in_features, out_features))
            self.layers += 1


def quantize_linears(
    module: nn.Module,
    *,
    skip: tuple[str, ...] = ("lm_head",),
    engine: str | None = None,
) -> QuantizationReport:
    """Replace ``module``'s ``nn.Linear`` layers with int8 ones, in place (:class:`Int8Converter`).

    Args:
        module: The model (its linear layers in any floating dtype, on the CPU).
        skip: Layers to leave in floating point (see :class:`Int8Converter`).
        engine: The kernel engine (default: :func:`choose_engine`).

    Returns:
        The engine, how many layers were quantized and which were skipped.
    """
    with Int8Converter(module, skip=skip, engine=engine) as converter:
        converter.convert_loaded()
    return converter.report()


def layer_sqnr(
    reference: nn.Module, quantized: nn.Module, run: Callable[[nn.Module], object]
) -> dict[str, float]:
    """Signal-to-quantization-noise ratio (dB) of each int8 layer, on the inputs it really sees.

    ``run(reference)`` is called once with hooks recording each linear layer's input and
    output; each layer of ``quantized`` with the same name is then fed the recorded input.
    SQNR is ``10 log10(|y|^2 / |y - y_int8|^2)``: about 6 dB per bit, so 30-40 dB is what
    8-bit weights and activations give, and a wrong scale or layout shows as < 10 dB.
    """
    import torch
    from torch import nn

    recorded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    names = {name for name, m in quantized.named_modules() if _is_int8(m)}

    def recorder(name: str) -> Callable[..., None]:
        def record(_module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if name not in recorded:  # the first call (a layer may run more than once)
                recorded[name] = (args[0].detach().float(), out.detach().float())

        return record

    hooks = [
        module.register_forward_hook(recorder(name))
        for name, module in reference.named_modules()
        if name in names and isinstance(module, nn.Linear)
    ]
    try:
        with torch.inference_mode():
            run(reference)
    finally:
        for hook in hooks:
            hook.remove()
    ratios: dict[str, float] = {}
    with torch.inference_mode():
        for name, (inputs, expected) in recorded.items():
            got = quantized.get_submodule(name)(inputs)
            noise = (expected - got).pow(2).sum().clamp_min(1e-30)
            ratios[name] = float(10 * torch.log10(expected.pow(2).sum() / noise))
    return ratios


def _is_int8(module: nn.Module) -> bool:
    from mississippi_tools.models.int8_linear import Int8Linear

    return isinstance(module, Int8Linear)


def int8_skips(features: CpuFeatures | None = None) -> tuple[str, ...]:
    """What stays in floating point: ``lm_head``, and the vision encoder on native-bf16 CPUs."""
    features = features or cpu_features()
    return ("lm_head", "vision_model") if features.native_bfloat16 else ("lm_head",)


def _skipped(name: str, skip: tuple[str, ...]) -> bool:
    return any(name == s or name.endswith("." + s) or name.startswith(s + ".") for s in skip)
