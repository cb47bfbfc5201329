"""What the grammar supports: refusals by feature name and JSON pointer (schema.support)."""

from __future__ import annotations

from typing import Any

import pytest

from mississippi_tools.errors import SchemaError
from mississippi_tools.schema import check_supported, normalize_schema

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


def test_refusals_inside_definitions_name_the_definition() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/Thing"}},
        "$defs": {"Thing": {"type": "array", "contains": {}}, "Unused": {"not": {}}},
    }
    for check in (normalize_schema, check_supported):
        with pytest.raises(SchemaError) as caught:
            check(schema)
        assert caught.value.path == "/$defs/Thing/contains"
