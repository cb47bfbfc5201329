"""Florence-2 (base size, the Florence-2-DocVQA architecture) on this machine's CPU.

The model is built at its published size (DaViT 128..1024 wide, 1+1+9+1 blocks, 768-px images,
577 image positions; BART 6+6 layers, d_model 768, 51289-token head) with random weights in
Microsoft's layout, loaded through the registry like the real checkpoint, and asked one DocVQA
question through the engine; compute does not depend on the weights. Reported: load time, the
start of a request (vision tower + encoder + the decoder's two prefix positions), the time per
answer token, the memory of the weights, the same-run ratio of the two stages, and the machine's
load average (the benchmark machine is shared: absolute seconds scale with the load).

Run: ``python -m benchmarks.florence2 [--quick]`` (``--quick``: the tiny checkpoint, seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine
from mississippi_tools.images import load_image
from mississippi_tools.models.florence2.testing import (
    FLORENCE2_DOCVQA_CONFIG,
    PUBLISHED_PREPROCESSOR,
    build_checkpoint,
    build_tiny_checkpoint,
)
from mississippi_tools.models.registry import load_backend

RESULTS = Path(__file__).resolve().parent / "results"


def _page() -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (1240, 1754), "white")
    draw = ImageDraw.Draw(image)
    for row in range(40):
        draw.text(
            (80, 80 + 40 * row),
            f"Line {row}: invoice item {row * 7} total {row * 3}.00",
            fill="black",
        )
    return load_image(image)


def run(quick: bool, new_tokens: int, repeats: int) -> dict[str, Any]:
    """Build, load and time; the results as a dict."""
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "florence2"
        if quick:
            build_tiny_checkpoint(directory)
        else:
            build_checkpoint(
                directory, FLORENCE2_DOCVQA_CONFIG, preprocessor=PUBLISHED_PREPROCESSOR
            )
        started = time.perf_counter()
        backend = load_backend(directory, device="cpu", dtype="float32")
        load_seconds = time.perf_counter() - started
    params = sum(p.numel() for p in backend.model.parameters())  # type: ignore[attr-defined]
    page = _page()
    starts, per_token = [], []
    with LocalEngine(backend) as engine:
        for _ in range(repeats):
            request = GenerationRequest(
                "<DocVQA>What is the total of line 12?",
                images=[page],
                sampling=SamplingParams(max_new_tokens=new_tokens),
            )
            out = engine.generate(request)
            starts.append(out.timings["prefill"])
            per_token.append(out.timings["decode"] / max(1, len(out.token_ids)))
    start = min(starts)
    token = min(per_token)
    return {
        "model": "Florence-2 base architecture (random weights)" if not quick else "tiny",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "dtype": "float32",
        "parameters_millions": round(params / 1e6, 1),
        "weights_gib_float32": round(params * 4 / 2**30, 2),
        "weights_gib_bfloat16": round(params * 2 / 2**30, 2),
        "load_seconds": round(load_seconds, 2),
        "prompt_tokens": out.prompt_tokens,
        "start_seconds": round(start, 3),
        "seconds_per_answer_token": round(token, 4),
        "tokens_per_second": round(1 / token, 1),
        "start_over_token_ratio": round(start / token, 1),
        "ten_token_answer_seconds": round(start + 10 * token, 2),
        "repeats": repeats,
        "load_average_1min_at_end": round(os.getloadavg()[0], 1),
        "command": "python -m benchmarks.florence2" + (" --quick" if quick else ""),
    }


def main() -> None:
    """Run and write ``benchmarks/results/florence2[-quick].json``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = run(args.quick, args.new_tokens, args.repeats)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("florence2-quick.json" if args.quick else "florence2.json")
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
