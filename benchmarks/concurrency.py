"""The engine under concurrent load: throughput at 1, 4 and 8 in flight; cache; constraints."""

from __future__ import annotations

import threading
import time
from typing import Any

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine
from mississippi_tools.images import load_image

PROMPT = "Read the text in the image."


def _request(png: bytes, new_tokens: int, **kwargs: Any) -> GenerationRequest:
    return GenerationRequest(
        PROMPT,
        images=[load_image(png)],
        sampling=SamplingParams(max_new_tokens=new_tokens, ignore_eos=True),
        **kwargs,
    )


def throughput(
    engine: LocalEngine, pngs: list[bytes], *, new_tokens: int, concurrency: int
) -> dict[str, Any]:
    """Run every request with at most ``concurrency`` in flight; requests and tokens per second."""
    requests = [_request(png, new_tokens) for png in pngs]
    slots = threading.Semaphore(concurrency)
    outputs: list[Any] = [None] * len(requests)
    counts_before = dict(engine.metrics_snapshot().batch_size_counts)
    started = time.perf_counter()

    def run(i: int) -> None:
        with slots:
            outputs[i] = engine.generate(requests[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    counts_after = engine.metrics_snapshot().batch_size_counts
    # Decoding steps by batch size during this run (the engine's counters are cumulative).
    batch_counts = {
        size: n - counts_before.get(size, 0)
        for size, n in counts_after.items()
        if n > counts_before.get(size, 0)
    }
    return {
        "concurrency": concurrency,
        "requests": len(requests),
        "seconds": elapsed,
        "requests_per_s": len(requests) / elapsed,
        "tokens_per_s": len(requests) * new_tokens / elapsed,
        "token_ids": [o.token_ids for o in outputs],
        "batch_size_counts": batch_counts,
    }


def cache_hit_vs_miss(engine: LocalEngine, png: bytes, *, new_tokens: int) -> dict[str, Any]:
    """First question about an image, then a second one (vision features from the cache)."""
    image = load_image(png)
    params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
    first = engine.generate(
        GenerationRequest("Read the text in the image.", images=[image], sampling=params)
    )
    second = engine.generate(
        GenerationRequest("What is the total?", images=[image], sampling=params)
    )
    return {
        "first_seconds": first.timings["total"],
        "second_seconds": second.timings["total"],
        "second_over_first": second.timings["total"] / first.timings["total"],
        "first_cache_hit": first.cache_hit,
        "second_cache_hit": second.cache_hit,
        "first_timings": first.timings,
        "second_timings": second.timings,
    }


#: A schema whose answers run long, so per-token costs can be compared at equal lengths.
LONG_SCHEMA = {
    "type": "object",
    "properties": {"lines": {"type": "array", "items": {"type": "string"}, "minItems": 64}},
    "required": ["lines"],
}


def constraint_overhead(engine: LocalEngine, *, new_tokens: int) -> dict[str, Any]:
    """Decoding time per token with the JSON grammar against without it (text-only prompt)."""
    params = SamplingParams(max_new_tokens=new_tokens)
    prompt = "List every line of the document as JSON."
    engine.generate(GenerationRequest(prompt, sampling=SamplingParams(max_new_tokens=4)))  # warm
    engine.generate(
        GenerationRequest(
            prompt, sampling=SamplingParams(max_new_tokens=4), json_schema=LONG_SCHEMA
        )
    )
    free = engine.generate(
        GenerationRequest(
            prompt, sampling=SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
        )
    )
    constrained = engine.generate(
        GenerationRequest(prompt, sampling=params, json_schema=LONG_SCHEMA)
    )
    free_per_token = free.timings["decode"] / max(1, len(free.token_ids) - 1)
    constrained_per_token = constrained.timings["decode"] / max(1, len(constrained.token_ids) - 1)
    return {
        "free_ms_per_token": free_per_token * 1e3,
        "constrained_ms_per_token": constrained_per_token * 1e3,
        "constrained_tokens": len(constrained.token_ids),
        "overhead": constrained_per_token / free_per_token - 1.0,
    }
