r"""What the grammar enforces, and the checker that refuses everything else.

The grammar (:mod:`mississippi_tools.engine.grammar`, xgrammar 0.2.8; each point verified by
running it, and the pinned bugs are still there in 0.2.9) is compiled from the schema as
rewritten by :func:`~mississippi_tools.schema.rewrite.grammar_schema`. A schema that passes
:func:`check_supported` is enforced exactly: every answer generated under it validates.

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
- unsatisfiable bounds (``minimum > maximum``, ``minItems > maxItems``, ...);
- schemas nested deeper than :data:`~mississippi_tools.schema.limits.MAX_SCHEMA_DEPTH` levels
  (:mod:`~mississippi_tools.schema.limits`).

Known limits of the grammar (outputs still always validate):

- Strings with ``minLength``/``maxLength``, a ``pattern`` or a ``format`` cannot contain escape
  sequences (no ``"``, ``\``, newline): xgrammar bug #800 (the engine removes the control
  characters it would wrongly allow, see :mod:`mississippi_tools.engine.grammar`).
- Numbers are capped against runaway output: an ``integer`` without a bound on one side gets the
  int64 limit, a ``number`` without one gets +-1e15 (a random or confused model otherwise writes
  exponents such as ``1e999``, which parses as infinity). Bounded numbers are written without an
  exponent and with at most 6 decimals (xgrammar's number grammar).
- Patterns are matched in full (``"pattern": "[A-Z]"`` gives a single letter), which is stricter
  than JSON Schema's search semantics.
- pydantic may validate more than its JSON Schema says (``Decimal`` strings, custom validators).
  The grammar guarantees the schema; the rest is checked by
  :func:`~mississippi_tools.schema.validate.validate`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from mississippi_tools.errors import SchemaError
from mississippi_tools.schema._common import (
    ANNOTATIONS,
    TYPE_NAMES,
    bounds,
    escape,
    integer_bounds,
    json_type,
    multiples,
    resolve,
    types,
)
from mississippi_tools.schema.limits import check_schema_limits

__all__ = [
    "JSON_SEPARATORS",
    "SUPPORTED_FORMATS",
    "check_supported",
]

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

#: Formats that only annotate a string (pydantic's ``bytes``, ``SecretStr``, ``Path``).
ANNOTATION_FORMATS: Final = frozenset({"binary", "password", "path"})
#: Formats whose values are never empty, so a ``minLength`` of 0 or 1 beside them is implied.
NON_EMPTY_FORMATS: Final = SUPPORTED_FORMATS - {"uri-reference", "uri-template"}
#: A pattern that is one repeated atom, optionally anchored: ``^[A-Z]+$``, ``\d*``, ``^.+$``.
FOLDABLE_RE: Final = re.compile(
    r"^\^?(\[(?:\\.|[^\]\\])+\]|\\[dDwWsS]|\.|[A-Za-z0-9 _-])([+*])\$?$"
)
#: The most values a ``multipleOf`` between bounds may allow (they are enumerated).
MAX_ENUMERATED: Final = 10_000

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

_LOOKAROUND_RE: Final = re.compile(r"\(\?<?[=!]")
_BACKREF_RE: Final = re.compile(r"\\(?:[1-9]|k<)")


def check_supported(json_schema: Mapping[str, Any]) -> None:
    """Refuse schemas the grammar cannot honour exactly.

    Measures the schema first (:func:`~mississippi_tools.schema.limits.check_schema_limits`),
    then walks every subschema reachable from the root (following ``$ref``) and raises for the
    first unsupported feature; the lists are in the module docstring.

    Args:
        json_schema: A JSON Schema.

    Raises:
        SchemaError: Naming the feature (or the limit), with ``path`` set to its JSON pointer.
    """
    check_schema_limits(json_schema)
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
            self.check(sub, f"{path}/properties/{escape(name)}", (*parents, "properties"))
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
            if k not in ("$ref", "$defs", "definitions") and k not in ANNOTATIONS and k[:2] != "x-"
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
        target = resolve(self.root, ref)
        if target is None:
            raise self.fail(f"{path}/$ref", f"the reference {ref!r} points nowhere")
        self.check(target, ref[1:], ("$ref",))

    def _check_type(self, node: Mapping[str, Any], path: str) -> None:
        if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
            raise self.fail(f"{path}/enum", "'enum' must be a non-empty list")
        kind = node.get("type")
        names = kind if isinstance(kind, list) else [kind] if kind is not None else []
        for name in names:
            if name not in TYPE_NAMES:
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
                if k not in allowed and k not in ANNOTATIONS
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
        low, high = bounds(node)
        if low is not None and high is not None:
            lo_value, lo_strict = low
            hi_value, hi_strict = high
            if lo_value > hi_value or (lo_value == hi_value and (lo_strict or hi_strict)):
                raise self.fail(path, "the numeric bounds leave no possible value")
            if types(node) == {"integer"}:
                lo_int, hi_int = integer_bounds(node)
                if lo_int is not None and hi_int is not None and lo_int > hi_int:
                    raise self.fail(path, "the integer bounds leave no possible value")
        if "multipleOf" in node:
            step = node["multipleOf"]
            if not types(node) <= {"integer", "null"} or not float(step).is_integer():
                raise self.fail(
                    f"{path}/multipleOf",
                    "'multipleOf' is only enforced for integers with a whole-number step",
                )
            lo_int, hi_int = integer_bounds(node)
            if (lo_int is None) != (hi_int is None):
                raise self.fail(
                    f"{path}/multipleOf",
                    "'multipleOf' with a bound on one side only is not enforced by the grammar; "
                    "give both a minimum and a maximum, or neither",
                )
            if lo_int is not None and hi_int is not None:
                count = len(multiples(lo_int, hi_int, int(step)))
                if count == 0 or count > MAX_ENUMERATED:
                    raise self.fail(
                        f"{path}/multipleOf",
                        f"'multipleOf' {step} between {lo_int} and {hi_int} allows {count} values; "
                        f"the grammar enumerates them and accepts 1 to {MAX_ENUMERATED}",
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
            if has_length and not FOLDABLE_RE.match(pattern):
                raise self.fail(
                    path,
                    f"'pattern' {pattern!r} together with 'minLength'/'maxLength' is not "
                    "supported (the grammar ignores the lengths); put the length in the pattern, "
                    "e.g. '^[A-Z]{1,5}$'",
                )
        if fmt is None or ("type" in node and "string" not in types(node)):
            return
        if fmt not in SUPPORTED_FORMATS and fmt not in ANNOTATION_FORMATS:
            raise self.fail(
                f"{path}/format",
                f"the format {fmt!r} is not supported; supported: "
                f"{', '.join(sorted(SUPPORTED_FORMATS))}",
            )
        if fmt in SUPPORTED_FORMATS:
            if pattern is not None:
                raise self.fail(path, "'format' together with 'pattern' is not supported")
            min_length = node.get("minLength", 0)
            implied = fmt in NON_EMPTY_FORMATS and min_length <= 1
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
                node = resolve(self.root, node["$ref"])
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
        return {json_type(schema["const"])}
    if isinstance(schema.get("enum"), list):
        return {json_type(v) for v in schema["enum"]}
    return types(schema)


def _literal_values(schema: Any) -> list[str] | None:
    if not isinstance(schema, Mapping):
        return None
    if "const" in schema:
        return [json.dumps(schema["const"], sort_keys=True)]
    if isinstance(schema.get("enum"), list):
        return [json.dumps(v, sort_keys=True) for v in schema["enum"]]
    return None
