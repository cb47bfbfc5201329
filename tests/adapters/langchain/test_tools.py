"""The Mississippi tools beyond the standard tests: pages, sources, errors, schemas, toolkit."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ValidationError

from langchain_mississippi import (
    MississippiAskTool,
    MississippiChartTool,
    MississippiExtractTool,
    MississippiOCRTool,
    MississippiTableTool,
    MississippiToolkit,
)
from langchain_mississippi.tools import tool_class
from mississippi_tools import (
    Answer,
    ChartData,
    ExtractionResult,
    MississippiVLM,
    OCRResult,
    TableData,
)
from mississippi_tools.tasks.chart import render_chart
from tests.support import SCRIPTED_ANSWER

from .conftest import THREE_PAGES_PDF, tool_call

FAST: dict[str, Any] = {"max_tiles": 1, "max_new_tokens": 16}


def run(tool: BaseTool, **args: Any) -> ToolMessage:
    message = tool.invoke(tool_call(tool.name, args))
    assert isinstance(message, ToolMessage)
    return message


async def arun(tool: BaseTool, **args: Any) -> ToolMessage:
    message = await tool.ainvoke(tool_call(tool.name, args))
    assert isinstance(message, ToolMessage)
    return message


# -- pages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pages", [2, "2", " 2 "])
def test_one_page_gives_one_result(scripted_vlm: MississippiVLM, pages: object) -> None:
    tool = MississippiOCRTool(vlm=scripted_vlm, **FAST)

    message = run(tool, image=str(THREE_PAGES_PDF), pages=pages)

    assert message.content == SCRIPTED_ANSWER
    assert isinstance(message.artifact, OCRResult)
    assert message.artifact.meta.page == 2


@pytest.mark.parametrize(("pages", "numbers"), [("2-3", [2, 3]), ([3, 1], [3, 1]), ("3-", [3])])
def test_a_range_gives_one_result_per_page(
    scripted_vlm: MississippiVLM, pages: object, numbers: list[int]
) -> None:
    tool = MississippiTableTool(vlm=scripted_vlm, **FAST)

    message = run(tool, image=str(THREE_PAGES_PDF), pages=pages)

    assert isinstance(message.artifact, list)
    assert [result.meta.page for result in message.artifact] == numbers
    assert all(isinstance(result, TableData) for result in message.artifact)
    table = "| total |\n| --- |\n| 5 |"
    assert message.content == "\n\n".join(f"[page {n}]\n{table}" for n in numbers)


async def test_async_range_matches_sync(scripted_vlm: MississippiVLM) -> None:
    tool = MississippiAskTool(vlm=scripted_vlm, **FAST)
    args = {"image": str(THREE_PAGES_PDF), "pages": "1-2", "question": "Total?"}

    sync, asynchronous = run(tool, **args), await arun(tool, **args)

    assert asynchronous.content == sync.content
    assert [a.text for a in asynchronous.artifact] == [a.text for a in sync.artifact]
    assert all(isinstance(a, Answer) for a in asynchronous.artifact)


def test_a_multi_page_document_needs_pages(scripted_vlm: MississippiVLM) -> None:
    message = run(MississippiOCRTool(vlm=scripted_vlm, **FAST), image=str(THREE_PAGES_PDF))

    assert message.status == "error"
    assert isinstance(message.content, str)
    assert message.content.startswith("invalid_input: ")
    assert "is a PDF with 3 pages" in message.content


def test_too_many_pages_are_refused_with_a_smaller_range(scripted_vlm: MississippiVLM) -> None:
    tool = MississippiOCRTool(vlm=scripted_vlm, max_pages=2, **FAST)

    message = run(tool, image=str(THREE_PAGES_PDF), pages="1-3")

    assert message.status == "error"
    assert message.content == (
        f"invalid_input: {THREE_PAGES_PDF} has 3 pages to read and at most 2 are read from one "
        "document; choose pages 1-2 (then the rest), or raise the limit"
    )


def test_pages_outside_the_document(scripted_vlm: MississippiVLM) -> None:
    tool = MississippiOCRTool(vlm=scripted_vlm, **FAST)

    message = run(tool, image=str(THREE_PAGES_PDF), pages="2-7")

    assert message.status == "error"
    assert message.content == (
        f"pdf_error: page 7 is out of range: PDF '{THREE_PAGES_PDF}' has 3 pages; pick pages 1-3"
    )


def test_every_page_failing_fails_the_call(tiny_vlm: MississippiVLM) -> None:
    """Random words are no table: with every page failing, the call fails and says why."""
    tool = MississippiTableTool(vlm=tiny_vlm, max_tiles=1, max_new_tokens=4)

    message = run(tool, image=str(THREE_PAGES_PDF), pages="1-2")

    assert message.status == "error"
    assert isinstance(message.content, str)
    assert message.content.startswith("extraction_failed: all 2 pages failed; page 1: ")
    assert "no table found in the model's answer" in message.content


# -- image sources --------------------------------------------------------------------------------


def test_data_uri_and_base64_are_read_even_with_allowed_roots(
    scripted_vlm: MississippiVLM, sample_png: Path, tmp_path: Path
) -> None:
    tool = MississippiOCRTool(vlm=scripted_vlm, allowed_roots=[tmp_path], **FAST)
    encoded = base64.b64encode(sample_png.read_bytes()).decode()

    for image in (f"data:image/png;base64,{encoded}", encoded):
        message = run(tool, image=image)
        assert message.status == "success"
        assert message.artifact.meta.source in ("data URI", "base64")


def test_paths_outside_the_allowed_roots_are_refused(
    scripted_vlm: MississippiVLM, sample_png: Path, tmp_path: Path
) -> None:
    tool = MississippiChartTool(vlm=scripted_vlm, allowed_roots=[tmp_path], **FAST)

    refused = run(tool, image=str(sample_png))
    escape = run(tool, image="../../etc/passwd")

    assert refused.status == escape.status == "error"
    assert isinstance(refused.content, str)
    assert refused.content.startswith(f"access_denied: path {str(sample_png)!r} ")
    assert "outside the allowed roots" in refused.content
    assert isinstance(escape.content, str)
    assert escape.content.startswith("access_denied: path '../../etc/passwd'")
    assert f"File paths must be inside {tmp_path.resolve()}" in tool.description
    assert scripted_vlm.policy.allowed_roots is None  # the shared model's policy is untouched


def test_urls_follow_the_tool_policy(scripted_vlm: MississippiVLM) -> None:
    url = "http://127.0.0.1:9/chart.png"
    closed = MississippiOCRTool(vlm=scripted_vlm, **FAST)
    opened = MississippiOCRTool(vlm=scripted_vlm, allow_urls=True, **FAST)

    assert "URLs are not accepted." in closed.description
    assert "http(s) URLs are accepted." in opened.description
    refused = str(run(closed, image=url).content)
    assert refused.startswith("access_denied: fetching URLs is disabled")
    # Enabled, the URL is fetched under the policy's other rules: no loopback addresses.
    assert "a loopback address" in str(run(opened, image=url).content)


# -- errors ---------------------------------------------------------------------------------------


def test_model_output_errors_reach_the_agent(tiny_vlm: MississippiVLM, sample_png: Path) -> None:
    tool = MississippiChartTool(vlm=tiny_vlm, max_tiles=1, max_new_tokens=4)

    message = run(tool, image=str(sample_png))

    assert message.status == "error"
    assert message.artifact is None
    assert isinstance(message.content, str)
    assert message.content.startswith("extraction_failed: no chart data found in the model's")


def test_invalid_arguments_are_explained(scripted_vlm: MississippiVLM, sample_png: Path) -> None:
    tool = MississippiOCRTool(vlm=scripted_vlm, **FAST)

    message = run(tool, image=str(sample_png), format="html")

    assert message.status == "error"
    assert isinstance(message.content, str)
    assert message.content.startswith(
        "invalid_arguments: format: Input should be 'text', 'markdown' or 'lines'"
    )
    assert message.content.endswith("fix these arguments and call the tool again")


def test_plain_invoke_returns_the_error_text(scripted_vlm: MississippiVLM) -> None:
    tool = MississippiOCRTool(vlm=scripted_vlm, **FAST)

    assert str(tool.invoke({"image": "nowhere.png"})).startswith("image_not_found: no file at path")


def test_empty_question(scripted_vlm: MississippiVLM, sample_png: Path) -> None:
    message = run(MississippiAskTool(vlm=scripted_vlm, **FAST), image=str(sample_png), question=" ")

    assert message.content == "invalid_input: the question is empty; ask something about the image"


# -- extraction schemas ---------------------------------------------------------------------------


class Invoice(BaseModel):
    number: str
    total: int


def test_schema_fixed_as_a_pydantic_model(scripted_vlm: MississippiVLM, sample_png: Path) -> None:
    tool = MississippiExtractTool(
        vlm=scripted_vlm, extraction_schema=Invoice, max_tiles=1, max_new_tokens=48
    )

    message = run(tool, image=str(sample_png))

    assert "json_schema" not in tool.tool_call_schema.model_json_schema()["properties"]
    assert '"number": ""' in tool.description
    assert isinstance(message.artifact, ExtractionResult)
    assert isinstance(message.artifact.data, Invoice)
    assert json.loads(str(message.content)) == message.artifact.data.model_dump()


def test_schema_per_call(scripted_vlm: MississippiVLM, sample_png: Path) -> None:
    tool = MississippiExtractTool(vlm=scripted_vlm, max_tiles=1, max_new_tokens=48)
    schema = {
        "type": "object",
        "properties": {"approved": {"type": "boolean"}},
        "required": ["approved"],
    }

    as_dict = run(tool, image=str(sample_png), json_schema=schema)
    as_text = run(tool, image=str(sample_png), json_schema=json.dumps(schema))
    missing = run(tool, image=str(sample_png))
    broken = run(tool, image=str(sample_png), json_schema="{not json")
    unsupported = run(tool, image=str(sample_png), json_schema={"type": "object", "not": {}})

    assert "json_schema" in tool.tool_call_schema.model_json_schema()["properties"]
    assert as_dict.content == as_text.content
    assert set(json.loads(str(as_dict.content))) == {"approved"}
    assert str(missing.content).startswith("invalid_arguments: json_schema: Field required")
    assert str(broken.content).startswith("invalid_arguments: json_schema: ")
    assert "is a string but not valid JSON (" in str(broken.content)
    assert str(unsupported.content).startswith("unsupported_schema: ")


def test_an_unsupported_fixed_schema_fails_at_construction(scripted_vlm: MississippiVLM) -> None:
    with pytest.raises(ValidationError, match="not"):
        MississippiExtractTool(vlm=scripted_vlm, extraction_schema={"type": "object", "not": {}})


# -- toolkit --------------------------------------------------------------------------------------


def test_toolkit_tools_share_one_model_and_the_options(
    scripted_vlm: MississippiVLM, tmp_path: Path
) -> None:
    toolkit = MississippiToolkit(
        vlm=scripted_vlm, allowed_roots=[tmp_path], max_tiles=2, max_pages=4,
        extraction_schema={"total": 0},
    )  # fmt: skip

    tools = toolkit.get_tools()

    assert [type(t) for t in tools] == [
        MississippiOCRTool,
        MississippiChartTool,
        MississippiTableTool,
        MississippiExtractTool,
        tool_class("extract_document"),
        MississippiAskTool,
    ]
    assert [t.name for t in tools] == [
        "mississippi_ocr",
        "mississippi_read_chart",
        "mississippi_read_table",
        "mississippi_extract",
        "mississippi_extract_document",
        "mississippi_ask",
    ]
    for tool in tools:
        assert tool.vlm is scripted_vlm
        assert tool.allowed_roots == [tmp_path]
        assert (tool.max_tiles, tool.max_pages) == (2, 4)
        assert tool.response_format == "content_and_artifact"
    assert "json_schema" not in tools[3].tool_call_schema.model_json_schema()["properties"]
    only = MississippiToolkit(vlm=scripted_vlm, include=["ask", "ocr"]).get_tools()
    assert [t.name for t in only] == ["mississippi_ocr", "mississippi_ask"]


def test_toolkit_load_builds_its_own_model(tiny_checkpoint: Path, sample_png: Path) -> None:
    toolkit = MississippiToolkit.load(tiny_checkpoint, device="cpu", dtype="float32", **FAST)
    try:
        message = run(toolkit.get_tools()[0], image=str(sample_png))
        assert message.status == "success"
        assert isinstance(message.artifact, OCRResult)
    finally:
        toolkit.vlm.close()


def test_chart_content(scripted_vlm: MississippiVLM, sample_png: Path) -> None:
    tool = MississippiChartTool(vlm=scripted_vlm, max_tiles=1, max_new_tokens=256)

    message = run(tool, image=str(sample_png))

    chart = message.artifact
    assert isinstance(chart, ChartData)
    assert message.content == render_chart(chart)
    assert message.content.startswith(f"Chart: {chart.title or '(untitled)'}")
