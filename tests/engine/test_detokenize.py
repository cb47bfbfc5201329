"""Streaming text: the final answer is the original's, and the deltas add up to it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mississippi_tools.engine.detokenize import StreamingText
from mississippi_tools.models.h2ovl.tokenization import H2OVLTokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint: Path) -> H2OVLTokenizer:
    return H2OVLTokenizer.from_pretrained(tiny_checkpoint)


def _run(
    tokenizer: H2OVLTokenizer, ids: list[int], stop: tuple[str, ...] = ()
) -> tuple[str, str, StreamingText]:
    stream = StreamingText(tokenizer, stop=stop, record_pieces=True)
    deltas = []
    for idx in ids:
        delta, hit = stream.push(idx)
        deltas.append(delta)
        if hit:
            break
    final, tail = stream.finish()
    return final, "".join(deltas) + tail, stream


def _original_answer(tokenizer: H2OVLTokenizer, ids: list[int], stop: tuple[str, ...]) -> str:
    # The original's chat: decode (special tokens skipped), cut, strip.
    text = tokenizer.decode(ids)
    for s in stop:
        text = text.split(s)[0]
    return text.strip()


def test_an_answer_ending_in_an_incomplete_character_keeps_the_replacement_character(
    tokenizer: H2OVLTokenizer,
) -> None:
    ids = tokenizer.encode("Total: 12 €")
    assert [tokenizer.id_to_token(i) for i in ids[-3:]] == ["<0xE2>", "<0x82>", "<0xAC>"]
    cut = ids[:-1]  # the limit hit inside the euro sign
    final, streamed, stream = _run(tokenizer, cut)
    assert final == tokenizer.decode(cut).strip() == "Total: 12 \ufffd\ufffd"
    assert streamed == final
    assert stream.pieces is not None
    assert "".join(stream.pieces) == stream.raw_text == tokenizer.decode(cut)


def test_a_completed_character_is_streamed_whole(tokenizer: H2OVLTokenizer) -> None:
    ids = tokenizer.encode("12 € and more")
    final, streamed, stream = _run(tokenizer, ids)
    assert final == streamed == "12 € and more"
    assert stream.pieces is not None
    assert "\ufffd" not in "".join(stream.pieces)


@pytest.mark.parametrize("stop", [(), ("ab",), ("x", "€ a")])
def test_random_answers_match_the_original_and_the_stream_adds_up(
    tokenizer: H2OVLTokenizer, stop: tuple[str, ...]
) -> None:
    rng = random.Random(11)
    pool = [
        *range(3, 600),
        *(tokenizer.token_to_id(p) for p in ("▁", "<0x0A>", "<0x20>", "<0x1C>")),
        *tokenizer.encode("€ü🙂")[1:],  # byte pieces of multi-byte characters
        32005,  # a special token, skipped in the text
    ]
    for _ in range(300):
        ids = [rng.choice(pool) for _ in range(rng.randint(1, 12))]
        final, streamed, stream = _run(tokenizer, ids, stop)
        assert final == _original_answer(tokenizer, ids, stop), ids
        assert streamed == final, ids
        if not stop:
            assert stream.pieces is not None
            assert "".join(stream.pieces) == stream.raw_text == tokenizer.decode(ids), ids
