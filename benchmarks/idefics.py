"""Idefics2 / Idefics3 stage: vision, prefill, decode and memory at full width, reduced depth.

    python -m benchmarks.idefics            # both families, full width, 2 decoder/vision layers
    python -m benchmarks.idefics --quick    # tiny checkpoints, seconds: checks the stage runs

The 8B models do not fit this machine's time budget at full depth, so each family is built at
full width (published hidden sizes, vocabulary, image sizes) with 2 decoder and 2 vision layers
(the perceiver keeps its 3), random weights, and measured through the engine's own calls; one
decoder layer and one vision layer are then timed alone and the full depth is extrapolated per
layer (32 decoder layers, 27 vision layers). Each family runs in a subprocess so its peak RSS is
its own; a second subprocess loads float32 files into bfloat16 and reports the peak while
loading (one float32 tensor at a time on top of the bfloat16 weights).
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.stages import peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FULL_TEXT_LAYERS = 32
FULL_VISION_LAYERS = 27
MEASURED_LAYERS = 2


def _configs(family: str, quick: bool) -> tuple[dict[str, Any], Any, Any]:
    if family == "idefics2":
        from mississippi_tools.models.idefics2 import testing
    else:
        from mississippi_tools.models.idefics3 import testing as testing  # type: ignore[no-redef]
    full = testing.IDEFICS2_8B_CONFIG if family == "idefics2" else testing.IDEFICS3_8B_CONFIG
    config = copy.deepcopy(testing.TINY_CONFIG if quick else full)
    if not quick:
        config["text_config"]["num_hidden_layers"] = MEASURED_LAYERS
        config["vision_config"]["num_hidden_layers"] = MEASURED_LAYERS
    return config, full, testing


def _timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def measure(family: str, directory: Path, *, new_tokens: int, quick: bool) -> dict[str, Any]:
    """One family's stage timings (runs in the worker subprocess)."""
    import numpy as np
    import torch
    from PIL import Image

    from mississippi_tools.images import load_image
    from mississippi_tools.models.registry import load_backend

    torch.set_grad_enabled(False)
    backend, load_seconds = _timed(lambda: load_backend(directory, device="cpu", dtype="float32"))
    rng = np.random.RandomState(0)
    page = Image.fromarray(rng.randint(0, 256, (740, 980, 3), dtype=np.uint8))
    image = load_image(page)
    options = {"do_image_splitting": True}
    prepared = backend.prepare("Read the text in the image.", [image], options=options)
    rendered, render_s = _timed(lambda: [i.render() for i in prepared.images])
    features, vision_s = _timed(lambda: backend.encode_images(rendered))
    ids = torch.tensor([prepared.input_ids])
    cache = backend.new_cache()
    mask = torch.ones_like(ids)
    logits, prefill_s = _timed(
        lambda: backend.forward(
            backend.embed(ids, torch.cat(features)), mask, torch.arange(ids.shape[1])[None], cache
        )
    )
    token = int(logits[0].argmax())
    cache.attention_mask = mask
    position = ids.shape[1]
    started = time.perf_counter()
    for _ in range(new_tokens):
        step_ids = torch.tensor([[token]])
        cache.attention_mask = torch.cat(
            [cache.attention_mask, torch.ones((1, 1), dtype=torch.long)], 1
        )
        out = backend.forward(
            backend.embed(step_ids, None), cache.attention_mask, torch.tensor([[position]]), cache
        )
        token = int(out[0].argmax())
        position += 1
    decode_s = time.perf_counter() - started
    # One layer alone, for the per-layer extrapolation.
    text = backend.model.model.text_model
    hidden = backend.embed(ids, torch.cat(features))
    positions = torch.arange(ids.shape[1])[None]
    rotary = text.rotary_emb(hidden, positions)
    layer = text.layers[0]
    _, layer_prefill_s = _timed(
        lambda: layer(hidden, position_embeddings=rotary, attention_mask=None)
    )
    pixels = torch.stack([rendered[0][-1]])
    vision = backend.model.model.vision_model
    embedded = vision.embeddings(
        pixel_values=pixels,
        patch_attention_mask=torch.ones(
            (1, pixels.shape[2] // 14, pixels.shape[3] // 14), dtype=torch.bool
        ),
    )
    _, vlayer_s = _timed(lambda: vision.encoder.layers[0](embedded, attention_mask=None))
    pieces = prepared.images[0].num_tiles
    return {
        "family": family,
        "load_seconds": load_seconds,
        "pieces": pieces,
        "prompt_tokens": len(prepared.input_ids),
        "render_seconds": render_s,
        "vision_seconds": vision_s,
        "prefill_seconds": prefill_s,
        "prefill_tokens_per_s": len(prepared.input_ids) / prefill_s,
        "decode_tokens_per_s": new_tokens / decode_s,
        "decode_ms_per_token": 1000 * decode_s / new_tokens,
        "text_layer_prefill_seconds": layer_prefill_s,
        "vision_layer_seconds_per_piece": vlayer_s,
        "peak_rss_mb": peak_rss_mb(),
        "quick": quick,
    }


def measure_loading(directory: Path) -> dict[str, Any]:
    """Peak RSS while loading float32 files into bfloat16 (worker subprocess)."""
    import torch

    from mississippi_tools.models.registry import load_backend

    before = peak_rss_mb()
    backend, seconds = _timed(lambda: load_backend(directory, device="cpu", dtype="bfloat16"))
    weights = sum(p.numel() * p.element_size() for p in backend.model.parameters()) / 1024**2
    largest = max(p.numel() for p in backend.model.parameters()) * 4 / 1024**2
    del torch
    return {
        "load_seconds": seconds,
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "bfloat16_weights_mb": weights,
        "largest_float32_tensor_mb": largest,
    }


def _worker(args: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.idefics", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"idefics benchmark worker failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _extrapolate(run: dict[str, Any], full: dict[str, Any], quick: bool) -> dict[str, Any]:
    if quick:
        return {}
    extra_text = FULL_TEXT_LAYERS - MEASURED_LAYERS
    extra_vision = FULL_VISION_LAYERS - MEASURED_LAYERS
    prefill = run["prefill_seconds"] + extra_text * run["text_layer_prefill_seconds"]
    vision = (
        run["vision_seconds"] + extra_vision * run["vision_layer_seconds_per_piece"] * run["pieces"]
    )
    # Decoding is bound by reading the weights: scale by the decoder's bytes per token.
    text = full["text_config"]
    hidden, inter, vocab = text["hidden_size"], text["intermediate_size"], text["vocab_size"]
    kv = hidden * text["num_key_value_heads"] // text["num_attention_heads"]
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter
    measured = MEASURED_LAYERS * per_layer + vocab * hidden
    full_params = FULL_TEXT_LAYERS * per_layer + vocab * hidden
    decode_ms = run["decode_ms_per_token"] * full_params / measured
    return {
        "vision_seconds": vision,
        "prefill_seconds": prefill,
        "prefill_tokens_per_s": run["prompt_tokens"] / prefill,
        "decode_ms_per_token": decode_ms,
        "decode_tokens_per_s": 1000 / decode_ms,
        "float32_weights_gb": _param_count(full) * 4 / 1024**3,
        "bfloat16_weights_gb": _param_count(full) * 2 / 1024**3,
    }


def _param_count(config: dict[str, Any]) -> int:
    import torch
    import transformers

    from mississippi_tools.models.idefics2.configuration import Idefics2Config
    from mississippi_tools.models.idefics3.configuration import Idefics3Config

    parsed_cls = Idefics3Config if config["model_type"] == "idefics3" else Idefics2Config
    parsed = parsed_cls.from_dict(copy.deepcopy(config))
    native = getattr(
        transformers,
        "Idefics3ForConditionalGeneration"
        if config["model_type"] == "idefics3"
        else "Idefics2ForConditionalGeneration",
    )
    with torch.device("meta"):
        model = native(parsed.native())
    return sum(p.numel() for p in model.parameters())


def run(
    *,
    quick: bool = False,
    new_tokens: int = 8,
    out: Path = RESULTS,
    families: tuple[str, ...] = ("idefics2", "idefics3"),
) -> dict[str, Any]:
    """Build, measure and write ``benchmarks/results/idefics.{json,md}``."""
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": quick,
        "new_tokens": new_tokens,
        "families": {},
    }
    for family in families:
        config, full, testing = _configs(family, quick)
        with tempfile.TemporaryDirectory(prefix=f"bench-{family}-") as tmp:
            directory = testing.build_checkpoint(
                Path(tmp) / family, config, dtype="float32", init_std=0.02
            )
            print(f"measuring {family} ...", file=sys.stderr)
            measured = _worker(
                ["--worker", family, str(directory), str(new_tokens), "1" if quick else "0"]
            )
            loading = _worker(["--loader", str(directory)])
        results["families"][family] = {
            "measured": measured,
            "full_depth_estimate": _extrapolate(measured, full, quick),
            "loading_float32_into_bfloat16": loading,
        }
    name = "idefics-quick" if quick else "idefics"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(results))
    print(markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        f"# Idefics2 / Idefics3 stage ({results['date']})",
        "",
        "Full width, random weights, float32 on this CPU; measured at "
        f"{MEASURED_LAYERS} decoder and {MEASURED_LAYERS} vision layers, full depth extrapolated "
        "per layer (see benchmarks/idefics.py). One 980x740 page with splitting on, "
        f"{results['new_tokens']} new tokens.",
        "",
        "| family | pieces | prompt tokens | vision s | prefill tok/s | decode tok/s | peak RSS MB |"
        " est. full: vision s | prefill tok/s | decode tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for family, data in results["families"].items():
        m, e = data["measured"], data["full_depth_estimate"]
        lines.append(
            f"| {family} | {m['pieces']} | {m['prompt_tokens']} | {m['vision_seconds']:.2f} | "
            f"{m['prefill_tokens_per_s']:.0f} | {m['decode_tokens_per_s']:.1f} | "
            f"{m['peak_rss_mb']:.0f} | {e.get('vision_seconds', float('nan')):.1f} | "
            f"{e.get('prefill_tokens_per_s', float('nan')):.0f} | "
            f"{e.get('decode_tokens_per_s', float('nan')):.2f} |"
        )
    lines += ["", "Loading float32 files into bfloat16 (peak RSS of the loading process):", ""]
    for family, data in results["families"].items():
        ld = data["loading_float32_into_bfloat16"]
        lines.append(
            f"- {family}: bfloat16 weights {ld['bfloat16_weights_mb']:.0f} MB, peak RSS "
            f"{ld['peak_rss_mb']:.0f} MB (before loading {ld['rss_before_mb']:.0f} MB; largest "
            f"float32 tensor {ld['largest_float32_tensor_mb']:.0f} MB)"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Entry point (and the workers' entry point)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        family, directory, tokens, quick = argv[1:5]
        print(
            json.dumps(measure(family, Path(directory), new_tokens=int(tokens), quick=quick == "1"))
        )
        return
    if argv[:1] == ["--loader"]:
        print(json.dumps(measure_loading(Path(argv[1]))))
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idefics")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--families", default="idefics2,idefics3")
    args = parser.parse_args(argv)
    run(
        quick=args.quick,
        new_tokens=args.new_tokens,
        families=tuple(f for f in args.families.split(",") if f),
    )


if __name__ == "__main__":
    main()
