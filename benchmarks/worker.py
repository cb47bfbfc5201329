"""One benchmark process: load a checkpoint in one dtype and measure it (JSON on stdout).

Run by ``python -m benchmarks`` in a fresh process per dtype, so each run's peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure what ``spec`` asks for; see ``benchmarks.__main__`` for the keys."""
    import torch

    from benchmarks import baseline, concurrency, stages
    from mississippi_tools.engine.config import LocalEngineConfig
    from mississippi_tools.engine.local import LocalEngine
    from mississippi_tools.models.registry import load_backend

    new_tokens = int(spec["new_tokens"])
    started = time.perf_counter()
    backend = load_backend(Path(spec["checkpoint"]), device="cpu", dtype=spec["dtype"])
    result: dict[str, Any] = {
        "dtype": str(backend.dtype).removeprefix("torch."),
        "load_seconds": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
    }
    pages = {name: stages.page_png(size) for name, size in stages.PAGES.items()}
    stages.measure_request(backend, pages["1-tile"], new_tokens=2)  # warm-up
    result["stages"] = {}
    for name, png in pages.items():
        measured = stages.measure_request(backend, png, new_tokens=new_tokens)
        measured["against_limits"] = stages.against_limits(backend, measured, spec["limits"])
        result["stages"][name] = measured
    if spec.get("engine_sections"):
        distinct = [stages.page_png((448, 448), seed=i) for i in range(8)]
        result["plain"] = {
            name: baseline.plain_request(backend, png, new_tokens=new_tokens)["seconds"]
            for name, png in pages.items()
        }
        plain = baseline.plain_sequential(backend, distinct, new_tokens=new_tokens)
        result["plain_sequential"] = {k: v for k, v in plain.items() if k != "token_ids"}
        # Both caches off: every request pays its vision encoder and prefill.
        no_cache = LocalEngineConfig(feature_cache_mb=0, prefix_cache_mb=0, max_batch_size=8)
        result["throughput"] = []
        with LocalEngine(backend, no_cache) as engine:
            for level in (1, 4, 8):
                measured = concurrency.throughput(
                    engine, distinct, new_tokens=new_tokens, concurrency=level
                )
                measured["same_tokens_as_plain"] = measured.pop("token_ids") == [
                    ids[:new_tokens] for ids in plain["token_ids"]
                ]
                result["throughput"].append(measured)
            long_tokens = int(spec.get("long_tokens") or 0)
            if long_tokens:
                # Long answers (a page of OCR): decoding, which batching shares, dominates.
                result["throughput_long"] = []
                for level in (1, 8):
                    measured = concurrency.throughput(
                        engine, distinct, new_tokens=long_tokens, concurrency=level
                    )
                    measured.pop("token_ids")
                    result["throughput_long"].append(measured)
        with LocalEngine(backend) as engine:
            result["cache"] = concurrency.cache_hit_vs_miss(
                engine, pages["6-tile"], new_tokens=new_tokens
            )
            result["constraint"] = concurrency.constraint_overhead(
                engine, new_tokens=max(48, new_tokens)
            )
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def main() -> None:
    """Read the spec (JSON) from argv, print the result as the last line of stdout."""
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    spec = json.loads(parser.parse_args().spec)
    result = run(spec)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
