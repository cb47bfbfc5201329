"""LangChain tools and loader on whole documents: text layers, zoom, loops, document extraction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool

from langchain_mississippi import MississippiImageLoader, MississippiOCRTool, MississippiToolkit
from mississippi_tools import MississippiVLM, OCRResult
from mississippi_tools.tasks.extract_document import DocumentExtractionResult
from tests.documents import INVOICE_LINES, Page, build_pdf

from .conftest import tool_call

FAST: dict[str, Any] = {"max_tiles": 1, "max_new_tokens": 8}
INVOICE_TEXT = "\n".join(INVOICE_LINES)


def run(tool: BaseTool, **args: Any) -> ToolMessage:
    message = tool.invoke(tool_call(tool.name, args))
    assert isinstance(message, ToolMessage)
    return message


@pytest.fixture
def mixed_pdf(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.pdf"
    path.write_bytes(build_pdf([Page("text"), Page("scan")]))
    return path


@pytest.fixture
def fresh_vlm(tiny_backend) -> Iterator[MississippiVLM]:  # type: ignore[no-untyped-def]
    with MississippiVLM.from_backend(tiny_backend) as vlm:
        yield vlm


def test_the_ocr_tool_answers_a_text_page_from_its_layer(
    fresh_vlm: MississippiVLM, mixed_pdf: Path
) -> None:
    message = run(MississippiOCRTool(vlm=fresh_vlm, **FAST), image=str(mixed_pdf), pages="1-2")
    assert message.status == "success"
    first, second = message.artifact
    assert (first.meta.origin, second.meta.origin) == ("text_layer", "model")
    assert message.content.startswith(f"[page 1]\n{INVOICE_TEXT}\n\n[page 2]\n")
    assert fresh_vlm.engine.metrics.requests_finished == 1  # type: ignore[attr-defined]


def test_the_tool_schema_offers_text_layer_and_region(fresh_vlm: MississippiVLM) -> None:
    schema = MississippiOCRTool(vlm=fresh_vlm).tool_call_schema.model_json_schema()
    assert {"text_layer", "region"} <= set(schema["properties"])
    assert "zoom" in schema["properties"]["region"]["description"].lower()


@pytest.mark.parametrize("region", [[0, 0, 1, 0.115], "0,0,1,0.115"])
def test_a_calling_model_zooms_into_a_region(
    fresh_vlm: MississippiVLM, mixed_pdf: Path, region: object
) -> None:
    tool = MississippiOCRTool(vlm=fresh_vlm, **FAST)
    message = run(tool, image=str(mixed_pdf), pages=1, region=region)
    assert message.status == "success", message.content
    assert isinstance(message.artifact, OCRResult)
    assert message.content == "\n".join(INVOICE_LINES[:2])
    assert message.artifact.meta.region == [0, 0, 1700, 253]


def test_a_bad_region_is_an_error_the_model_can_read(
    fresh_vlm: MississippiVLM, mixed_pdf: Path
) -> None:
    message = run(MississippiOCRTool(vlm=fresh_vlm), image=str(mixed_pdf), pages=1, region="1,2")
    assert message.status == "error"
    assert message.content.startswith("invalid_input: region '1,2' is not four finite numbers")


def test_a_loop_is_a_repetition_error_for_the_calling_model(
    looping_backend,
    sample_png: Path,  # type: ignore[no-untyped-def]
) -> None:
    with MississippiVLM.from_backend(looping_backend) as vlm:
        tool = MississippiOCRTool(vlm=vlm, max_tiles=1, max_new_tokens=300)
        message = run(tool, image=str(sample_png))
    assert message.status == "error"
    assert message.content.startswith("repetition: the model's answer fell into a loop")


def test_the_loader_returns_a_text_layer_as_the_page(
    fresh_vlm: MississippiVLM, mixed_pdf: Path
) -> None:
    docs = MississippiImageLoader(mixed_pdf, vlm=fresh_vlm, **FAST).load()
    assert docs[0].page_content == INVOICE_TEXT
    assert docs[0].metadata["page"] == 1
    assert fresh_vlm.engine.metrics.requests_finished == 1  # type: ignore[attr-defined]


def test_the_toolkit_has_a_document_extraction_tool(
    scripted_vlm: MississippiVLM, mixed_pdf: Path
) -> None:
    tools = {tool.name: tool for tool in MississippiToolkit(vlm=scripted_vlm).get_tools()}
    tool = tools["mississippi_extract_document"]
    message = run(tool, image=str(mixed_pdf), pages="1-2", json_schema={"total": 0}, max_retries=0)
    assert message.status == "success", message.content
    assert isinstance(message.artifact, DocumentExtractionResult)
    assert message.artifact.pages == [1, 2]


async def test_async_tools_zoom_and_read_documents(
    scripted_vlm: MississippiVLM, mixed_pdf: Path
) -> None:
    tools = {tool.name: tool for tool in MississippiToolkit(vlm=scripted_vlm).get_tools()}
    message = await tools["mississippi_extract_document"].ainvoke(
        tool_call(
            "mississippi_extract_document", {"image": str(mixed_pdf), "json_schema": {"total": 0}}
        )
    )
    assert message.status == "success", message.content
    assert message.artifact.pages == [1, 2]
    message = await tools["mississippi_ocr"].ainvoke(
        tool_call(
            "mississippi_ocr", {"image": str(mixed_pdf), "pages": "1", "region": [0, 0, 1, 0.115]}
        )
    )
    assert message.content == "\n".join(INVOICE_LINES[:2])
