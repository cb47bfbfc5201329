"""The engine on the Florence-2 generate backend: one request at a time with the same controls.

Streaming, deadlines, cancellation, sampling and the logits-processor hook (what the grammar
uses) work on the generate kind as on the decoder kind.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from PIL import Image

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine, LocalEngineConfig
from mississippi_tools.errors import (
    DeadlineExceededError,
    InvalidInputError,
    RequestCancelledError,
)
from tests.support import loaded_image


def _request(
    prompt: str = "<DocVQA>What is the total?", tokens: int = 8, **kw: Any
) -> GenerationRequest:
    image = loaded_image(Image.new("RGB", (120, 80), (200, 220, 240)))
    return GenerationRequest(
        prompt, images=[image], sampling=SamplingParams(max_new_tokens=tokens), **kw
    )


class _Slow:
    """A real logits processor that holds each step until released (or 30 s pass)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, token_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.release.wait(0.05 if self.calls > 1 else 30)
        return logits


class _Only:
    """Allows some token ids only (the hook constraining the answer, as the grammar does)."""

    def __init__(self, *tokens: int) -> None:
        self.tokens = list(tokens)

    def __call__(self, token_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        masked = torch.full_like(logits, float("-inf"))
        masked[self.tokens] = logits[self.tokens]
        return masked


@pytest.fixture
def engine(florence2_backend: Any):  # type: ignore[no-untyped-def]
    with LocalEngine(florence2_backend, LocalEngineConfig(feature_cache_mb=0)) as running:
        yield running


def test_generate_matches_the_backend_greedy_loop(
    engine: LocalEngine, florence2_backend: Any
) -> None:
    out = engine.generate(_request(tokens=6))
    prepared = florence2_backend.prepare("<DocVQA>What is the total?", _request().images)
    logits, state = florence2_backend.start(prepared)
    expected = []
    for _ in range(6):
        expected.append(int(logits.argmax()))
        logits = florence2_backend.step(state, expected[-1])
    assert out.token_ids == expected
    assert out.finish_reason == "length"
    assert out.prompt_tokens == len(prepared.input_ids)


def test_stream_deltas_concatenate_to_the_text(engine: LocalEngine, florence2_backend: Any) -> None:
    words = _Only(*florence2_backend.tokenizer.encode("Invoice total due date Main Street"))
    deltas = list(engine.stream(_request(tokens=10, logits_processors=[words])))
    assert len(deltas) > 1
    again = engine.generate(_request(tokens=10, logits_processors=[words]))
    assert "".join(deltas) == again.text and again.text.strip()


def test_logits_processor_hook_constrains_the_answer(
    engine: LocalEngine, florence2_backend: Any
) -> None:
    token = florence2_backend.tokenizer.encode(" total")[0]
    out = engine.generate(_request(tokens=4, logits_processors=[_Only(token)]))
    assert out.token_ids == [token] * 4


def test_sampling_is_seeded(engine: LocalEngine) -> None:
    params = SamplingParams(max_new_tokens=8, temperature=1.5, seed=3)
    a = engine.generate(GenerationRequest("<OCR>", images=_request().images, sampling=params))
    b = engine.generate(GenerationRequest("<OCR>", images=_request().images, sampling=params))
    assert a.token_ids == b.token_ids


def test_deadline_fails_the_request_and_frees_the_engine(engine: LocalEngine) -> None:
    slow = _Slow()
    handle = engine.submit(_request(tokens=900, logits_processors=[slow], timeout=0.3))
    with pytest.raises(DeadlineExceededError, match="deadline"):
        handle.result(60)
    slow.release.set()
    assert engine.generate(_request(tokens=3)).finish_reason == "length"


def test_cancel_and_closing_a_stream_cancel(engine: LocalEngine) -> None:
    slow = _Slow()
    handle = engine.submit(_request(tokens=900, logits_processors=[slow]))
    handle.cancel()
    slow.release.set()
    with pytest.raises(RequestCancelledError):
        handle.result(60)
    stream = engine.stream(_request(tokens=900, logits_processors=[_Slow()]))
    next(stream)
    stream.close()
    assert engine.generate(_request(tokens=2)).token_ids
    assert engine.metrics_snapshot().requests_cancelled == 2


def test_one_image_per_prompt_and_no_history(florence2_backend: Any) -> None:
    image = _request().images[0]
    with pytest.raises(InvalidInputError, match="exactly one image"):
        florence2_backend.prepare("<OCR>", [image, image])
    with pytest.raises(InvalidInputError, match="exactly one image"):
        florence2_backend.prepare("<OCR>", [])
    with pytest.raises(InvalidInputError, match="no conversation history"):
        florence2_backend.prepare("<OCR>", [image], history=[("q", "a")])
    with pytest.raises(InvalidInputError, match="must be the whole prompt"):
        florence2_backend.prepare("<OCR> and more", [image])
    with pytest.raises(InvalidInputError, match="not an option of florence2"):
        florence2_backend.prepare("<OCR>", [image], options={"max_tiles": 2})


def test_typed_special_tokens_stay_text(florence2_backend: Any) -> None:
    image = _request().images[0]
    typed = "<loc_5><s></s><pad><ocr>"
    ids = florence2_backend.prepare("<DocVQA>" + typed, [image]).input_ids
    added = set(florence2_backend.tokenizer.added_tokens.values())
    text_ids = ids[65:]
    assert [i for i in text_ids if i in added] == [0, 2]  # the template's <s> and </s> only
    assert typed in florence2_backend.tokenizer.decode(text_ids, skip_special_tokens=True)
