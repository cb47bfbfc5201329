"""Result metadata and the results' JSON form: what the HTTP service and MCP tools return."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from pydantic import BaseModel, ValidationError

from mississippi_tools.tasks.ask import Answer
from mississippi_tools.tasks.chart import Axis, ChartData, ChartPoint, ChartSeries
from mississippi_tools.tasks.ocr import OCRLine, OCRResult
from mississippi_tools.tasks.results import ResultMetadata, TaskResult
from mississippi_tools.tasks.table import TableData

META = ResultMetadata(
    model="h2oai/h2ovl-mississippi-800m",
    engine="local",
    source="invoice.pdf",
    page=2,
    tiles=7,
    prompt_tokens=1843,
    new_tokens=112,
    timings={"preprocess": 0.012, "vision": 0.21, "prefill": 0.05, "decode": 1.3, "total": 1.6},
    cache_hit=True,
    finish_reason="stop",
)

RESULTS: list[TaskResult] = [
    OCRResult(text="ACME", lines=[OCRLine(text="ACME", confidence=0.9)], meta=META),
    ChartData(
        title="Sales",
        chart_type="bar",
        x_axis=Axis(label="Month"),
        y_axis=Axis(label="Sales", unit="$"),
        series=[ChartSeries(points=[ChartPoint(label="Jan", value=1.5, raw="$1.5")])],
        meta=META,
    ),
    TableData(title=None, columns=["a", "b"], rows=[["x", 1], [2.5, None]], meta=META),
    Answer(text="Yes.", meta=META),
]


def test_metadata_defaults() -> None:
    meta = ResultMetadata(model="m", engine="remote")
    assert meta.model_dump() == {
        "model": "m",
        "engine": "remote",
        "source": None,
        "page": None,
        "region": None,
        "origin": "model",
        "tiles": 0,
        "prompt_tokens": 0,
        "new_tokens": 0,
        "timings": {},
        "cache_hit": False,
        "finish_reason": None,
        "attempts": 1,
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"engine": "cloud"},
        {"finish_reason": "eos"},
        {"attempts": 0},
        {"tiles": -1},
        {"timings": {"decode": -0.1}},
        {"temperature": 0.2},
    ],
)
def test_metadata_is_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ResultMetadata.model_validate({"model": "m", "engine": "local", **bad})


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_json_form_validates_against_a_self_contained_schema(result: TaskResult) -> None:
    schema = type(result).model_json_schema()
    Draft202012Validator.check_schema(schema)
    for ref in _refs(schema):
        assert ref.startswith("#/$defs/")
        assert ref.removeprefix("#/$defs/") in schema["$defs"]
    data = json.loads(json.dumps(result.model_dump(mode="json")))
    Draft202012Validator(schema).validate(data)
    assert type(result).model_validate(data) == result
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("model", [ResultMetadata, OCRLine, Axis, ChartPoint, ChartSeries])
def test_user_built_models_forbid_extra_fields(model: type[BaseModel]) -> None:
    assert model.model_json_schema()["additionalProperties"] is False


def test_field_docstrings_become_descriptions() -> None:
    schema = ResultMetadata.model_json_schema()
    assert "max_new_tokens" in schema["properties"]["finish_reason"]["description"]
