"""The remote engine against the real service (every task over HTTP), and its rules for other
servers, retries and errors (a scripted server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from PIL import Image

from mississippi_tools import MississippiVLM
from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.remote import RemoteEngine, build_messages
from mississippi_tools.errors import (
    DeadlineExceededError,
    ExtractionError,
    InvalidInputError,
    QueueFullError,
    RemoteConnectionError,
    RemoteStatusError,
)
from tests.engine.scripted_server import DROP, Answer, Script, Stall, scripted_server
from tests.server.live import LiveServer, quiet_settings, run_server
from tests.support import wait_until

IMAGE = Image.new("RGB", (64, 64), (30, 160, 90))
OTHER = Image.new("RGB", (64, 64), (200, 200, 20))


@pytest.fixture(scope="module")
def local(tiny_backend) -> Iterator[MississippiVLM]:  # type: ignore[no-untyped-def]
    vlm = MississippiVLM.from_backend(tiny_backend)
    yield vlm
    vlm.close()


@pytest.fixture(scope="module")
def service(local: MississippiVLM) -> Iterator[LiveServer]:
    with run_server(quiet_settings(api_key="k3y"), local) as live:
        yield live


@pytest.fixture
def remote(service: LiveServer) -> Iterator[MississippiVLM]:
    vlm = MississippiVLM.connect(service.url + "/v1", api_key="k3y", timeout=120, max_retries=1)
    yield vlm
    vlm.close()


# -- every task over HTTP equals the task in-process -------------------------------------------


def test_connect_detects_our_server(remote: MississippiVLM, local: MississippiVLM) -> None:
    engine = remote.engine
    assert isinstance(engine, RemoteEngine)
    info = engine.server_info()
    assert info.kind == "mississippi"
    assert remote.model_id == local.model_id
    assert engine.supports_grammar


def test_ocr_and_questions_over_http_equal_local_results(
    remote: MississippiVLM, local: MississippiVLM
) -> None:
    pairs = [
        (remote.ocr(IMAGE, max_new_tokens=6), local.ocr(IMAGE, max_new_tokens=6)),
        (
            remote.ocr(IMAGE, format="lines", confidence=True, max_new_tokens=6),
            local.ocr(IMAGE, format="lines", confidence=True, max_new_tokens=6),
        ),
        (remote.ask(IMAGE, "What?", max_new_tokens=5), local.ask(IMAGE, "What?", max_new_tokens=5)),
        (
            remote.ask([IMAGE, OTHER], "Differences?", max_new_tokens=5),
            local.ask([IMAGE, OTHER], "Differences?", max_new_tokens=5),
        ),
        (remote.ask(None, "Hello?", max_new_tokens=5), local.ask(None, "Hello?", max_new_tokens=5)),
    ]
    for got, expected in pairs:
        got_data = got.model_dump(exclude={"meta"})
        expected_data = expected.model_dump(exclude={"meta"})
        if "lines" in got_data:  # probabilities survive JSON with float rounding only
            for a, b in zip(got_data.pop("lines"), expected_data.pop("lines"), strict=True):
                assert a["text"] == b["text"]
                if b["confidence"] is None:
                    assert a["confidence"] is None
                else:
                    assert a["confidence"] == pytest.approx(b["confidence"], rel=1e-6)
        assert got_data == expected_data
        assert got.meta.engine == "remote"
        assert got.meta.tiles == expected.meta.tiles
        assert got.meta.new_tokens == expected.meta.new_tokens
        assert got.meta.prompt_tokens == expected.meta.prompt_tokens
        assert "remote" in got.meta.timings


def test_generate_with_placeholders_history_and_stream(
    remote: MississippiVLM, local: MississippiVLM
) -> None:
    for prompt in ("Look at <image> closely", "<image>Q", "<image>\nQ"):
        assert (
            remote.generate(IMAGE, prompt, max_new_tokens=5).token_ids
            == local.generate(IMAGE, prompt, max_new_tokens=5).token_ids
        )
    history = [("<image>\nWhat is it?", "A square.")]
    assert (
        remote.generate(IMAGE, "Colour?", history=history, max_new_tokens=5).text
        == local.generate(IMAGE, "Colour?", history=history, max_new_tokens=5).text
    )
    streamed = "".join(remote.stream(IMAGE, "Describe.", max_new_tokens=8))
    assert streamed == local.generate(IMAGE, "Describe.", max_new_tokens=8).text
    seeded = dict(temperature=0.9, top_k=20, seed=7, max_new_tokens=6)
    assert (
        remote.generate(None, "Sample", **seeded).token_ids
        == local.generate(None, "Sample", **seeded).token_ids
    )


def test_second_question_on_an_image_hits_the_servers_feature_cache(remote: MississippiVLM) -> None:
    fresh = Image.new("RGB", (64, 64), (1, 2, 3))
    first = remote.ask(fresh, "One?", max_new_tokens=2)
    second = remote.ask(fresh, "Two?", max_new_tokens=2)
    assert not first.meta.cache_hit
    assert second.meta.cache_hit


def test_extraction_uses_the_servers_grammar(remote: MississippiVLM, local: MississippiVLM) -> None:
    schema = {
        "type": "object",
        "properties": {"paid": {"type": "boolean"}, "kind": {"enum": ["invoice", "receipt"]}},
        "required": ["paid", "kind"],
        "additionalProperties": False,
    }
    got = remote.extract_result(IMAGE, schema, confidence=True, max_new_tokens=64)
    expected = local.extract_result(IMAGE, schema, confidence=True, max_new_tokens=64)
    assert got.data == expected.data
    assert got.meta.attempts == 1
    assert got.confidence is not None
    assert set(got.confidence) == {"/paid", "/kind"}
    assert got.confidence == pytest.approx(expected.confidence)


def test_chart_and_table_over_http_end_like_local(
    remote: MississippiVLM, local: MississippiVLM
) -> None:
    for task in ("read_chart", "read_table"):
        outcomes = []
        for vlm in (remote, local):
            try:
                result = getattr(vlm, task)(IMAGE, max_new_tokens=12)
            except ExtractionError as e:
                outcomes.append(("error", e.raw_text))
            else:
                outcomes.append(("ok", result.model_dump(exclude={"meta"})))
        assert outcomes[0] == outcomes[1], task


async def test_async_twins_over_http(service: LiveServer, local: MississippiVLM) -> None:
    remote = MississippiVLM.connect(service.url, api_key="k3y", timeout=120)
    try:
        results = await asyncio.gather(
            *(remote.aask(IMAGE, f"Question {i}?", max_new_tokens=4) for i in range(4))
        )
        for i, result in enumerate(results):
            assert result.text == local.ask(IMAGE, f"Question {i}?", max_new_tokens=4).text
        pieces = [piece async for piece in remote.astream(IMAGE, "Go", max_new_tokens=6)]
        assert "".join(pieces) == local.generate(IMAGE, "Go", max_new_tokens=6).text
        assert (await remote.aocr(IMAGE, max_new_tokens=4)).text == local.ocr(
            IMAGE, max_new_tokens=4
        ).text
    finally:
        remote.close()


# -- errors from the real server ---------------------------------------------------------------


def test_wrong_key_and_server_side_refusals_are_typed(service: LiveServer) -> None:
    with MississippiVLM.connect(service.url, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(RemoteStatusError) as caught:
            bad.ocr(IMAGE)
        assert caught.value.status_code == 401
        assert caught.value.error_code == "unauthorized"
        assert "api_key" in str(caught.value)


def test_deadline_and_limits_map_to_library_errors(local: MississippiVLM) -> None:
    settings = quiet_settings(request_timeout=0.3, max_image_pixels=100 * 100)
    with run_server(settings, local) as live, RemoteEngine(live.url, max_retries=0) as engine:
        long = GenerationRequest("x", sampling=SamplingParams(max_new_tokens=5000, ignore_eos=True))
        with pytest.raises(DeadlineExceededError):
            engine.generate(long)
        big = MississippiVLM(engine).load_image(Image.new("RGB", (200, 200)))
        with pytest.raises(RemoteStatusError) as caught:
            engine.generate(GenerationRequest("x", images=[big]))
        assert caught.value.status_code == 413
        assert caught.value.error_code == "image_too_large"


def test_full_queue_after_retries_is_queue_full(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    from mississippi_tools.engine.config import LocalEngineConfig

    busy = MississippiVLM.from_backend(
        tiny_backend, engine_config=LocalEngineConfig(max_batch_size=1, max_queue_size=1)
    )
    endless = SamplingParams(max_new_tokens=10_000, ignore_eos=True)
    try:
        with (
            run_server(quiet_settings(), busy) as live,
            RemoteEngine(live.url, max_retries=1, backoff=0.01) as engine,
        ):
            holders = [busy.engine.submit(GenerationRequest("x", sampling=endless))]  # type: ignore[attr-defined]
            wait_until(
                lambda: busy.engine.metrics_snapshot().running == 1,  # type: ignore[attr-defined]
                timeout=30,
                what="the first request running",
            )
            holders.append(busy.engine.submit(GenerationRequest("x", sampling=endless)))  # type: ignore[attr-defined]
            with pytest.raises(QueueFullError) as caught:
                engine.generate(GenerationRequest("y", sampling=SamplingParams(max_new_tokens=2)))
            assert caught.value.retry_after == 1.0
            for holder in holders:
                holder.cancel()
    finally:
        busy.close()


def test_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = RemoteEngine(f"http://127.0.0.1:{port}", model="m", max_retries=2, backoff=0.01)
    with engine, pytest.raises(RemoteConnectionError, match="cannot reach"):
        engine.generate(GenerationRequest("x"))


# -- other servers, retries and the payload (scripted transports) ----------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


def _completion(content: str, *, tokens: int = 3, finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion",
        "model": "served",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": tokens, "total_tokens": 11 + tokens},
    }


class Scripted(Script):
    """A :class:`Script` and a remote engine pointed at it over 127.0.0.1."""

    def __init__(self, owned_by: str | None, answers: list[Answer]) -> None:
        super().__init__(owned_by, answers)

    @contextmanager
    def engine(self, **kwargs: Any) -> Iterator[RemoteEngine]:
        kwargs.setdefault("backoff", 0.001)
        with scripted_server(self) as url, RemoteEngine(url, **kwargs) as engine:
            yield engine


def _loaded(vlm: MississippiVLM) -> Any:
    return vlm.load_image(IMAGE)


def test_vllm_gets_structured_outputs_tiling_and_token_ids() -> None:
    fake = Scripted("vllm", [httpx.Response(200, json=_completion('{"paid": true}'))])
    with fake.engine(family="h2ovl") as engine:
        assert engine.supports_grammar
        assert [o.name for o in engine.model_info.options] == ["max_tiles", "use_msac"]
        vlm = MississippiVLM(engine)
        result = vlm.extract_result(IMAGE, {"paid": True}, max_tiles=2)
    (body,) = fake.bodies
    assert body["model"] == "served"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["paid"]
    assert body["mm_processor_kwargs"] == {"max_dynamic_patch": 2}
    assert body["return_token_ids"] is True
    assert "ocr_mode" not in body
    content = body["messages"][0]["content"]
    assert content[0]["type"] == "image_url"
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert result.data == {"paid": True}
    assert result.meta.new_tokens == 3  # from usage when the server sends no ids


def test_unknown_servers_get_standard_fields_and_parse_repair_retry() -> None:
    fake = Scripted(
        "openai",
        [
            httpx.Response(200, json=_completion("here you go: {paid: yes")),
            httpx.Response(200, json=_completion('```json\n{"paid": false}\n```')),
        ],
    )
    with fake.engine() as engine:
        assert not engine.supports_grammar
        vlm = MississippiVLM(engine)
        assert vlm.model_info.family == "generic" and not vlm.model_info.options
        with pytest.raises(InvalidInputError, match="max_tiles is not an option of generic"):
            vlm.extract_result(IMAGE, {"paid": True}, max_tiles=3)
        result = vlm.extract_result(IMAGE, {"paid": True})
    assert result.data == {"paid": False}
    assert result.meta.attempts == 2
    first, retry = fake.bodies
    for body in (first, retry):
        assert not {"response_format", "mm_processor_kwargs", "return_token_ids", "top_k"} & set(
            body
        )
    assert "previous answer" in retry["messages"][-1]["content"][-1]["text"]


def test_structured_outputs_can_be_forced_and_models_endpoint_is_optional() -> None:
    fake = Scripted(None, [httpx.Response(200, json=_completion("{}"))])
    with fake.engine(model="mine", structured_outputs=True) as engine:
        assert engine.server_info().kind == "unknown"
        assert engine.model_id == "mine"
        engine.generate(GenerationRequest("x", json_schema={"type": "object"}))
    assert "response_format" in fake.bodies[0]
    with Scripted(None, []).engine() as nameless, pytest.raises(RemoteStatusError, match="404"):
        _ = nameless.model_id


def test_retries_with_backoff_honour_retry_after_then_succeed() -> None:
    fake = Scripted(
        "mississippi-tools",
        [
            httpx.Response(
                503,
                json={"error": {"code": "model_loading", "message": "loading"}},
                headers={"Retry-After": "0"},
            ),
            DROP,
            httpx.Response(
                429,
                json={"error": {"code": "queue_full", "message": "busy"}},
                headers={"Retry-After": "0"},
            ),
            httpx.Response(200, json=_completion("done")),
        ],
    )
    with fake.engine(max_retries=3) as engine:
        assert engine.generate(GenerationRequest("x")).text == "done"
    assert len(fake.bodies) == 4


def test_errors_are_mapped_once_at_the_boundary() -> None:
    cases: list[tuple[Answer, type[Exception], str]] = [
        (
            httpx.Response(
                429,
                json={"error": {"code": "queue_full", "message": "busy"}},
                headers={"Retry-After": "7"},
            ),
            QueueFullError,
            "busy",
        ),
        (
            httpx.Response(504, json={"error": {"code": "deadline_exceeded", "message": "late"}}),
            DeadlineExceededError,
            "late",
        ),
        (
            httpx.Response(400, json={"object": "error", "message": "bad things", "code": 400}),
            RemoteStatusError,
            "bad things",
        ),
        (httpx.Response(500, text="<html>oops</html>"), RemoteStatusError, "oops"),
        (Stall(3.0), RemoteConnectionError, "did not answer"),
    ]
    for answer, error_type, text in cases:
        fake = Scripted("vllm", [answer])
        engine_options = {"max_retries": 0, "timeout": 1.0}
        with (
            fake.engine(**engine_options) as engine,
            pytest.raises(error_type, match=text) as caught,
        ):
            engine.generate(GenerationRequest("x"))
        if isinstance(caught.value, QueueFullError):
            assert caught.value.retry_after == 7.0
        if isinstance(caught.value, RemoteStatusError) and "bad" in text:
            assert caught.value.status_code == 400
            assert caught.value.error_code == "400"
    fake = Scripted("vllm", [Stall(3.0)])
    with fake.engine(**engine_options) as engine, pytest.raises(DeadlineExceededError):
        engine.generate(GenerationRequest("x", timeout=0.5))


def test_stream_error_events_raise() -> None:
    events = (
        'data: {"choices": [{"index": 0, "delta": {"content": "par"}}]}\n\n'
        'data: {"error": {"code": "deadline_exceeded", "message": "late"}}\n\n'
        "data: [DONE]\n\n"
    )
    fake = Scripted(
        "mississippi-tools",
        [httpx.Response(200, text=events, headers={"content-type": "text/event-stream"})],
    )
    with fake.engine() as engine:
        stream = engine.stream(GenerationRequest("x"))
        assert next(stream) == "par"
        with pytest.raises(DeadlineExceededError, match="late"):
            next(stream)


def test_messages_round_trip_placeholders() -> None:
    assert build_messages("Q", [], ["u"]) == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "u"}},
                {"type": "text", "text": "Q"},
            ],
        }
    ]
    assert build_messages("Q", [], []) == [{"role": "user", "content": "Q"}]
    (message,) = build_messages("Image-1: <image>\nImage-2: <image>\nQ", [], ["a", "b"])
    assert [part["type"] for part in message["content"]] == ["image_url", "image_url", "text"]
    (message,) = build_messages("<image>Q", [], ["a"])
    assert message["content"][0] == {"type": "text", "text": ""}
    with pytest.raises(InvalidInputError, match="placeholder"):
        build_messages("<image><image>", [], ["a"])


def test_base_url_forms() -> None:
    with RemoteEngine("http://host:1/v1/", model="m") as engine:
        assert engine.base_url == "http://host:1"
    with pytest.raises(InvalidInputError, match="http"):
        RemoteEngine("host:1")
