"""Loops on the task APIs: stopped by the engine, retried once against loops, then reported.

The model is the tiny checkpoint scripted to write ``LOOPING_ANSWER`` again and again (fixture
``looping_backend``): a real checkpoint, run by the same code as any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mississippi_tools import ExtractionError, MississippiVLM
from mississippi_tools.engine.base import GenerationOutput, GenerationRequest
from mississippi_tools.engine.repetition import RepetitionCheck
from mississippi_tools.errors import RepetitionError
from mississippi_tools.tasks.base import (
    REPETITION_RETRY_NGRAM,
    REPETITION_RETRY_PENALTY,
    retry_against_repetition,
)
from mississippi_tools.tasks.extract import ExtractionPlan
from tests.support import LOOPING_ANSWER

FAST = {"max_tiles": 1, "max_new_tokens": 300}


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def looping_vlm(looping_backend) -> Iterator[MississippiVLM]:  # type: ignore[no-untyped-def]
    with MississippiVLM.from_backend(looping_backend) as vlm:
        yield vlm


def test_a_loop_is_stopped_retried_and_reported(
    looping_vlm: MississippiVLM, sample_png: Path
) -> None:
    with pytest.raises(RepetitionError) as caught:
        looping_vlm.ocr(sample_png, **FAST)
    error = caught.value
    assert isinstance(error, ExtractionError)  # every surface maps it as "no valid result"
    assert error.code == "repetition" and error.finish_reason == "repetition"
    assert error.attempts == 2
    assert _words(error.raw_text).startswith(_words(LOOPING_ANSWER * 3))
    message = str(error)
    assert "fell into a loop" in message and "again on the retry" in message
    assert f"repetition_penalty={REPETITION_RETRY_PENALTY:g}" in message
    assert f"no repeated {REPETITION_RETRY_NGRAM}-token passages" in message
    # both attempts were stopped early by the engine, neither ran to max_new_tokens
    metrics = looping_vlm.engine.metrics  # type: ignore[attr-defined]
    assert metrics.requests_repetition == 2
    assert metrics.generated_tokens < 2 * FAST["max_new_tokens"]


def test_every_task_reports_a_loop(looping_vlm: MississippiVLM, sample_png: Path) -> None:
    for task, arguments in [("ask", {"question": "What is it?"}), ("read_table", {})]:
        with pytest.raises(RepetitionError):
            looping_vlm.run(task, sample_png, **arguments, **FAST)


def test_turning_the_check_off_returns_the_loop(
    looping_vlm: MississippiVLM, sample_png: Path
) -> None:
    result = looping_vlm.ocr(sample_png, repetition=False, **FAST)
    assert result.meta.finish_reason == "length" and result.meta.new_tokens == 300
    assert _words(result.text).startswith(_words(LOOPING_ANSWER * 10))


def test_a_retry_that_does_not_loop_gives_the_result(
    looping_vlm: MississippiVLM, sample_png: Path
) -> None:
    """70 tokens: the first attempt loops past 64 tokens; on the retry the ban stops the loop
    twice, short of the three blocks that would count as looping again."""
    result = looping_vlm.ocr(sample_png, max_tiles=1, max_new_tokens=70)
    assert result.meta.attempts == 2
    assert result.meta.finish_reason == "length"
    assert _words(LOOPING_ANSWER * 9) not in _words(result.text)


def test_a_custom_check(looping_vlm: MississippiVLM, sample_png: Path) -> None:
    """A check that only fires after 200 tokens leaves a 150-token answer alone."""
    check = RepetitionCheck(min_span=200)
    result = looping_vlm.ocr(sample_png, repetition=check, max_tiles=1, max_new_tokens=150)
    assert (result.meta.finish_reason, result.meta.attempts) == ("length", 1)


async def test_async_reports_a_loop(looping_vlm: MississippiVLM, sample_png: Path) -> None:
    with pytest.raises(RepetitionError):
        await looping_vlm.aocr(sample_png, **FAST)


def test_the_batch_forms_report_a_loop_per_page(
    looping_vlm: MississippiVLM, sample_png: Path
) -> None:
    outcomes = list(looping_vlm.iter_batch("ocr", [sample_png, sample_png], **FAST))
    assert [type(o.error) for o in outcomes] == [RepetitionError, RepetitionError]


# -- the policy, on its own --------------------------------------------------------------------


def _output(reason: str, text: str = "a b a b") -> GenerationOutput:
    return GenerationOutput(
        text=text, token_ids=[1, 2] * 40, finish_reason=reason, prompt_tokens=5, raw_text=text
    )  # type: ignore[arg-type]


def test_the_retry_bans_repeated_passages_and_nudges_the_penalty() -> None:
    request = GenerationRequest("Read.", repetition=RepetitionCheck())
    retry = retry_against_repetition(request, _output("repetition"))
    assert retry.repetition is not None
    assert retry.repetition.no_repeat_ngram == REPETITION_RETRY_NGRAM
    assert retry.sampling.repetition_penalty == REPETITION_RETRY_PENALTY
    assert retry.request_id != request.request_id and retry.prompt == request.prompt
    with pytest.raises(RepetitionError):
        retry_against_repetition(retry, _output("repetition"))


def test_extraction_retries_a_loop_then_raises() -> None:
    plan = ExtractionPlan({"name": "", "city": ""}, constrained=True)
    first = plan.first_request()
    assert first.repetition == RepetitionCheck()
    retry = plan.handle(_output("repetition"))
    assert isinstance(retry, GenerationRequest)
    assert retry.repetition is not None and retry.repetition.no_repeat_ngram > 0
    with pytest.raises(RepetitionError) as caught:
        plan.handle(_output("repetition"))
    assert caught.value.attempts == 2
    assert caught.value.errors == ["the answer fell into a loop after 80 tokens"] * 2


def test_extraction_after_a_loop_can_still_succeed() -> None:
    plan = ExtractionPlan({"name": ""}, constrained=True)
    plan.first_request()
    plan.handle(_output("repetition"))
    result = plan.handle(_output("stop", '{"name": "Ada"}'))
    assert result.data == {"name": "Ada"}  # type: ignore[union-attr]
    assert result.attempts == 2  # type: ignore[union-attr]
    assert result.errors == ["the answer fell into a loop after 80 tokens"]  # type: ignore[union-attr]
