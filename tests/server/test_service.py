"""The service around the endpoints: readiness, metrics, auth, limits, back-pressure, deadlines,
shutdown, and a bounded load test."""

from __future__ import annotations

import asyncio
import functools
import http.server
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from mississippi_tools import MississippiVLM
from mississippi_tools.engine.config import LocalEngineConfig
from mississippi_tools.errors import ModelLoadError
from mississippi_tools.server import InsecureBindError, ServerSettings, serve
from mississippi_tools.server.settings import is_loopback
from tests.server.live import LiveServer, data_uri, png_bytes, quiet_settings, run_server
from tests.support import wait_until

IMAGE = png_bytes((40, 40, 160))


def _chat_body(
    text: str = "Describe it.", *, image: bytes | None = IMAGE, **extra: Any
) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if image is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": data_uri(image)}})
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture
def make_vlm(tiny_backend):  # type: ignore[no-untyped-def]
    """Fresh models over the shared tiny backend, with their own engine settings."""
    made: list[MississippiVLM] = []

    def make(**config: Any) -> MississippiVLM:
        vlm = MississippiVLM.from_backend(tiny_backend, engine_config=LocalEngineConfig(**config))
        made.append(vlm)
        return vlm

    yield make
    for vlm in made:
        vlm.close()


# -- readiness ----------------------------------------------------------------------------------


def test_port_answers_while_the_model_loads_then_health_turns_ready(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    release = threading.Event()

    def slow_factory(settings: ServerSettings) -> MississippiVLM:
        assert release.wait(60)
        return MississippiVLM.from_backend(tiny_backend)

    with run_server(quiet_settings(), vlm_factory=slow_factory) as live:
        loading = httpx.get(f"{live.url}/health")
        assert loading.status_code == 503
        assert loading.json() == {"status": "loading"}
        assert int(loading.headers["retry-after"]) > 0
        early = httpx.post(f"{live.url}/v1/chat/completions", json=_chat_body(max_tokens=1))
        assert early.status_code == 503
        assert early.json()["error"]["code"] == "model_loading"
        assert "retry-after" in early.headers
        metrics = httpx.get(f"{live.url}/metrics").text
        assert "mississippi_model_ready 0.0" in metrics
        release.set()
        wait_until(lambda: httpx.get(f"{live.url}/health").status_code == 200)
        assert httpx.get(f"{live.url}/health").json()["status"] == "ok"
        ready = httpx.post(
            f"{live.url}/v1/chat/completions", json=_chat_body(max_tokens=1), timeout=60
        )
        assert ready.status_code == 200


def test_a_failed_load_is_reported_and_serve_stops(tmp_path: Path) -> None:
    def broken(settings: ServerSettings) -> MississippiVLM:
        raise ModelLoadError("weights are corrupt")

    with run_server(quiet_settings(), vlm_factory=broken) as live:
        wait_until(lambda: live.state.phase == "failed")
        health = httpx.get(f"{live.url}/health")
        assert health.status_code == 503
        assert health.json()["status"] == "failed"
        assert health.json()["error"]["code"] == "model_load_error"
        refused = httpx.get(f"{live.url}/v1/models")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "model_load_failed"
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="corrupt"):
        serve(quiet_settings(), vlm_factory=broken)
    assert time.monotonic() - started < 20


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_expose_requests_latency_queue_batches_tokens_and_cache(live: LiveServer) -> None:
    for _ in range(2):  # the second one hits a cache
        assert (
            httpx.post(
                f"{live.url}/v1/chat/completions", json=_chat_body(max_tokens=2), timeout=60
            ).status_code
            == 200
        )
    httpx.get(f"{live.url}/v2/missing")
    text = httpx.get(f"{live.url}/metrics").text
    assert (
        'mississippi_http_requests_total{endpoint="/v1/chat/completions",method="POST",status="200"}'
        in text
    )
    assert 'endpoint="other",method="GET",status="404"' in text
    assert (
        'mississippi_http_request_duration_seconds_bucket{endpoint="/v1/chat/completions",le="+Inf"}'
        in text
    )
    for name in (
        "mississippi_queue_depth",
        "mississippi_running_requests",
        "mississippi_generated_tokens_total",
        "mississippi_prompt_tokens_total",
        "mississippi_decode_batch_size_bucket",
        'mississippi_engine_requests_total{outcome="finished"}',
        "mississippi_feature_cache_hits_total",
        "mississippi_feature_cache_misses_total",
        "mississippi_prefix_cache_hits_total",
        "mississippi_http_requests_in_flight",
        "mississippi_model_ready 1.0",
    ):
        assert name in text, name
    hits = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(
            ("mississippi_feature_cache_hits_total", "mississippi_prefix_cache_hits_total")
        )
    )
    assert hits >= 1  # the image prefix cache, or the feature cache under it


# -- authentication and binding -------------------------------------------------------------------


def test_api_key_is_required_and_enforced(server_vlm) -> None:  # type: ignore[no-untyped-def]
    settings = quiet_settings(api_key="s3cret", metrics_require_auth=True)
    with run_server(settings, server_vlm) as live:
        url = f"{live.url}/v1/models"
        missing = httpx.get(url)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "unauthorized"
        wrong = httpx.get(url, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.post(f"{live.url}/v1/ocr", json={}).status_code == 401
        assert httpx.get(f"{live.url}/health").status_code == 200  # probes need no key
        assert httpx.get(f"{live.url}/metrics").status_code == 401
        client = OpenAI(base_url=f"{live.url}/v1", api_key="s3cret", max_retries=0, timeout=60)
        assert client.models.list().data[0].owned_by == "mississippi-tools"


def test_binding_beyond_loopback_needs_an_api_key() -> None:
    for host in ("0.0.0.0", "::", "", "192.168.1.5", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(InsecureBindError, match="API key"):
            ServerSettings(host=host).check_bind()
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback(host)
        ServerSettings(host=host).check_bind()
    ServerSettings(host="0.0.0.0", api_key="k").check_bind()
    with pytest.raises(InsecureBindError):  # refused before anything is loaded or bound
        serve(ServerSettings(host="0.0.0.0", port=0), vlm_factory=lambda s: pytest.fail("loaded"))


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSISSIPPI_PORT", "9123")
    monkeypatch.setenv("MISSISSIPPI_API_KEY", "from-env")
    settings = ServerSettings()
    assert settings.port == 9123
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "from-env"
    assert "from-env" not in repr(settings)
    assert ServerSettings(port=1).port == 1


# -- limits -------------------------------------------------------------------------------------


def test_oversized_bodies_get_413(server_vlm) -> None:  # type: ignore[no-untyped-def]
    settings = quiet_settings(max_body_bytes=4096, max_image_pixels=100 * 100)
    with run_server(settings, server_vlm) as live:
        big = {"image": "A" * 10_000}
        declared = httpx.post(f"{live.url}/v1/ocr", json=big)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "request_too_large"

        def chunks() -> Iterator[bytes]:
            for _ in range(10):
                yield b"A" * 1000

        streamed = httpx.post(
            f"{live.url}/v1/ocr", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        too_many_pixels = httpx.post(
            f"{live.url}/v1/ocr",
            files={"image": ("w.png", png_bytes(size=(200, 200)), "image/png")},
        )
        assert too_many_pixels.status_code == 413
        assert too_many_pixels.json()["error"]["code"] == "image_too_large"
        assert httpx.get(f"{live.url}/health").status_code == 200


def test_too_many_images_in_one_request(server_vlm) -> None:  # type: ignore[no-untyped-def]
    with run_server(quiet_settings(max_images_per_request=2), server_vlm) as live:
        parts = [{"type": "image_url", "image_url": {"url": data_uri(IMAGE)}}] * 3
        response = httpx.post(
            f"{live.url}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": parts}]},
        )
        assert response.status_code == 400
        assert "at most 2" in response.json()["error"]["message"]


@pytest.fixture
def image_host(tmp_path: Path) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 serving one PNG."""
    (tmp_path / "pic.png").write_bytes(IMAGE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/pic.png"
    httpd.shutdown()
    httpd.server_close()


def test_url_images_only_when_enabled(server_vlm, live: LiveServer, image_host: str) -> None:  # type: ignore[no-untyped-def]
    refused = httpx.post(f"{live.url}/v1/ocr", json={"image": image_host})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "access_denied"
    private_refused = quiet_settings(allow_urls=True)
    with run_server(private_refused, server_vlm) as guarded:
        response = httpx.post(f"{guarded.url}/v1/ocr", json={"image": image_host})
        assert response.status_code == 403  # loopback addresses need allow_private_urls
    with run_server(quiet_settings(allow_urls=True, allow_private_urls=True), server_vlm) as open_:
        response = httpx.post(
            f"{open_.url}/v1/ocr", json={"image": image_host, "max_new_tokens": 2}, timeout=60
        )
        assert response.status_code == 200, response.text
        assert response.json()["meta"]["source"] == image_host


# -- back-pressure, deadlines, disconnects ------------------------------------------------------


def test_full_queue_answers_429_with_retry_after_and_disconnects_free_slots(make_vlm) -> None:  # type: ignore[no-untyped-def]
    vlm = make_vlm(max_batch_size=1, max_queue_size=1, retry_after=2.0)
    long_body = _chat_body(image=None, max_tokens=5000, ignore_eos=True)
    with run_server(quiet_settings(), vlm) as live:
        url = f"{live.url}/v1/chat/completions"

        def hold() -> None:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(url, json=long_body, timeout=httpx.Timeout(3.0, connect=5.0))

        holders = [threading.Thread(target=hold) for _ in range(2)]
        holders[0].start()
        wait_until(lambda: vlm.engine.metrics_snapshot().running == 1)
        holders[1].start()
        wait_until(lambda: vlm.engine.metrics_snapshot().queue_depth == 1)
        refused = httpx.post(url, json=long_body, timeout=30)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "2"
        assert refused.json()["error"]["code"] == "queue_full"
        stream_refused = httpx.post(url, json={**long_body, "stream": True}, timeout=30)
        assert stream_refused.status_code == 429
        for holder in holders:
            holder.join(30)
        # the clients gave up: their requests were cancelled and the slots are free again
        wait_until(
            lambda: (
                vlm.engine.metrics_snapshot().running == 0
                and vlm.engine.metrics_snapshot().queue_depth == 0
            )
        )
        generated = vlm.engine.metrics_snapshot().generated_tokens
        time.sleep(0.2)
        assert vlm.engine.metrics_snapshot().generated_tokens == generated
        ok = httpx.post(url, json=_chat_body(image=None, max_tokens=2), timeout=60)
        assert ok.status_code == 200


def test_deadline_gives_504(make_vlm) -> None:  # type: ignore[no-untyped-def]
    vlm = make_vlm(max_batch_size=2)
    with run_server(quiet_settings(request_timeout=0.5), vlm) as live:
        response = httpx.post(
            f"{live.url}/v1/chat/completions",
            json=_chat_body(image=None, max_tokens=5000, ignore_eos=True),
            timeout=60,
        )
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "deadline_exceeded"
        task = httpx.post(
            f"{live.url}/v1/ask",
            json={"question": "q", "max_new_tokens": 5000},
            timeout=60,
        )
        assert task.status_code in (200, 504)  # an answer ending early is no failure
        shorter = httpx.post(
            f"{live.url}/v1/chat/completions",
            json=_chat_body(image=None, max_tokens=5000, ignore_eos=True, timeout=0.2),
            timeout=60,
        )
        assert shorter.status_code == 504


def test_a_stream_that_passes_its_deadline_ends_with_an_error_event(make_vlm) -> None:  # type: ignore[no-untyped-def]
    vlm = make_vlm(max_batch_size=2)
    with (
        run_server(quiet_settings(request_timeout=0.5), vlm) as live,
        httpx.stream(
            "POST",
            f"{live.url}/v1/chat/completions",
            json=_chat_body(image=None, max_tokens=5000, ignore_eos=True, stream=True),
            timeout=60,
        ) as response,
    ):
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    assert '"deadline_exceeded"' in lines[-2]


# -- shutdown -----------------------------------------------------------------------------------


def test_graceful_shutdown_lets_in_flight_requests_finish(make_vlm) -> None:  # type: ignore[no-untyped-def]
    vlm = make_vlm(max_batch_size=2)
    with run_server(quiet_settings(shutdown_grace=60), vlm) as live:
        results: list[httpx.Response] = []
        client = threading.Thread(
            target=lambda: results.append(
                httpx.post(
                    f"{live.url}/v1/chat/completions",
                    json=_chat_body(image=None, max_tokens=60, ignore_eos=True),
                    timeout=60,
                )
            )
        )
        client.start()
        wait_until(lambda: vlm.engine.metrics_snapshot().running == 1)
        started = time.monotonic()
        live.stop(timeout=60)
        client.join(10)
        assert results and results[0].status_code == 200
        assert results[0].json()["usage"]["completion_tokens"] == 60
        assert time.monotonic() - started < 60
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{live.url}/health")


def test_shutdown_cancels_what_outlives_the_grace_period_with_a_clean_error(make_vlm) -> None:  # type: ignore[no-untyped-def]
    vlm = make_vlm(max_batch_size=2)
    with run_server(quiet_settings(shutdown_grace=0.5), vlm) as live:
        results: list[httpx.Response] = []
        client = threading.Thread(
            target=lambda: results.append(
                httpx.post(
                    f"{live.url}/v1/chat/completions",
                    json=_chat_body(image=None, max_tokens=10_000, ignore_eos=True),
                    timeout=60,
                )
            )
        )
        client.start()
        wait_until(lambda: vlm.engine.metrics_snapshot().running == 1)
        started = time.monotonic()
        live.stop(timeout=30)
        client.join(10)
        assert time.monotonic() - started < 15
        assert results, "the client got no answer"
        assert results[0].status_code == 503
        assert results[0].json()["error"]["code"] == "cancelled"


# -- load ---------------------------------------------------------------------------------------

_VARIANTS = 8
_LOAD_REQUESTS = 200
_CLIENTS = 32


def _variant_body(index: int) -> dict[str, Any]:
    image = png_bytes((index * 30 % 256, 90, 200)) if index % 2 else None
    return _chat_body(f"Question number {index}?", image=image, max_tokens=8)


def test_load_200_requests_from_32_clients_answered_200_or_429_with_greedy_results(
    make_vlm,
) -> None:  # type: ignore[no-untyped-def]
    vlm = make_vlm(max_batch_size=4, max_queue_size=4, retry_after=1.0)
    with run_server(quiet_settings(), vlm) as live:
        url = f"{live.url}/v1/chat/completions"
        statuses: list[int] = []
        answers: dict[int, set[str]] = {}
        next_request = iter(range(_LOAD_REQUESTS))

        async def client(http: httpx.AsyncClient, seed: int) -> None:
            rng = random.Random(seed)
            for number in next_request:
                variant = number % _VARIANTS
                response = await http.post(url, json=_variant_body(variant))
                statuses.append(response.status_code)
                if response.status_code == 200:
                    answers.setdefault(variant, set()).add(
                        response.json()["choices"][0]["message"]["content"]
                    )
                else:
                    assert response.status_code == 429, response.text
                    assert response.headers["retry-after"] == "1"
                    assert response.json()["error"]["code"] == "queue_full"
                    await asyncio.sleep(rng.uniform(0.01, 0.1))

        async def main() -> None:
            limits = httpx.Limits(max_connections=_CLIENTS, max_keepalive_connections=_CLIENTS)
            async with httpx.AsyncClient(limits=limits, timeout=120) as http:
                await asyncio.gather(*(client(http, seed) for seed in range(_CLIENTS)))

        started = time.monotonic()
        asyncio.run(main())
        elapsed = time.monotonic() - started

        assert len(statuses) == _LOAD_REQUESTS  # none lost
        assert set(statuses) <= {200, 429}
        assert statuses.count(200) >= _VARIANTS
        assert statuses.count(429) > 0
        sequential = {}
        for variant in range(_VARIANTS):
            response = httpx.post(url, json=_variant_body(variant), timeout=60)
            assert response.status_code == 200
            sequential[variant] = response.json()["choices"][0]["message"]["content"]
        for variant, seen in answers.items():
            assert seen == {sequential[variant]}, (
                f"variant {variant}: {seen} != {sequential[variant]!r}"
            )
        snapshot = vlm.engine.metrics_snapshot()
        assert max(snapshot.batch_size_counts) > 1  # requests really were batched
        assert elapsed < 120
