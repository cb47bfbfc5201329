"""The JSON Schema vocabulary shared by the schema modules.

Keyword tables, readers of a subschema's types and numeric bounds, local ``$ref`` resolution and
JSON pointers. Private to :mod:`mississippi_tools.schema`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

TYPE_NAMES: Final = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
ANNOTATIONS: Final = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "example",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "discriminator",
        "$schema",
        "$id",
        "$anchor",
        "$vocabulary",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
        "nullable",
        "externalDocs",
        "xml",
    }
)
# Keywords whose value is one subschema, a mapping of subschemas, or a list of subschemas.
SUBSCHEMA_ONE: Final = frozenset(
    {
        "items",
        "additionalProperties",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "unevaluatedProperties",
        "unevaluatedItems",
        "additionalItems",
        "contentSchema",
    }
)
SUBSCHEMA_MAP: Final = frozenset(
    {"properties", "$defs", "definitions", "patternProperties", "dependentSchemas"}
)
SUBSCHEMA_LIST: Final = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
VALIDATION: Final = frozenset(
    {
        "type",
        "enum",
        "const",
        "required",
        "minProperties",
        "maxProperties",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minContains",
        "maxContains",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "dependentRequired",
        "dependencies",
        "$ref",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "$recursiveAnchor",
    }
)
KEYWORDS: Final = ANNOTATIONS | SUBSCHEMA_ONE | SUBSCHEMA_MAP | SUBSCHEMA_LIST | VALIDATION


def is_array(value: Any) -> bool:
    """Whether a value is a JSON array as callers may write it (a list or a tuple)."""
    return isinstance(value, list | tuple)


def subschemas(node: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """``(pointer suffix, subschema)`` of every subschema written directly in ``node``."""
    for key, value in node.items():
        if key in SUBSCHEMA_ONE:
            yield f"/{escape(key)}", value
        elif key in SUBSCHEMA_MAP and isinstance(value, Mapping):
            for name, sub in value.items():
                yield f"/{escape(key)}/{escape(str(name))}", sub
        elif key in SUBSCHEMA_LIST and is_array(value):
            for index, sub in enumerate(value):
                yield f"/{key}/{index}", sub


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every subschema dict written in ``node`` (not following ``$ref``), depth first."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            yield current
            stack.extend(reversed([sub for _, sub in subschemas(current)]))


def types(node: Mapping[str, Any]) -> set[str]:
    """The type names of a subschema's ``type`` (empty when it has none)."""
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return set()


def json_type(value: Any) -> str:
    """The JSON Schema type name of a Python JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def bounds(
    node: Mapping[str, Any],
) -> tuple[tuple[float, bool] | None, tuple[float, bool] | None]:
    """``((low, exclusive), (high, exclusive))`` of a numeric schema; ``None`` when unbounded."""
    low: tuple[float, bool] | None = None
    high: tuple[float, bool] | None = None
    if isinstance(node.get("minimum"), int | float):
        low = (node["minimum"], False)
    if isinstance(node.get("exclusiveMinimum"), int | float) and (
        low is None or node["exclusiveMinimum"] >= low[0]
    ):
        low = (node["exclusiveMinimum"], True)
    if isinstance(node.get("maximum"), int | float):
        high = (node["maximum"], False)
    if isinstance(node.get("exclusiveMaximum"), int | float) and (
        high is None or node["exclusiveMaximum"] <= high[0]
    ):
        high = (node["exclusiveMaximum"], True)
    return low, high


def integer_bounds(node: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """The inclusive integer bounds of an integer schema."""
    low, high = bounds(node)
    lo = hi = None
    if low is not None:
        value, strict = low
        lo = math.floor(value) + 1 if strict and float(value).is_integer() else math.ceil(value)
    if high is not None:
        value, strict = high
        hi = math.ceil(value) - 1 if strict and float(value).is_integer() else math.floor(value)
    return lo, hi


def multiples(low: int, high: int, step: int) -> range:
    """The multiples of ``step`` in ``[low, high]``."""
    step = abs(step)
    first = -(-low // step) * step
    return range(first, high + 1, step)


def resolve(root: Any, ref: str) -> Any:
    """The target of a local ``$ref`` (``#`` or ``#/a/b``), or None when it points nowhere."""
    if ref == "#":
        return root
    node = root
    for part in ref[2:].split("/"):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif is_array(node) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def is_local_ref(ref: Any) -> bool:
    """Whether a ``$ref`` value points inside the document."""
    return isinstance(ref, str) and (ref == "#" or ref.startswith("#/"))


def escape(key: str) -> str:
    """A key as a JSON pointer segment (``~`` and ``/`` escaped)."""
    return key.replace("~", "~0").replace("/", "~1")


def pointer(parts: Sequence[Any] | Iterator[Any]) -> str:
    """The JSON pointer of a path of keys and indices (``""`` for the root)."""
    return "".join(f"/{escape(str(p))}" for p in parts)
