"""Nesting and size limits: deep schemas are refused by name and pointer, never by RecursionError.

Every structure here is built with loops: 100, 1,000 and 100,000 levels deep.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, create_model

from mississippi_tools.errors import ExtractionError, SchemaError
from mississippi_tools.schema import (
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_NODES,
    NormalizedSchema,
    check_schema_limits,
    check_schema_valid,
    check_supported,
    field_confidences,
    is_json_schema,
    normalize_schema,
    validate,
)

DEPTHS = [100, 1_000, 100_000]


def nested_schema(depth: int, key: str = "properties") -> dict[str, Any]:
    """An object schema whose innermost string is ``depth`` subschema levels down."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        if key == "properties":
            schema = {"type": "object", "properties": {"a": schema}}
        else:
            schema = {"type": "array", "items": schema}
    return schema


def nested_template(depth: int) -> dict[str, Any]:
    """A template of ``depth + 1`` nested objects and lists (the innermost holds a string)."""
    template: Any = ""
    for level in range(depth):
        template = [template] if level % 2 else {"a": template}
    return {"a": template}


def ref_chain(length: int) -> dict[str, Any]:
    """A schema whose property is a chain of ``length`` definitions, each a $ref to the next."""
    defs: dict[str, Any] = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(length)}
    defs[f"d{length}"] = {"type": "string"}
    return {"type": "object", "properties": {"a": {"$ref": "#/$defs/d0"}}, "$defs": defs}


def assert_depth_error(error: SchemaError, what: str) -> None:
    assert f"the {what} nests deeper than {MAX_SCHEMA_DEPTH} levels" in error.message
    assert error.path is not None
    assert error.path in error.message


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_schemas_are_refused_by_every_entry_point(depth: int) -> None:
    schema = nested_schema(depth)
    too_deep = "/properties/a" * (MAX_SCHEMA_DEPTH + 1)
    for check in (normalize_schema, check_supported, check_schema_valid, check_schema_limits):
        with pytest.raises(SchemaError) as caught:
            check(schema)
        assert_depth_error(caught.value, "schema")
        assert caught.value.path == too_deep
    with pytest.raises(SchemaError) as caught:  # the reader of render_template and validate
        NormalizedSchema(json_schema=schema, model=None, template={"a": ""}, kind="json_schema")
    assert caught.value.path == too_deep
    assert is_json_schema(schema)


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_items_are_measured_before_the_schema_is_recognised(depth: int) -> None:
    untyped: Any = {"type": "string"}
    for _ in range(depth):
        untyped = {"items": untyped}
    assert not is_json_schema(untyped)  # looked at down to the limit only
    with pytest.raises(SchemaError) as caught:
        normalize_schema(untyped)  # then it is a template, and too deep as one
    assert_depth_error(caught.value, "template")
    array = nested_schema(depth, key="items")
    with pytest.raises(SchemaError) as caught:
        normalize_schema({"type": "object", "properties": {"list": array}})
    assert caught.value.path == "/properties/list" + "/items" * MAX_SCHEMA_DEPTH


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_templates_are_refused(depth: int) -> None:
    with pytest.raises(SchemaError) as caught:
        normalize_schema(nested_template(depth))
    assert_depth_error(caught.value, "template")
    assert caught.value.path is not None
    assert caught.value.path.count("/") == MAX_SCHEMA_DEPTH + 1


def test_the_limit_itself_is_allowed() -> None:
    deepest = nested_schema(MAX_SCHEMA_DEPTH)  # the innermost string is at the limit
    assert normalize_schema(deepest).json_schema == deepest
    with pytest.raises(SchemaError):
        normalize_schema(nested_schema(MAX_SCHEMA_DEPTH + 1))
    template = nested_template(MAX_SCHEMA_DEPTH - 1)  # the innermost string at the limit
    assert normalize_schema(template).template == template
    with pytest.raises(SchemaError):
        normalize_schema(nested_template(MAX_SCHEMA_DEPTH))


@pytest.mark.parametrize("length", DEPTHS)
def test_ref_chains_count_every_link(length: int) -> None:
    with pytest.raises(SchemaError) as caught:
        normalize_schema(ref_chain(length))
    assert_depth_error(caught.value, "schema")
    # root (0), the property (1), d0 (2), ...: d63 is the first one too deep
    assert caught.value.path == f"/$defs/d{MAX_SCHEMA_DEPTH - 1}"
    assert normalize_schema(ref_chain(MAX_SCHEMA_DEPTH - 3)).kind == "json_schema"


def test_recursive_refs_stop_where_they_meet_themselves() -> None:
    tree = {
        "type": "object",
        "properties": {"node": {"$ref": "#/$defs/Node"}},
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
            }
        },
    }
    assert normalize_schema(tree).template == {"node": {"children": [{}]}}


def test_values_inside_a_schema_count_their_nesting() -> None:
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]
    schema = {"type": "object", "properties": {"a": {"const": deep}}}
    with pytest.raises(SchemaError) as caught:
        normalize_schema(schema)
    assert caught.value.path == "/properties/a/const" + "/0" * MAX_SCHEMA_DEPTH


def test_definitions_used_from_many_places_are_bounded() -> None:
    # Each definition uses the next one 3 times: 3**14 paths when every $ref is followed.
    defs: dict[str, Any] = {
        f"d{i}": {
            "type": "object",
            "properties": {name: {"$ref": f"#/$defs/d{i + 1}"} for name in "xyz"},
        }
        for i in range(14)
    }
    defs["d14"] = {"type": "string"}
    schema = {"type": "object", "properties": {"root": {"$ref": "#/$defs/d0"}}, "$defs": defs}
    started = time.monotonic()
    with pytest.raises(SchemaError, match=f"more than {MAX_SCHEMA_NODES:,} subschemas"):
        normalize_schema(schema)
    assert time.monotonic() - started < 30  # not 3**14 steps (a loose bound, not a benchmark)


def _model_chain(length: int) -> type[BaseModel]:
    # Deferred: pydantic < 2.13 builds each class's schema at once, recursing through the chain.
    deferred = ConfigDict(defer_build=True)
    model: type[BaseModel] = create_model("M0", __config__=deferred, value=(str, ...))
    for i in range(1, length + 1):
        model = create_model(f"M{i}", __config__=deferred, child=(model, ...))
    return model


@pytest.mark.parametrize("length", [100, 1_000])
def test_deeply_nested_pydantic_models_are_refused_before_pydantic_recurses(length: int) -> None:
    with pytest.raises(SchemaError) as caught:
        normalize_schema(_model_chain(length))
    error = caught.value
    assert f"nests its models deeper than {MAX_SCHEMA_DEPTH} levels" in error.message
    # each model is 2 levels (field, model): the fields of the 16th nested one are at 33
    assert error.path == "/properties/child" * (MAX_SCHEMA_DEPTH // 2)
    assert error.__cause__ is None


def test_pydantic_models_within_the_limit_are_normalised() -> None:
    deepest = MAX_SCHEMA_DEPTH // 2 - 1
    normalized = normalize_schema(_model_chain(deepest))
    assert normalized.kind == "pydantic"
    assert len(normalized.json_schema["$defs"]) == deepest
    with pytest.raises(SchemaError):
        normalize_schema(_model_chain(deepest + 1))


def test_validate_refuses_deep_values_without_recursing() -> None:
    normalized = normalize_schema({"a": [""]})
    deep: Any = ""
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ExtractionError) as caught:
        validate({"a": deep}, normalized)
    assert caught.value.errors == [
        "/a" + "/0" * MAX_SCHEMA_DEPTH + f": the value nests deeper than {MAX_SCHEMA_DEPTH} levels"
    ]
    assert "nested deeper than" in caught.value.raw_text

    class Model(BaseModel):
        a: list[Any]

    with pytest.raises(ExtractionError):
        validate({"a": deep}, normalize_schema(Model))


def test_confidences_of_deep_text_are_empty() -> None:
    text = "[" * 100_000 + "1" + "]" * 100_000
    assert field_confidences(text, [1], [0.0], token_texts=[text]) == {}
    shallow = "[" * 10 + "1" + "]" * 10
    assert field_confidences(shallow, [1], [-1.0], token_texts=[shallow]) == {
        "/0" * 10: pytest.approx(0.36787944)
    }
