"""Turn what a caller passes as a schema into a :class:`NormalizedSchema`.

A caller describes the data it wants in one of three ways (:data:`SchemaInput`):

- a **pydantic model** class: its ``model_json_schema()`` is used, results are model instances;
- a **JSON Schema** dict (Draft 2020-12): results are validated dicts;
- a **template** dict in the H2OVL card's style, ``{"name": "", "age": 0, "items": [{"a": ""}]}``:
  a JSON Schema is inferred from its example values.

Schema or template
------------------
A mapping is read as a **JSON Schema** when it has a ``$schema`` key, or when every key is a JSON
Schema keyword (an ``x-`` extension counts as one) and at least one *structural* keyword has a
value of the keyword's shape: ``type`` a type name (``"object"``, ``"string"``, ...) or a list of
them, ``$ref`` a string, ``enum`` a list, ``const`` anything, ``properties`` / ``$defs`` /
``definitions`` / ``patternProperties`` a mapping of subschemas, ``items`` /
``additionalProperties`` / ``not`` / ... a subschema, ``anyOf`` / ``oneOf`` / ``allOf`` /
``prefixItems`` a list of subschemas (a subschema being a bool, an empty mapping, or a mapping that
looks like a schema by the same rule). Anything else is a **template**. So
``{"type": "", "name": ""}`` (a document's "type" field), ``{"title": "", "description": ""}`` and
``{"items": [{"name": ""}], "total": 0}`` are templates.

Template inference
------------------
``""`` gives a string, ``0`` an integer, ``0.0`` a number, ``true``/``false`` a boolean, ``null``
a string; ``[x]`` an array of ``x`` (every element must infer the same schema; ``[]`` an array of
strings); a nested mapping an object. Every key is **required** and no other key is allowed
(``additionalProperties: false``); **scalar property values are nullable** (``null`` is allowed)
so the model can say a field is absent instead of inventing it. Array elements are not nullable
(an absent element is simply not listed) and arrays and objects are never null (absent means
``[]`` or an object of nulls). Empty mappings are refused: give at least one key.

Limits
------
Schemas, templates and models nest at most
:data:`~mississippi_tools.schema.limits.MAX_SCHEMA_DEPTH` levels (rules in
:mod:`mississippi_tools.schema.limits`); deeper ones are refused before anything recurses into
them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel

from mississippi_tools.errors import SchemaError
from mississippi_tools.schema._common import (
    KEYWORDS,
    SUBSCHEMA_LIST,
    SUBSCHEMA_MAP,
    SUBSCHEMA_ONE,
    TYPE_NAMES,
    escape,
    is_array,
    pointer,
    resolve,
    types,
    walk,
)
from mississippi_tools.schema.limits import (
    MAX_SCHEMA_DEPTH,
    check_model_depth,
    check_schema_limits,
    check_template_depth,
)
from mississippi_tools.schema.render import example_value
from mississippi_tools.schema.support import check_supported

__all__ = [
    "NormalizedSchema",
    "SchemaInput",
    "check_schema_valid",
    "is_json_schema",
    "normalize_schema",
]

SchemaInput: TypeAlias = "type[BaseModel] | Mapping[str, Any]"
"""What callers pass as a schema: a pydantic model class, a JSON Schema dict or a template dict."""


@dataclass(frozen=True)
class NormalizedSchema:
    """A schema in every form the extraction needs.

    Creating one checks the nesting limits
    (:data:`~mississippi_tools.schema.limits.MAX_SCHEMA_DEPTH`), so every reader of a
    ``NormalizedSchema`` can recurse safely.

    Attributes:
        json_schema: A self-contained JSON Schema (local ``$ref`` only); sent to engines.
        model: The pydantic model when the schema came from one (results are its instances).
        template: The example JSON shown to the model in the prompt.
        kind: Where the schema came from: ``pydantic``, ``json_schema`` or ``template``.
    """

    json_schema: dict[str, Any]
    model: type[BaseModel] | None
    template: Any
    kind: Literal["pydantic", "json_schema", "template"]

    def __post_init__(self) -> None:
        check_schema_limits(self.json_schema)
        check_template_depth(self.template)


def normalize_schema(schema: SchemaInput | NormalizedSchema) -> NormalizedSchema:
    """Turn a pydantic model, a JSON Schema or a template into a :class:`NormalizedSchema`.

    Args:
        schema: A pydantic model class, a JSON Schema mapping or a template mapping (see the
            module docstring for how the two mappings are told apart). A
            :class:`NormalizedSchema` is returned unchanged.

    Returns:
        The normalised schema, already checked with
        :func:`~mississippi_tools.schema.support.check_supported`.

    Raises:
        SchemaError: The schema is not valid JSON Schema, uses a feature the grammar cannot
            honour, nests deeper than the limit, or the template holds values that are not JSON.

    Example:
        >>> normalize_schema({"name": "", "age": 0}).json_schema["properties"]["age"]
        {'type': ['integer', 'null']}
    """
    if isinstance(schema, NormalizedSchema):
        return schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return _from_model(schema)
    if not isinstance(schema, Mapping):
        raise SchemaError(
            f"a schema must be a pydantic model class, a JSON Schema dict or a template dict, "
            f"not {type(schema).__name__}"
        )
    if not schema:
        raise SchemaError(
            'the schema is empty; pass a template such as {"name": ""} or a JSON Schema',
            path="",
        )
    if is_json_schema(schema):
        check_schema_limits(schema)  # before anything recurses into it
        data = _as_json(schema, "the schema")
        check_schema_valid(data)
        check_supported(data)
        _check_root_object(data)
        return NormalizedSchema(
            json_schema=data, model=None, template=example_value(data, data), kind="json_schema"
        )
    check_template_depth(schema)
    data = _as_json(schema, "the template")
    inferred = _infer(data, "", nullable=False)
    return NormalizedSchema(json_schema=inferred, model=None, template=data, kind="template")


def _from_model(model: type[BaseModel]) -> NormalizedSchema:
    check_model_depth(model)  # model_json_schema() recurses about 20 frames per nested model
    try:
        json_schema = model.model_json_schema()
    except RecursionError as e:
        raise SchemaError(
            f"cannot build a JSON Schema for {model.__name__}: its types nest too deeply for "
            f"pydantic (RecursionError); a schema may nest at most {MAX_SCHEMA_DEPTH} levels, "
            "flatten the model",
            path="",
        ) from e
    except Exception as e:  # pydantic raises several types for unsupported annotations
        raise SchemaError(f"cannot build a JSON Schema for {model.__name__}: {e}", path="") from e
    _drop_unique_items(json_schema)
    check_supported(json_schema)
    return NormalizedSchema(
        json_schema=json_schema,
        model=model,
        template=example_value(json_schema, json_schema),
        kind="pydantic",
    )


def _check_root_object(schema: Mapping[str, Any]) -> None:
    """Extraction results are objects (a model instance or a dict): refuse other top levels."""
    node: Any = schema
    for _ in range(32):
        if isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
            node = resolve(schema, node["$ref"])
    if isinstance(node, Mapping) and (
        types(node) == {"object"}
        or (not types(node) and ("properties" in node or "additionalProperties" in node))
    ):
        return
    kind = node.get("type") if isinstance(node, Mapping) else None
    raise SchemaError(
        f'the top level of an extraction schema must be an object ("type": "object"), not '
        f"{json.dumps(kind) if kind is not None else 'an untyped schema'}; wrap a list in an "
        'object, e.g. {"items": [...]}',
        path="",
    )


def _drop_unique_items(schema: dict[str, Any]) -> None:
    """Remove ``uniqueItems`` (pydantic's sets and frozensets drop duplicates when validating)."""
    for node in walk(schema):
        node.pop("uniqueItems", None)


def is_json_schema(value: Mapping[str, Any]) -> bool:
    """Whether a mapping is a JSON Schema rather than a template (rule in the module docstring).

    Subschemas nested deeper than :data:`~mississippi_tools.schema.limits.MAX_SCHEMA_DEPTH`
    levels are not looked at (such a mapping is refused by :func:`normalize_schema` either way).
    """
    if "$schema" in value:
        return True
    return _looks_like_schema(value, 0)


def _looks_like_schema(value: Mapping[str, Any], level: int) -> bool:
    if level > MAX_SCHEMA_DEPTH:
        return False
    if not all(isinstance(k, str) and (k in KEYWORDS or k.startswith("x-")) for k in value):
        return False
    for key, item in value.items():
        if key == "type" and (
            (isinstance(item, str) and item in TYPE_NAMES)
            or (
                is_array(item)
                and item
                and all(isinstance(t, str) and t in TYPE_NAMES for t in item)
            )
        ):
            return True
        if (key == "$ref" and isinstance(item, str)) or (key == "enum" and is_array(item)):
            return True
        if key == "const":
            return True
        if key in SUBSCHEMA_ONE and _is_subschema(item, level + 1):
            return True
        if (
            key in SUBSCHEMA_MAP
            and isinstance(item, Mapping)
            and item
            and all(_is_subschema(v, level + 1) for v in item.values())
        ):
            return True
        if (
            key in SUBSCHEMA_LIST
            and is_array(item)
            and item
            and all(_is_subschema(v, level + 1) for v in item)
        ):
            return True
    return False


def _is_subschema(value: Any, level: int) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, Mapping) and (not value or _looks_like_schema(value, level))


def _as_json(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A deep, JSON-only copy (tuples become lists); SchemaError for anything that is not JSON."""
    try:
        data = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise SchemaError(f"{what} is not JSON-serialisable: {e}", path="") from e
    assert isinstance(data, dict)
    return data


def check_schema_valid(schema: Mapping[str, Any]) -> None:
    """Refuse a mapping that is not a valid JSON Schema (Draft 2020-12 meta-schema).

    Raises:
        SchemaError: With ``path`` the JSON pointer of the invalid part.
    """
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
    from jsonschema.exceptions import (  # type: ignore[import-untyped]
        SchemaError as JSONSchemaSchemaError,
    )

    check_schema_limits(schema)
    try:
        Draft202012Validator.check_schema(schema)
    except JSONSchemaSchemaError as e:
        path = pointer(e.absolute_path)
        raise SchemaError(
            f"not a valid JSON Schema at {path or '/'}: {e.message}", path=path
        ) from e


def _infer(value: Any, path: str, *, nullable: bool) -> dict[str, Any]:
    """The JSON Schema of a template value (rules in the module docstring)."""

    def scalar(name: str) -> dict[str, Any]:
        return {"type": [name, "null"]} if nullable else {"type": name}

    if isinstance(value, bool):
        return scalar("boolean")
    if value is None or isinstance(value, str):
        return scalar("string")
    if isinstance(value, int):
        return scalar("integer")
    if isinstance(value, float):
        return scalar("number")
    if isinstance(value, Mapping):
        if not value:
            raise SchemaError(
                f"the template has an empty object at {path or '/'}; give it at least one key "
                'with an example value, e.g. {"name": ""}',
                path=path,
            )
        properties = {
            key: _infer(item, f"{path}/{escape(key)}", nullable=True) for key, item in value.items()
        }
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }
    if isinstance(value, list):
        if not value:
            return {"type": "array", "items": {"type": "string"}}
        items = [_infer(item, f"{path}/{i}", nullable=False) for i, item in enumerate(value)]
        if any(item != items[0] for item in items[1:]):
            raise SchemaError(
                f"the template's list at {path or '/'} mixes elements of different shapes; give "
                "one example element",
                path=path,
            )
        return {"type": "array", "items": items[0]}
    raise SchemaError(
        f"the template value at {path or '/'} is a {type(value).__name__}, not a JSON value",
        path=path,
    )
