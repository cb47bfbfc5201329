"""The JSON grammar (mississippi_tools.engine.grammar): xgrammar over each vocabulary type.

Grammar behaviour is tested with a small character vocabulary (fast random walks through the
grammar with random logits), with the tiny random H2OVL model through the engine, and with a tiny
random Llama over each vocabulary type (the real H2OVL SentencePiece tokenizer, and a byte-level
BPE trained here) on the 58 extraction schemas. A few tests pin xgrammar 0.2.8 bugs (still in
0.2.9) that the module works around; if one of them starts failing after an upgrade, the
workaround it names may have become unnecessary.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pytest
import torch
from pydantic import BaseModel, Field, TypeAdapter

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.grammar import JSONGrammar, piece_bytes
from mississippi_tools.engine.local import LocalEngine, LocalEngineConfig
from mississippi_tools.errors import GenerationError, SchemaError
from mississippi_tools.models.h2ovl.tokenization import H2OVLTokenizer
from mississippi_tools.schema import MAX_SCHEMA_DEPTH, normalize_schema, validate
from tests.engine.grammar_support import (
    ByteLevelTokenizer,
    CharTokenizer,
    sample_under_grammar,
    tiny_llama,
)
from tests.extraction_schemas import all_schemas

if TYPE_CHECKING:
    from mississippi_tools.models.base import VocabType

TOKENIZER = CharTokenizer()
VOCAB = len(TOKENIZER.pieces) + 5  # padded, as model vocabularies often are


@pytest.fixture(scope="module")
def grammar() -> JSONGrammar:
    return JSONGrammar(TOKENIZER, vocab_size=VOCAB, stop_token_ids=[TOKENIZER.eos_token_id])


def walk(grammar: JSONGrammar, schema: dict[str, Any], seed: int, max_steps: int = 300) -> Any:
    """Sample one answer with random logits under the grammar; the parsed JSON (or None)."""
    processor = grammar.processor(schema)
    generator = torch.Generator().manual_seed(seed)
    ids: list[int] = []
    for _ in range(max_steps):
        logits = processor(ids, torch.randn(VOCAB, generator=generator) * 3)
        assert torch.isinf(logits[sorted(grammar.banned_token_ids)]).all()
        token = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
        if token == TOKENIZER.eos_token_id:
            return json.loads(TOKENIZER.decode(ids))  # strict JSON, or the test fails
        ids.append(token)
    return None  # did not finish in max_steps (long strings are allowed to go on)


def test_the_grammar_refuses_what_the_schema_package_refuses(grammar: JSONGrammar) -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/Thing"}},
        "$defs": {"Thing": {"type": "array", "contains": {}}},
    }
    with pytest.raises(SchemaError) as caught:
        grammar.processor(schema)
    assert caught.value.path == "/$defs/Thing/contains"
    with pytest.raises(SchemaError, match="not a valid JSON Schema"):
        grammar.compile({"type": 5})
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(100_000):
        deep = {"type": "array", "items": deep}
    with pytest.raises(SchemaError, match=f"deeper than {MAX_SCHEMA_DEPTH} levels"):
        grammar.compile(deep)  # before json.dumps of the cache key recurses into it


class Color(BaseModel):
    name: Literal["red", "green"]


class Node(BaseModel):
    """A tree (a recursive model)."""

    label: Annotated[str, Field(max_length=4)]
    children: list[Node] = Field(default_factory=list, max_length=1)


class Everything(BaseModel):
    when: datetime.datetime
    day: datetime.date
    at: datetime.time | None = None
    color: Color
    tags: set[Annotated[str, Field(max_length=3)]]
    pair: tuple[int, str]
    counts: dict[Annotated[str, Field(max_length=3)], int] = Field(max_length=2)
    code: Annotated[str, Field(pattern=r"^[A-Z]+$", max_length=4)]
    level: Annotated[int, Field(ge=1, le=100, multiple_of=10)]
    ratio: Annotated[float, Field(gt=0, lt=1)]
    tree: Node
    mode: Literal[1, 2, 3]
    secret: bytes = b""


def test_pydantic_models_with_defs_and_common_types_are_supported(grammar: JSONGrammar) -> None:
    normalized = normalize_schema(Everything)
    assert "$defs" in normalized.json_schema
    grammar.compile(normalized.json_schema)
    values = [walk(grammar, normalized.json_schema, seed, max_steps=2000) for seed in range(20)]
    finished = [v for v in values if v is not None]
    assert len(finished) >= 10
    for value in finished:
        result = validate(value, normalized)
        assert isinstance(result, Everything)
        assert result.level % 10 == 0


# --------------------------------------------------------------------------------------------------
# Grammar walks: every answer is valid JSON that Python and pydantic accept
# --------------------------------------------------------------------------------------------------

FORMAT_CHECKS: dict[str, Any] = {
    "date": TypeAdapter(datetime.date).validate_python,
    "date-time": TypeAdapter(datetime.datetime).validate_python,
    "time": TypeAdapter(datetime.time).validate_python,
    "ipv4": ipaddress.IPv4Address,
    "ipv6": ipaddress.IPv6Address,
    "email": lambda v: re.fullmatch(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}", v) or 1 / 0,
}


@pytest.mark.parametrize("fmt", sorted(FORMAT_CHECKS))
def test_formats_give_values_python_accepts(grammar: JSONGrammar, fmt: str) -> None:
    values = [walk(grammar, {"type": "string", "format": fmt}, seed) for seed in range(40)]
    finished = [v for v in values if v is not None]
    assert len(finished) >= 10
    for value in finished:
        FORMAT_CHECKS[fmt](value)


def test_xgrammar_optional_group_bug_is_worked_around(grammar: JSONGrammar) -> None:
    import xgrammar as xgr
    from xgrammar.testing import _get_matcher_from_grammar

    pattern = "^[A-Z]{2}(?:-[0-9]+)?$"
    raw = xgr.Grammar.from_json_schema(json.dumps({"type": "string", "pattern": pattern}))
    matcher = _get_matcher_from_grammar(raw)
    assert matcher.accept_string('"AB1"')  # xgrammar 0.2.8 drops the "-" (bug)
    for seed in range(40):
        value = walk(grammar, {"type": "string", "pattern": pattern}, seed)
        assert value is None or re.fullmatch(pattern, value), value


def test_number_caps_prevent_runaway_and_infinity(grammar: JSONGrammar) -> None:
    for seed in range(30):
        value = walk(grammar, {"type": "array", "items": {"type": "number"}, "maxItems": 3}, seed)
        assert value is not None
        assert all(math.isfinite(v) and abs(v) <= 1e15 for v in value)
        integer = walk(grammar, {"type": "integer"}, seed)
        assert isinstance(integer, int) and abs(integer) < 2**63


def test_multiple_of_between_bounds_is_enumerated(grammar: JSONGrammar) -> None:
    schema = {"type": ["integer", "null"], "exclusiveMinimum": -7, "maximum": 22, "multipleOf": 5}
    values = {walk(grammar, schema, seed) for seed in range(40)}
    assert values <= {-5, 0, 5, 10, 15, 20, None}
    assert len(values) >= 4


def test_xgrammar_bug_800_is_worked_around(grammar: JSONGrammar) -> None:
    """Length-limited strings accept raw control characters in xgrammar (bug #800)."""
    import xgrammar as xgr

    schema = {"type": "string", "minLength": 2, "maxLength": 4}
    info = xgr.TokenizerInfo(  # the vocabulary as it is, control characters included
        TOKENIZER.vocab_pieces(VOCAB), xgr.VocabType.BYTE_FALLBACK, vocab_size=VOCAB
    )
    compiled = xgr.GrammarCompiler(info).compile_json_schema(json.dumps(schema))
    matcher = xgr.GrammarMatcher(compiled)
    assert matcher.accept_token(TOKENIZER.id_of('"'))
    assert matcher.accept_token(TOKENIZER.id_of("<0x01>"))  # the bug: invalid JSON allowed
    banned = grammar.banned_token_ids
    control = {TOKENIZER.id_of(f"<0x{b:02X}>") for b in range(32)}
    assert control | {TOKENIZER.id_of("a\x01b"), TOKENIZER.id_of("line\n")} <= banned
    lengths = set()
    for seed in range(60):
        value = walk(
            grammar, {"type": "object", "properties": {"s": schema}, "required": ["s"]}, seed
        )
        assert value is not None  # walk() parsed it with json.loads
        assert 2 <= len(value["s"]) <= 4
        lengths.add(len(value["s"]))
    assert len(lengths) >= 2


def test_utf16_surrogates_written_as_bytes_are_masked(grammar: JSONGrammar) -> None:
    lead = TOKENIZER.id_of("<0xED>")
    surrogate = [TOKENIZER.id_of(f"<0x{b:02X}>") for b in range(0xA0, 0xC0)]
    compiled = grammar.compile({"type": "string"})
    import xgrammar as xgr

    matcher = xgr.GrammarMatcher(compiled)
    assert matcher.accept_token(TOKENIZER.id_of('"')) and matcher.accept_token(lead)
    assert matcher.accept_token(surrogate[0])  # xgrammar 0.2.8 takes ED A0 (not UTF-8)
    processor = grammar.processor({"type": "string"})
    logits = processor([TOKENIZER.id_of('"'), lead], torch.zeros(VOCAB))
    assert torch.isinf(logits[surrogate]).all()
    assert not torch.isinf(logits[TOKENIZER.id_of("<0x9F>")])  # U+D7FF and below stay allowed


def test_special_tokens_and_padding_are_never_allowed(grammar: JSONGrammar) -> None:
    specials = set(TOKENIZER.special_ids) - {TOKENIZER.eos_token_id}
    padding = set(range(len(TOKENIZER.pieces), VOCAB))
    assert specials | padding <= grammar.banned_token_ids
    assert TOKENIZER.eos_token_id not in grammar.banned_token_ids
    assert TOKENIZER.id_of("é") not in grammar.banned_token_ids
    processor = grammar.processor({"type": "string"})
    logits = processor([], torch.zeros(VOCAB))
    allowed = set(torch.nonzero(~torch.isinf(logits)).flatten().tolist())
    opening = ['"', "<0x22>", '",', '":']  # a quote, alone or with the first character
    assert allowed == {TOKENIZER.id_of(piece) for piece in opening}
    logits = processor([TOKENIZER.id_of('"')], torch.zeros(VOCAB))
    allowed = set(torch.nonzero(~torch.isinf(logits)).flatten().tolist())
    assert TOKENIZER.eos_token_id not in allowed  # not before the JSON is complete
    assert not allowed & grammar.banned_token_ids
    assert TOKENIZER.id_of("日本") in allowed


def test_processor_state_cache_and_errors(grammar: JSONGrammar) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}
    assert grammar.compile(schema) is grammar.compile(json.loads(json.dumps(schema)))
    reordered = {"required": ["a"], "properties": schema["properties"], "type": "object"}
    assert grammar.compile(reordered) is not grammar.compile(schema)  # key order is output order
    small = JSONGrammar(
        TOKENIZER, vocab_size=VOCAB, stop_token_ids=[TOKENIZER.eos_token_id], cache_size=1
    )
    first = small.compile(schema)
    small.compile({"type": "boolean"})
    assert small.compile(schema) is not first  # evicted
    processor = grammar.processor(schema)
    processor([], torch.zeros(VOCAB))
    with pytest.raises(GenerationError, match="does not fit the JSON grammar"):
        processor([TOKENIZER.id_of("x")], torch.zeros(VOCAB))
    wider = grammar.processor(schema)([], torch.zeros(VOCAB + 7))
    assert torch.isinf(wider[VOCAB:]).all()
    done = grammar.processor({"type": "boolean"})
    text = [TOKENIZER.id_of(c) for c in "true"]
    done(text, torch.zeros(VOCAB))
    assert done.is_completed() and not done.is_terminated()


# --------------------------------------------------------------------------------------------------
# Templates shown to the model
# --------------------------------------------------------------------------------------------------


def test_length_limited_strings_always_parse_with_the_random_model(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    schema = {
        "type": "object",
        "properties": {
            f"s{i}": {"type": "string", "minLength": i % 3, "maxLength": 2 + i} for i in range(6)
        },
        "required": [f"s{i}" for i in range(6)],
    }
    normalized = normalize_schema(schema)
    with LocalEngine(tiny_backend, LocalEngineConfig(max_batch_size=8)) as engine:
        handles = [
            engine.submit(
                GenerationRequest(
                    "Extract the details as JSON.",
                    sampling=SamplingParams(max_new_tokens=160, temperature=1.5, seed=seed),
                    json_schema=schema,
                )
            )
            for seed in range(8)
        ]
        outputs = [handle.result(300) for handle in handles]
        banned = engine._grammar_factory().banned_token_ids
    for output in outputs:
        assert output.finish_reason == "stop"
        validate(json.loads(output.text), normalized)
        assert not banned & set(output.token_ids)


# --------------------------------------------------------------------------------------------------
# Vocabulary types: the pieces are read as the tokenizer spells them
# --------------------------------------------------------------------------------------------------


class PieceTokenizer:
    """Just a list of pieces of one vocabulary type (the first one is the stop token)."""

    def __init__(self, pieces: list[str], vocab_type: VocabType) -> None:
        self.pieces = ["</s>", *pieces]
        self.vocab_type = vocab_type
        self.special_ids = frozenset({0})
        self.eos_token_id = 0

    def vocab_pieces(self, size: int | None = None) -> list[str]:
        return self.pieces + [""] * max(0, (size or 0) - len(self.pieces))

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def is_whitespace_token(self, idx: int) -> bool:
        return False


@pytest.fixture(scope="module")
def byte_level() -> ByteLevelTokenizer:
    return ByteLevelTokenizer()


@pytest.fixture(scope="module")
def byte_level_grammar(byte_level: ByteLevelTokenizer) -> JSONGrammar:
    return JSONGrammar(
        byte_level, vocab_size=len(byte_level.pieces), stop_token_ids=[byte_level.eos_token_id]
    )


@pytest.fixture(scope="module")
def h2ovl_tokenizer(tiny_checkpoint: Path) -> H2OVLTokenizer:
    return H2OVLTokenizer.from_pretrained(tiny_checkpoint)


def test_piece_bytes_are_what_xgrammar_decodes(
    byte_level: ByteLevelTokenizer, h2ovl_tokenizer: H2OVLTokenizer
) -> None:
    import xgrammar as xgr

    odd = ["Ġ日", "a\x01", "<0x0A>x", "ĠĠ", "é", "▁▁", "Ċ", "\x7f"]
    vocabularies: dict[VocabType, list[str]] = {
        "byte_fallback": [*TOKENIZER.pieces, *h2ovl_tokenizer.vocab_pieces()[:3000], *odd],
        "byte_level": [*byte_level.pieces, *odd],
        "raw": [*TOKENIZER.pieces, *byte_level.pieces, *odd],
    }
    for vocab_type, pieces in vocabularies.items():
        info = xgr.TokenizerInfo(pieces, xgr.VocabType[vocab_type.upper()])
        assert [piece_bytes(p, vocab_type) for p in pieces] == info.decoded_vocab, vocab_type
    assert piece_bytes("Ġ", "byte_level") == b" "
    assert piece_bytes("Ġ", "byte_fallback") == "Ġ".encode()


def test_pieces_xgrammar_cannot_read_are_banned_not_fatal() -> None:
    import xgrammar as xgr

    unreadable = ["<0xzz>", "<0x0a>", "\udc80"]  # xgrammar refuses, misreads, cannot encode
    with pytest.raises((RuntimeError, UnicodeEncodeError)):
        xgr.TokenizerInfo(["<0xzz>"], xgr.VocabType.BYTE_FALLBACK)
    assert xgr.TokenizerInfo(["<0x0a>"], xgr.VocabType.BYTE_FALLBACK).decoded_vocab == [b"*"]
    tokenizer = PieceTokenizer([*unreadable, '"', "a"], "byte_fallback")
    grammar = JSONGrammar(tokenizer, vocab_size=len(tokenizer.pieces), stop_token_ids=[0])
    assert grammar.banned_token_ids == {1, 2, 3}
    assert walk_pieces(grammar, tokenizer, {"type": "string", "maxLength": 3}) == {'"', "a"}


def walk_pieces(grammar: JSONGrammar, tokenizer: PieceTokenizer, schema: Any) -> set[str]:
    """The pieces random walks under ``schema`` use."""
    used: set[str] = set()
    for seed in range(10):
        processor = grammar.processor(schema)
        generator = torch.Generator().manual_seed(seed)
        ids: list[int] = []
        for _ in range(20):
            logits = processor(ids, torch.randn(len(tokenizer.pieces), generator=generator))
            token = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
            if token == 0:
                break
            ids.append(token)
        used |= {tokenizer.pieces[i] for i in ids}
    return used


def test_the_vocabulary_type_comes_from_the_tokenizer(
    byte_level: ByteLevelTokenizer,
    byte_level_grammar: JSONGrammar,
    h2ovl_tokenizer: H2OVLTokenizer,
) -> None:
    import xgrammar as xgr

    assert byte_level_grammar.tokenizer_info.vocab_type == xgr.VocabType.BYTE_LEVEL
    assert byte_level_grammar.tokenizer_info.add_prefix_space is False
    assert h2ovl_tokenizer.vocab_type == "byte_fallback"
    h2ovl = JSONGrammar(
        h2ovl_tokenizer,
        vocab_size=len(h2ovl_tokenizer),
        stop_token_ids=[h2ovl_tokenizer.eos_token_id],
    )
    assert h2ovl.tokenizer_info.vocab_type == xgr.VocabType.BYTE_FALLBACK
    # The tokenizer says (from its config); xgrammar only records it.
    assert h2ovl.tokenizer_info.add_prefix_space is h2ovl_tokenizer.add_prefix_space
    raw = JSONGrammar(PieceTokenizer(['"', "a"], "raw"), vocab_size=3, stop_token_ids=[0])
    assert raw.tokenizer_info.vocab_type == xgr.VocabType.RAW
    with pytest.raises(ValueError, match="vocab_type is 'bpe'"):
        JSONGrammar(PieceTokenizer([], "bpe"), vocab_size=1, stop_token_ids=[0])  # type: ignore[arg-type]


def test_byte_level_spaces_and_bytes_are_read_as_bytes(
    byte_level: ByteLevelTokenizer, byte_level_grammar: JSONGrammar
) -> None:
    # "Ġ" is a space and "Ã", "©" are the two bytes of "é": read as the characters they look
    # like (as a byte-fallback vocabulary would), none of them could be generated here.
    schema = {"type": "string", "enum": ["a b", "é"]}
    processor = byte_level_grammar.processor(schema)
    ids = [byte_level.id_of('"'), byte_level.id_of("a")]
    logits = processor(ids, torch.zeros(len(byte_level.pieces)))
    assert not torch.isinf(logits[byte_level.id_of("Ġ")])
    processor = byte_level_grammar.processor(schema)
    logits = processor(ids[:1], torch.zeros(len(byte_level.pieces)))
    assert not torch.isinf(logits[byte_level.id_of("Ã")])
    texts = set()
    for seed in range(20):
        ids = []
        processor = byte_level_grammar.processor(schema)
        generator = torch.Generator().manual_seed(seed)
        while True:
            logits = processor(ids, torch.randn(len(byte_level.pieces), generator=generator))
            token = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
            if token == byte_level.eos_token_id:
                break
            ids.append(token)
        texts.add(json.loads(byte_level.decode(ids)))
    assert texts == {"a b", "é"}


def test_byte_level_control_characters_and_surrogates_are_banned(
    byte_level: ByteLevelTokenizer, byte_level_grammar: JSONGrammar
) -> None:
    banned = byte_level_grammar.banned_token_ids
    with_control = {
        i for i, p in enumerate(byte_level.pieces) if any(0x100 <= ord(c) <= 0x11F for c in p)
    }
    assert byte_level.id_of("Ċ") in with_control and len(with_control) > 32  # merged ones too
    assert with_control <= banned
    assert byte_level.id_of("Ġ") not in banned  # a space (byte 0x20) is fine
    assert byte_level.special_ids - {byte_level.eos_token_id} <= banned
    # After the byte 0xED ("í"), a byte 0xA0-0xBF would make a UTF-16 surrogate.
    lead = byte_level.id_of("í")
    surrogate = [i for i, p in enumerate(byte_level.pieces) if p and p[0] in SURROGATE_SECONDS]
    assert len(surrogate) >= 32
    processor = byte_level_grammar.processor({"type": "string"})
    logits = processor([byte_level.id_of('"'), lead], torch.zeros(len(byte_level.pieces)))
    assert torch.isinf(logits[surrogate]).all()
    assert not torch.isinf(logits[byte_level.id_of("Ł")])  # byte 0x9F: U+D7FF and below
    # A piece holding both bytes is never allowed.
    tokenizer = PieceTokenizer(['"', "íł", "í", "ł"], "byte_level")
    grammar = JSONGrammar(tokenizer, vocab_size=5, stop_token_ids=[0])
    assert grammar.banned_token_ids == {2}


# The byte-level characters of the bytes 0xA0-0xBF (0xA0 and 0xAD are shifted).
SURROGATE_SECONDS = {"ł", "Ń"} | {chr(b) for b in range(0xA1, 0xC0) if b != 0xAD}


# --------------------------------------------------------------------------------------------------
# The 58 extraction schemas, sampled from a tiny random Llama, for each vocabulary type
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab_type", ["byte_fallback", "byte_level"])
def test_every_extraction_schema_gives_valid_json_for_each_vocabulary_type(
    vocab_type: str, request: pytest.FixtureRequest
) -> None:
    tokenizer: Any
    if vocab_type == "byte_level":
        tokenizer = request.getfixturevalue("byte_level")
        start, pieces = tokenizer.bos_token_id, len(tokenizer.pieces)
    else:
        tokenizer = request.getfixturevalue("h2ovl_tokenizer")
        start, pieces = tokenizer.token_to_id("<s>"), len(tokenizer)
    assert tokenizer.vocab_type == vocab_type
    vocab_size = -(-pieces // 64) * 64  # padded rows, as models have
    stop = [tokenizer.eos_token_id]
    grammar = JSONGrammar(tokenizer, vocab_size=vocab_size, stop_token_ids=stop)
    schemas = [normalize_schema(schema) for schema in all_schemas()]
    assert len(schemas) == 58
    answers = sample_under_grammar(
        tiny_llama(vocab_size),
        [grammar.processor(s.json_schema) for s in schemas],
        start_token_id=start,
        stop_token_ids=stop,
        max_new_tokens=400,
    )
    for index, (schema, (ids, stopped)) in enumerate(zip(schemas, answers, strict=True)):
        text = tokenizer.decode(ids)
        assert stopped, (index, text)
        assert "\ufffd" not in text, (index, text)  # every byte sequence was UTF-8
        assert not grammar.banned_token_ids & set(ids)
        validate(json.loads(text), schema, raw_text=text)
