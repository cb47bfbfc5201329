"""The schema the grammar is compiled from (mississippi_tools.schema.rewrite).

What the rewritten schemas make xgrammar generate is tested in tests/engine/test_grammar.py; here,
the rewriting itself.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from mississippi_tools.schema import grammar_schema
from mississippi_tools.schema.rewrite import fix_optional_groups


@pytest.mark.parametrize(
    ("pattern", "fixed"),
    [
        ("^1(?:x[0-9]+)?$", "^1(?:x[0-9]+){0,1}$"),
        ("^(a|b)??c$", "^(a|b){0,1}c$"),  # lazy: the same language
        (r"^\(x\)?$", r"^\(x\)?$"),  # an escaped parenthesis is not a group
        ("^[)?]+$", "^[)?]+$"),  # nor is one in a class
        ("^a?(b)$", "^a?(b)$"),
    ],
)
def test_optional_groups_are_written_as_zero_or_one(pattern: str, fixed: str) -> None:
    assert fix_optional_groups(pattern) == fixed
    for text in ("1", "1x", "1x5", "11", "ac", "bc", "c", "(x)", "(x", ")", "?)", "ab", "b"):
        assert bool(re.fullmatch(pattern, text)) == bool(re.fullmatch(fixed, text)), text


def test_formats_lengths_and_numbers_are_rewritten() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "day": {"type": "string", "format": "date", "minLength": 1},
            "host": {"type": "string", "format": "hostname"},
            "blob": {"type": "string", "format": "binary"},
            "code": {"type": "string", "pattern": "^[A-Z]+$", "maxLength": 5},
            "step": {"type": ["integer", "null"], "minimum": 0, "maximum": 20, "multipleOf": 5},
            "count": {"type": "integer", "exclusiveMinimum": 0.5},
            "ratio": {"type": "number", "maximum": 1},
            "pick": {"oneOf": [{"type": "string"}, {"type": "integer", "enum": [1, 2]}]},
        },
    }
    original = copy.deepcopy(schema)
    rewritten = grammar_schema(schema)
    assert schema == original  # a copy
    properties = rewritten["properties"]
    assert set(properties["day"]) == {"type", "pattern"}
    assert re.fullmatch(properties["day"]["pattern"], "2024-02-29")
    assert not re.fullmatch(properties["day"]["pattern"], "2023-02-29")
    assert properties["host"] == {"type": "string", "format": "hostname"}  # xgrammar's own
    assert properties["blob"] == {"type": "string"}
    assert properties["code"] == {"type": "string", "pattern": "^[A-Z]{1,5}$"}
    assert properties["step"] == {"type": ["integer", "null"], "enum": [0, 5, 10, 15, 20, None]}
    assert properties["count"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    assert properties["ratio"] == {"type": "number", "maximum": 1, "minimum": -1e15}
    assert "anyOf" in properties["pick"] and "oneOf" not in properties["pick"]
