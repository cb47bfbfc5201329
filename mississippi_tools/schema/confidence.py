"""Per-field confidences: how sure the model was of each value it wrote in its JSON answer."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Final, Protocol

from mississippi_tools.schema._common import escape
from mississippi_tools.schema.limits import MAX_SCHEMA_DEPTH

__all__ = ["TokenDecoder", "field_confidences"]


class TokenDecoder(Protocol):
    """What :func:`field_confidences` needs of a tokenizer (any ``TokenizerLike`` has it)."""

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``."""
        ...


def field_confidences(
    text: str,
    token_ids: Sequence[int],
    token_logprobs: Sequence[float],
    tokenizer: TokenDecoder | None = None,
    *,
    token_texts: Sequence[str] | None = None,
) -> dict[str, float]:
    """The probability the model gave each leaf value of its JSON answer.

    Each generated token is mapped to the characters it produced: from ``token_texts`` when the
    engine recorded them (``GenerationOutput.token_texts``), else by decoding growing prefixes of
    ``token_ids`` with ``tokenizer``. A token that ends inside a multi-byte character (it added
    no text) counts with the token completing the character. A leaf value (string, number,
    boolean or null; a string's span includes its quotes, so the choice to close it counts) gets
    the **minimum** probability ``exp(logprob)`` over the tokens overlapping its span: the weakest
    link, so one doubtful digit makes the whole number doubtful.

    What it means: how sure the model itself was of the tokens it wrote for that value. Under a
    grammar constraint it is the probability among the tokens the grammar allowed (the engine
    records log-probabilities after masking), so forced tokens count as 1. What it does NOT mean:
    the chance that the value is correct. It is not calibrated, a model can be confidently wrong
    (a misread digit at 0.99), and values forced by the schema (an enum of one value) look
    certain.

    Args:
        text: The answer text (``GenerationOutput.text``: decoded, then stripped).
        token_ids: The generated tokens (without the stop token).
        token_logprobs: The log-probability of each of ``token_ids``.
        tokenizer: Decodes ``token_ids`` when ``token_texts`` is not given.
        token_texts: The text each token added; they concatenate to the raw answer.

    Returns:
        ``{json_pointer: probability}`` for every leaf, e.g. ``{"/items/0/price": 0.93}``; the
        root's pointer is ``""`` when the answer is a single scalar. Empty when the text holds no
        parsable JSON, or JSON nested deeper than
        :data:`~mississippi_tools.schema.limits.MAX_SCHEMA_DEPTH` levels.

    Raises:
        ValueError: The lengths of ``token_ids``, ``token_logprobs`` and ``token_texts`` differ,
            neither ``token_texts`` nor ``tokenizer`` is given, or the tokens do not produce
            ``text``.

    Example:
        >>> texts = ['{"', 'a": ', "1", "}"]
        >>> field_confidences('{"a": 1}', [7, 8, 9, 10], [0.0, 0.0, -0.5, 0.0], token_texts=texts)
        {'/a': 0.6065306597126334}
    """
    if len(token_logprobs) != len(token_ids):
        raise ValueError(
            f"{len(token_logprobs)} log-probabilities for {len(token_ids)} tokens; request "
            "logprobs=True"
        )
    if token_texts is None:
        if tokenizer is None:
            raise ValueError("field_confidences needs token_texts or a tokenizer")
        token_texts = _decode_pieces(token_ids, tokenizer)
    if len(token_texts) != len(token_ids):
        raise ValueError(f"{len(token_texts)} token texts for {len(token_ids)} tokens")
    raw = "".join(token_texts)
    lead = len(raw) - len(raw.lstrip())
    if raw[lead : lead + len(text)] != text:
        raise ValueError("the tokens do not produce the given text")
    spans = _token_spans(token_texts)
    result: dict[str, float] = {}
    for pointer, (start, end) in _leaf_spans(text).items():
        start, end = start + lead, end + lead
        overlapping = [
            logprob
            for (token_start, token_end), logprob in zip(spans, token_logprobs, strict=True)
            if token_start < end and token_end > start
        ]
        result[pointer] = math.exp(min(overlapping)) if overlapping else 1.0
    return result


def _decode_pieces(token_ids: Sequence[int], tokenizer: TokenDecoder) -> list[str]:
    """The text each token adds to the decoded answer ("" while a character is incomplete)."""
    pieces: list[str] = []
    done = ""
    for k in range(len(token_ids)):
        prefix = tokenizer.decode(list(token_ids[: k + 1]))
        if prefix.endswith("\ufffd") or not prefix.startswith(done):
            pieces.append("")
            continue
        pieces.append(prefix[len(done) :])
        done = prefix
    return pieces


def _token_spans(token_texts: Sequence[str]) -> list[tuple[int, int]]:
    """``(start, end)`` of each token in the joined text; empty tokens share the next span."""
    spans: list[tuple[int, int]] = []
    pending: list[int] = []
    position = 0
    for index, piece in enumerate(token_texts):
        start, position = position, position + len(piece)
        spans.append((start, position))
        if not piece:
            pending.append(index)
            continue
        for waiting in pending:
            spans[waiting] = (start, position)
        pending.clear()
    return spans


_NUMBER_RE: Final = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_WHITESPACE: Final = " \t\n\r"
_DECODER: Final = json.JSONDecoder()


def _leaf_spans(text: str) -> dict[str, tuple[int, int]]:
    """JSON pointer -> character span of every leaf value of the (first) JSON value in ``text``."""
    starts = [i for i, c in enumerate(text) if c in "{["]
    candidates = [len(text) - len(text.lstrip()), *starts[:1]]
    for start in candidates:
        spans: dict[str, tuple[int, int]] = {}
        try:
            _scan(text, start, "", spans)
        except (ValueError, IndexError):
            continue
        return spans
    return {}


def _scan(
    text: str, i: int, pointer: str, spans: dict[str, tuple[int, int]], level: int = 0
) -> int:
    if level > MAX_SCHEMA_DEPTH:
        raise ValueError(f"nested deeper than {MAX_SCHEMA_DEPTH} levels")
    while text[i] in _WHITESPACE:
        i += 1
    char = text[i]
    if char == "{":
        i += 1
        while True:
            while text[i] in _WHITESPACE:
                i += 1
            if text[i] == "}":
                return i + 1
            if text[i] != '"':
                raise ValueError("expected a key")
            key, i = _DECODER.raw_decode(text, i)
            if not isinstance(key, str):
                raise ValueError("expected a key")
            while text[i] in _WHITESPACE:
                i += 1
            if text[i] != ":":
                raise ValueError("expected ':'")
            i = _scan(text, i + 1, f"{pointer}/{escape(key)}", spans, level + 1)
            while text[i] in _WHITESPACE:
                i += 1
            if text[i] == ",":
                i += 1
            elif text[i] != "}":
                raise ValueError("expected ',' or '}'")
    if char == "[":
        i += 1
        index = 0
        while True:
            while text[i] in _WHITESPACE:
                i += 1
            if text[i] == "]":
                return i + 1
            i = _scan(text, i, f"{pointer}/{index}", spans, level + 1)
            index += 1
            while text[i] in _WHITESPACE:
                i += 1
            if text[i] == ",":
                i += 1
            elif text[i] != "]":
                raise ValueError("expected ',' or ']'")
    if char == '"':
        _, end = _DECODER.raw_decode(text, i)
        spans[pointer] = (i, end)
        return end
    for literal in ("true", "false", "null"):
        if text.startswith(literal, i):
            spans[pointer] = (i, i + len(literal))
            return i + len(literal)
    match = _NUMBER_RE.match(text, i)
    if not match:
        raise ValueError(f"unexpected character {char!r}")
    spans[pointer] = (i, match.end())
    return match.end()
