"""Whole documents: a text layer against the model, a loop stopped against one left to run.

Three same-run comparisons, written to ``benchmarks/results/documents.{json,md}``:

1. **Text layer vs model**, one dense text page (40 lines, ~2,400 characters) of a hand-written
   PDF: ``ocr`` answered from the page's text layer (render, read the layer, test it, parse)
   against ``ocr`` with ``text_layer="never"`` on the 800M shape with random weights (compute does
   not depend on the values; the loop check is off so that the model writes ``new_tokens``
   tokens, a short page's worth). Also: reading the text layer's characters, boxes, fonts and
   render modes, against rendering the page alone.
2. **A loop stopped vs left to run**: the tiny checkpoint scripted to loop, ``max_new_tokens``
   1024, with the check (stopped, retried against loops, stopped again) and without it; tokens
   and seconds.
3. **The check's own cost**: :class:`~mississippi_tools.engine.repetition.RepetitionGuard` per
   token over 1,024 tokens that never loop (the default check, and the retry's with the n-gram
   ban), against one decode step of the 800M shape from (1).

Run: ``python -m benchmarks.documents [--quick] [--checkpoint DIR]`` (``--quick``: tiny model
for every part, seconds, writes nothing).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"

_WORDS = (
    "invoice",
    "total",
    "amount",
    "due",
    "payment",
    "terms",
    "net",
    "thirty",
    "days",
    "supplier",
    "customer",
    "order",
    "number",
    "delivery",
    "address",
    "quantity",
    "unit",
    "price",
    "description",
    "tax",
    "rate",
    "subtotal",
    "balance",
    "account",
    "bank",
)


def _dense_page() -> bytes:
    """A US Letter page of 40 text lines, from the test suite's PDF writer."""
    sys.path.insert(0, str(ROOT))
    from tests.documents import Page, build_pdf

    rng = random.Random(0)
    lines = tuple(" ".join(rng.choice(_WORDS) for _ in range(9)) for _ in range(40))
    return build_pdf([Page("text", lines)])


def _best(seconds: list[float]) -> float:
    return min(seconds)


def _time(fn: Any, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def text_layer_vs_model(checkpoint: Path, new_tokens: int, repeat: int) -> dict[str, Any]:
    """Part 1: the same page through the text layer and through the model."""
    from mississippi_tools import MississippiVLM
    from mississippi_tools.pdf import PDFDocument

    pdf = _dense_page()
    with PDFDocument(pdf) as document:
        render = _time(lambda: document.render(1, max_pixels=64_000_000), repeat)
        both = _time(lambda: document.render_with_text(1, max_pixels=64_000_000), repeat)
        _, layer = document.render_with_text(1, max_pixels=64_000_000)
    with MississippiVLM.load(checkpoint, device="cpu", dtype="float32", progress=False) as vlm:
        layer_result = vlm.ocr(pdf, page=1)
        assert layer_result.meta.origin == "text_layer"
        layer_times = _time(lambda: vlm.ocr(pdf, page=1), repeat)
        model_result = None
        model_times = []
        for _ in range(max(1, repeat // 5)):
            started = time.perf_counter()
            model_result = vlm.ocr(
                pdf, page=1, text_layer="never", repetition=False, max_new_tokens=new_tokens
            )
            model_times.append(time.perf_counter() - started)
        assert model_result is not None
        decode = model_result.meta.timings.get("decode", 0.0)
        tokens = model_result.meta.new_tokens
    return {
        "characters": len(layer.clean_text),
        "render_seconds": _best(render),
        "render_with_text_seconds": _best(both),
        "text_layer_read_seconds": _best(both) - _best(render),
        "ocr_text_layer_seconds": _best(layer_times),
        "ocr_model_seconds": _best(model_times),
        "model_tiles": model_result.meta.tiles,
        "model_new_tokens": tokens,
        "model_decode_seconds_per_token": decode / max(1, tokens - 1),
        "speedup": _best(model_times) / _best(layer_times),
    }


def loop_stopped_vs_run(max_new_tokens: int) -> dict[str, Any]:
    """Part 2: the looping checkpoint with and without the check."""
    from PIL import Image

    from mississippi_tools import MississippiVLM, RepetitionError
    from mississippi_tools.images import load_image
    from mississippi_tools.testing import build_scripted_checkpoint, build_tiny_checkpoint

    image = load_image(Image.new("RGB", (448, 448), "white"))
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as directory:
        tiny = build_tiny_checkpoint(Path(directory) / "tiny")
        looping = build_scripted_checkpoint(tiny, Path(directory) / "loop", "the cat ", loop=True)
        with MississippiVLM.load(looping, device="cpu", dtype="float32", progress=False) as vlm:
            settings = {"max_tiles": 1, "max_new_tokens": max_new_tokens}
            vlm.ocr(image, repetition=False, **settings)  # warm-up
            started = time.perf_counter()
            unchecked = vlm.ocr(image, repetition=False, **settings)
            unchecked_seconds = time.perf_counter() - started
            before = vlm.engine.metrics.generated_tokens  # type: ignore[attr-defined]
            started = time.perf_counter()
            try:
                vlm.ocr(image, **settings)
                raise AssertionError("the looping checkpoint did not loop")
            except RepetitionError:
                checked_seconds = time.perf_counter() - started
            checked_tokens = vlm.engine.metrics.generated_tokens - before  # type: ignore[attr-defined]
    return {
        "max_new_tokens": max_new_tokens,
        "unchecked_tokens": unchecked.meta.new_tokens,
        "unchecked_seconds": unchecked_seconds,
        "checked_tokens_both_attempts": checked_tokens,
        "checked_seconds_both_attempts": checked_seconds,
        "tokens_ratio": unchecked.meta.new_tokens / checked_tokens,
    }


def guard_cost(tokens: int = 1024, repeat: int = 5) -> dict[str, Any]:
    """Part 3: the check's cost per token on an answer that never loops."""
    import torch

    from mississippi_tools.engine.repetition import RepetitionCheck, RepetitionGuard

    rng = random.Random(1)
    sequence = [rng.randrange(32_000) for _ in range(tokens)]
    logits = torch.zeros(32_000)

    def run(check: RepetitionCheck) -> None:
        guard = RepetitionGuard(check)
        for token in sequence:
            guard.ban(logits)
            if guard.observe(token):
                raise AssertionError("a random sequence looped")

    default = _time(lambda: run(RepetitionCheck()), repeat)
    retry = _time(lambda: run(RepetitionCheck(no_repeat_ngram=30)), repeat)
    return {
        "tokens": tokens,
        "microseconds_per_token": 1e6 * _best(default) / tokens,
        "microseconds_per_token_with_ngram_ban": 1e6 * _best(retry) / tokens,
        "spread": statistics.pstdev(default) / statistics.mean(default),
    }


def _checkpoint(path: str | None, quick: bool, directory: Path) -> Path:
    from mississippi_tools import testing

    if path:
        return Path(path)
    if quick:
        return testing.build_tiny_checkpoint(directory / "tiny")
    target = CACHE / "h2ovl-800m-random"
    if not (target / "model.safetensors").is_file():
        print(f"building a random-weight 800M checkpoint in {target} ...", file=sys.stderr)
        testing.build_checkpoint(target, testing.H2OVL_800M_CONFIG, dtype="bfloat16")
    return target


def markdown(results: dict[str, Any]) -> str:
    """The results as the Markdown written beside the JSON."""
    text, loop, guard = results["text_layer"], results["loop"], results["guard"]
    per_token_ms = 1000 * text["model_decode_seconds_per_token"]
    share = guard["microseconds_per_token"] / (10 * per_token_ms)
    return "\n".join(
        [
            f"# Whole documents ({results['checkpoint']}, {results['machine']})",
            "",
            f"`{results['command']}`, {results['date']}.",
            "",
            "## A text layer against the model (one dense page, same run)",
            "",
            "| path | seconds |",
            "| --- | --- |",
            f"| render the page (200 dpi) | {text['render_seconds']:.3f} |",
            f"| render and read its text layer ({text['characters']} characters) | "
            f"{text['render_with_text_seconds']:.3f} |",
            f"| `ocr`, answered by the text layer | {text['ocr_text_layer_seconds']:.3f} |",
            f'| `ocr`, `text_layer="never"` ({text["model_tiles"]} tiles, '
            f"{text['model_new_tokens']} tokens) | {text['ocr_model_seconds']:.1f} |",
            "",
            f"The text layer answers **{text['speedup']:.0f}x** faster than the model writing "
            f"{text['model_new_tokens']} tokens (a real page is several hundred). Reading the "
            f"layer adds {1000 * text['text_layer_read_seconds']:.0f} ms to the render.",
            "",
            "## A loop stopped against one left to run (tiny looping checkpoint)",
            "",
            "| | tokens | seconds |",
            "| --- | --- | --- |",
            f"| no check (`repetition=False`), max_new_tokens={loop['max_new_tokens']} | "
            f"{loop['unchecked_tokens']} | {loop['unchecked_seconds']:.2f} |",
            f"| check on: stopped, retried, stopped again (`RepetitionError`) | "
            f"{loop['checked_tokens_both_attempts']} | {loop['checked_seconds_both_attempts']:.2f} |",
            "",
            f"The check spends {loop['tokens_ratio']:.1f}x fewer tokens on a loop, both attempts "
            "together.",
            "",
            "## The check's own cost",
            "",
            f"{guard['microseconds_per_token']:.1f} µs per token (default check), "
            f"{guard['microseconds_per_token_with_ngram_ban']:.1f} µs with the retry's n-gram ban, "
            f"over {guard['tokens']} tokens that never loop; one decode step of this model took "
            f"{per_token_ms:.1f} ms: the check is {share:.3f}% of it.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the three parts; write the results unless ``--quick``."""
    import os
    import platform

    import torch

    parser = argparse.ArgumentParser(prog="python -m benchmarks.documents", description=__doc__)
    parser.add_argument("--checkpoint", help="checkpoint directory (default: a random 800M one)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens the model writes")
    parser.add_argument("--quick", action="store_true", help="tiny model, seconds, no files")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-documents-") as directory:
        checkpoint = _checkpoint(args.checkpoint, args.quick, Path(directory))
        print("text layer against the model ...", file=sys.stderr)
        text = text_layer_vs_model(
            checkpoint, 8 if args.quick else args.new_tokens, 3 if args.quick else 10
        )
    print("a loop, stopped and not ...", file=sys.stderr)
    loop = loop_stopped_vs_run(1024)
    print("the check's cost ...", file=sys.stderr)
    guard = guard_cost()
    results = {
        "command": " ".join(["python -m benchmarks.documents", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "checkpoint": checkpoint.name,
        "text_layer": text,
        "loop": loop,
        "guard": guard,
    }
    summary = markdown(results)
    print(summary)
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "documents.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "documents.md").write_text(summary)
    return results


if __name__ == "__main__":
    main()
