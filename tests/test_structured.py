"""The schema layer: normalisation, refusals, templates, validation, the grammar and confidences.

Grammar behaviour is tested with a small character vocabulary (fast random walks through the
grammar with random logits) and with the tiny random model through the engine. A few tests pin
xgrammar 0.2.8 bugs that the module works around; if one of them starts failing after an
upgrade, the workaround it names may have become unnecessary.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import re
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import pytest
import torch
from pydantic import BaseModel, Field, TypeAdapter

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine, LocalEngineConfig
from mississippi_tools.errors import ExtractionError, GenerationError, SchemaError
from mississippi_tools.structured import (
    JSONGrammar,
    NormalizedSchema,
    field_confidences,
    is_json_schema,
    normalize_schema,
    render_template,
    validate,
)

# --------------------------------------------------------------------------------------------------
# A character-level tokenizer: fast grammar walks without a model
# --------------------------------------------------------------------------------------------------


class CharTokenizer:
    """Byte pieces, printable ASCII, a few SentencePiece-style pieces, and special tokens."""

    def __init__(self) -> None:
        pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
        pieces += [chr(c) for c in range(0x21, 0x7F)]
        pieces += ["▁", '▁"', '",', '":', "é", "日本", "a\x01b", "line\n"]
        pieces += ["<img>", "<IMG_CONTEXT>", "<|end|>"]
        self.pieces = pieces
        self.special_ids = frozenset({0, 1, 2, len(pieces) - 3, len(pieces) - 2, len(pieces) - 1})
        self.eos_token_id = len(pieces) - 1

    def id_of(self, piece: str) -> int:
        return self.pieces.index(piece)

    def vocab_pieces(self, size: int | None = None) -> list[str]:
        return self.pieces + [""] * max(0, (size or 0) - len(self.pieces))

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        data = bytearray()
        for i in ids:
            piece = self.pieces[i]
            if i in self.special_ids:
                if not skip_special_tokens:
                    data += piece.encode()
            elif re.fullmatch(r"<0x[0-9A-F]{2}>", piece):
                data.append(int(piece[3:5], 16))
            else:
                data += piece.replace("▁", " ").encode()
        return data.decode("utf-8", errors="replace")

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def is_whitespace_token(self, idx: int) -> bool:
        return False


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


# --------------------------------------------------------------------------------------------------
# Templates and schema detection
# --------------------------------------------------------------------------------------------------


def test_template_types_are_inferred_from_values() -> None:
    normalized = normalize_schema(
        {"name": "", "age": 0, "price": 0.0, "ok": False, "note": None, "items": [{"a": ""}]}
    )
    assert normalized.kind == "template"
    assert normalized.model is None
    assert normalized.json_schema == {
        "type": "object",
        "properties": {
            "name": {"type": ["string", "null"]},
            "age": {"type": ["integer", "null"]},
            "price": {"type": ["number", "null"]},
            "ok": {"type": ["boolean", "null"]},
            "note": {"type": ["string", "null"]},
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"a": {"type": ["string", "null"]}},
                    "required": ["a"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["name", "age", "price", "ok", "note", "items"],
        "additionalProperties": False,
    }


def test_template_lists_of_scalars_are_not_nullable() -> None:
    schema = normalize_schema({"tags": [""], "scores": [0, 1], "empty": []}).json_schema
    assert schema["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    assert schema["properties"]["scores"] == {"type": "array", "items": {"type": "integer"}}
    assert schema["properties"]["empty"] == {"type": "array", "items": {"type": "string"}}


@pytest.mark.parametrize(
    ("template", "path", "message"),
    [
        ({"a": {}}, "/a", "empty object"),
        ({"a": [0, ""]}, "/a", "mixes elements"),
        ({"a": {"b/c": [{1, 2}]}}, "", "not JSON-serialisable"),
        ({}, "", "empty"),
    ],
)
def test_bad_templates_are_refused(template: Any, path: str, message: str) -> None:
    with pytest.raises(SchemaError, match=message) as caught:
        normalize_schema(template)
    assert caught.value.path == path


@pytest.mark.parametrize(
    ("mapping", "is_schema"),
    [
        ({"type": "object", "properties": {"a": {"type": "string"}}}, True),
        ({"properties": {"a": {"type": "string"}}}, True),
        ({"$schema": "https://json-schema.org/draft/2020-12/schema", "name": ""}, True),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, True),
        ({"$defs": {"A": {"type": "string"}}, "$ref": "#/$defs/A"}, True),
        ({"type": ["string", "null"], "x-unit": "kg"}, True),
        ({"enum": ["a", "b"]}, True),
        ({"type": "", "name": ""}, False),  # a document's "type" field
        ({"type": "invoice"}, False),
        ({"title": "", "description": ""}, False),
        ({"items": [{"name": ""}], "total": 0}, False),
        ({"items": {"name": ""}}, False),
        ({"properties": {"address": ""}}, False),
        ({"name": "", "date_of_birth": "", "address": ""}, False),
    ],
)
def test_schema_or_template(mapping: dict[str, Any], is_schema: bool) -> None:
    assert is_json_schema(mapping) is is_schema
    if not is_schema:
        assert normalize_schema(mapping).kind == "template"


def test_extraction_schemas_are_objects_at_the_top() -> None:
    assert normalize_schema({"properties": {"a": {"type": "string"}}}).kind == "json_schema"
    by_ref = {"$defs": {"A": {"type": "object"}}, "$ref": "#/$defs/A"}
    assert normalize_schema(by_ref).json_schema == by_ref
    for schema in (
        {"type": "array", "items": {"type": "string"}},
        {"anyOf": [{"type": "object"}, {"type": "null"}]},
        {"type": ["object", "null"]},
        {"enum": ["a", "b"]},
    ):
        with pytest.raises(SchemaError, match="top level of an extraction schema") as caught:
            normalize_schema(schema)
        assert caught.value.path == ""


def test_normalize_keeps_schemas_and_models() -> None:
    class Model(BaseModel):
        name: str

    normalized = normalize_schema(Model)
    assert normalized.kind == "pydantic" and normalized.model is Model
    assert normalized.json_schema == Model.model_json_schema()
    assert normalize_schema(normalized) is normalized
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert normalize_schema(schema).json_schema == schema
    with pytest.raises(SchemaError, match="not a valid JSON Schema at /properties/a/type"):
        normalize_schema({"type": "object", "properties": {"a": {"type": 5}}})
    with pytest.raises(SchemaError, match="not list"):
        normalize_schema([{"a": ""}])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# What the grammar supports
# --------------------------------------------------------------------------------------------------

OBJ = {"type": "object"}


@pytest.mark.parametrize(
    ("schema", "path", "feature"),
    [
        ({"type": "integer", "not": {"const": 3}}, "/not", "'not'"),
        ({"if": {"type": "string"}, "then": {"minLength": 1}}, "/if", "'if'"),
        ({**OBJ, "patternProperties": {"^x": {}}}, "/patternProperties", "patternProperties"),
        ({**OBJ, "dependentRequired": {"a": ["b"]}}, "/dependentRequired", "dependentRequired"),
        ({**OBJ, "dependentSchemas": {"a": {}}}, "/dependentSchemas", "dependentSchemas"),
        ({**OBJ, "dependencies": {"a": ["b"]}}, "/dependencies", "dependencies"),
        ({"type": "array", "uniqueItems": True}, "/uniqueItems", "uniqueItems"),
        ({"type": "array", "contains": {"const": 1}}, "/contains", "contains"),
        ({**OBJ, "unevaluatedProperties": {"type": "string"}}, "/unevaluatedProperties", "false"),
        ({**OBJ, "propertyNames": {"format": "email"}}, "/propertyNames", "propertyNames"),
        (
            {**OBJ, "additionalProperties": {"type": "integer"}, "minProperties": 2},
            "/minProperties",
            "repeat a key",
        ),
        ({"allOf": [{"type": "object"}, {"required": []}]}, "/allOf", "'allOf'"),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "/oneOf", "'oneOf'"),
        ({"type": "number", "multipleOf": 0.5}, "/multipleOf", "multipleOf"),
        ({"type": "integer", "minimum": 0, "multipleOf": 5}, "/multipleOf", "one side"),
        ({"$ref": "https://example.com/s.json"}, "/$ref", "inside the schema"),
        ({"$defs": {"a/b": {}}, "$ref": "#/$defs/a~1b"}, "/$ref", "escapes"),
        ({"$defs": {"A": {}}, "$ref": "#/$defs/B"}, "/$ref", "points nowhere"),
        ({"$defs": {"A": {}}, "$ref": "#/$defs/A", "maxLength": 2}, "", "beside '$ref'"),
        ({"$dynamicRef": "#x"}, "/$dynamicRef", "$dynamicRef"),
        ({"type": "string", "pattern": "^(?!x).*$"}, "/pattern", "lookaround"),
        ({"type": "string", "pattern": "^(a)\\1$"}, "/pattern", "backreference"),
        ({"type": "string", "format": "iri"}, "/format", "'iri'"),
        ({"type": "string", "format": "json-pointer"}, "/format", "json-pointer"),
        ({"type": "string", "format": "uri", "maxLength": 2083}, "", "format: uri"),
        ({"type": "string", "pattern": "^a|b$", "maxLength": 3}, "", "'pattern'"),
        ({**OBJ, "properties": {}, "required": ["x"]}, "/required", "'x'"),
        ({"type": "integer", "minimum": 3, "maximum": 2}, "", "no possible value"),
        ({"type": "integer", "minimum": 1.2, "maximum": 1.8}, "", "integer bounds"),
        ({"type": "array", "minItems": 3, "maxItems": 1}, "", "'minItems' (3)"),
        ({"type": "string", "enum": []}, "/enum", "non-empty"),
        ({**OBJ, "properties": {"a": False}, "required": ["a"]}, "/properties/a", "'false'"),
    ],
)
def test_unsupported_features_are_refused_by_name_and_path(
    schema: dict[str, Any], path: str, feature: str
) -> None:
    with pytest.raises(SchemaError) as caught:
        normalize_schema({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema})
    assert caught.value.path == path
    assert feature in caught.value.message
    assert caught.value.message.startswith(f"unsupported schema at {path or '/'}")


def test_refusals_inside_definitions_name_the_definition(grammar: JSONGrammar) -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/Thing"}},
        "$defs": {"Thing": {"type": "array", "contains": {}}, "Unused": {"not": {}}},
    }
    with pytest.raises(SchemaError) as caught:
        normalize_schema(schema)
    assert caught.value.path == "/$defs/Thing/contains"
    with pytest.raises(SchemaError):  # the engine's path checks too
        grammar.processor(schema)


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


def test_render_template_of_a_card_template_is_the_template() -> None:
    template = {"products": [{"product_name": "", "price": "", "quantity": 0}]}
    assert render_template(normalize_schema(template)) == textwrap.dedent(
        """\
        {
          "products": [
            {
              "product_name": "",
              "price": "",
              "quantity": 0
            }
          ]
        }"""
    )


def test_render_template_of_a_json_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "status": {"enum": ["paid", "due"]},
            "kind": {"const": "invoice"},
            "total": {"type": ["number", "null"], "description": "Grand total, tax included"},
            "lines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "qty": {"type": "integer"},
                        "day": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
                        "vat": {"enum": [0, 7, 19]},
                    },
                },
            },
            "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}]},
            "any": {},
        },
    }
    assert render_template(normalize_schema(schema)) == textwrap.dedent(
        """\
        {
          "status": "paid|due",
          "kind": "invoice",
          "total": 0.0,
          "lines": [
            {
              "qty": 0,
              "day": "",
              "vat": 0
            }
          ],
          "pair": [
            "",
            false
          ],
          "any": ""
        }
        Field notes:
        - total: Grand total, tax included
        - lines[].day: a date, YYYY-MM-DD
        - lines[].vat: one of 0, 7, 19"""
    )


def test_render_template_of_a_pydantic_model() -> None:
    class Address(BaseModel):
        """Where someone lives (not shown: a model's docstring)."""

        city: str = Field(description="City name as printed")

    class Person(BaseModel):
        name: str
        born: datetime.date | None = Field(default=None, description="Date of birth")
        home: Address = Field(description="Home address")
        work: Address | None = None
        tree: Node | None = None

    assert render_template(normalize_schema(Person)) == textwrap.dedent(
        """\
        {
          "name": "",
          "born": "",
          "home": {
            "city": ""
          },
          "work": {
            "city": ""
          },
          "tree": {
            "label": "",
            "children": [
              {}
            ]
          }
        }
        Field notes:
        - born: Date of birth; a date, YYYY-MM-DD
        - home: Home address
        - home.city: City name as printed
        - work.city: City name as printed"""
    )


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def test_validate_returns_instances_or_data() -> None:
    assert validate({"a": "x"}, normalize_schema({"a": ""})) == {"a": "x"}
    assert validate({"name": "red"}, normalize_schema(Color)) == Color(name="red")


def test_validation_errors_are_listed_by_pointer() -> None:
    with pytest.raises(ExtractionError) as caught:
        validate(
            {"age": "x", "items": [{"a": 1}]},
            normalize_schema({"age": 0, "items": [{"a": ""}]}),
            raw_text="raw",
        )
    error = caught.value
    assert error.raw_text == "raw"
    assert error.errors == [
        "/age: 'x' is not of type 'integer', 'null'",
        "/items/0/a: 1 is not of type 'string', 'null'",
    ]
    with pytest.raises(ExtractionError) as caught:
        validate({"name": "blue"}, normalize_schema(Color))
    assert caught.value.errors == ["/name: Input should be 'red' or 'green' (got \"blue\")"]
    assert caught.value.raw_text == '{"name": "blue"}'
    with pytest.raises(ExtractionError) as caught:
        validate({}, normalize_schema({f"k{i}": "" for i in range(12)}))
    assert len(caught.value.errors) == 11
    assert caught.value.errors[-1] == "... and 2 more"
    with pytest.raises(ExtractionError, match="is not a 'date'"):
        validate(
            {"d": "2024-02-30"},
            normalize_schema(
                {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}}
            ),
        )


# --------------------------------------------------------------------------------------------------
# Field confidences
# --------------------------------------------------------------------------------------------------


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


def test_schema_layer_imports_without_torch_or_xgrammar() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None
        sys.modules["xgrammar"] = None
        from mississippi_tools.structured import normalize_schema, render_template, validate
        from mississippi_tools.tasks.extract import ExtractionPlan
        normalized = normalize_schema({"name": "", "age": 0})
        print(render_template(normalized))
        print(validate({"name": "a", "age": 1}, normalized))
        print(ExtractionPlan(normalized, constrained=False).first_request().prompt[:7])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("{'name': 'a', 'age': 1}\nExtract")


def test_normalized_schema_is_frozen() -> None:
    normalized = normalize_schema({"a": ""})
    assert isinstance(normalized, NormalizedSchema)
    with pytest.raises(AttributeError):
        normalized.kind = "pydantic"  # type: ignore[misc]
