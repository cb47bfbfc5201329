"""The service's numbers: batching, the feature cache, and what HTTP costs over in-process calls.

``measure_service(checkpoint, new_tokens=...)`` loads the checkpoint once and measures:

- **batching**: 8 requests (distinct images, so no cache helps) one at a time, then the same
  number of new ones submitted together; throughput of each and the speed-up;
- **cache**: a first question about an image, then a second, different question about it (the
  vision features, and the image prefix's keys/values where the engine keeps them, are reused);
- **http**: one request in-process (``engine.generate``), through the running service with a plain
  HTTP client, and through ``MississippiVLM.connect``; medians over ``repeats`` with warm caches,
  so the difference is the HTTP path (PNG/base64, JSON, the server's decode, the socket).

Every request generates exactly ``new_tokens`` tokens (``ignore_eos``): with random weights the
compute does not depend on the words.

Examples:
    python -m benchmarks.service --checkpoint benchmarks/.cache/h2ovl-800m-random --new-tokens 32
    python -m benchmarks.service --tiny                # a tiny model: checks that it runs
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

__all__ = ["measure_service"]

PROMPT = "Read the text in the image."


def _page(seed: int, size: tuple[int, int]) -> bytes:
    image = Image.new("RGB", size, (255, 255 - seed % 7, 250))
    draw = ImageDraw.Draw(image)
    for row in range(0, size[1], 24):
        draw.text(
            (16, row + 4),
            f"Row {row // 24} of page {seed}: total ${seed * 37 + row}.00",
            fill="black",
        )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _request(png: bytes, prompt: str, new_tokens: int) -> Any:
    from mississippi_tools.engine.base import GenerationRequest, SamplingParams
    from mississippi_tools.images import load_image

    return GenerationRequest(
        prompt,
        images=[load_image(png)],
        sampling=SamplingParams(max_new_tokens=new_tokens, ignore_eos=True),
    )


def _batching(engine: Any, *, new_tokens: int, count: int, size: tuple[int, int]) -> dict[str, Any]:
    sequential_pngs = [_page(1000 + i, size) for i in range(count)]
    batched_pngs = [_page(2000 + i, size) for i in range(count)]
    started = time.perf_counter()
    for png in sequential_pngs:
        engine.generate(_request(png, PROMPT, new_tokens))
    sequential = time.perf_counter() - started

    before = dict(engine.metrics_snapshot().batch_size_counts)
    requests = [_request(png, PROMPT, new_tokens) for png in batched_pngs]
    started = time.perf_counter()
    handles = [engine.submit(request) for request in requests]
    for handle in handles:
        handle.result()
    batched = time.perf_counter() - started
    after = engine.metrics_snapshot().batch_size_counts
    sizes = [size for size, n in after.items() if n > before.get(size, 0)]
    tokens = count * new_tokens
    return {
        "requests": count,
        "new_tokens": new_tokens,
        "sequential_seconds": sequential,
        "batched_seconds": batched,
        "sequential_tokens_per_s": tokens / sequential,
        "batched_tokens_per_s": tokens / batched,
        "speedup": sequential / batched,
        "largest_batch": max(sizes, default=1),
    }


def _cache(engine: Any, *, new_tokens: int, size: tuple[int, int]) -> dict[str, Any]:
    png = _page(3000, size)
    started = time.perf_counter()
    first = engine.generate(_request(png, PROMPT, new_tokens))
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    second = engine.generate(_request(png, "What is the total on this page?", new_tokens))
    second_seconds = time.perf_counter() - started
    return {
        "first_seconds": first_seconds,
        "second_seconds": second_seconds,
        "speedup": first_seconds / second_seconds,
        "first_cache_hit": first.cache_hit,
        "second_cache_hit": second.cache_hit,
        "first_timings": first.timings,
        "second_timings": second.timings,
        "tiles": first.tiles,
    }


def _median_seconds(call: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _http(vlm: Any, *, new_tokens: int, size: tuple[int, int], repeats: int) -> dict[str, Any]:
    import httpx

    from mississippi_tools import MississippiVLM
    from mississippi_tools.server import ServerSettings, build_server, create_app

    png = _page(4000, size)
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    body = {
        "model": "bench",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": uri}},
                    {"type": "text", "text": PROMPT},
                ],
            }
        ],
        "max_tokens": new_tokens,
        "ignore_eos": True,
    }
    settings = ServerSettings(port=0, log_level="warning", access_log=False)
    app = create_app(settings, vlm)
    server = build_server(app, settings)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the benchmark server did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        engine = vlm.engine
        in_process = lambda: engine.generate(_request(png, PROMPT, new_tokens))  # noqa: E731
        with httpx.Client(timeout=600) as client:

            def over_http() -> None:
                response = client.post(f"{url}/v1/chat/completions", json=body)
                response.raise_for_status()

            with MississippiVLM.connect(url, timeout=600) as remote:
                remote_engine = remote.engine
                through_connect = lambda: remote_engine.generate(_request(png, PROMPT, new_tokens))  # noqa: E731
                for call in (in_process, over_http, through_connect):  # warm every path and cache
                    call()
                local_s = _median_seconds(in_process, repeats)
                http_s = _median_seconds(over_http, repeats)
                connect_s = _median_seconds(through_connect, repeats)
    finally:
        server.should_exit = True
        thread.join(60)
    return {
        "repeats": repeats,
        "image_bytes": len(png),
        "in_process_seconds": local_s,
        "http_seconds": http_s,
        "connect_seconds": connect_s,
        "http_overhead_ms": (http_s - local_s) * 1000,
        "connect_overhead_ms": (connect_s - local_s) * 1000,
    }


def measure_service(
    checkpoint_dir: Path,
    *,
    new_tokens: int,
    device: str = "cpu",
    dtype: str = "float32",
    concurrency: int = 8,
    repeats: int = 5,
    image_size: tuple[int, int] = (448, 448),
) -> dict[str, Any]:
    """Measure batching, the feature cache and the HTTP overhead on ``checkpoint_dir``.

    Args:
        checkpoint_dir: A checkpoint in the original format (e.g. a random-weight 800M one).
        new_tokens: Tokens generated by every request.
        device: Where the model runs.
        dtype: The weights' dtype.
        concurrency: Requests in the batching measurement (also the engine's batch size).
        repeats: Repetitions of each HTTP-overhead measurement (medians are reported).
        image_size: Size of the test pages (448x448 is one tile).

    Returns:
        Plain numbers: ``batching``, ``cache`` and ``http`` sections, plus the settings.
    """
    from mississippi_tools import MississippiVLM
    from mississippi_tools.engine.config import LocalEngineConfig

    started = time.perf_counter()
    vlm = MississippiVLM.load(
        checkpoint_dir,
        device=device,
        dtype=dtype,
        progress=False,
        engine_config=LocalEngineConfig(max_batch_size=concurrency),
    )
    load_seconds = time.perf_counter() - started
    try:
        engine = vlm.engine
        engine.generate(_request(_page(0, image_size), PROMPT, 2))  # warm-up
        results = {
            "checkpoint": Path(checkpoint_dir).name,
            "device": device,
            "dtype": dtype,
            "new_tokens": new_tokens,
            "image_size": list(image_size),
            "load_seconds": load_seconds,
            "batching": _batching(
                engine, new_tokens=new_tokens, count=concurrency, size=image_size
            ),
            "cache": _cache(engine, new_tokens=new_tokens, size=image_size),
            "http": _http(vlm, new_tokens=new_tokens, size=image_size, repeats=repeats),
        }
    finally:
        vlm.close()
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: print the measurements as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", type=Path, help="checkpoint directory")
    parser.add_argument("--tiny", action="store_true", help="build and use a tiny checkpoint")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.checkpoint is None and not args.tiny:
        parser.error("give --checkpoint DIR (or --tiny for a smoke run)")
    with tempfile.TemporaryDirectory(prefix="bench-service-") as scratch:
        if args.checkpoint is None:
            from mississippi_tools.testing import build_tiny_checkpoint

            args.checkpoint = build_tiny_checkpoint(Path(scratch))
        results = measure_service(
            args.checkpoint,
            new_tokens=args.new_tokens,
            device=args.device,
            dtype=args.dtype,
            concurrency=args.concurrency,
            repeats=args.repeats,
        )
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return results


if __name__ == "__main__":
    main()
