"""The decoding step: our lean step against transformers' decoder, and torch.compile, in one run.

On the full-size 800M random-weight checkpoint, for the CPU's best lossless dtype
(``dtype="auto"``) and for ``quantization="int8"``, each in its own fresh process: one 1-tile
request is prefilled, then decoding steps alternate between the lean step
(:mod:`mississippi_tools.models.lean_decode`) and transformers' ``LlamaModel`` forward over the
same cache, ``--steps`` at a time for ``--rounds`` rounds; the fastest round of each is kept.
Each is put against the weight-streaming bound (the weight bytes a step reads over the memory
bandwidth measured in the same run), and a profile of each says how much of a step is the
weight products and how much everything else.

``--compile`` also runs the lean step through ``torch.compile`` (dynamic shapes) in the
lossless process, with an empty inductor cache (as on a first run): the first call's compile
time, the recompilations as the cache grows over ``--compile-steps`` steps, and the steady step
time; it pays only if the steady step is faster, after ``compile seconds / saving per step``
tokens.

``--isa avx2`` caps the kernels at AVX2 (see ``benchmarks/processes.py``).

Run: ``python -m benchmarks.decode_step [--isa avx2] [--compile]`` (writes
``results/decode-step[-avx2].{json,md}``), or ``--quick`` (the tiny checkpoint; writes nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.processes import ISA_CAPS, ROOT, in_process

RESULTS = ROOT / "benchmarks" / "results"

#: Engine modes, each measured in its own process: name -> load_backend keywords.
MODES: dict[str, dict[str, Any]] = {
    "lossless": {"dtype": "auto"},
    "int8": {"quantization": "int8"},
}

#: Profiler operator names that are a weight product.
PRODUCT_OPS = frozenset(
    {"aten::mm", "aten::addmm", "aten::mv", "aten::addmv_", "quantized::linear_dynamic"}
)


# -- worker side ---------------------------------------------------------------------------------


class _Decoding:
    """A prefilled 1-tile request whose steps can run either way."""

    def __init__(self, backend: Any) -> None:
        import torch

        from benchmarks import stages
        from mississippi_tools.engine.cache import TensorCache
        from mississippi_tools.engine.runner import ModelRunner
        from mississippi_tools.images import load_image

        self.backend = backend
        self.lean = backend.lean_step
        prepared = backend.prepare(
            "Read the text in the image.", [load_image(stages.page_png((448, 448)))]
        )
        self.runner = ModelRunner(backend, TensorCache(0))
        with torch.inference_mode():
            features = backend.model.extract_features(prepared.images[0].render())
        logits, cache = self.runner.prefill(prepared, [features])
        self.runner.join(cache)
        self.prompt_tokens = len(prepared.input_ids)
        self.token, self.position = int(logits.argmax()), self.prompt_tokens

    def steps(self, count: int, step: Any) -> list[float]:
        """Run ``count`` steps with ``step`` (``None``: transformers'); seconds of each."""
        self.backend.lean_step = step
        seconds = []
        for _ in range(count):
            started = time.perf_counter()
            logits = self.runner.decode([self.token], [self.position])
            self.token, self.position = int(logits[0].argmax()), self.position + 1
            seconds.append(time.perf_counter() - started)
        return seconds

    def product_share(self, step: Any, count: int = 8) -> float:
        """Fraction of the profiled CPU time of ``count`` steps spent in weight products."""
        from torch.profiler import ProfilerActivity, profile

        self.steps(2, step)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            self.steps(count, step)
        events = prof.key_averages()
        total = sum(event.self_cpu_time_total for event in events)
        products = sum(e.self_cpu_time_total for e in events if e.key in PRODUCT_OPS)
        return products / total if total else 0.0


def measure_mode(checkpoint: Path, mode: str, *, steps: int, rounds: int, gbps: float) -> dict:
    """Lean and transformers' steps, interleaved, for one engine mode (in a fresh process)."""
    import torch

    from benchmarks.model_costs import model_costs
    from mississippi_tools.models.registry import load_backend

    backend = load_backend(checkpoint, device="cpu", **MODES[mode])
    if backend.lean_step is None:
        raise RuntimeError(f"{checkpoint.name} has no lean decoding step")
    decoding = _Decoding(backend)
    paths = {"lean": decoding.lean, "transformers": None}
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, step in paths.items():
            decoding.steps(2, step)  # settle after switching
            seconds = sum(decoding.steps(steps, step)) / steps
            best[name] = min(best.get(name, float("inf")), seconds)
    costs = model_costs(backend.config)
    compute_bytes = torch.finfo(backend.dtype).bits // 8
    if backend.quantization is not None:  # int8 decoder layers, lm_head in the compute dtype
        step_bytes = costs.decoder_weight_params + costs.lm_head_params * compute_bytes
    else:
        step_bytes = costs.decode_bytes_per_token(compute_bytes)
    bound = step_bytes / (gbps * 1e9)
    return {
        "mode": mode,
        "dtype": str(backend.dtype).removeprefix("torch."),
        "prompt_tokens": decoding.prompt_tokens,
        "step_ms": {name: 1e3 * seconds for name, seconds in best.items()},
        "tokens_per_s": {name: 1 / seconds for name, seconds in best.items()},
        "weight_bytes_per_step": step_bytes,
        "bound_ms": 1e3 * bound,
        "fraction_of_bound": {name: bound / seconds for name, seconds in best.items()},
        "product_share": {name: decoding.product_share(step) for name, step in paths.items()},
        "threads": torch.get_num_threads(),
    }


def measure_compile(checkpoint: Path, *, steps: int) -> dict[str, Any]:
    """The lean step through ``torch.compile`` against the same step eager (a fresh process)."""
    # Inductor keeps compiled code on disk between processes: a fresh cache is a first run's.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-inductor-")
    import torch

    from mississippi_tools.models.registry import load_backend

    backend = load_backend(checkpoint, device="cpu", **MODES["lossless"])
    decoding = _Decoding(backend)
    eager = decoding.lean
    decoding.steps(4, eager)
    eager_ms = 1e3 * min(sum(decoding.steps(8, eager)) / 8 for _ in range(3))
    compiled_fn = torch.compile(eager.__call__, dynamic=True)
    compiled = _CompiledStep(compiled_fn)
    seconds = decoding.steps(steps, compiled)
    first = seconds[0]
    # A step over twice the steady median is a recompilation (the cache grew, a new shape).
    steady = sorted(seconds[1:])[len(seconds[1:]) // 2]
    recompiles = [s for s in seconds[1:] if s > 2 * steady]
    saving = eager_ms / 1e3 - steady
    return {
        "eager_step_ms": eager_ms,
        "first_call_seconds": first,
        "recompilations": len(recompiles),
        "recompilation_seconds": sum(recompiles),
        "steady_step_ms": 1e3 * steady,
        "steps": steps,
        "break_even_tokens": (first + sum(recompiles)) / saving if saving > 0 else None,
    }


class _CompiledStep:
    """Calls a compiled ``LeanDecodeStep.__call__`` (the engine calls ``lean_step(...)``)."""

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled

    def __call__(self, *args: Any) -> Any:
        return self._compiled(*args)


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.quantization import machine

    if spec["task"] == "machine":
        return machine()
    checkpoint = Path(spec["checkpoint"])
    if spec["task"] == "compile":
        return measure_compile(checkpoint, steps=int(spec["steps"]))
    return measure_mode(
        checkpoint,
        spec["task"],
        steps=int(spec["steps"]),
        rounds=int(spec["rounds"]),
        gbps=float(spec["gbps"]),
    )


# -- parent side ---------------------------------------------------------------------------------


def _in_process(task: str, *, isa: str, **kwargs: Any) -> dict[str, Any]:
    return in_process("benchmarks.decode_step", task, isa=isa, **kwargs)


def run(
    *,
    quick: bool = False,
    steps: int = 16,
    rounds: int = 4,
    isa: str = "native",
    compile_steps: int = 0,
) -> dict[str, Any]:
    """The comparison; ``quick``: the tiny checkpoint (a smoke test)."""
    from benchmarks.limits import memory_bandwidth
    from mississippi_tools import testing

    started_load = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench-step-") as scratch:
        if quick:
            checkpoint = testing.build_tiny_checkpoint(Path(scratch) / "tiny")
        else:
            checkpoint = ROOT / "benchmarks" / ".cache" / "h2ovl-800m-random"
            if not (checkpoint / "model.safetensors").is_file():
                print(f"building a random-weight 800M checkpoint in {checkpoint} ...")
                testing.build_checkpoint(checkpoint, testing.H2OVL_800M_CONFIG, dtype="bfloat16")
        gbps = memory_bandwidth(0.25 if quick else 1.0)
        result: dict[str, Any] = {
            "isa": isa,
            "isa_environment": ISA_CAPS[isa],
            "machine": {**_in_process("machine", isa=isa), "memory_read_gbps": gbps},
            "checkpoint": checkpoint.name,
            "modes": {
                mode: _in_process(
                    mode, isa=isa, checkpoint=checkpoint, steps=steps, rounds=rounds, gbps=gbps
                )
                for mode in MODES
            },
        }
        if compile_steps:
            result["compile"] = _in_process(
                "compile", isa=isa, checkpoint=checkpoint, steps=compile_steps
            )
    result["load_average"] = {"start": started_load, "end": list(os.getloadavg())}
    return result


def markdown(result: dict[str, Any], command: str) -> str:
    """The summary: a table per mode, the bound, the product share, torch.compile."""
    m = result["machine"]
    lines = [
        "# The decoding step: lean against transformers'",
        "",
        f"`{command}`",
        "",
        f"CPU: {m['cpu']} ({', '.join(m['flags']) or 'no SIMD flags read'}; kernels "
        f"{m['torch_capability']}), {m['threads']} threads, torch {m['torch']}; memory read "
        f"{m['memory_read_gbps']:.1f} GB/s; checkpoint {result['checkpoint']}. Load average "
        f"{result['load_average']['start'][0]:.2f} at the start, "
        f"{result['load_average']['end'][0]:.2f} at the end.",
        "",
        "| mode | dtype | step: transformers | step: lean | lean / transformers | "
        "weight-streaming bound | fraction of bound (transformers, lean) | "
        "share in weight products (transformers, lean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in result["modes"].items():
        ms, fraction, share = r["step_ms"], r["fraction_of_bound"], r["product_share"]
        lines.append(
            f"| {mode} | {r['dtype']} | {ms['transformers']:.1f} ms | {ms['lean']:.1f} ms | "
            f"{ms['lean'] / ms['transformers']:.2f}x | {r['bound_ms']:.1f} ms "
            f"({r['weight_bytes_per_step'] / 2**20:.0f} MiB) | "
            f"{fraction['transformers']:.0%}, {fraction['lean']:.0%} | "
            f"{share['transformers']:.0%}, {share['lean']:.0%} |"
        )
    lossless, int8 = result["modes"]["lossless"], result["modes"]["int8"]
    lines += [
        "",
        f"Steps after a {lossless['prompt_tokens']}-token 1-tile prompt, one row; the two "
        "paths alternate in one process, fastest of the rounds. int8 decoding against the "
        f"lossless dtype, lean steps: {lossless['step_ms']['lean'] / int8['step_ms']['lean']:.2f}x"
        " tokens/s.",
    ]
    c = result.get("compile")
    if c:
        pays = (
            f"pays after {c['break_even_tokens']:.0f} tokens"
            if c["break_even_tokens"]
            else "never pays: the compiled step is not faster"
        )
        lines += [
            "",
            f"torch.compile of the lean step (dynamic shapes, {c['steps']} steps): first call "
            f"{c['first_call_seconds']:.0f} s, {c['recompilations']} recompilations as the "
            f"cache grew ({c['recompilation_seconds']:.0f} s), steady step "
            f"{c['steady_step_ms']:.1f} ms against {c['eager_step_ms']:.1f} ms eager: {pays}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Run the comparison; write ``results/decode-step[-avx2].{json,md}`` (not with --quick)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.decode_step",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="the tiny model only; writes nothing")
    parser.add_argument("--steps", type=int, default=None, help="steps per round (16; quick 4)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (4; quick 1)")
    parser.add_argument(
        "--isa", choices=sorted(ISA_CAPS), default="native", help="cap the kernels' instructions"
    )
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--compile-steps", type=int, default=48, help="steps compiled (48)")
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return None
    result = run(
        quick=args.quick,
        steps=args.steps or (4 if args.quick else 16),
        rounds=args.rounds or (1 if args.quick else 4),
        isa=args.isa,
        compile_steps=args.compile_steps if args.compile else 0,
    )
    command = " ".join(["python -m benchmarks.decode_step", *(argv or sys.argv[1:])])
    text = markdown(result, command)
    print(text)
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    if out is not None:
        stem = "decode-step" if args.isa == "native" else f"decode-step-{args.isa}"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(
            json.dumps({"command": command, **result}, indent=2) + "\n"
        )
        (out / f"{stem}.md").write_text(text)
    return result


if __name__ == "__main__":
    main()
