"""VLM_WebSight_finetuned on this machine's CPU: vision, prefill, decode and memory, per layer.

The published model (SigLIP-so400m at 960 px, 27 layers; Mistral-7B, 32 layers) does not fit a
quick run on a 2-core CPU, so the model is built at FULL WIDTH with random weights and REDUCED
DEPTH (1 vision layer, 1 decoder layer, the full 3-block perceiver); each stage is timed as the
difference between depth 2 and depth 1, extrapolated to the published depth, and the memory is
counted from the published tensor shapes. The prompt is the published one (67 tokens); decode
runs ``new_tokens`` steps over a growing cache.

Run: ``python -m benchmarks.websight [--quick]`` (``--quick``: tiny sizes, seconds).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.config import LocalEngineConfig
from mississippi_tools.engine.local import LocalEngine
from mississippi_tools.images import load_image
from mississippi_tools.models.websight.backend import WebSightBackend
from mississippi_tools.models.websight.testing import (
    TINY_CONFIG,
    WEBSIGHT_CONFIG,
    build_checkpoint,
    published_tensor_shapes,
)

RESULTS = Path(__file__).resolve().parent / "results"


def _screenshot() -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (1280, 960), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 1280, 80), fill="navy")
    draw.rectangle((100, 200, 700, 400), fill="orange")
    return load_image(image)


def _measure(directory: Path, new_tokens: int) -> dict[str, float]:
    backend = WebSightBackend.from_directory(
        directory, device=torch.device("cpu"), dtype=torch.float32
    )
    image = _screenshot()
    prepared = backend.prepare("", [image])
    pixels = prepared.images[0].render()
    started = time.perf_counter()
    features = backend.encode_images([pixels])
    vision = time.perf_counter() - started
    ids = torch.tensor([prepared.input_ids])
    cache = backend.new_cache()
    started = time.perf_counter()
    embeds = backend.embed(ids, features[0])
    mask = torch.ones_like(ids)
    positions = torch.arange(ids.shape[1]).unsqueeze(0)
    backend.forward(embeds, mask, positions, cache)
    prefill = time.perf_counter() - started
    started = time.perf_counter()
    config = LocalEngineConfig(feature_cache_mb=0, prefix_cache_mb=0)
    with LocalEngine(backend, config) as engine:
        output = engine.generate(
            GenerationRequest(
                "", images=[image], sampling=SamplingParams(max_new_tokens=new_tokens)
            )
        )
    total = time.perf_counter() - started
    decode = output.timings.get("decode", total - vision - prefill)
    return {"vision": vision, "prefill": prefill, "decode": decode, "tokens": len(output.token_ids)}


def run(*, quick: bool = False, new_tokens: int = 16) -> dict[str, Any]:
    """Measure at depth 1 and 2, extrapolate per layer to the published depth."""
    base = copy.deepcopy(TINY_CONFIG if quick else WEBSIGHT_CONFIG)
    depths = {"vision": base["vision_config"]["num_hidden_layers"], "decoder": 0}
    depths["decoder"] = base["num_hidden_layers"]
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for depth in (1, 2):
            config = copy.deepcopy(base)
            config["num_hidden_layers"] = depth
            config["vision_config"]["num_hidden_layers"] = depth
            directory = build_checkpoint(
                Path(scratch) / f"d{depth}", config, dtype="float32", init_std=0.02
            )
            runs[depth] = _measure(directory, new_tokens)
    per_vision_layer = runs[2]["vision"] - runs[1]["vision"]
    per_prefill_layer = runs[2]["prefill"] - runs[1]["prefill"]
    per_decode_layer = runs[2]["decode"] - runs[1]["decode"]
    vision = runs[1]["vision"] + per_vision_layer * (depths["vision"] - 1)
    prefill = runs[1]["prefill"] + per_prefill_layer * (depths["decoder"] - 1)
    decode = runs[1]["decode"] + per_decode_layer * (depths["decoder"] - 1)
    params = sum(math.prod(s) for s in published_tensor_shapes(base).values())
    return {
        "model": "HuggingFaceM4/VLM_WebSight_finetuned (random weights, "
        + ("tiny" if quick else "full width")
        + ")",
        "device": "cpu",
        "dtype": "float32",
        "threads": torch.get_num_threads(),
        "prompt_tokens": 67,
        "new_tokens": new_tokens,
        "measured": runs,
        "extrapolated_seconds": {"vision": vision, "prefill": prefill, "decode": decode},
        "decode_tokens_per_second": new_tokens / decode if decode > 0 else None,
        "parameters": params,
        "weights_gib": {"float32": params * 4 / 2**30, "bfloat16": params * 2 / 2**30},
    }


def _markdown(result: dict[str, Any]) -> str:
    e = result["extrapolated_seconds"]
    w = result["weights_gib"]
    tps = result["decode_tokens_per_second"]
    return "\n".join(
        [
            f"# {result['model']}",
            "",
            f"CPU, {result['threads']} threads, {result['dtype']}; measured at depth 1 and 2, "
            "extrapolated per layer to 27 vision + 32 decoder layers.",
            "",
            "| stage | seconds |",
            "| --- | --- |",
            f"| vision (SigLIP 960 px + projection + perceiver) | {e['vision']:.1f} |",
            f"| prefill (67 tokens) | {e['prefill']:.2f} |",
            f"| decode ({result['new_tokens']} tokens) | {e['decode']:.1f} |",
            f"| decode tokens/s | {tps:.3f} |" if tps else "| decode tokens/s | n/a |",
            "",
            f"Parameters {result['parameters'] / 1e9:.2f} B: weights {w['bfloat16']:.1f} GiB "
            f"in bfloat16, {w['float32']:.1f} GiB in float32.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Run the stage and write ``results/websight.{json,md}`` (not with ``--quick``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    result = run(quick=args.quick, new_tokens=args.new_tokens)
    print(json.dumps(result["extrapolated_seconds"], indent=2))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "websight.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "websight.md").write_text(_markdown(result))


if __name__ == "__main__":
    main()
