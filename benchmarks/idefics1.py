"""IDEFICS-9B on this machine's CPU: vision, prefill, decode and memory, extrapolated per layer.

The published idefics-9b-instruct (CLIP ViT-H/14, 32 layers; a 6-block perceiver; LLaMA-7B, 32
layers, a gated cross-attention block every 4) does not fit a quick run on a 2-core CPU, so it
is built at FULL WIDTH with random weights (the full perceiver, vocabulary and image size) and
REDUCED DEPTH, three times:

* A: 1 decoder layer, 1 cross-attention block, 1 vision layer;
* B: 2 decoder layers, 1 cross-attention block (interval 2), 2 vision layers;
* C: 2 decoder layers, 2 cross-attention blocks (interval 1), 2 vision layers.

B - A is one decoder layer (and one vision layer), C - B one cross-attention block; the stages
are extrapolated to 32 decoder layers, 8 blocks and 32 vision layers. Requests go through the
engine (``LocalEngine``, the generate kind) with an instruct prompt and one 640 x 480 image;
decode runs ``new_tokens`` steps. Memory is counted from the config
(:func:`~mississippi_tools.models.idefics1.configuration.parameter_count`).

Run: ``python -m benchmarks.idefics1 [--quick]`` (``--quick``: tiny sizes, seconds; writes
nothing).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine
from mississippi_tools.images import load_image
from mississippi_tools.models.idefics1.backend import Idefics1Backend
from mississippi_tools.models.idefics1.configuration import Idefics1Config, parameter_count
from mississippi_tools.models.idefics1.testing import (
    IDEFICS_9B_CONFIG,
    TINY_CONFIG,
    build_checkpoint,
)

RESULTS = Path(__file__).resolve().parent / "results"
QUESTION = "What is in this image? Describe it in detail."

#: (decoder layers, cross-attention interval, vision layers) of the three measured builds.
BUILDS = {"A": (1, 1, 1), "B": (2, 2, 2), "C": (2, 1, 2)}


def _image() -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (640, 480), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 640, 60), fill="navy")
    draw.ellipse((200, 150, 440, 390), fill="orange")
    return load_image(image)


def _measure(directory: Path, new_tokens: int) -> dict[str, float]:
    backend = Idefics1Backend.from_directory(
        directory, device=torch.device("cpu"), dtype=torch.float32
    )
    image = _image()
    prepared = backend.prepare(QUESTION, [image])
    started = time.perf_counter()
    backend.image_features(prepared.images)
    vision = time.perf_counter() - started
    started = time.perf_counter()
    backend.start(prepared)  # features now cached: the prompt alone
    prefill = time.perf_counter() - started
    backend.clear_feature_cache()  # the engine run below pays for the vision tower again
    request = GenerationRequest(
        QUESTION,
        images=[image],
        sampling=SamplingParams(max_new_tokens=new_tokens, ignore_eos=True),
    )
    with LocalEngine(backend) as engine:
        output = engine.generate(request)
    return {
        "vision": vision,
        "prefill": prefill,
        "decode": output.timings["decode"],
        "engine_prefill": output.timings["prefill"],
        "tokens": len(output.token_ids),
        "prompt_tokens": output.prompt_tokens,
    }


def run(*, quick: bool = False, new_tokens: int = 16) -> dict[str, Any]:
    """Measure builds A, B and C; extrapolate to the published depth."""
    base = copy.deepcopy(TINY_CONFIG if quick else IDEFICS_9B_CONFIG)
    published = Idefics1Config.from_dict(copy.deepcopy(IDEFICS_9B_CONFIG))
    runs: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-idefics1-") as scratch:
        for name, (layers, interval, vision_layers) in BUILDS.items():
            config = copy.deepcopy(base)
            config["num_hidden_layers"] = layers
            config["cross_layer_interval"] = interval
            config["vision_config"]["num_hidden_layers"] = vision_layers
            directory = build_checkpoint(Path(scratch) / name, config, init_std=0.02)
            runs[name] = _measure(directory, new_tokens)
            for path in directory.glob("*.safetensors"):
                path.unlink()  # keep at most one full-width build on disk
    a, b, c = runs["A"], runs["B"], runs["C"]
    layers = published.num_layers
    blocks = layers // published.cross_layer_interval
    vision_layers = published.vision.num_hidden_layers
    per_vision = b["vision"] - a["vision"]
    extrapolated = {"vision": a["vision"] + per_vision * (vision_layers - 1)}
    for stage in ("prefill", "decode"):
        per_layer = b[stage] - a[stage]
        per_block = c[stage] - b[stage]
        extrapolated[stage] = a[stage] + per_layer * (layers - 1) + per_block * (blocks - 1)
    counts = parameter_count(published)
    params = sum(counts.values())
    decode = extrapolated["decode"]
    return {
        "model": "HuggingFaceM4/idefics-9b-instruct (random weights, "
        + ("tiny" if quick else "full width")
        + ")",
        "device": "cpu",
        "dtype": "float32",
        "threads": torch.get_num_threads(),
        "prompt_tokens": a["prompt_tokens"],
        "new_tokens": new_tokens,
        "measured": runs,
        "extrapolated_seconds": extrapolated,
        "decode_tokens_per_second": new_tokens / decode if decode > 0 else None,
        "parameters": params,
        "parameters_by_part": counts,
        "weights_gib": {"float32": params * 4 / 2**30, "bfloat16": params * 2 / 2**30},
    }


def _markdown(result: dict[str, Any]) -> str:
    e = result["extrapolated_seconds"]
    w = result["weights_gib"]
    tps = result["decode_tokens_per_second"]
    parts = ", ".join(f"{k} {v / 1e9:.3f} B" for k, v in result["parameters_by_part"].items())
    return "\n".join(
        [
            f"# {result['model']}",
            "",
            f"CPU, {result['threads']} threads, {result['dtype']}; builds of 1-2 decoder layers, "
            "1-2 cross-attention blocks and 1-2 vision layers at full width, extrapolated per "
            "layer to 32 decoder layers, 8 cross-attention blocks and 32 vision layers.",
            "",
            "| stage | seconds |",
            "| --- | --- |",
            f"| vision (CLIP ViT-H/14 at 224 px + perceiver, 1 image) | {e['vision']:.2f} |",
            f"| prefill ({result['prompt_tokens']} tokens) | {e['prefill']:.2f} |",
            f"| decode ({result['new_tokens']} tokens) | {e['decode']:.1f} |",
            f"| decode tokens/s | {tps:.3f} |" if tps else "| decode tokens/s | n/a |",
            "",
            f"Parameters {result['parameters'] / 1e9:.2f} B ({parts}): weights "
            f"{w['bfloat16']:.1f} GiB in bfloat16, {w['float32']:.1f} GiB in float32.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Run the stage and write ``results/idefics1.{json,md}`` (not with ``--quick``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    result = run(quick=args.quick, new_tokens=args.new_tokens)
    print(json.dumps(result["extrapolated_seconds"], indent=2))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "idefics1.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "idefics1.md").write_text(_markdown(result))


if __name__ == "__main__":
    main()
