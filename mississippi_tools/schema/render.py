"""The JSON template shown to the model in the extraction prompt, in the H2OVL card's style.

The card says the model "works best with an explicit JSON template": an example object such as
``{"name": "", "date_of_birth": ""}``. A template given by the caller is shown as written; for a
JSON Schema or a pydantic model, :func:`example_value` builds one from the schema and
:func:`render_template` adds short field notes (descriptions, formats, non-string enums).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from mississippi_tools.schema._common import resolve, types

if TYPE_CHECKING:
    from mississippi_tools.schema.normalize import NormalizedSchema

__all__ = ["example_value", "render_template"]

_FORMAT_HINTS: Final = {
    "date": "a date, YYYY-MM-DD",
    "date-time": "a date and time, YYYY-MM-DDTHH:MM:SS+00:00",
    "time": "a time, HH:MM:SS+00:00",
    "email": "an email address",
    "uuid": "a UUID",
    "ipv4": "an IPv4 address",
    "ipv6": "an IPv6 address",
    "hostname": "a host name",
    "uri": "a URL",
    "uri-reference": "a URL or a relative reference",
    "duration": "an ISO 8601 duration, e.g. P1DT2H",
}


def render_template(normalized: NormalizedSchema) -> str:
    """The JSON template for the prompt, in the H2OVL card's style.

    The example JSON (:attr:`NormalizedSchema.template`) indented by 2 with keys in the schema's
    order; example values are ``""``, ``0``, ``0.0``, ``false``, a one-element list, or a nested
    object; string enums show their values as ``"a|b|c"``. A template given by the caller is shown
    as written. For schemas, a short "Field notes:" section follows when some field has a
    description, a format (``date`` gives "a date, YYYY-MM-DD") or a non-string enum; fields are
    named by dotted path, ``[]`` marking list elements (``items[].price``).

    Example:
        >>> print(render_template(normalize_schema({"name": "", "tags": [""]})))
        {
          "name": "",
          "tags": [
            ""
          ]
        }
    """
    text = json.dumps(normalized.template, indent=2, ensure_ascii=False)
    if normalized.kind == "template":
        return text
    notes: list[str] = []
    _field_notes(normalized.json_schema, normalized.json_schema, "", (), notes)
    if not notes:
        return text
    return text + "\nField notes:\n" + "\n".join(notes)


def example_value(schema: Any, root: Mapping[str, Any], refs: tuple[str, ...] = ()) -> Any:
    """The card-style example value of a schema: "" / 0 / 0.0 / false / [x] / {...}.

    Args:
        schema: A subschema of ``root``.
        root: The whole schema, for ``$ref``.
        refs: The references followed to reach ``schema``; meeting one again (recursion) gives an
            empty container.
    """
    if not isinstance(schema, Mapping):
        return ""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in refs:  # recursion: stop with an empty container
            target = resolve(root, ref)
            return [] if isinstance(target, Mapping) and "array" in types(target) else {}
        return example_value(resolve(root, ref), root, (*refs, ref))
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        values = [v for v in schema["enum"] if v is not None] or [None]
        if len(values) > 1 and all(isinstance(v, str) for v in values):
            return "|".join(values)
        return values[0]
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            chosen = next((b for b in branches if not _is_null(b)), branches[0])
            return example_value(chosen, root, refs)
    kinds = [t for t in _ordered_types(schema) if t != "null"]
    kind = kinds[0] if kinds else ("null" if _ordered_types(schema) else _guess_type(schema))
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: example_value(sub, root, refs) for name, sub in properties.items()}
    if kind == "array":
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            return [example_value(sub, root, refs) for sub in prefix]
        items = schema.get("items")
        return [example_value(items, root, refs)] if isinstance(items, Mapping) else []
    return {"string": "", "integer": 0, "number": 0.0, "boolean": False, "null": None}.get(kind, "")


def _ordered_types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    return [k for k in kind if isinstance(k, str)] if isinstance(kind, list) else []


def _guess_type(schema: Mapping[str, Any]) -> str:
    if "properties" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _is_null(schema: Any) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") == "null"


def _field_notes(
    schema: Any, root: Mapping[str, Any], name: str, refs: tuple[str, ...], notes: list[str]
) -> None:
    """Collect "- name: note" lines (descriptions, formats, non-string enums) in template order."""
    if not isinstance(schema, Mapping):
        return
    node: Any = schema
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in refs:
            return
        refs = (*refs, ref)
        node = resolve(root, ref)
        if not isinstance(node, Mapping):
            return
    # The first non-null branch of a union (Optional[X] is anyOf [X, null]) carries the shape.
    branch: Any = None
    for key in ("anyOf", "oneOf"):
        options = [b for b in node.get(key) or () if isinstance(b, Mapping) and not _is_null(b)]
        if options:
            branch = options[0]
            break
    if name:
        parts: list[str] = []
        description = schema.get("description")
        if not isinstance(description, str) and not _is_container(node, root):
            description = node.get("description")  # an enum's docstring, not a model's
        if isinstance(description, str) and description.strip():
            parts.append(_one_line(description))
        for candidate in (node, branch):
            fmt = candidate.get("format") if isinstance(candidate, Mapping) else None
            if isinstance(fmt, str) and fmt in _FORMAT_HINTS:
                parts.append(_FORMAT_HINTS[fmt])
                break
        for candidate in (node, _deref_once(branch, root)):
            enum = candidate.get("enum") if isinstance(candidate, Mapping) else None
            if isinstance(enum, list) and len(enum) > 1:
                if not all(isinstance(v, str) for v in enum):
                    values = ", ".join(json.dumps(v, ensure_ascii=False) for v in enum)
                    parts.append(f"one of {values}")
                break
        if parts:
            notes.append(f"- {name}: {'; '.join(parts)}")
    if branch is not None and _is_container(branch, root):
        _field_notes(_without_description(branch), root, name, refs, notes)
    for child, sub in (node.get("properties") or {}).items():
        _field_notes(sub, root, f"{name}.{child}" if name else child, refs, notes)
    items = node.get("items")
    if isinstance(items, Mapping):
        _field_notes(items, root, f"{name}[]", refs, notes)


def _without_description(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The branch without its own description (already noted on the union), for recursion."""
    return {k: v for k, v in schema.items() if k != "description"}


def _deref_once(schema: Any, root: Mapping[str, Any]) -> Any:
    if isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str):
        return resolve(root, schema["$ref"])
    return schema


def _is_container(schema: Any, root: Mapping[str, Any]) -> bool:
    """Whether a schema (after one $ref) is an object or an array."""
    node = _deref_once(schema, root)
    if not isinstance(node, Mapping):
        return False
    return bool(types(node) & {"object", "array"}) or _guess_type(node) != "string"


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
