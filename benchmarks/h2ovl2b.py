"""H2OVL-Mississippi-2B at full size on this machine's CPU: vision, prefill, decode and memory.

    python -m benchmarks.h2ovl2b              # the 2B and, as the same-run reference, the 800M
    python -m benchmarks.h2ovl2b --float32    # also both in float32 (about 9 GB more RSS)
    python -m benchmarks.h2ovl2b --quick      # the tiny-2B and tiny checkpoints, seconds

The published 2B configuration (:data:`~mississippi_tools.testing.H2OVL_2B_CONFIG`: InternViT-300M,
H2O-Danube2-1.8B with a Mistral decoder, MSAC on) is built once with random weights in bfloat16
(``benchmarks/.cache/h2ovl-2b-random``, 4.3 GB; compute does not depend on the weights) and
loaded through the registry like the real checkpoint. The 800M (the default model, the suite's
``h2ovl-800m-random``) runs in the same invocation, so the 2B's cost is read as a same-run ratio
rather than against numbers from another day's load.

Two requests per model: a 1-tile image (``max_tiles=1``) and an 800x1000 page in each model's own
tiling (the 2B's MSAC: 13 tiles; the 800M: 6 tiles and the thumbnail). Each (model, dtype,
request) runs in its own process, so its peak RSS is its own; after a warm-up, the request is
timed ``repeats`` times stage by stage with :func:`benchmarks.stages.measure_request`; the
workers run in ``rounds`` rounds that alternate the models, and each stage keeps its fastest
time (the machine is shared: the fastest is the least disturbed). Each row also records the
share of its threads' time the worker actually got (``cpu_share``), so a disturbed row shows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
#: Full-size checkpoint directory (under ``CACHE``) and config name of each model.
MODELS: dict[str, tuple[str, str]] = {
    "2b": ("h2ovl-2b-random", "H2OVL_2B_CONFIG"),
    "800m": ("h2ovl-800m-random", "H2OVL_800M_CONFIG"),
}
#: The two requests: a one-tile image, and a page in the model's own tiling.
REQUESTS: dict[str, dict[str, Any]] = {
    "1-tile": {"size": (448, 448), "options": {"max_tiles": 1}},
    "page": {"size": (800, 1000), "options": {}},
}
#: Deadline of one worker process (load, warm-up and the timed repeats).
WORKER_TIMEOUT_S = 1800


def _cpu() -> str:
    """The CPU's model name and its bfloat16 arithmetic, if any (timings depend on both)."""
    from mississippi_tools.models.devices import cpu_features

    cpu = cpu_features()
    name = cpu.model or platform.processor() or platform.machine()
    bf16 = [flag for flag in ("amx_bf16", "avx512_bf16") if cpu.has(flag)]
    return f"{name}, {os.cpu_count()} cores, bfloat16 arithmetic: {', '.join(bf16) or 'none'}"


def _checkpoint(model: str, quick: bool, scratch: Path) -> Path:
    from mississippi_tools import testing

    if quick:
        preset = {"2b": "2b", "800m": "800m"}[model]
        return testing.build_tiny_checkpoint(scratch / f"tiny-{model}", preset=preset)
    name, config = MODELS[model]
    target = CACHE / name
    if not (target / "model.safetensors").is_file():
        print(f"building a full-size random-weight checkpoint in {target} ...", file=sys.stderr)
        testing.build_checkpoint(target, getattr(testing, config), dtype="bfloat16")
    return target


def measure(
    directory: Path, request: str, *, dtype: str, new_tokens: int, repeats: int
) -> dict[str, Any]:
    """Load ``directory`` in ``dtype`` and time one request stage by stage (in this process)."""
    import torch

    from benchmarks import stages
    from mississippi_tools.models.registry import load_backend

    backend = load_backend(directory, device="cpu", dtype=dtype)
    spec = REQUESTS[request]
    png = stages.page_png(spec["size"])
    load_before = os.getloadavg()[0]
    # Warm-up: one tile touches every weight once (and pages the checkpoint in).
    stages.measure_request(backend, png, new_tokens=2, options={"max_tiles": 1})
    cpu, wall = time.process_time(), time.perf_counter()
    runs = [
        stages.measure_request(backend, png, new_tokens=new_tokens, options=spec["options"])
        for _ in range(repeats)
    ]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    best = {stage: min(run["seconds"][stage] for run in runs) for stage in runs[0]["seconds"]}
    return {
        "image": f"{spec['size'][0]}x{spec['size'][1]}",
        "tiles": runs[0]["tiles"],
        "prompt_tokens": runs[0]["prompt_tokens"],
        "vision_seconds": best["vision"] + best["projector"],
        "prefill_seconds": best["prefill"],
        "decode_seconds": best["decode"],
        "decode_tokens_per_s": new_tokens / best["decode"],
        "decode_tokens_per_s_each_run": [new_tokens / run["seconds"]["decode"] for run in runs],
        "peak_rss_mb": stages.peak_rss_mb(),
        "parameters": sum(p.numel() for p in backend.model.parameters()),
        "threads": torch.get_num_threads(),
        "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        # The share of its threads' time the worker got: well under 1, other work held the cores.
        "cpu_share": cpu / (wall * torch.get_num_threads()),
    }


def _in_subprocess(
    directory: Path, request: str, *, dtype: str, new_tokens: int, repeats: int
) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [
        *("--worker", str(directory), "--request", request, "--dtype", dtype),
        *("--new-tokens", str(new_tokens), "--repeats", str(repeats)),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.h2ovl2b", *argv],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=WORKER_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({request}, {dtype}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _ratios(runs: dict[str, dict[str, Any]], dtype: str) -> dict[str, dict[str, float]]:
    """The 2B over the 800M, request by request, in one dtype (same run, same load)."""
    two_b, ref = runs[f"2b {dtype}"], runs[f"800m {dtype}"]
    return {
        request: {
            "vision": two_b[request]["vision_seconds"] / ref[request]["vision_seconds"],
            "prefill": two_b[request]["prefill_seconds"] / ref[request]["prefill_seconds"],
            "decode_seconds_per_token": two_b[request]["decode_seconds"]
            / ref[request]["decode_seconds"],
            "peak_rss": two_b[request]["peak_rss_mb"] / ref[request]["peak_rss_mb"],
        }
        for request in REQUESTS
    }


def _merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the same worker run in several rounds: each stage's fastest, all the rest."""
    first = rounds[0]
    decode = min(m["decode_seconds"] for m in rounds)
    return {
        **first,
        "vision_seconds": min(m["vision_seconds"] for m in rounds),
        "prefill_seconds": min(m["prefill_seconds"] for m in rounds),
        "decode_seconds": decode,
        "decode_tokens_per_s": first["decode_tokens_per_s"] * first["decode_seconds"] / decode,
        "decode_tokens_per_s_each_run": [
            x for m in rounds for x in m["decode_tokens_per_s_each_run"]
        ],
        "peak_rss_mb": max(m["peak_rss_mb"] for m in rounds),
        "load_average_1min": [x for m in rounds for x in m["load_average_1min"]],
        "cpu_share": [m["cpu_share"] for m in rounds],
    }


def run(
    *,
    quick: bool = False,
    new_tokens: int = 16,
    repeats: int = 2,
    rounds: int = 2,
    float32: bool = False,
) -> dict[str, Any]:
    """Build (or reuse) the checkpoints and measure each (model, dtype, request) in its own process.

    The workers run in ``rounds`` interleaved rounds (2B, 800M, 2B, 800M ...), so that a burst of
    other work on the machine falls on both models rather than on one row.
    """
    import torch

    dtypes = ["bfloat16", "float32"] if float32 else ["bfloat16"]
    rows = [(model, dtype, request) for model in MODELS for dtype in dtypes for request in REQUESTS]
    measured: dict[tuple[str, str, str], list[dict[str, Any]]] = {row: [] for row in rows}
    with tempfile.TemporaryDirectory(prefix="bench-2b-") as scratch:
        directories = {model: _checkpoint(model, quick, Path(scratch)) for model in MODELS}
        for _ in range(rounds):
            for model, dtype, request in rows:
                measured[model, dtype, request].append(
                    _in_subprocess(
                        directories[model],
                        request,
                        dtype=dtype,
                        new_tokens=new_tokens,
                        repeats=repeats,
                    )
                )
    runs: dict[str, dict[str, Any]] = {}
    for (model, dtype, request), results in measured.items():
        runs.setdefault(f"{model} {dtype}", {})[request] = _merge(results)
    parameters = {model: runs[f"{model} bfloat16"]["1-tile"]["parameters"] for model in MODELS}
    command = "python -m benchmarks.h2ovl2b" + " --float32" * float32 + " --quick" * quick
    return {
        "model": "h2oai/h2ovl-mississippi-2b (random weights, "
        + ("tiny-2b" if quick else "full size")
        + "), against the 800M in the same run",
        "machine": _cpu(),
        "torch": torch.__version__,
        "dtypes": dtypes,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "rounds": rounds,
        "parameters": parameters,
        "weights_gb_bfloat16": {model: n * 2 / 1e9 for model, n in parameters.items()},
        "runs": runs,
        "ratio_2b_over_800m": {dtype: _ratios(runs, dtype) for dtype in dtypes},
        "load_average_1min_at_end": round(os.getloadavg()[0], 1),
        "command": command,
    }


def markdown(result: dict[str, Any]) -> str:
    """The summary tables of a run."""
    rows = [
        f"| {key} | {request} ({m['image']}) | {m['tiles']} | {m['prompt_tokens']} | "
        f"{m['vision_seconds']:.2f} | {m['prefill_seconds']:.2f} | "
        f"{m['decode_tokens_per_s']:.2f} | {m['peak_rss_mb']:.0f} | "
        f"{min(m['load_average_1min'])} to {max(m['load_average_1min'])} | "
        f"{' / '.join(f'{x:.2f}' for x in m['cpu_share'])} |"
        for key, requests in result["runs"].items()
        for request, m in requests.items()
    ]
    ratio_rows = [
        f"| {dtype} | {request} | {r['vision']:.2f} | {r['prefill']:.2f} | "
        f"{r['decode_seconds_per_token']:.2f} | {r['peak_rss']:.2f} |"
        for dtype, by_request in result["ratio_2b_over_800m"].items()
        for request, r in by_request.items()
    ]
    params = result["parameters"]
    return "\n".join(
        [
            f"# {result['model']}",
            "",
            f"Command: `{result['command']}`",
            "",
            f"CPU ({result['machine']}), torch {result['torch']}. Parameters: 2B "
            f"{params['2b'] / 1e9:.3f} B ({result['weights_gb_bfloat16']['2b']:.2f} GB in "
            f"bfloat16), 800M {params['800m'] / 1e9:.3f} B. Decode: {result['new_tokens']} new "
            f"tokens at batch 1. Each row ran in its own process (its own peak RSS); each stage "
            f"is the fastest of {result['repeats']} timed runs after a warm-up, in each of "
            f"{result['rounds']} rounds that alternate the models. CPU share: the fraction of "
            "its threads' time each worker got, per round (well under 1: other work held the "
            "cores). The machine is "
            f"shared (load average {result['load_average_1min_at_end']} at the end): read the "
            "ratios, which share the run's load, before the seconds.",
            "",
            "| model dtype | request | tiles | prompt tokens | vision + projector s | prefill s "
            "| decode tokens/s | peak RSS MB | load average | CPU share |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            "The 2B over the 800M (same run; the page is in each model's own tiling, so its "
            "ratios include the 2B's extra MSAC tiles):",
            "",
            "| dtype | request | vision | prefill | decode s/token | peak RSS |",
            "| --- | --- | --- | --- | --- | --- |",
            *ratio_rows,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Run and write ``results/h2ovl2b.{json,md}`` (not with ``--quick``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--float32", action="store_true", help="Also run both in float32.")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="Timed runs per worker.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds of workers.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--request", choices=list(REQUESTS), help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="bfloat16", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        measured = measure(
            Path(args.worker),
            args.request,
            dtype=args.dtype,
            new_tokens=args.new_tokens,
            repeats=args.repeats,
        )
        print(json.dumps(measured))
        return
    result = run(
        quick=args.quick,
        new_tokens=args.new_tokens,
        repeats=args.repeats,
        rounds=args.rounds,
        float32=args.float32,
    )
    print(markdown(result))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "h2ovl2b.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "h2ovl2b.md").write_text(markdown(result))


if __name__ == "__main__":
    main()
