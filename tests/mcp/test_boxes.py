"""Text regions through the MCP server: the ``boxes`` tool argument and the structured content.

A real MCP client talks to the server over the grounding checkpoint (a tiny H2OVL model whose
answers carry InternVL region tokens).
"""

from __future__ import annotations

from pathlib import Path

import mcp_types as types
import pytest
from mcp import Client

from mississippi_tools.images import load_image
from mississippi_tools.vlm import MississippiVLM
from tests.documents import Page, build_pdf
from tests.mcp.conftest import make_server
from tests.mcp.support import check_error, check_structured, result_of, text_of
from tests.support import GROUNDING_BOX, grounding_pixels


async def _ocr_tool(client: Client) -> types.Tool:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    return tools["ocr"]


async def test_the_ocr_tool_offers_boxes_and_returns_them_in_structured_content(
    grounding_vlm: MississippiVLM, images: Path
) -> None:
    async with Client(make_server(grounding_vlm, allow_dirs=[images])) as client:
        tool = await _ocr_tool(client)
        result = await client.call_tool("ocr", {"image": "page.png", "boxes": True})
    boxes = tool.input_schema["properties"]["boxes"]
    assert boxes["type"] == "boolean" and "pixels" in boxes["description"]
    structured = result_of(check_structured(result, tool))
    size = load_image(images / "page.png").size
    assert structured["lines"][0]["box"] is None
    assert structured["lines"][1]["box"]["pixels"] == grounding_pixels(size)
    text = text_of(result)
    assert "in pixels" in text
    assert "Total due [" + ", ".join(f"{v:g}" for v in grounding_pixels(size)) + "]" in text


async def test_a_pdf_page_gives_page_points_to_the_client(
    grounding_vlm: MississippiVLM, images: Path
) -> None:
    (images / "scan.pdf").write_bytes(build_pdf([Page("scan")]))
    async with Client(make_server(grounding_vlm, allow_dirs=[images])) as client:
        tool = await _ocr_tool(client)
        result = await client.call_tool("ocr", {"image": "scan.pdf", "boxes": True})
    box = result_of(check_structured(result, tool))["lines"][1]["box"]
    x0, y0, x1, y1 = GROUNDING_BOX
    assert box["points"] == pytest.approx([x0 * 612, y0 * 792, x1 * 612, y1 * 792], abs=0.05)
    assert box["pixels"] == grounding_pixels(load_image(images / "scan.pdf").size)
    assert "page points" in text_of(result)


async def test_boxes_must_be_a_boolean(grounding_vlm: MississippiVLM, images: Path) -> None:
    async with Client(make_server(grounding_vlm, allow_dirs=[images])) as client:
        result = await client.call_tool("ocr", {"image": "page.png", "boxes": "everywhere"})
    check_error(result, "boxes")
