"""int8 against bfloat16 on this CPU: speed, memory, load time and accuracy, in one run.

Each mode loads the full-size 800M random-weight checkpoint in its own process (so peak RSS,
``VmHWM``, is that mode's own) and measures, through the backend stage by stage
(``benchmarks/stages.py``): a 1-tile OCR request with ``--new-tokens`` new tokens, a 6-tile
(+ thumbnail) page, decoding tokens/s and the load time, put against a plain read of the
checkpoint file from the page cache. The CPU, its flags and the int8 kernel engine are named.

Accuracy, int8 against float32 on the same weights, on the full-size model and the tiny test
checkpoint: per-layer SQNR on the inputs each layer sees during a 1-tile request, the cosine of
the prompt's logits and their top-5 overlap, and greedy agreement over the generated tokens.

Run: ``python -m benchmarks.quantization`` (writes ``results/quantization.{json,md}``) or
``python -m benchmarks.quantization --quick`` (the tiny model only, seconds; writes nothing).
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

#: The modes compared, each loaded in its own process: name -> load_backend keywords.
MODES: dict[str, dict[str, Any]] = {
    "bfloat16": {"dtype": "bfloat16"},
    "int8": {"quantization": "int8"},
}


# -- worker side ---------------------------------------------------------------------------------


def _peak_rss_gib() -> float:
    """``VmHWM`` of this process (the peak resident set), in GiB."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def measure_mode(checkpoint: Path, mode: str, *, new_tokens: int, gbps: float) -> dict[str, Any]:
    """Load ``checkpoint`` in ``mode`` and time the two requests (run in a fresh process)."""
    import torch

    from benchmarks import stages
    from benchmarks.model_costs import model_costs
    from mississippi_tools.models.h2ovl.backend import H2OVLBackend
    from mississippi_tools.models.registry import load_backend

    started = time.perf_counter()
    backend = load_backend(checkpoint, device="cpu", **MODES[mode])
    load_seconds = time.perf_counter() - started
    assert isinstance(backend, H2OVLBackend)
    loaded_rss = _peak_rss_gib()
    pages = {name: stages.page_png(size) for name, size in stages.PAGES.items()}
    stages.measure_request(backend, pages["1-tile"], new_tokens=2)  # warm-up
    requests: dict[str, Any] = {}
    for name, png in pages.items():
        measured = stages.measure_request(backend, png, new_tokens=new_tokens)
        measured["request_seconds"] = sum(measured["seconds"].values())
        requests[name] = measured
    costs = model_costs(backend.config)
    if mode == "int8":  # int8 decoder layers, float32 lm_head
        step_bytes = costs.decoder_weight_params * 1 + costs.lm_head_params * 4
    else:
        step_bytes = costs.decode_bytes_per_token(torch.finfo(backend.dtype).bits // 8)
    per_token = requests["1-tile"]["seconds"]["decode"] / new_tokens
    report = backend.quantization
    return {
        "mode": mode,
        "dtype": str(backend.dtype).removeprefix("torch."),
        "kernel_engine": report.engine if report else None,
        "int8_layers": report.layers if report else 0,
        "load_seconds": load_seconds,
        "rss_after_load_gib": loaded_rss,
        "requests": requests,
        "decode_tokens_per_s": requests["1-tile"]["decode_tokens_per_s"],
        "decode_weight_bytes_per_token": step_bytes,
        "decode_fraction_of_bound": step_bytes / (gbps * 1e9) / per_token,
        "peak_rss_gib": _peak_rss_gib(),
        "threads": torch.get_num_threads(),
    }


def measure_accuracy(checkpoint: Path, *, new_tokens: int) -> dict[str, Any]:
    """int8 against float32 on one 1-tile request (run in a fresh process)."""
    import torch

    from benchmarks import stages
    from mississippi_tools.engine.cache import TensorCache
    from mississippi_tools.engine.runner import ModelRunner
    from mississippi_tools.images import load_image
    from mississippi_tools.models.h2ovl.backend import H2OVLBackend
    from mississippi_tools.models.quantization import layer_sqnr
    from mississippi_tools.models.registry import load_backend

    reference = load_backend(checkpoint, device="cpu", dtype="float32")
    quantized = load_backend(checkpoint, device="cpu", quantization="int8")
    assert isinstance(reference, H2OVLBackend)
    assert isinstance(quantized, H2OVLBackend)
    png = stages.page_png((448, 448))
    prepared = reference.prepare("Read the text in the image.", [load_image(png)])
    pixels = prepared.images[0].render()
    ids = torch.tensor([prepared.input_ids])

    def full(backend: H2OVLBackend) -> torch.Tensor:
        with torch.inference_mode():
            out = backend.model(ids, pixels, image_token_id=backend.image_token_id)
        return out[0].float()

    sqnr = layer_sqnr(reference.model, quantized.model, lambda _m: full(reference))
    ref_logits, q_logits = full(reference), full(quantized)
    cosine = torch.nn.functional.cosine_similarity(ref_logits, q_logits, dim=-1)
    top5 = [
        len(set(a.tolist()) & set(b.tolist())) / 5
        for a, b in zip(ref_logits.topk(5).indices, q_logits.topk(5).indices, strict=True)
    ]

    def greedy(backend: H2OVLBackend) -> list[int]:
        runner = ModelRunner(backend, TensorCache(0))
        with torch.inference_mode():
            features = backend.model.extract_features(pixels)
        logits, cache = runner.prefill(prepared, [features])
        runner.join(cache)
        token, position, out = int(logits.argmax()), len(prepared.input_ids), []
        for _ in range(new_tokens):
            out.append(token)
            step = runner.decode([token], [position])
            token, position = int(step[0].argmax()), position + 1
        return out

    ref_tokens, q_tokens = greedy(reference), greedy(quantized)
    same = [a == b for a, b in zip(ref_tokens, q_tokens, strict=True)]
    by_part: dict[str, list[float]] = {}
    for name, value in sqnr.items():
        part = (
            "vision" if name.startswith("vision") else "projector" if "mlp1" in name else "decoder"
        )
        by_part.setdefault(part, []).append(value)
    worst = sorted(sqnr.items(), key=lambda item: item[1])[:5]
    return {
        "layers": len(sqnr),
        "sqnr_db": {
            part: {
                "min": min(values),
                "median": sorted(values)[len(values) // 2],
                "max": max(values),
            }
            for part, values in by_part.items()
        },
        "worst_layers_db": dict(worst),
        "logits_cosine": {"mean": float(cosine.mean()), "min": float(cosine.min())},
        "top5_overlap": sum(top5) / len(top5),
        "top1_agreement": float((ref_logits.argmax(-1) == q_logits.argmax(-1)).float().mean()),
        "greedy_tokens": new_tokens,
        "greedy_agreement": sum(same) / len(same),
        "greedy_identical_prefix": next((i for i, s in enumerate(same) if not s), len(same)),
    }


# -- parent side ---------------------------------------------------------------------------------


def _in_process(task: str, **kwargs: Any) -> dict[str, Any]:
    """Run ``task`` in a fresh Python process; its JSON result."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    spec = json.dumps(
        {"task": task, **{k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()}}
    )
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.quantization", "--worker", spec],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {task} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    checkpoint = Path(spec["checkpoint"])
    if spec["task"] == "accuracy":
        return measure_accuracy(checkpoint, new_tokens=int(spec["new_tokens"]))
    return measure_mode(
        checkpoint, spec["task"], new_tokens=int(spec["new_tokens"]), gbps=float(spec["gbps"])
    )


def file_read_seconds(checkpoint: Path) -> dict[str, float]:
    """Seconds to read the weight files into memory from the page cache (warmed by a first read)."""
    files = sorted(checkpoint.glob("*.safetensors"))
    size = sum(f.stat().st_size for f in files)
    buffer = bytearray(max(f.stat().st_size for f in files))
    best = float("inf")
    for _ in range(3):  # the first pass warms the page cache
        started = time.perf_counter()
        for path in files:
            with open(path, "rb", buffering=0) as handle:
                view = memoryview(buffer)
                while view:
                    read = handle.readinto(view)
                    if not read:
                        break
                    view = view[read:]
        best = min(best, time.perf_counter() - started)
    return {"seconds": best, "gib": size / 2**30}


def machine() -> dict[str, Any]:
    """The CPU, its flags, torch and the int8 engine chosen for it."""
    import torch

    from mississippi_tools.models.devices import cpu_has_native_bf16
    from mississippi_tools.models.quantization import choose_engine, cpu_features

    cpu = cpu_features()
    return {
        "cpu": cpu.model or platform.processor(),
        "flags": list(cpu.flags),
        "torch_capability": cpu.capability,
        "native_bfloat16": cpu_has_native_bf16(),
        "int8_engine": choose_engine(cpu),
        "quantized_engines": list(torch.backends.quantized.supported_engines),
        "torch": torch.__version__,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }


def run(
    *, quick: bool = False, new_tokens: int = 32, checkpoint: Path | None = None
) -> dict[str, Any]:
    """The whole comparison; ``quick``: the tiny checkpoint only (a smoke test)."""
    from benchmarks.limits import memory_bandwidth
    from mississippi_tools import testing

    # Other work on a shared machine skews timings: the load average says if there was any.
    started_load = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as scratch:
        tiny = testing.build_tiny_checkpoint(Path(scratch) / "tiny")
        if quick:
            full = tiny
        elif checkpoint is not None:
            full = checkpoint
        else:
            full = ROOT / "benchmarks" / ".cache" / "h2ovl-800m-random"
            if not (full / "model.safetensors").is_file():
                print(f"building a random-weight 800M checkpoint in {full} ...", file=sys.stderr)
                testing.build_checkpoint(full, testing.H2OVL_800M_CONFIG, dtype="bfloat16")
        gbps = memory_bandwidth(0.25 if quick else 1.0)
        result: dict[str, Any] = {
            "machine": {**machine(), "memory_read_gbps": gbps},
            "checkpoint": "tiny" if quick else full.name,
            "new_tokens": new_tokens,
            "file_read": file_read_seconds(full),
            "modes": {},
        }
        for mode in MODES:
            result["modes"][mode] = _in_process(
                mode, checkpoint=full, new_tokens=new_tokens, gbps=gbps
            )
        accuracy = {"tiny": _in_process("accuracy", checkpoint=tiny, new_tokens=new_tokens)}
        if not quick:
            accuracy["800m"] = _in_process("accuracy", checkpoint=full, new_tokens=new_tokens)
        result["accuracy"] = accuracy
    result["ratios"] = ratios(result)
    result["load_average"] = {"start": started_load, "end": list(os.getloadavg())}
    return result


def ratios(result: dict[str, Any]) -> dict[str, float]:
    """int8 against bfloat16, same run (< 1 is faster or smaller for times and memory)."""
    b, q = result["modes"]["bfloat16"], result["modes"]["int8"]
    read = result["file_read"]["seconds"]
    return {
        "request_1_tile": q["requests"]["1-tile"]["request_seconds"]
        / b["requests"]["1-tile"]["request_seconds"],
        "page_6_tile": q["requests"]["6-tile"]["request_seconds"]
        / b["requests"]["6-tile"]["request_seconds"],
        "decode_tokens_per_s": q["decode_tokens_per_s"] / b["decode_tokens_per_s"],
        "peak_rss": q["peak_rss_gib"] / b["peak_rss_gib"],
        "load_bfloat16_vs_file_read": b["load_seconds"] / read,
        "load_int8_vs_file_read": q["load_seconds"] / read,
    }


def markdown(result: dict[str, Any], command: str) -> str:
    """The results as the README's table and the accuracy report."""
    m, r = result["machine"], result["ratios"]
    b, q = result["modes"]["bfloat16"], result["modes"]["int8"]
    lines = [
        "# int8 against bfloat16 (benchmarks/quantization.py)",
        "",
        f"Command: `{command}`",
        "",
        f"CPU: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads); "
        f"flags: {', '.join(m['flags']) or 'none read'}; native bfloat16: {m['native_bfloat16']}; "
        f"int8 kernel engine: **{m['int8_engine']}** (available: {', '.join(m['quantized_engines'])}); "
        f"memory read {m['memory_read_gbps']:.1f} GB/s.",
        "",
        f"Checkpoint: {result['checkpoint']} (random weights), {result['new_tokens']} new tokens "
        "per request; each mode in its own process. Load average (1, 5, 15 min) at the start "
        f"{_loads(result['load_average']['start'])}, at the end "
        f"{_loads(result['load_average']['end'])}: above ~0.5 on this 2-core machine, other work "
        "shared the CPU and the timings are skewed.",
        "",
        "| | bfloat16 | int8 | int8 / bfloat16 |",
        "|---|---:|---:|---:|",
    ]

    def row(label: str, bv: float, qv: float, unit: str, ratio: float) -> None:
        lines.append(f"| {label} | {bv:.2f} {unit} | {qv:.2f} {unit} | {ratio:.2f}x |")

    row("1-tile OCR request", b["requests"]["1-tile"]["request_seconds"],
        q["requests"]["1-tile"]["request_seconds"], "s", r["request_1_tile"])  # fmt: skip
    row("6-tile page", b["requests"]["6-tile"]["request_seconds"],
        q["requests"]["6-tile"]["request_seconds"], "s", r["page_6_tile"])  # fmt: skip
    row("decoding", b["decode_tokens_per_s"], q["decode_tokens_per_s"], "tok/s",
        r["decode_tokens_per_s"])  # fmt: skip
    row("peak RSS (VmHWM)", b["peak_rss_gib"], q["peak_rss_gib"], "GiB", r["peak_rss"])
    row("load", b["load_seconds"], q["load_seconds"], "s", q["load_seconds"] / b["load_seconds"])
    read = result["file_read"]
    lines += [
        "",
        f"Plain read of the weight file from the page cache: {read['seconds']:.2f} s "
        f"({read['gib']:.2f} GiB); load / read: bfloat16 {r['load_bfloat16_vs_file_read']:.1f}x, "
        f"int8 {r['load_int8_vs_file_read']:.1f}x.",
        "",
        f"Decoding against the weight-streaming bound: bfloat16 "
        f"{b['decode_fraction_of_bound']:.0%}, int8 {q['decode_fraction_of_bound']:.0%} of its own "
        f"(int8 layers, float32 lm_head: {q['decode_weight_bytes_per_token'] / 2**20:.0f} MiB a "
        f"token against {b['decode_weight_bytes_per_token'] / 2**20:.0f} MiB).",
        "",
        "Stages (seconds): "
        + "; ".join(
            f"{mode} {page}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in data["requests"][page]["seconds"].items())
            for mode, data in result["modes"].items()
            for page in ("1-tile", "6-tile")
        ),
        "",
        "## Accuracy: int8 against float32, same weights",
        "",
        "| checkpoint | int8 layers | SQNR dB min / median (vision, projector, decoder) | "
        "logits cosine mean (min) | top-5 overlap | top-1 | greedy agreement |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for name, acc in result["accuracy"].items():
        sqnr = ", ".join(
            f"{part} {v['min']:.1f} / {v['median']:.1f}" for part, v in acc["sqnr_db"].items()
        )
        lines.append(
            f"| {name} | {acc['layers']} | {sqnr} | {acc['logits_cosine']['mean']:.4f} "
            f"({acc['logits_cosine']['min']:.4f}) | {acc['top5_overlap']:.2f} | "
            f"{acc['top1_agreement']:.2f} | {acc['greedy_agreement']:.2f} "
            f"(first {acc['greedy_identical_prefix']} of {acc['greedy_tokens']} identical) |"
        )
    lines += [
        "",
        "Random weights give honest timings (compute does not depend on values) but only a rough "
        "view of accuracy: a trained model's activations have other ranges and outliers.",
        "",
    ]
    return "\n".join(lines)


def _loads(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Run the comparison and write ``results/quantization.{json,md}`` (not with ``--quick``)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quantization",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="the tiny model only; writes nothing")
    parser.add_argument("--new-tokens", type=int, default=None, help="new tokens (32; quick 4)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="an 800M checkpoint dir")
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return None
    new_tokens = args.new_tokens or (4 if args.quick else 32)
    result = run(quick=args.quick, new_tokens=new_tokens, checkpoint=args.checkpoint)
    shown = [a if not os.path.isabs(a) else f".../{Path(a).name}" for a in (argv or sys.argv[1:])]
    command = " ".join(["python -m benchmarks.quantization", *shown])
    text = markdown(result, command)
    print(text)
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "quantization.json").write_text(
            json.dumps({"command": command, **result}, indent=2) + "\n"
        )
        (out / "quantization.md").write_text(text)
    return result


if __name__ == "__main__":
    main()
