"""The engine on the generate kind (IDEFICS): deadlines, cancellation, streaming, processors."""

from __future__ import annotations

import time

import pytest
import torch
from PIL import Image

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine
from mississippi_tools.errors import DeadlineExceededError, RequestCancelledError
from tests.support import loaded_image


def _request(tokens: int = 8, **kw) -> GenerationRequest:  # type: ignore[no-untyped-def]
    image = loaded_image(Image.new("RGB", (320, 240), (200, 40, 90)))
    return GenerationRequest(
        "Describe it.", images=[image], sampling=SamplingParams(max_new_tokens=tokens), **kw
    )


@pytest.fixture
def engine(idefics1_backend):  # type: ignore[no-untyped-def]
    with LocalEngine(idefics1_backend) as running:
        yield running


def test_engine_output_equals_the_backends_own_greedy_run(engine: LocalEngine) -> None:
    backend = engine.backend
    request = _request(tokens=6)
    out = engine.generate(
        GenerationRequest(
            request.prompt,
            images=request.images,
            sampling=SamplingParams(max_new_tokens=6, ignore_eos=True),
        )
    )
    prepared = backend.prepare(request.prompt, request.images)
    logits, state = backend.start(prepared)
    tokens: list[int] = []
    for _ in range(6):
        for process in prepared.logits_processors:
            logits = process(tokens, logits)
        tokens.append(int(logits.argmax()))
        logits = backend.step(state, tokens[-1])
    assert out.token_ids == tokens
    assert out.prompt_tokens == len(prepared.input_ids)


def test_stream_deltas_concatenate_to_the_text(engine: LocalEngine) -> None:
    deltas = list(engine.stream(_request(12)))
    again = engine.generate(_request(12))
    assert "".join(deltas) == again.text
    assert len(deltas) > 1


def test_deadline_ends_a_long_answer(idefics1_backend) -> None:  # type: ignore[no-untyped-def]
    with LocalEngine(idefics1_backend) as engine:
        slow = engine.submit(
            GenerationRequest(
                "long",
                sampling=SamplingParams(max_new_tokens=1500, ignore_eos=True),
                timeout=0.3,
            )
        )
        with pytest.raises(DeadlineExceededError, match="deadline"):
            slow.result(60)
        assert engine.generate(_request(tokens=3)).token_ids  # the slot is free again


def test_cancel_and_closing_a_stream_end_the_request(idefics1_backend) -> None:  # type: ignore[no-untyped-def]
    with LocalEngine(idefics1_backend) as engine:
        handle = engine.submit(
            GenerationRequest("long", sampling=SamplingParams(max_new_tokens=1500, ignore_eos=True))
        )
        time.sleep(0.2)
        handle.cancel()
        with pytest.raises(RequestCancelledError):
            handle.result(60)
        stream = engine.stream(
            GenerationRequest("long", sampling=SamplingParams(max_new_tokens=1500, ignore_eos=True))
        )
        next(stream)
        stream.close()
        assert engine.generate(_request(tokens=2)).token_ids
        assert engine.metrics_snapshot().requests_cancelled == 2


def test_a_request_logits_processor_steers_every_token(engine: LocalEngine) -> None:
    tokenizer = engine.backend.tokenizer
    wanted = tokenizer.encode(" river")[-1]
    seen: list[int] = []

    class Force:
        def __call__(self, token_ids, logits: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
            seen.append(len(token_ids))
            logits[:] = float("-inf")
            logits[wanted] = 0.0
            return logits

    out = engine.generate(_request(tokens=4, logits_processors=[Force()]))
    assert out.token_ids == [wanted] * 4
    assert seen == [0, 1, 2, 3]


def test_json_schema_is_constrained_by_the_grammar(idefics1_scripted) -> None:  # type: ignore[no-untyped-def]
    import json

    from mississippi_tools.models.registry import load_backend

    backend = load_backend(idefics1_scripted, device="cpu", dtype="float32")
    schema = {
        "type": "object",
        "properties": {"total": {"type": "string"}},
        "required": ["total"],
        "additionalProperties": False,
    }
    with LocalEngine(backend) as scripted:
        free = scripted.generate(_request(tokens=40))
        constrained = scripted.generate(_request(tokens=40, json_schema=schema))
    assert json.loads(free.text) == {"total": 5}  # what the weights write unconstrained
    assert constrained.finish_reason == "stop"
    assert isinstance(json.loads(constrained.text)["total"], str)  # the schema wins
