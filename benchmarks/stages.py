"""One request, stage by stage, against the machine's limits.

Drives the backend directly (not through the engine) so each stage is timed on its own: image
decode and tiling, vision encoder, projector, prefill, decoding (tokens/s at batch 1) and parsing.
"""

from __future__ import annotations

import io
import resource
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from benchmarks.model_costs import model_costs
from mississippi_tools.engine.cache import TensorCache
from mississippi_tools.engine.runner import ModelRunner
from mississippi_tools.images import load_image
from mississippi_tools.models.h2ovl.backend import H2OVLBackend
from mississippi_tools.tasks.chart import parse_chart_output
from mississippi_tools.tasks.results import ResultMetadata

#: The two pages of the issue: one tile, and six tiles plus the thumbnail.
PAGES = {"1-tile": (448, 448), "6-tile": (800, 1000)}

CHART_ANSWER = (
    '{"chart": {"title": "Monthly Sales", "type": "bar", "x_axis": "Months", "y_axis": "Sales (in $)", '
    '"series": [{"name": "2024", "data_points": [{"label": "January", "value": 1000}, '
    '{"label": "February", "value": 1200}, {"label": "March", "value": 1350}]}]}}'
)


def page_png(size: tuple[int, int], seed: int = 0) -> bytes:
    """A document-like PNG of ``size`` (text lines and a table grid)."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for row in range(0, size[1], 28):
        draw.text(
            (20, row + 4), f"Line {row // 28 + seed}: invoice total $1,{row:03d}.00", fill="black"
        )
    for x in range(20, size[0], 120):
        draw.line((x, size[1] // 2, x, size[1] - 20), fill="gray")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: ru_maxrss keeps the parent's high-water mark over exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def measure_request(
    backend: H2OVLBackend,
    png: bytes,
    *,
    new_tokens: int,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Seconds per stage for one request, and the counts that go with them.

    ``options`` are the request's model options (``max_tiles`` ...), as a caller would pass them.
    """
    model = backend.model

    def preprocess() -> Any:
        loaded = load_image(png)
        prepared = backend.prepare("Read the text in the image.", [loaded], options=options)
        return prepared, prepared.images[0].render()

    (prepared, pixels), t_pre = _timed(preprocess)
    with torch.inference_mode():
        hidden, t_vision = _timed(lambda: model.encode_vision(pixels))
        features, t_proj = _timed(lambda: model.project(hidden))
    runner = ModelRunner(backend, TensorCache(0))
    (logits, cache), t_prefill = _timed(lambda: runner.prefill(prepared, [features]))
    runner.join(cache)
    token, position = int(logits.argmax()), len(prepared.input_ids)

    def decode() -> None:
        nonlocal token, position
        for _ in range(new_tokens):
            step = runner.decode([token], [position])
            token, position = int(step[0].argmax()), position + 1

    _, t_decode = _timed(decode)
    meta = ResultMetadata(model="bench", engine="local")
    _, t_parse = _timed(lambda: parse_chart_output(CHART_ANSWER, meta))
    return {
        "tiles": prepared.num_tiles,
        "prompt_tokens": len(prepared.input_ids),
        "new_tokens": new_tokens,
        "seconds": {
            "decode_and_tiling": t_pre,
            "vision": t_vision,
            "projector": t_proj,
            "prefill": t_prefill,
            "decode": t_decode,
            "parse": t_parse,
        },
        "decode_tokens_per_s": new_tokens / t_decode,
    }


def against_limits(
    backend: H2OVLBackend, stage: dict[str, Any], limits: dict[str, Any]
) -> dict[str, float]:
    """Each compute stage as a fraction of its bound (1.0 = at the machine's limit)."""
    costs = model_costs(backend.config)
    # The best product throughput the machine offers: on CPUs without bfloat16 arithmetic the
    # bfloat16 model computes its large products in float32 (mississippi_tools.models.precision).
    gflops = max(limits["matmul_gflops"].values()) * 1e9
    seconds = stage["seconds"]
    tiles = stage["tiles"]
    vision_bound = costs.vision_flops_per_tile * tiles / gflops
    projector_bound = costs.projector_flops_per_tile * tiles / gflops
    prefill_bound = costs.prefill_flops(stage["prompt_tokens"]) / gflops
    bytes_per_param = torch.finfo(backend.dtype).bits // 8
    decode_bound = costs.decode_bytes_per_token(bytes_per_param) / (
        limits["memory_read_gbps"] * 1e9
    )
    per_token = seconds["decode"] / stage["new_tokens"]
    return {
        "vision": vision_bound / seconds["vision"],
        "projector": projector_bound / seconds["projector"],
        "prefill": prefill_bound / seconds["prefill"],
        "decode": decode_bound / per_token,
        "vision_gflops": costs.vision_flops_per_tile * tiles / seconds["vision"] / 1e9,
        "prefill_gflops": costs.prefill_flops(stage["prompt_tokens"]) / seconds["prefill"] / 1e9,
        "decode_weight_gbps": costs.decode_bytes_per_token(bytes_per_param) / per_token / 1e9,
        "decode_bound_ms_per_token": decode_bound * 1e3,
    }
