"""How deep and how large a schema may be, checked without recursion.

Schemas arrive from callers over HTTP, MCP and the CLI, and the code that reads them (and
``json``, ``copy``, ``jsonschema`` and pydantic) recurses once per level: a schema nested 100,000
levels deep would end in a ``RecursionError`` deep inside a request. So every schema, template and
model is measured first, by the loops here, and refused with a
:class:`~mississippi_tools.errors.SchemaError` naming the limit and the JSON pointer where it was
passed.

- **Depth**: at most :data:`MAX_SCHEMA_DEPTH` levels below the root. A level is a nested subschema
  (``properties``, ``items``, ``anyOf``, ...); following a ``$ref`` enters its target one level
  further down, so a chain of references (or of models nested in models: 2 levels each, the
  property and the model) counts every link; a recursive reference stops where it meets itself, as
  the readers do. Objects and arrays nested inside a value written in a schema (``const``,
  ``enum``, ``default``, ...) add one level each. In a template, and in an answer, every nested
  value is a level (``{"a": ""}`` is 1 deep), as in the JSON Schema inferred from it.
- **Size**: at most :data:`MAX_SCHEMA_NODES` subschemas visited when every ``$ref`` is followed
  from every place that uses it (a definition used in several places counts each time, as it does
  in the template shown to the model), which bounds the readers' work.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel

from mississippi_tools.errors import SchemaError
from mississippi_tools.schema._common import (
    SUBSCHEMA_LIST,
    SUBSCHEMA_MAP,
    SUBSCHEMA_ONE,
    escape,
    is_array,
    is_local_ref,
    resolve,
)

__all__ = [
    "MAX_SCHEMA_DEPTH",
    "MAX_SCHEMA_NODES",
    "check_model_depth",
    "check_schema_limits",
    "check_template_depth",
    "too_deep",
]

# jsonschema's meta-schema check, the deepest reader, takes about 12 stack frames per level: 32
# levels stay under 400 of Python's 1,000, leaving room for the caller's own stack.
MAX_SCHEMA_DEPTH: Final = 32
"""Levels a schema or template may nest below its root (rules in the module docstring)."""

MAX_SCHEMA_NODES: Final = 20_000
"""Subschemas a schema may expand to when its ``$ref`` are followed from every place of use."""


def _depth_error(what: str, path: str) -> SchemaError:
    return SchemaError(
        f"the {what} nests deeper than {MAX_SCHEMA_DEPTH} levels at {path or '/'}; the limit is "
        f"{MAX_SCHEMA_DEPTH} levels of nested objects, arrays and subschemas (each $ref followed "
        "counts one): flatten it",
        path=path,
    )


def too_deep(
    value: Any, *, start: int = 0, limit: int = MAX_SCHEMA_DEPTH, scalars: bool = True
) -> str | None:
    """The JSON pointer of the first value nested deeper than ``limit`` levels, or None.

    Args:
        value: A JSON-like value (mappings, lists and tuples are containers).
        start: The level of ``value`` itself.
        limit: The deepest level allowed.
        scalars: Whether a scalar too deep counts, or only objects and arrays.
    """
    stack: list[tuple[Any, int, str]] = [(value, start, "")]
    while stack:
        node, level, path = stack.pop()
        if isinstance(node, Mapping):
            children = [(f"{path}/{escape(str(k))}", v) for k, v in node.items()]
        elif is_array(node):
            children = [(f"{path}/{i}", v) for i, v in enumerate(node)]
        elif level > limit and scalars:
            return path
        else:
            continue
        if level > limit:
            return path
        stack.extend((child, level + 1, child_path) for child_path, child in reversed(children))
    return None


def check_template_depth(template: Any) -> None:
    """Refuse a template with a value deeper than :data:`MAX_SCHEMA_DEPTH` levels.

    Every value is a level (``{"a": ""}`` is 1 deep), as every subschema of the JSON Schema
    inferred from it is.

    Raises:
        SchemaError: Naming the limit, with ``path`` the pointer of the first level too deep.
    """
    path = too_deep(template)
    if path is not None:
        raise _depth_error("template", path)


def check_schema_limits(schema: Mapping[str, Any]) -> None:
    """Refuse a JSON Schema deeper than :data:`MAX_SCHEMA_DEPTH` or larger than the node limit.

    Walks every subschema written in the document and follows every local ``$ref`` from where it
    is used, with an explicit stack (no recursion). Anything may be malformed here: this runs
    before the schema is validated.

    Raises:
        SchemaError: Naming the limit, with ``path`` the pointer of the first subschema too deep.
    """
    # (node, level, pointer, the $refs followed to get here)
    stack: list[tuple[Any, int, str, frozenset[str]]] = [(schema, 0, "", frozenset())]
    visited = 0
    while stack:
        node, level, path, refs = stack.pop()
        if not isinstance(node, Mapping):
            if is_array(node):  # not a subschema, but nested all the same
                deeper = too_deep(node, start=level, scalars=False)
                if deeper is not None:
                    raise _depth_error("schema", path + deeper)
            continue
        if level > MAX_SCHEMA_DEPTH:
            raise _depth_error("schema", path)
        visited += 1
        if visited > MAX_SCHEMA_NODES:
            raise SchemaError(
                f"the schema has more than {MAX_SCHEMA_NODES:,} subschemas, counting a "
                f"definition again at each $ref that uses it (reached {path or '/'}); use each "
                "definition in fewer places or simplify the schema",
                path=path,
            )
        children: list[tuple[Any, int, str, frozenset[str]]] = []
        for key, value in node.items():
            key_path = f"{path}/{escape(str(key))}"
            if key in SUBSCHEMA_ONE:
                children.append((value, level + 1, key_path, refs))
            elif key in SUBSCHEMA_MAP and isinstance(value, Mapping):
                children.extend(
                    (sub, level + 1, f"{key_path}/{escape(str(name))}", refs)
                    for name, sub in value.items()
                )
            elif key in SUBSCHEMA_LIST and is_array(value):
                children.extend(
                    (sub, level + 1, f"{key_path}/{i}", refs) for i, sub in enumerate(value)
                )
            elif key == "$ref" and is_local_ref(value) and value not in refs:
                target = resolve(schema, value)
                if target is not None:
                    children.append((target, level + 1, value[1:], refs | {value}))
            else:
                deeper = too_deep(value, start=level, scalars=False)
                if deeper is not None:
                    raise _depth_error("schema", key_path + deeper)
        stack.extend(reversed(children))


def check_model_depth(model: type[BaseModel]) -> None:
    """Refuse a pydantic model whose models nest deeper than :data:`MAX_SCHEMA_DEPTH` allows.

    Runs before ``model_json_schema()``, which recurses about 20 frames per nested model and
    would overflow the stack first. Each nested model counts 2 levels (the property and the
    referenced model), and its fields one more, so at most ``MAX_SCHEMA_DEPTH // 2 - 1`` models
    may nest in the root model; models inside lists, unions and dicts count the same here (the
    JSON Schema's own check counts their extra levels). A model met again on its own path (a
    recursive model) stops there.

    Raises:
        SchemaError: Naming the limit, with ``path`` the fields leading to the model too deep,
            as ``/properties/a/properties/b``.
    """
    stack: list[tuple[type[BaseModel], int, str, frozenset[type[BaseModel]]]] = [
        (model, 0, "", frozenset({model}))
    ]
    visited = 0
    while stack:
        current, level, path, seen = stack.pop()
        if level + 1 > MAX_SCHEMA_DEPTH and current.model_fields:  # its fields are too deep
            raise SchemaError(
                f"the model {model.__name__} nests its models deeper than {MAX_SCHEMA_DEPTH} "
                f"levels at {path}; each nested model is 2 levels (the field and the model): "
                "flatten it",
                path=path,
            )
        visited += 1
        if visited > MAX_SCHEMA_NODES:
            raise SchemaError(
                f"the model {model.__name__} expands to more than {MAX_SCHEMA_NODES:,} nested "
                f"models (reached {path}); use each model in fewer places",
                path=path,
            )
        for name, field in current.model_fields.items():
            field_path = f"{path}/properties/{escape(name)}"
            for nested in _models_in(field.annotation):
                if nested not in seen:
                    stack.append((nested, level + 2, field_path, seen | {nested}))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models named anywhere in a type annotation (``list[A] | None`` gives A)."""
    found: list[type[BaseModel]] = []
    stack = [annotation]
    while stack:
        current = stack.pop()
        if isinstance(current, type) and issubclass(current, BaseModel):
            found.append(current)
            continue
        stack.extend(typing.get_args(current))
    return found
