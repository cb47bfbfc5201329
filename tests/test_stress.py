"""Every request ends exactly once, whatever the timing: randomized storms on each surface.

Submits, cancels, deadlines, closed streams and vanished clients arrive in random order and at
random moments (seeded, so a failure replays). Afterwards no handle is pending, the engine holds
no running or queued request, no thread is left behind, and the next request is answered.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from PIL import Image

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine, LocalEngineConfig, RequestHandle
from mississippi_tools.errors import (
    DeadlineExceededError,
    QueueFullError,
    RequestCancelledError,
)
from mississippi_tools.vlm import MississippiVLM
from tests.mcp.conftest import make_server
from tests.server.live import data_uri, png_bytes, quiet_settings, run_server
from tests.support import loaded_image, wait_until

SEED = 20261202

#: How each request may end; anything else (or not ending) fails the test.
ENDINGS = (DeadlineExceededError, RequestCancelledError, QueueFullError)


def _settled(engine: LocalEngine) -> bool:
    snapshot = engine.metrics_snapshot()
    return snapshot.running == 0 and snapshot.queue_depth == 0


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def test_engine_storm_leaves_nothing_pending(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    before = _threads()
    images = [loaded_image(Image.new("RGB", (64, 48), (i * 40, 90, 160))) for i in range(4)]
    engine = LocalEngine(tiny_backend, LocalEngineConfig(max_batch_size=4, max_queue_size=24))
    handles: list[RequestHandle] = []
    refused = Counter[str]()
    lock = threading.Lock()

    def client(seed: int, count: int) -> None:
        rng = random.Random(seed)
        for i in range(count):
            timeout = rng.choice([None, None, 0.0005, rng.uniform(0.005, 0.3)])
            request = GenerationRequest(
                f"Question {seed}.{i}?",
                images=[rng.choice(images)] if rng.random() < 0.5 else [],
                sampling=SamplingParams(max_new_tokens=rng.randint(1, 12)),
                timeout=timeout,
            )
            try:
                handle = engine.submit(request)
            except QueueFullError:
                refused["queue_full"] += 1
                time.sleep(rng.uniform(0, 0.01))
                continue
            with lock:
                handles.append(handle)
            action = rng.random()
            if action < 0.2:
                handle.cancel()  # at once, often before admission
            elif action < 0.35:
                threading.Timer(rng.uniform(0, 0.05), handle.cancel).start()
            elif action < 0.5:
                stream = handle.iter_text()
                try:
                    for _ in zip(range(rng.randint(0, 2)), stream, strict=False):
                        pass
                except ENDINGS:
                    pass
                handle.cancel()  # a client that stopped reading
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0, 0.003))

    threads = [
        threading.Thread(target=client, args=(SEED + n, 350), name=f"storm-{n}") for n in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
        assert not thread.is_alive(), "a client thread is stuck"

    outcomes = Counter[str]()
    for handle in handles:
        try:
            handle.result(timeout=60)  # every handle ends; a pending one fails here
            outcomes["finished"] += 1
        except ENDINGS as e:
            outcomes[type(e).__name__] += 1
    assert all(handle.future.done() for handle in handles)
    wait_until(lambda: _settled(engine), timeout=30, what="the engine to hold no request")
    print(f"\nengine storm: {len(handles)} handles {dict(outcomes)}, refused {dict(refused)}")
    assert outcomes["finished"] > 0 and outcomes["RequestCancelledError"] > 0
    assert outcomes["DeadlineExceededError"] > 0
    metrics = engine.metrics_snapshot()
    ended = (
        metrics.requests_finished
        + metrics.requests_failed
        + metrics.requests_cancelled
        + metrics.requests_expired
    )
    assert ended == len(handles), (ended, len(handles))  # each counted once: none ends twice
    assert engine.generate(
        GenerationRequest("After the storm?", sampling=SamplingParams(max_new_tokens=3))
    ).token_ids
    engine.close()
    wait_until(lambda: _threads() <= before, timeout=30, what="the engine's threads to end")


def test_http_storm_answers_every_request(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    vlm = MississippiVLM.from_backend(
        tiny_backend, engine_config=LocalEngineConfig(max_batch_size=4, max_queue_size=8)
    )
    image = data_uri(png_bytes())
    statuses = Counter[str]()

    def body(rng: random.Random, stream: bool) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": "What is it?"}]
        if rng.random() < 0.5:
            content.insert(0, {"type": "image_url", "image_url": {"url": image}})
        return {
            "model": "m",
            "messages": [{"role": "user", "content": content}],
            "max_tokens": rng.randint(1, 24),
            "stream": stream,
        }

    async def client(http: httpx.AsyncClient, url: str, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            vanish = rng.random() < 0.25  # the client gives up mid-request
            timeout = rng.uniform(0.01, 0.2) if vanish else 60
            stream = rng.random() < 0.3
            try:
                if stream:
                    async with http.stream(
                        "POST", url, json=body(rng, True), timeout=timeout
                    ) as response:
                        async for _ in response.aiter_lines():
                            if rng.random() < 0.3:
                                break  # stop reading: the connection closes under the server
                    statuses[f"stream {response.status_code}"] += 1
                else:
                    response = await http.post(url, json=body(rng, False), timeout=timeout)
                    statuses[str(response.status_code)] += 1
            except httpx.TimeoutException:
                statuses["client gave up"] += 1

    with run_server(quiet_settings(request_timeout=0.4), vlm) as live:
        url = f"{live.url}/v1/chat/completions"

        async def storm() -> None:
            async with httpx.AsyncClient() as http:
                await asyncio.gather(*(client(http, url, SEED + n) for n in range(12)))

        asyncio.run(asyncio.wait_for(storm(), timeout=240))
        wait_until(lambda: _settled(vlm.engine), timeout=30, what="the engine to hold no request")
        print(f"\nHTTP storm: {dict(statuses)}")
        answered = sum(n for status, n in statuses.items() if status != "client gave up")
        assert answered + statuses["client gave up"] == 12 * 40  # every request accounted for
        assert set(statuses) <= {
            "200", "429", "504", "stream 200", "stream 429", "stream 504", "client gave up"
        }  # fmt: skip
        assert statuses["200"] > 0 and statuses["client gave up"] > 0
        quick = {"model": "m", "messages": [{"role": "user", "content": "Hi?"}], "max_tokens": 1}
        after = httpx.post(url, json=quick, timeout=60)
        assert after.status_code == 200, after.text
    vlm.close()


@pytest.mark.parametrize("seed", [SEED])
async def test_mcp_storm_answers_every_call(tiny_backend, tmp_path, seed: int) -> None:  # type: ignore[no-untyped-def]
    vlm = MississippiVLM.from_backend(
        tiny_backend, engine_config=LocalEngineConfig(max_batch_size=4, max_queue_size=64)
    )
    Image.new("RGB", (64, 48), "white").save(tmp_path / "page.png")
    rng = random.Random(seed)
    outcomes = Counter[str]()
    server = make_server(vlm, allow_dirs=[tmp_path], max_new_tokens=8)
    with anyio.fail_after(240):
        async with Client(server) as client:

            async def call(i: int) -> None:
                patience = rng.choice([None, None, rng.uniform(0.001, 0.2)])
                arguments: dict[str, Any] = {"image": str(tmp_path / "page.png")}
                name = rng.choice(["ocr", "ask"])
                if name == "ask":
                    arguments["question"] = f"Question {i}?"
                with anyio.move_on_after(patience if patience is not None else 120) as scope:
                    result = await client.call_tool(name, arguments)
                    outcomes["error" if result.is_error else "result"] += 1
                if scope.cancelled_caught:
                    outcomes["client gave up"] += 1

            async with anyio.create_task_group() as group:
                for i in range(150):
                    group.start_soon(call, i)
                    if rng.random() < 0.3:
                        await anyio.sleep(rng.uniform(0, 0.01))
            # The server still answers, and its engine holds nothing of the storm.
            final = await client.call_tool("ocr", {"image": str(tmp_path / "page.png")})
    print(f"\nMCP storm: {dict(outcomes)}")
    assert not final.is_error
    assert sum(outcomes.values()) == 150
    assert outcomes["result"] > 0 and outcomes["client gave up"] > 0
    wait_until(lambda: _settled(vlm.engine), timeout=30, what="the engine to hold no request")
    vlm.close()
