"""The schema the grammar is compiled from: a checked schema rewritten into what xgrammar enforces.

:func:`grammar_schema` keeps the language of a schema that passed
:func:`~mississippi_tools.schema.support.check_supported` while working around what xgrammar
(0.2.8, pinned bugs still in 0.2.9) gets wrong:

- formats whose built-in grammars accept values Python, pydantic and jsonschema refuse (2024-02-30,
  year 0000, second 60, 7+ decimals, ``01.2.3.4``, quoted email local parts, IPv6 with an embedded
  IPv4 with leading zeros) become our own strict patterns;
- xgrammar mis-compiles an optional group whose last item repeats: ``^1(?:x[0-9]+)?$`` also
  accepts ``11``, and its own ``date-time`` writes seconds like ``57606``. Every pattern's
  ``(...)?`` is rewritten to the same-language ``(...){0,1}``, which compiles correctly;
- a single repeated atom with length limits (``^[A-Z]+$`` with ``maxLength: 5``) is folded into
  one pattern (``^[A-Z]{1,5}$``), since xgrammar ignores lengths beside a pattern;
- integer bounds become whole and within int64; ``multipleOf`` between bounds becomes an ``enum``
  (xgrammar ignores it beside a bound); numbers without a bound get one (int64 for integers,
  +-1e15 for numbers) against runaway digits and exponents such as ``1e999``;
- a ``oneOf`` proven disjoint becomes ``anyOf`` (the same language).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from mississippi_tools.schema._common import bounds, integer_bounds, multiples, types, walk
from mississippi_tools.schema.support import ANNOTATION_FORMATS, FOLDABLE_RE, SUPPORTED_FORMATS

__all__ = ["grammar_schema"]

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_NUMBER_CAP: Final = 1e15

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


def grammar_schema(json_schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a (checked) schema rewritten into what xgrammar enforces exactly.

    Strict patterns replace some formats, optional groups in patterns are rewritten (an xgrammar
    bug), simple patterns absorb length limits, integer bounds become whole and within int64,
    ``multipleOf`` between bounds becomes an enum, runaway numbers get a cap, and proven-disjoint
    ``oneOf`` becomes ``anyOf`` (details in the module docstring).

    Args:
        json_schema: A schema that passed
            :func:`~mississippi_tools.schema.support.check_supported`.

    Returns:
        The rewritten copy; ``json_schema`` is not changed.

    Example:
        >>> grammar_schema({"type": "integer", "minimum": 0})
        {'type': 'integer', 'minimum': 0, 'maximum': 9223372036854775807}
    """
    schema = copy.deepcopy(dict(json_schema))
    for node in walk(schema):
        _rewrite_node(node)
    return schema


def _rewrite_node(node: dict[str, Any]) -> None:
    kinds = types(node)
    fmt = node.get("format")
    if isinstance(fmt, str) and (not kinds or "string" in kinds):
        if fmt in _FORMAT_PATTERNS:
            node.pop("format")
            node["pattern"] = _FORMAT_PATTERNS[fmt]
        elif fmt in ANNOTATION_FORMATS:
            node.pop("format")
        if fmt in SUPPORTED_FORMATS and node.get("minLength", 0) <= 1:
            node.pop("minLength", None)
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        node["pattern"] = pattern = fix_optional_groups(pattern)
    if isinstance(pattern, str) and ("minLength" in node or "maxLength" in node):
        match = FOLDABLE_RE.match(pattern)
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
        lo, hi = integer_bounds(node)
        if lo is not None and hi is not None:
            values: list[Any] = list(multiples(lo, hi, int(node["multipleOf"])))
            for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
                node.pop(key, None)
            node["enum"] = values + ([None] if "null" in kinds else [])
        return  # no bounds: leave the integer unbounded (a cap would hide multipleOf)
    if kinds & {"integer", "number"}:
        if kinds & {"integer"} and not kinds & {"number"}:
            lo, hi = integer_bounds(node)
            for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                node.pop(key, None)
            node["minimum"] = max(_INT64_MIN, lo) if lo is not None else _INT64_MIN
            node["maximum"] = min(_INT64_MAX, hi) if hi is not None else _INT64_MAX
        else:
            low, high = bounds(node)
            if low is None:
                node["minimum"] = -_NUMBER_CAP
            if high is None:
                node["maximum"] = _NUMBER_CAP


def fix_optional_groups(pattern: str) -> str:
    """Write optional groups ``(...)?`` as ``(...){0,1}``, the same language.

    xgrammar 0.2.8 mis-compiles an optional group whose last item repeats a variable number of
    times: ``^1(?:x[0-9]+)?$`` also accepts ``"11"`` (the ``x`` is skipped), so its own
    ``date-time`` format writes ``12:34:576068`` for seconds. ``{0,1}`` is compiled correctly
    (checked against Python's ``re`` on every string of up to 5 characters).

    Example:
        >>> fix_optional_groups("^[A-Z]{2}(?:-[0-9]+)?$")
        '^[A-Z]{2}(?:-[0-9]+){0,1}$'
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
