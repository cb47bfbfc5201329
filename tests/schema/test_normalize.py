"""Schema or template, template inference, pydantic models (mississippi_tools.schema.normalize)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from mississippi_tools.errors import SchemaError
from mississippi_tools.schema import NormalizedSchema, is_json_schema, normalize_schema


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


def test_normalized_schema_is_frozen() -> None:
    normalized = normalize_schema({"a": ""})
    assert isinstance(normalized, NormalizedSchema)
    with pytest.raises(AttributeError):
        normalized.kind = "pydantic"  # type: ignore[misc]
