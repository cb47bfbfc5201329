"""Validation of a parsed answer (mississippi_tools.schema.validate)."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel

from mississippi_tools.errors import ExtractionError
from mississippi_tools.schema import normalize_schema, validate


class Color(BaseModel):
    name: Literal["red", "green"]


def test_validate_returns_instances_or_data() -> None:
    assert validate({"a": "x"}, normalize_schema({"a": ""})) == {"a": "x"}
    assert validate({"name": "red"}, normalize_schema(Color)) == Color(name="red")


def test_validation_errors_are_listed_by_pointer() -> None:
    with pytest.raises(ExtractionError) as caught:
        validate(
            {"age": "x", "items": [{"a": 1}]},
            normalize_schema({"age": 0, "items": [{"a": ""}]}),
            raw_text="raw",
        )
    error = caught.value
    assert error.raw_text == "raw"
    assert error.errors == [
        "/age: 'x' is not of type 'integer', 'null'",
        "/items/0/a: 1 is not of type 'string', 'null'",
    ]
    with pytest.raises(ExtractionError) as caught:
        validate({"name": "blue"}, normalize_schema(Color))
    assert caught.value.errors == ["/name: Input should be 'red' or 'green' (got \"blue\")"]
    assert caught.value.raw_text == '{"name": "blue"}'
    with pytest.raises(ExtractionError) as caught:
        validate({}, normalize_schema({f"k{i}": "" for i in range(12)}))
    assert len(caught.value.errors) == 11
    assert caught.value.errors[-1] == "... and 2 more"
    with pytest.raises(ExtractionError, match="is not a 'date'"):
        validate(
            {"d": "2024-02-30"},
            normalize_schema(
                {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}}
            ),
        )


# --------------------------------------------------------------------------------------------------
# Field confidences
# --------------------------------------------------------------------------------------------------
