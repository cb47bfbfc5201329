"""Loop detection in the engine: the detector, and a real looping checkpoint stopped by it."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine
from mississippi_tools.engine.repetition import RepetitionCheck, RepetitionGuard
from mississippi_tools.errors import InvalidInputError
from tests.support import LOOPING_ANSWER, loaded_image


def _words(text: str) -> str:
    """``text`` with runs of spaces as one (the tiny tokenizer doubles some)."""
    return " ".join(text.split())


def _observe(guard: RepetitionGuard, tokens: list[int]) -> int | None:
    """Feed ``tokens``; the 1-based count at which the guard fired, else None."""
    for count, token in enumerate(tokens, start=1):
        if guard.observe(token):
            return count
    return None


def test_a_two_token_loop_fires_once_it_spans_min_span() -> None:
    guard = RepetitionGuard(RepetitionCheck(min_repeats=6, min_span=64))
    prefix = list(range(100, 120))  # ordinary text first
    fired = _observe(guard, prefix + [1, 2] * 100)
    assert fired == len(prefix) + 64
    assert guard.reason == "the last 64 tokens repeat a 2-token unit 32 times"


def test_a_long_line_needs_min_repeats() -> None:
    line = list(range(200, 240))  # a 40-token line written again and again
    guard = RepetitionGuard(RepetitionCheck(min_repeats=6, min_span=64))
    fired = _observe(guard, line * 10)
    assert fired == 6 * len(line)  # 240 tokens: six times the line, not just 64 tokens
    assert guard.reason is not None and "40-token unit 6 times" in guard.reason


def test_ordinary_repetition_is_left_alone() -> None:
    """A table separator, a dot leader and three identical lines do not count as a loop."""
    separator = [7, 8] * 12  # "|---|---|..." of 12 columns
    leader = [9] * 30
    form_line = list(range(300, 320))
    text = list(range(400, 450)) + separator + leader + form_line * 3 + list(range(500, 600))
    assert _observe(RepetitionGuard(RepetitionCheck()), text) is None


def test_units_longer_than_max_period_are_not_watched() -> None:
    line = list(range(1000, 1050))
    assert _observe(RepetitionGuard(RepetitionCheck(max_period=49)), line * 10) is None
    assert _observe(RepetitionGuard(RepetitionCheck(max_period=50)), line * 10) is not None


def test_the_ngram_ban_blocks_a_repeat_and_counts_the_blocked_choices() -> None:
    check = RepetitionCheck(no_repeat_ngram=3, ngram_window=0, max_blocked=2, min_span=1000)
    guard = RepetitionGuard(check)
    for token in (1, 2, 3, 1, 2):
        assert not guard.observe(token)
    logits = torch.zeros(10)
    logits[3] = 5.0  # the model wants "1 2 3" again
    guard.ban(logits)
    assert logits[3] == float("-inf") and guard.blocked == 1
    assert int(torch.argmax(logits)) != 3
    # a choice that is not the banned one is not a block
    logits = torch.zeros(10)
    logits[4] = 5.0
    guard.ban(logits)
    assert guard.blocked == 1 and logits[4] == 5.0


def test_the_ngram_window_forgets_old_passages() -> None:
    guard = RepetitionGuard(RepetitionCheck(no_repeat_ngram=3, ngram_window=4, min_span=1000))
    _observe(guard, [1, 2, 3, 10, 11, 12, 13, 1, 2])
    logits = torch.zeros(20)
    guard.ban(logits)
    assert torch.isfinite(logits).all()  # "1 2 3" is older than the last 4 tokens


def test_the_ban_never_leaves_no_token() -> None:
    guard = RepetitionGuard(RepetitionCheck(no_repeat_ngram=2, ngram_window=0))
    _observe(guard, [1, 2, 1])
    logits = torch.full((5,), float("-inf"))
    logits[2] = 0.0  # a grammar allows only the banned token
    guard.ban(logits)
    assert logits[2] == 0.0


@pytest.mark.parametrize(
    ("field", "value"), [("min_repeats", 1), ("max_period", 0), ("no_repeat_ngram", 1)]
)
def test_bad_checks_are_refused(field: str, value: int) -> None:
    with pytest.raises(InvalidInputError, match=f"RepetitionCheck.{field}"):
        RepetitionCheck(**{field: value})


# -- the engine, on a checkpoint scripted to loop ------------------------------------------------


def _looping_request(tokens: int = 300, **kw) -> GenerationRequest:  # type: ignore[no-untyped-def]
    image = loaded_image(Image.new("RGB", (64, 64), "white"))
    return GenerationRequest(
        "Read the text in the image.",
        images=[image],
        sampling=SamplingParams(max_new_tokens=tokens),
        options={"max_tiles": 1},
        **kw,
    )


def test_the_engine_stops_a_loop_and_counts_it(looping_backend) -> None:  # type: ignore[no-untyped-def]
    with LocalEngine(looping_backend) as engine:
        unchecked = engine.generate(_looping_request())
        assert unchecked.finish_reason == "length"
        assert _words(unchecked.text).startswith(_words(LOOPING_ANSWER * 3))
        assert engine.metrics.requests_repetition == 0

        output = engine.generate(_looping_request(repetition=RepetitionCheck()))
        assert output.finish_reason == "repetition"
        assert len(output.token_ids) == 64  # stopped as soon as the loop spans 64 tokens
        assert output.repetition == "the last 64 tokens repeat a 4-token unit 16 times"
        assert engine.metrics.requests_repetition == 1


def test_under_the_ngram_ban_a_model_that_keeps_looping_is_stopped(looping_backend) -> None:  # type: ignore[no-untyped-def]
    check = RepetitionCheck(no_repeat_ngram=8, ngram_window=0, max_blocked=3)
    with LocalEngine(looping_backend) as engine:
        output = engine.generate(_looping_request(repetition=check))
    assert output.finish_reason == "repetition"
    assert output.repetition is not None and "tried 3 times" in output.repetition
    # the ban forced the model off its loop before it could repeat an 8-token passage
    assert _words(output.text).startswith(_words(LOOPING_ANSWER * 2))
    assert _words(LOOPING_ANSWER * 4) not in _words(output.text)


def test_ignore_eos_turns_the_check_off(looping_backend) -> None:  # type: ignore[no-untyped-def]
    request = _looping_request(tokens=100, repetition=RepetitionCheck())
    request.sampling = SamplingParams(max_new_tokens=100, ignore_eos=True)
    with LocalEngine(looping_backend) as engine:
        output = engine.generate(request)
    assert output.finish_reason == "length" and len(output.token_ids) == 100
