"""Per-field confidences from token texts or a tokenizer (mississippi_tools.schema.confidence)."""

from __future__ import annotations

import math

import pytest

from mississippi_tools.schema import field_confidences
from tests.engine.grammar_support import CharTokenizer

TOKENIZER = CharTokenizer()


def test_field_confidences_take_the_weakest_token_of_each_value() -> None:
    texts = [
        '{"',
        "name",
        '": "',
        "Ann",
        '", "',
        "items",
        '": [',
        "12",
        ".5",
        ", ",
        "true",
        ", ",
        "null",
        "]}",
    ]
    logprobs = [0.0, -0.1, -0.2, -0.3, -0.01, 0.0, 0.0, -0.4, -2.0, 0.0, -0.05, -0.9, -0.6, 0.0]
    text = "".join(texts)
    confidences = field_confidences(text, list(range(len(texts))), logprobs, token_texts=texts)
    assert confidences == pytest.approx(
        {
            "/name": math.exp(-0.3),  # '": "', "Ann", '", "' overlap: the weakest is "Ann"
            "/items/0": math.exp(-2.0),
            "/items/1": math.exp(-0.05),
            "/items/2": math.exp(-0.6),
        }
    )


def test_field_confidences_decode_tokens_and_handle_split_characters() -> None:
    tok = TOKENIZER
    # {"k~1": "é"} with é written as two byte tokens, and a key with a "/" in it
    ids = [tok.id_of(c) for c in '{"k/":'] + [tok.id_of('▁"')]
    ids += [tok.id_of("<0xC3>"), tok.id_of("<0xA9>")]
    ids += [tok.id_of('"'), tok.id_of("}")]
    logprobs = [0.0] * len(ids)
    logprobs[7] = -1.0  # the first byte of é: its own text is empty, it counts with the second
    text = tok.decode(ids)
    assert text == '{"k/": "é"}'
    assert field_confidences(text, ids, logprobs, tok) == pytest.approx({"/k~1": math.exp(-1.0)})
    assert field_confidences("7", [tok.id_of("7")], [-0.5], tok) == pytest.approx(
        {"": math.exp(-0.5)}
    )
    assert field_confidences("no json", [tok.id_of("n")], [0.0], token_texts=["no json"]) == {}
    with pytest.raises(ValueError, match="do not produce"):
        field_confidences("other", [1], [0.0], token_texts=["text"])
    with pytest.raises(ValueError, match="log-probabilities"):
        field_confidences("x", [1, 2], [0.0], token_texts=["x", ""])
    with pytest.raises(ValueError, match="token_texts or a tokenizer"):
        field_confidences("x", [1], [0.0])


# --------------------------------------------------------------------------------------------------
# With the tiny random model through the engine
# --------------------------------------------------------------------------------------------------
