r"""Schemas for JSON extraction: normalisation, the grammar constraint, validation and confidences.

A caller describes the data it wants in one of three ways (:data:`SchemaInput`):

- a **pydantic model** class: its ``model_json_schema()`` is used, results are model instances;
- a **JSON Schema** dict (Draft 2020-12): results are validated dicts (or lists, for arrays);
- a **template** dict in the H2OVL card's style, ``{"name": "", "age": 0, "items": [{"a": ""}]}``:
  a JSON Schema is inferred from its example values.

:func:`normalize_schema` turns any of them into a :class:`NormalizedSchema` holding a self-contained
JSON Schema, the example JSON shown in the prompt (:func:`render_template`) and what validates
the result (:func:`validate`).

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

What the grammar enforces (xgrammar 0.2.8, each point verified by running it)
---------------------------------------------------------------------------
Supported, enforced while generating:

- ``type`` (a name or a list of names), ``enum``, ``const``;
- objects: ``properties`` (in the schema's order), ``required``, ``additionalProperties``
  (``false``, ``true`` or a schema; when absent, no extra keys are generated),
  ``minProperties``/``maxProperties``, ``propertyNames`` (``enum``, ``const``, ``pattern``,
  ``minLength``, ``maxLength``: pydantic's constrained ``dict`` keys),
  ``unevaluatedProperties: false``;
- arrays: ``items``, ``prefixItems``, ``items: false``, ``minItems``/``maxItems``,
  ``unevaluatedItems: false``;
- ``$ref`` to ``#`` or ``#/...`` pointers in the same document, ``$defs``/``definitions``,
  recursion; ``anyOf``; ``oneOf`` when its branches are provably disjoint (different types, or
  objects told apart by a ``const``/``enum`` property, as in pydantic's discriminated unions);
  ``allOf`` with one entry;
- numbers: ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``; ``multipleOf``
  on integers, without bounds or between two bounds (xgrammar ignores it beside a bound, so the
  allowed values are enumerated, up to 10,000);
- strings: ``minLength``/``maxLength`` (in characters), ``pattern`` (matched in full; no
  lookaround, no backreferences), ``pattern`` with a length limit when the pattern is a single
  repeated atom such as ``^[A-Z]+$`` (folded into ``^[A-Z]{1,5}$``);
- ``format`` (:data:`SUPPORTED_FORMATS`), as our own patterns: ``date``, ``date-time`` and
  ``time`` (only real calendar dates, seconds 00-59, 1-6 decimals, ``Z`` or an offset: what
  pydantic and Python accept), ``ipv4`` (no leading zeros, as Python's ``ipaddress``), ``ipv6``
  (no embedded IPv4: xgrammar's allows leading zeros there, which Python refuses), ``email``
  (dot-atom local part: xgrammar's own email grammar writes invalid escapes in quoted local
  parts); as xgrammar's grammars: ``uuid``, ``hostname``, ``uri``,
  ``uri-reference``, ``uri-template``, ``duration`` (each fuzzed: 300 random walks gave valid
  JSON, and values Python accepts where it has a checker). The annotation-only formats
  ``binary``, ``password`` and ``path`` (pydantic's ``bytes``, ``SecretStr``, ``Path``) are
  plain strings.
- annotations are ignored: ``title``, ``description``, ``default``, ``examples``, ``$comment``,
  ``deprecated``, ``readOnly``, ``writeOnly``, ``discriminator``, ``x-...``.

Refused with :class:`~mississippi_tools.errors.SchemaError` (naming the feature and its JSON
pointer), because xgrammar ignores or mis-handles them and the output could then fail validation:

- ``not``, ``if``/``then``/``else``, ``patternProperties``, ``dependentSchemas``,
  ``dependentRequired``, ``dependencies``, ``contains``/``minContains``/``maxContains``,
  ``$dynamicRef``/``$recursiveRef``;
- ``uniqueItems: true`` (pydantic models' schemas lose it: their set types drop duplicates);
- ``propertyNames`` beyond enum/const/pattern/lengths, ``minProperties`` above 1 with free-form
  keys (a key may repeat), ``unevaluatedProperties``/``unevaluatedItems`` other than ``false``,
  required keys missing from ``properties``;
- ``allOf`` with several entries, ``oneOf`` with overlapping branches (use ``anyOf``);
- ``multipleOf`` on non-integers or with a bound on one side only;
- ``$ref`` outside the document or with ``~``/``%`` escapes, keywords beside ``$ref`` other than
  annotations;
- patterns with lookaround or backreferences; ``format`` values not listed above
  (``json-pointer`` and ``relative-json-pointer`` too: xgrammar writes unescaped quotes in
  them); ``format`` or a non-foldable ``pattern`` together with ``minLength``/``maxLength``
  (e.g. pydantic ``HttpUrl``: use ``str``);
- unsatisfiable bounds (``minimum > maximum``, ``minItems > maxItems``, ...).

Known limits of the grammar (outputs still always validate):

- **xgrammar bug #800**: a string with ``minLength``/``maxLength`` cannot contain escape sequences
  (no ``"``, ``\``, newline) and would accept raw control characters, which is invalid JSON. We
  remove every token holding a control character (U+0000-U+001F) from the vocabulary given to
  xgrammar: no JSON needs one outside an escape, so nothing valid is lost, the per-token cost is
  zero, and the length-limited strings can no longer break ``json.loads``. (Rewriting the limits
  as a ``pattern`` was measured too: xgrammar's patterns forbid escapes just the same, conflict
  with ``format``, and compile slowly for long limits, so it buys nothing.)
- xgrammar mis-compiles an optional group whose last item repeats: ``^1(?:x[0-9]+)?$`` also
  accepts ``11``, and its own ``date-time`` writes seconds like ``57606``. Every pattern's
  ``(...)?`` is rewritten to the same-language ``(...){0,1}``, which compiles correctly. Strings
  with a ``pattern`` or ``format`` cannot contain escape sequences either.
- xgrammar accepts UTF-16 surrogates written as UTF-8 bytes (``ED A0 80``), which is not UTF-8
  (it decodes to three U+FFFD, breaking lengths); after a ``<0xED>`` byte token the processor
  masks the ``<0xA0>``-``<0xBF>`` ones.
- Numbers are capped against runaway output: an ``integer`` without a bound on one side gets the
  int64 limit, a ``number`` without one gets +-1e15 (a random or confused model otherwise writes
  exponents such as ``1e999``, which parses as infinity). Bounded numbers are written without an
  exponent and with at most 6 decimals (xgrammar's number grammar).
- Patterns are matched in full (``"pattern": "[A-Z]"`` gives a single letter), which is stricter
  than JSON Schema's search semantics.
- pydantic may validate more than its JSON Schema says (``Decimal`` strings, custom validators).
  The grammar guarantees the schema; the rest is checked by :func:`validate`.
"""

from __future__ import annotations

import copy
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from mississippi_tools.errors import ExtractionError, GenerationError, SchemaError

if TYPE_CHECKING:
    import torch

    from mississippi_tools.models.base import TokenizerLike

__all__ = [
    "DEFAULT_GRAMMAR_CACHE_SIZE",
    "JSON_SEPARATORS",
    "SUPPORTED_FORMATS",
    "GrammarProcessor",
    "JSONGrammar",
    "NormalizedSchema",
    "SchemaInput",
    "check_supported",
    "field_confidences",
    "is_json_schema",
    "normalize_schema",
    "render_template",
    "validate",
]

SchemaInput: TypeAlias = "type[BaseModel] | Mapping[str, Any]"
"""What callers pass as a schema: a pydantic model class, a JSON Schema dict or a template dict."""

DEFAULT_GRAMMAR_CACHE_SIZE: Final = 64
"""Compiled grammars kept by :class:`JSONGrammar` (least recently used ones are dropped)."""

# The card's own style (`{"name": "", "date_of_birth": ""}` and answers like it): the model was
# trained on ", " and ": ", and forcing compact JSON it never saw would push it off its
# distribution. The spaces are nearly free: SentencePiece glues a space to the next piece ("▁""),
# so `", "` costs the same tokens as `","` in most places.
JSON_SEPARATORS: Final = (", ", ": ")
"""Item and key separators of the generated JSON (as in ``json.dumps``)."""

SUPPORTED_FORMATS: Final = frozenset(
    {
        "date",
        "date-time",
        "time",
        "email",
        "uuid",
        "ipv4",
        "ipv6",
        "hostname",
        "uri",
        "uri-reference",
        "uri-template",
        "duration",
    }
)
"""``format`` values the grammar enforces."""

_ANNOTATION_FORMATS: Final = frozenset({"binary", "password", "path"})
# Formats whose values are never empty, so a `minLength` of 0 or 1 beside them is implied.
_NON_EMPTY_FORMATS: Final = SUPPORTED_FORMATS - {"uri-reference", "uri-template"}

_TYPE_NAMES: Final = frozenset(
    {"object", "array", "string", "number", "integer", "boolean", "null"}
)
_ANNOTATIONS: Final = frozenset(
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
_SUBSCHEMA_ONE: Final = frozenset(
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
_SUBSCHEMA_MAP: Final = frozenset(
    {"properties", "$defs", "definitions", "patternProperties", "dependentSchemas"}
)
_SUBSCHEMA_LIST: Final = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_VALIDATION: Final = frozenset(
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
_KEYWORDS: Final = _ANNOTATIONS | _SUBSCHEMA_ONE | _SUBSCHEMA_MAP | _SUBSCHEMA_LIST | _VALIDATION

_REFUSED: Final = {
    "not": "'not' is ignored by the grammar",
    "if": "'if'/'then'/'else' are ignored by the grammar",
    "then": "'if'/'then'/'else' are ignored by the grammar",
    "else": "'if'/'then'/'else' are ignored by the grammar",
    "patternProperties": "'patternProperties' is mis-handled by the grammar (keys never match)",
    "dependentSchemas": "'dependentSchemas' is ignored by the grammar",
    "dependentRequired": "'dependentRequired' is ignored by the grammar",
    "dependencies": "'dependencies' is ignored by the grammar",
    "contains": "'contains' is ignored by the grammar",
    "minContains": "'minContains' is not enforced correctly by the grammar",
    "maxContains": "'maxContains' is not enforced by the grammar",
    "additionalItems": "'additionalItems' (draft 2019) is not supported; use 'prefixItems'/'items'",
    "$dynamicRef": "'$dynamicRef' is not supported",
    "$recursiveRef": "'$recursiveRef' is not supported",
}

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_NUMBER_CAP: Final = 1e15
_MAX_ENUMERATED: Final = 10_000

# Strict patterns replacing xgrammar's formats where those accept values that Python, pydantic and
# jsonschema reject (2024-02-30, year 0000, second 60, 7+ decimals, 01.2.3.4).
_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
_DATE = (
    rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    rf"|{_LEAP_YEAR}-02-29)"
)
_TIME = (
    r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
# xgrammar's own email grammar allows quoted local parts and writes invalid escapes in them.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}"
# xgrammar's ipv6 allows an embedded IPv4 with leading zeros ("::1.2.3.04"), which Python refuses;
# these are the eight-group forms with at most one "::", without embedded IPv4.
_H16 = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(
    [
        rf"(?:{_H16}:){{7}}{_H16}",
        rf"(?:{_H16}:){{1,7}}:",
        rf"(?:{_H16}:){{1,6}}:{_H16}",
        rf"(?:{_H16}:){{1,5}}(?::{_H16}){{1,2}}",
        rf"(?:{_H16}:){{1,4}}(?::{_H16}){{1,3}}",
        rf"(?:{_H16}:){{1,3}}(?::{_H16}){{1,4}}",
        rf"(?:{_H16}:){{1,2}}(?::{_H16}){{1,5}}",
        rf"{_H16}:(?::{_H16}){{1,6}}",
        rf":(?:(?::{_H16}){{1,7}}|:)",
    ]
)
_FORMAT_PATTERNS: Final = {
    "email": f"^{_EMAIL}$",
    "ipv6": f"^(?:{_IPV6})$",
    "date": f"^{_DATE}$",
    "date-time": f"^{_DATE}T{_TIME}$",
    "time": f"^{_TIME}$",
    "ipv4": rf"^{_OCTET}(?:\.{_OCTET}){{3}}$",
}

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

_LOOKAROUND_RE: Final = re.compile(r"\(\?<?[=!]")
_BACKREF_RE: Final = re.compile(r"\\(?:[1-9]|k<)")
# A pattern that is one repeated atom, optionally anchored: ^[A-Z]+$, \d*, ^.+$
_FOLDABLE_RE: Final = re.compile(
    r"^\^?(\[(?:\\.|[^\]\\])+\]|\\[dDwWsS]|\.|[A-Za-z0-9 _-])([+*])\$?$"
)


# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormalizedSchema:
    """A schema in every form the extraction needs.

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


def normalize_schema(schema: SchemaInput | NormalizedSchema) -> NormalizedSchema:
    """Turn a pydantic model, a JSON Schema or a template into a :class:`NormalizedSchema`.

    Args:
        schema: A pydantic model class, a JSON Schema mapping or a template mapping (see the
            module docstring for how the two mappings are told apart). A
            :class:`NormalizedSchema` is returned unchanged.

    Returns:
        The normalised schema, already checked with :func:`check_supported`.

    Raises:
        SchemaError: The schema is not valid JSON Schema, uses a feature the grammar cannot
            honour, or the template holds values that are not JSON.

    Example:
        >>> normalize_schema({"name": "", "age": 0}).json_schema["properties"]["age"]
        {'type': ['integer', 'null']}
    """
    if isinstance(schema, NormalizedSchema):
        return schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            json_schema = schema.model_json_schema()
        except Exception as e:  # pydantic raises several types for unsupported annotations
            raise SchemaError(
                f"cannot build a JSON Schema for {schema.__name__}: {e}", path=""
            ) from e
        _drop_unique_items(json_schema)
        check_supported(json_schema)
        return NormalizedSchema(
            json_schema=json_schema,
            model=schema,
            template=_example(json_schema, json_schema, ()),
            kind="pydantic",
        )
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
    data = _as_json(schema, "the schema")
    if is_json_schema(data):
        _check_schema_valid(data)
        check_supported(data)
        _check_root_object(data)
        return NormalizedSchema(
            json_schema=data, model=None, template=_example(data, data, ()), kind="json_schema"
        )
    inferred = _infer(data, "", nullable=False)
    return NormalizedSchema(json_schema=inferred, model=None, template=data, kind="template")


def _check_root_object(schema: Mapping[str, Any]) -> None:
    """Extraction results are objects (a model instance or a dict): refuse other top levels."""
    node: Any = schema
    for _ in range(32):
        if isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
            node = _resolve(schema, node["$ref"])
    if isinstance(node, Mapping) and (
        _types(node) == {"object"}
        or (not _types(node) and ("properties" in node or "additionalProperties" in node))
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
    for node in _walk(schema):
        node.pop("uniqueItems", None)


def is_json_schema(value: Mapping[str, Any]) -> bool:
    """Whether a mapping is a JSON Schema rather than a template (rule in the module docstring)."""
    if "$schema" in value:
        return True
    return _looks_like_schema(value)


def _looks_like_schema(value: Mapping[str, Any]) -> bool:
    if not all(isinstance(k, str) and (k in _KEYWORDS or k.startswith("x-")) for k in value):
        return False
    for key, item in value.items():
        if key == "type" and (
            (isinstance(item, str) and item in _TYPE_NAMES)
            or (
                isinstance(item, list)
                and item
                and all(isinstance(t, str) and t in _TYPE_NAMES for t in item)
            )
        ):
            return True
        if (key == "$ref" and isinstance(item, str)) or (key == "enum" and isinstance(item, list)):
            return True
        if key == "const":
            return True
        if key in _SUBSCHEMA_ONE and _is_subschema(item):
            return True
        if (
            key in _SUBSCHEMA_MAP
            and isinstance(item, Mapping)
            and item
            and all(_is_subschema(v) for v in item.values())
        ):
            return True
        if (
            key in _SUBSCHEMA_LIST
            and isinstance(item, list)
            and item
            and all(_is_subschema(v) for v in item)
        ):
            return True
    return False


def _is_subschema(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, Mapping) and (not value or _looks_like_schema(value))


def _as_json(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A deep, JSON-only copy (tuples become lists); SchemaError for anything that is not JSON."""
    try:
        data = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise SchemaError(f"{what} is not JSON-serialisable: {e}", path="") from e
    assert isinstance(data, dict)
    return data


def _check_schema_valid(schema: Mapping[str, Any]) -> None:
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
    from jsonschema.exceptions import (  # type: ignore[import-untyped]
        SchemaError as JSONSchemaSchemaError,
    )

    try:
        Draft202012Validator.check_schema(schema)
    except JSONSchemaSchemaError as e:
        path = _pointer(e.absolute_path)
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
            key: _infer(item, f"{path}/{_escape(key)}", nullable=True)
            for key, item in value.items()
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


# --------------------------------------------------------------------------------------------------
# What the grammar supports
# --------------------------------------------------------------------------------------------------


def check_supported(json_schema: Mapping[str, Any]) -> None:
    """Refuse schemas the grammar cannot honour exactly.

    Walks every subschema reachable from the root (following ``$ref``) and raises for the first
    unsupported feature; the lists are in the module docstring.

    Args:
        json_schema: A JSON Schema.

    Raises:
        SchemaError: Naming the feature, with ``path`` set to its JSON pointer.
    """
    _Checker(json_schema).check(json_schema, "", ())


class _Checker:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.seen: set[str] = set()

    def fail(self, path: str, message: str) -> SchemaError:
        return SchemaError(f"unsupported schema at {path or '/'}: {message}", path=path)

    def check(self, node: Any, path: str, parents: tuple[str, ...]) -> None:
        if isinstance(node, bool):
            if (
                node is False
                and parents
                and parents[-1]
                not in (
                    "additionalProperties",
                    "items",
                    "unevaluatedProperties",
                    "unevaluatedItems",
                )
            ):
                raise self.fail(path, "the schema 'false' can never be satisfied")
            return
        if not isinstance(node, Mapping):
            raise self.fail(path, f"a schema must be an object or a boolean, not {node!r}")
        for key, reason in _REFUSED.items():
            if key in node:
                raise self.fail(f"{path}/{key}", reason)
        self._check_ref(node, path)
        self._check_type(node, path)
        self._check_object(node, path)
        self._check_array(node, path)
        self._check_number(node, path)
        self._check_string(node, path)
        self._check_combinators(node, path)
        for key in (
            "items",
            "additionalProperties",
            "propertyNames",
            "unevaluatedProperties",
            "unevaluatedItems",
        ):
            if key in node:
                self.check(node[key], f"{path}/{key}", (*parents, key))
        # Definitions ($defs) are checked when a $ref reaches them: unused ones do not matter.
        for name, sub in (node.get("properties") or {}).items():
            self.check(sub, f"{path}/properties/{_escape(name)}", (*parents, "properties"))
        for key in ("prefixItems", "anyOf", "oneOf", "allOf"):
            for i, sub in enumerate(node.get(key) or ()):
                self.check(sub, f"{path}/{key}/{i}", (*parents, key))

    def _check_ref(self, node: Mapping[str, Any], path: str) -> None:
        if "$ref" not in node:
            return
        ref = node["$ref"]
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise self.fail(
                f"{path}/$ref",
                f"only references inside the schema ('#/$defs/...') are supported, not {ref!r}",
            )
        if "~" in ref or "%" in ref:
            raise self.fail(
                f"{path}/$ref",
                f"references with '~' or '%' escapes are not supported ({ref!r}); rename the "
                "definition",
            )
        extra = sorted(
            k
            for k in node
            if k not in ("$ref", "$defs", "definitions") and k not in _ANNOTATIONS and k[:2] != "x-"
        )
        if extra:
            raise self.fail(
                path,
                f"keywords beside '$ref' are ignored by the grammar ({', '.join(extra)}); move "
                "them into the referenced schema",
            )
        if ref in self.seen:
            return
        self.seen.add(ref)
        target = _resolve(self.root, ref)
        if target is None:
            raise self.fail(f"{path}/$ref", f"the reference {ref!r} points nowhere")
        self.check(target, ref[1:], ("$ref",))

    def _check_type(self, node: Mapping[str, Any], path: str) -> None:
        if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
            raise self.fail(f"{path}/enum", "'enum' must be a non-empty list")
        kind = node.get("type")
        names = kind if isinstance(kind, list) else [kind] if kind is not None else []
        for name in names:
            if name not in _TYPE_NAMES:
                raise self.fail(f"{path}/type", f"unknown type {name!r}")

    def _check_object(self, node: Mapping[str, Any], path: str) -> None:
        properties = node.get("properties") or {}
        for name in node.get("required") or ():
            if name not in properties:
                raise self.fail(
                    f"{path}/required",
                    f"the required key {name!r} is not in 'properties', so the grammar would "
                    "never produce it; add it to 'properties'",
                )
        self._check_range(node, path, "minProperties", "maxProperties")
        open_keys = node.get("additionalProperties") not in (None, False) or "propertyNames" in node
        if open_keys and node.get("minProperties", 0) > max(1, len(node.get("required") or ())):
            raise self.fail(
                f"{path}/minProperties",
                "'minProperties' above 1 with free-form keys is not supported (the grammar may "
                "repeat a key, which counts once)",
            )
        names = node.get("propertyNames")
        if names is not None:
            allowed = {"type", "enum", "const", "pattern", "minLength", "maxLength"}
            extra = sorted(
                k
                for k in (names if isinstance(names, Mapping) else {})
                if k not in allowed and k not in _ANNOTATIONS
            )
            if not isinstance(names, Mapping) or extra or names.get("type", "string") != "string":
                raise self.fail(
                    f"{path}/propertyNames",
                    "'propertyNames' may only use enum, const, pattern, minLength and maxLength",
                )
        for key in ("unevaluatedProperties", "unevaluatedItems"):
            if key in node and node[key] is not False:
                raise self.fail(f"{path}/{key}", f"only '{key}: false' is supported")

    def _check_array(self, node: Mapping[str, Any], path: str) -> None:
        if node.get("uniqueItems") is True:
            raise self.fail(
                f"{path}/uniqueItems",
                "'uniqueItems' is ignored by the grammar (duplicates could be generated)",
            )
        self._check_range(node, path, "minItems", "maxItems")

    def _check_number(self, node: Mapping[str, Any], path: str) -> None:
        low, high = _bounds(node)
        if low is not None and high is not None:
            lo_value, lo_strict = low
            hi_value, hi_strict = high
            if lo_value > hi_value or (lo_value == hi_value and (lo_strict or hi_strict)):
                raise self.fail(path, "the numeric bounds leave no possible value")
            if _types(node) == {"integer"}:
                lo_int, hi_int = _integer_bounds(node)
                if lo_int is not None and hi_int is not None and lo_int > hi_int:
                    raise self.fail(path, "the integer bounds leave no possible value")
        if "multipleOf" in node:
            step = node["multipleOf"]
            types = _types(node)
            if not types <= {"integer", "null"} or not float(step).is_integer():
                raise self.fail(
                    f"{path}/multipleOf",
                    "'multipleOf' is only enforced for integers with a whole-number step",
                )
            lo_int, hi_int = _integer_bounds(node)
            if (lo_int is None) != (hi_int is None):
                raise self.fail(
                    f"{path}/multipleOf",
                    "'multipleOf' with a bound on one side only is not enforced by the grammar; "
                    "give both a minimum and a maximum, or neither",
                )
            if lo_int is not None and hi_int is not None:
                count = len(_multiples(lo_int, hi_int, int(step)))
                if count == 0 or count > _MAX_ENUMERATED:
                    raise self.fail(
                        f"{path}/multipleOf",
                        f"'multipleOf' {step} between {lo_int} and {hi_int} allows {count} values; "
                        f"the grammar enumerates them and accepts 1 to {_MAX_ENUMERATED}",
                    )

    def _check_string(self, node: Mapping[str, Any], path: str) -> None:
        self._check_range(node, path, "minLength", "maxLength")
        pattern = node.get("pattern")
        fmt = node.get("format")
        has_length = "minLength" in node or "maxLength" in node
        if isinstance(pattern, str):
            if _LOOKAROUND_RE.search(pattern):
                raise self.fail(
                    f"{path}/pattern",
                    f"lookaround in patterns is ignored by the grammar: {pattern!r}",
                )
            if _BACKREF_RE.search(pattern):
                raise self.fail(
                    f"{path}/pattern", f"backreferences in patterns are not supported: {pattern!r}"
                )
            if has_length and not _FOLDABLE_RE.match(pattern):
                raise self.fail(
                    path,
                    f"'pattern' {pattern!r} together with 'minLength'/'maxLength' is not "
                    "supported (the grammar ignores the lengths); put the length in the pattern, "
                    "e.g. '^[A-Z]{1,5}$'",
                )
        if fmt is None or ("type" in node and "string" not in _types(node)):
            return
        if fmt not in SUPPORTED_FORMATS and fmt not in _ANNOTATION_FORMATS:
            raise self.fail(
                f"{path}/format",
                f"the format {fmt!r} is not supported; supported: "
                f"{', '.join(sorted(SUPPORTED_FORMATS))}",
            )
        if fmt in SUPPORTED_FORMATS:
            if pattern is not None:
                raise self.fail(path, "'format' together with 'pattern' is not supported")
            min_length = node.get("minLength", 0)
            implied = fmt in _NON_EMPTY_FORMATS and min_length <= 1
            if "maxLength" in node or (min_length and not implied):
                raise self.fail(
                    path,
                    f"'format: {fmt}' together with 'minLength'/'maxLength' is not supported (the "
                    "grammar ignores the lengths); drop the length limits or the format (for "
                    "pydantic URL types, use 'str')",
                )

    def _check_combinators(self, node: Mapping[str, Any], path: str) -> None:
        if "allOf" in node and len(node["allOf"]) > 1:
            raise self.fail(
                f"{path}/allOf",
                "'allOf' with several schemas is not enforced by the grammar; merge them into one",
            )
        if "oneOf" in node and not _disjoint([self._deref(b) for b in node["oneOf"]], self._deref):
            raise self.fail(
                f"{path}/oneOf",
                "'oneOf' branches that can match the same value fall back to 'anyOf' in the "
                "grammar; use 'anyOf', or tell the branches apart with a 'const' property",
            )

    def _check_range(self, node: Mapping[str, Any], path: str, low: str, high: str) -> None:
        if low in node and high in node and node[low] > node[high]:
            raise self.fail(path, f"'{low}' ({node[low]}) is greater than '{high}' ({node[high]})")

    def _deref(self, node: Any) -> Any:
        for _ in range(32):
            if isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
                node = _resolve(self.root, node["$ref"])
            else:
                break
        return node


def _disjoint(branches: Sequence[Any], deref: Callable[[Any], Any]) -> bool:
    """Whether no value can match two of the ``oneOf`` branches (conservative)."""
    kinds: list[set[str]] = []
    for branch in branches:
        if not isinstance(branch, Mapping):
            return False
        kinds.append(_value_types(branch))
    if all(kinds):
        for i, a in enumerate(kinds):
            for b in kinds[i + 1 :]:
                if (
                    a & b
                    or ("number" in a and "integer" in b)
                    or ("integer" in a and "number" in b)
                ):
                    break
            else:
                continue
            break
        else:
            return True
    # Objects told apart by a property every branch requires, with disjoint const/enum values.
    if not all(k == {"object"} for k in kinds):
        return False
    candidates: set[str] | None = None
    for branch in branches:
        required = set(branch.get("required") or ())
        candidates = required if candidates is None else candidates & required
    for name in sorted(candidates or ()):
        seen: list[str] = []
        for branch in branches:
            prop = deref((branch.get("properties") or {}).get(name))
            values = _literal_values(prop)
            if values is None:
                break
            seen.extend(values)
        else:
            if len(seen) == len(set(seen)):
                return True
    return False


def _value_types(schema: Mapping[str, Any]) -> set[str]:
    if "const" in schema:
        return {_json_type(schema["const"])}
    if isinstance(schema.get("enum"), list):
        return {_json_type(v) for v in schema["enum"]}
    return _types(schema)


def _literal_values(schema: Any) -> list[str] | None:
    if not isinstance(schema, Mapping):
        return None
    if "const" in schema:
        return [json.dumps(schema["const"], sort_keys=True)]
    if isinstance(schema.get("enum"), list):
        return [json.dumps(v, sort_keys=True) for v in schema["enum"]]
    return None


def _json_type(value: Any) -> str:
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


def _types(node: Mapping[str, Any]) -> set[str]:
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return set()


def _bounds(
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


def _integer_bounds(node: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """The inclusive integer bounds of an integer schema."""
    low, high = _bounds(node)
    lo = hi = None
    if low is not None:
        value, strict = low
        lo = math.floor(value) + 1 if strict and float(value).is_integer() else math.ceil(value)
    if high is not None:
        value, strict = high
        hi = math.ceil(value) - 1 if strict and float(value).is_integer() else math.floor(value)
    return lo, hi


def _multiples(low: int, high: int, step: int) -> range:
    """The multiples of ``step`` in ``[low, high]``."""
    step = abs(step)
    first = -(-low // step) * step
    return range(first, high + 1, step)


def _resolve(root: Any, ref: str) -> Any:
    if ref == "#":
        return root
    node = root
    for part in ref[2:].split("/"):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


# --------------------------------------------------------------------------------------------------
# The schema the grammar is compiled from
# --------------------------------------------------------------------------------------------------


def _grammar_schema(json_schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a (checked) schema rewritten into what xgrammar enforces exactly.

    Strict patterns replace some formats, optional groups in patterns are rewritten (an xgrammar
    bug), simple patterns absorb length limits, integer bounds become whole and within int64,
    ``multipleOf`` between bounds becomes an enum, runaway numbers get a cap, and proven-disjoint
    ``oneOf`` becomes ``anyOf``.
    """
    schema = copy.deepcopy(dict(json_schema))
    for node in _walk(schema):
        _rewrite_node(node)
    return schema


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for key, value in node.items():
            if key in _SUBSCHEMA_ONE:
                yield from _walk(value)
            elif key in _SUBSCHEMA_MAP and isinstance(value, dict):
                for sub in value.values():
                    yield from _walk(sub)
            elif key in _SUBSCHEMA_LIST and isinstance(value, list):
                for sub in value:
                    yield from _walk(sub)


def _rewrite_node(node: dict[str, Any]) -> None:
    types = _types(node)
    fmt = node.get("format")
    if isinstance(fmt, str) and (not types or "string" in types):
        if fmt in _FORMAT_PATTERNS:
            node.pop("format")
            node["pattern"] = _FORMAT_PATTERNS[fmt]
        elif fmt in _ANNOTATION_FORMATS:
            node.pop("format")
        if fmt in SUPPORTED_FORMATS and node.get("minLength", 0) <= 1:
            node.pop("minLength", None)
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        node["pattern"] = pattern = _fix_optional_groups(pattern)
    if isinstance(pattern, str) and ("minLength" in node or "maxLength" in node):
        match = _FOLDABLE_RE.match(pattern)
        if match:
            atom, quantifier = match.groups()
            shortest = max(int(node.pop("minLength", 0)), 1 if quantifier == "+" else 0)
            longest = node.pop("maxLength", None)
            node["pattern"] = f"^{atom}{{{shortest},{'' if longest is None else int(longest)}}}$"
    if "oneOf" in node:  # checked: the branches are disjoint, so anyOf is the same language
        node["anyOf"] = node.pop("oneOf")
    if "enum" in node or "const" in node:
        return
    if "multipleOf" in node:  # xgrammar ignores multipleOf beside bounds: enumerate the values
        lo, hi = _integer_bounds(node)
        if lo is not None and hi is not None:
            values: list[Any] = list(_multiples(lo, hi, int(node["multipleOf"])))
            for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
                node.pop(key, None)
            node["enum"] = values + ([None] if "null" in types else [])
        return  # no bounds: leave the integer unbounded (a cap would hide multipleOf)
    if types & {"integer", "number"}:
        if types & {"integer"} and not types & {"number"}:
            lo, hi = _integer_bounds(node)
            for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                node.pop(key, None)
            node["minimum"] = max(_INT64_MIN, lo) if lo is not None else _INT64_MIN
            node["maximum"] = min(_INT64_MAX, hi) if hi is not None else _INT64_MAX
        else:
            low, high = _bounds(node)
            if low is None:
                node["minimum"] = -_NUMBER_CAP
            if high is None:
                node["maximum"] = _NUMBER_CAP


def _fix_optional_groups(pattern: str) -> str:
    """Write optional groups ``(...)?`` as ``(...){0,1}``, the same language.

    xgrammar 0.2.8 mis-compiles an optional group whose last item repeats a variable number of
    times: ``^1(?:x[0-9]+)?$`` also accepts ``"11"`` (the ``x`` is skipped), so its own
    ``date-time`` format writes ``12:34:576068`` for seconds. ``{0,1}`` is compiled correctly
    (checked against Python's ``re`` on every string of up to 5 characters).
    """
    out: list[str] = []
    i = 0
    in_class = False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == ")" and pattern.startswith("?", i + 1):
            out.append("){0,1}")
            i += 3 if pattern.startswith("?", i + 2) else 2  # a lazy "??" is the same language
            continue
        out.append(char)
        i += 1
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# The xgrammar glue
# --------------------------------------------------------------------------------------------------


class JSONGrammar:
    """Compiles JSON Schemas into token-level grammars for one tokenizer (xgrammar).

    Built once per engine (the vocabulary is scanned once, about 0.1 s); :meth:`processor` then
    gives each request a fresh :class:`GrammarProcessor`. Compiled grammars are cached by the
    schema's canonical JSON (key order included: it is the order of the generated keys).

    The vocabulary given to xgrammar is the tokenizer's pieces (SentencePiece with byte fallback:
    ``▁`` for spaces, ``<0xNN>`` for bytes), except that these become empty strings, which
    xgrammar treats as special tokens that are never allowed: the tokenizer's special and added
    tokens (``<unk>``, ``<s>``, ``</s>``, ``<img>``, ``<IMG_CONTEXT>``, ``<quad>``, ...;
    otherwise xgrammar would take them as literal text such as "<img>" inside a string), padding
    ids beyond the tokenizer, and every piece holding a control character (the fix for xgrammar
    bug #800, see the module docstring). The stop tokens end the JSON.

    Args:
        tokenizer: The model's tokenizer.
        vocab_size: Rows of the model's output (may exceed the tokenizer's vocabulary).
        stop_token_ids: Tokens that end the answer; allowed only once the JSON is complete.
        cache_size: Compiled grammars kept.

    Example:
        >>> grammar = JSONGrammar(tokenizer, vocab_size=32010, stop_token_ids=[32009])
        >>> processor = grammar.processor({"type": "object", "properties": {...}})
        >>> logits = processor(generated_ids, logits)  # once per generated token
    """

    def __init__(
        self,
        tokenizer: TokenizerLike,
        *,
        vocab_size: int,
        stop_token_ids: Sequence[int],
        cache_size: int = DEFAULT_GRAMMAR_CACHE_SIZE,
    ) -> None:
        import xgrammar as xgr

        self.vocab_size = vocab_size
        self.stop_token_ids = sorted(set(stop_token_ids))
        pieces = tokenizer.vocab_pieces(vocab_size)
        special = set(getattr(tokenizer, "special_ids", ()))
        if not special:  # a tokenizer without the attribute: specials are those decode drops
            special = {
                i
                for i, piece in enumerate(pieces)
                if piece
                and tokenizer.decode([i], skip_special_tokens=True)
                != tokenizer.decode([i], skip_special_tokens=False)
            }
        # GPT-2 style byte-level vocabularies (Llama 3, Idefics3) spell every byte as one
        # printable character: control bytes are found after mapping pieces back to bytes.
        byte_level = getattr(tokenizer, "vocab_type", "byte_fallback") == "byte_level"
        has_control = _has_control_byte if byte_level else _has_control_char
        vocabulary = [
            "" if i in special or has_control(piece) else piece for i, piece in enumerate(pieces)
        ]
        #: Ids the grammar can never produce (specials, control characters, padding).
        self.banned_token_ids = frozenset(
            i for i, piece in enumerate(vocabulary) if not piece and i not in self.stop_token_ids
        )
        # add_prefix_space=True is the truth for SentencePiece (a dummy-prefix "▁"); in xgrammar
        # 0.2.8 it is metadata only: the token masks are identical either way (measured).
        self.tokenizer_info = xgr.TokenizerInfo(
            vocabulary,
            xgr.VocabType.BYTE_LEVEL if byte_level else xgr.VocabType.BYTE_FALLBACK,
            vocab_size=vocab_size,
            stop_token_ids=self.stop_token_ids,
            add_prefix_space=not byte_level,
        )
        # xgrammar accepts the UTF-8 encoding of UTF-16 surrogates (0xED then 0xA0-0xBF), which is
        # not UTF-8 and decodes to three U+FFFD. Only byte pieces can form it: a pending 0xED byte
        # token is followed by a mask of those continuation bytes (GrammarProcessor).
        byte_ids = {
            piece: i for i, piece in enumerate(vocabulary) if _byte_value(piece) is not None
        }
        lead = byte_ids.get("<0xED>")
        self._surrogate_guard: tuple[int, list[int]] | None = None
        if lead is not None:
            continuations = [
                byte_ids[f"<0x{b:02X}>"] for b in range(0xA0, 0xC0) if f"<0x{b:02X}>" in byte_ids
            ]
            self._surrogate_guard = (lead, continuations)
        self._compiler = xgr.GrammarCompiler(self.tokenizer_info, max_threads=2)
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def compile(self, schema: Mapping[str, Any]) -> Any:
        """The compiled grammar (``xgrammar.CompiledGrammar``) of a schema, from the cache if there.

        Raises:
            SchemaError: The schema uses a feature the grammar cannot honour.
        """
        try:
            key = json.dumps(schema, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise SchemaError(f"the schema is not JSON-serialisable: {e}", path="") from e
        with self._lock:
            compiled = self._cache.get(key)
            if compiled is not None:
                self._cache.move_to_end(key)
                return compiled
        _check_schema_valid(schema)
        check_supported(schema)
        rewritten = _grammar_schema(schema)
        try:
            compiled = self._compiler.compile_json_schema(
                json.dumps(rewritten),
                any_whitespace=False,
                separators=JSON_SEPARATORS,
                strict_mode=True,
            )
        except RuntimeError as e:
            detail = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
            raise SchemaError(f"the grammar compiler refused the schema: {detail}") from e
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def processor(self, schema: Mapping[str, Any]) -> GrammarProcessor:
        """A new per-request logits processor constraining the answer to ``schema``."""
        return GrammarProcessor(
            self.compile(schema), self.vocab_size, surrogate_guard=self._surrogate_guard
        )


def _byte_value(piece: str) -> int | None:
    """The byte of a byte-fallback piece ``<0xNN>``, else None."""
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return int(piece[3:5], 16)
        except ValueError:
            return None
    return None


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable character -> the byte it spells."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


_BYTE_LEVEL_DECODER = _byte_level_decoder()


def _has_control_byte(piece: str) -> bool:
    """Whether a byte-level piece spells a control byte (``Ċ`` is a newline)."""
    return any(_BYTE_LEVEL_DECODER.get(c, 0x20) < 0x20 for c in piece)


def _has_control_char(piece: str) -> bool:
    byte = _byte_value(piece)
    if byte is not None:
        return byte < 0x20
    return any(ord(c) < 0x20 for c in piece)


class GrammarProcessor:
    """One request's grammar state, as a :class:`~mississippi_tools.models.base.LogitsProcessor`.

    On each call it feeds the matcher the tokens generated since the previous call, then sets the
    logits of every token the grammar forbids to ``-inf``. Single-use: one per request.

    Args:
        compiled: An ``xgrammar.CompiledGrammar`` from :meth:`JSONGrammar.compile`.
        vocab_size: Rows of the logits.
        surrogate_guard: ``(id of the 0xED byte piece, ids of the 0xA0-0xBF byte pieces)``:
            after the first, the others are masked (UTF-16 surrogates are not UTF-8).
    """

    def __init__(
        self,
        compiled: Any,
        vocab_size: int,
        *,
        surrogate_guard: tuple[int, list[int]] | None = None,
    ) -> None:
        import xgrammar as xgr

        self._matcher = xgr.GrammarMatcher(compiled)
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self._apply = xgr.apply_token_bitmask_inplace
        self._vocab_size = vocab_size
        self._consumed = 0
        self._guard = surrogate_guard

    def __call__(self, token_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        """Accept the new tokens and mask ``logits`` (1-D ``[vocab]``) in place.

        Raises:
            GenerationError: A generated token is not allowed by the grammar (another processor
                changed the logits after this one unmasked a forbidden token).
        """
        for token in token_ids[self._consumed :]:
            if not self._matcher.accept_token(int(token)):
                raise GenerationError(
                    f"token {token} at position {self._consumed} does not fit the JSON grammar; "
                    "a logits processor after the grammar must not unmask tokens"
                )
            self._consumed += 1
        self._matcher.fill_next_token_bitmask(self._bitmask)
        rows = logits.view(1, -1)
        if logits.shape[-1] > self._vocab_size:
            logits[self._vocab_size :] = -math.inf
            rows = rows[:, : self._vocab_size]
        bitmask = self._bitmask if logits.device.type == "cpu" else self._bitmask.to(logits.device)
        self._apply(rows, bitmask)
        if self._guard is not None and token_ids and token_ids[-1] == self._guard[0]:
            logits[self._guard[1]] = -math.inf
        return logits

    def is_terminated(self) -> bool:
        """Whether the grammar has ended (after a stop token; the engine normally stops first)."""
        return bool(self._matcher.is_terminated())

    def is_completed(self) -> bool:
        """Whether the JSON accepted so far is complete (a stop token would be allowed)."""
        return bool(self._matcher.is_completed())


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------

_MAX_ERRORS: Final = 10


def validate(
    data: Any, normalized: NormalizedSchema, *, raw_text: str | None = None
) -> BaseModel | dict[str, Any]:
    """Validate parsed JSON against a schema.

    Pydantic models use ``model_validate`` (so dates become ``date`` objects, etc.); JSON Schemas
    and templates use ``jsonschema`` (Draft 2020-12, with format checking).

    Args:
        data: The parsed JSON value.
        normalized: The schema.
        raw_text: The model's text the value came from (kept in the error).

    Returns:
        The pydantic instance, or ``data`` itself (a dict) when it is valid.

    Raises:
        ExtractionError: Not valid; ``errors`` lists one line per problem, each starting with
            the JSON pointer of the offending value (``/items/0/price: ...``), at most 10, in a
            form suitable for showing back to the model.
    """
    errors: list[str]
    if normalized.model is not None:
        try:
            return normalized.model.model_validate(data)
        except PydanticValidationError as e:
            errors = [
                f"{_pointer(err['loc']) or '/'}: {err['msg']} (got {_short(err.get('input'))})"
                for err in e.errors(include_url=False)
            ]
    else:
        from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

        validator = Draft202012Validator(
            normalized.json_schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        found = sorted(validator.iter_errors(data), key=lambda err: list(map(str, err.path)))
        errors = [f"{_pointer(err.absolute_path) or '/'}: {err.message}" for err in found]
        if not errors and isinstance(data, dict):
            return data
        if not errors:  # a valid non-object answer, for a schema not from normalize_schema
            errors = [f"/: the answer is a {_json_type(data)}, not an object"]
    shown = errors[:_MAX_ERRORS]
    if len(errors) > _MAX_ERRORS:
        shown.append(f"... and {len(errors) - _MAX_ERRORS} more")
    raise ExtractionError(
        f"the answer does not match the schema: {'; '.join(shown)}",
        raw_text=raw_text if raw_text is not None else json.dumps(data, ensure_ascii=False),
        errors=shown,
    )


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _pointer(parts: Sequence[Any] | Iterator[Any]) -> str:
    return "".join(f"/{_escape(str(p))}" for p in parts)


# --------------------------------------------------------------------------------------------------
# The template shown to the model
# --------------------------------------------------------------------------------------------------


def _example(schema: Any, root: Mapping[str, Any], refs: tuple[str, ...]) -> Any:
    """The card-style example value of a schema: "" / 0 / 0.0 / false / [x] / {...}."""
    if not isinstance(schema, Mapping):
        return ""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in refs:  # recursion: stop with an empty container
            target = _resolve(root, ref)
            return [] if isinstance(target, Mapping) and "array" in _types(target) else {}
        return _example(_resolve(root, ref), root, (*refs, ref))
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
            return _example(chosen, root, refs)
    types = [t for t in _ordered_types(schema) if t != "null"]
    kind = types[0] if types else ("null" if _ordered_types(schema) else _guess_type(schema))
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: _example(sub, root, refs) for name, sub in properties.items()}
    if kind == "array":
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            return [_example(sub, root, refs) for sub in prefix]
        items = schema.get("items")
        return [_example(items, root, refs)] if isinstance(items, Mapping) else []
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
        node = _resolve(root, ref)
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
        return _resolve(root, schema["$ref"])
    return schema


def _is_container(schema: Any, root: Mapping[str, Any]) -> bool:
    """Whether a schema (after one $ref) is an object or an array."""
    node = _deref_once(schema, root)
    if not isinstance(node, Mapping):
        return False
    return bool(_types(node) & {"object", "array"}) or _guess_type(node) != "string"


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


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


# --------------------------------------------------------------------------------------------------
# Per-field confidence
# --------------------------------------------------------------------------------------------------


def field_confidences(
    text: str,
    token_ids: Sequence[int],
    token_logprobs: Sequence[float],
    tokenizer: TokenizerLike | None = None,
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
        parsable JSON.

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


def _decode_pieces(token_ids: Sequence[int], tokenizer: TokenizerLike) -> list[str]:
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


def _scan(text: str, i: int, pointer: str, spans: dict[str, tuple[int, int]]) -> int:
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
            i = _scan(text, i + 1, f"{pointer}/{_escape(key)}", spans)
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
            i = _scan(text, i, f"{pointer}/{index}", spans)
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
