"""Long work through the SDK's client: progress per page, the result budget and its cursor, pages
as resources, and images passed as MCP content."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from PIL import Image

from mississippi_mcp.results import split_pages
from mississippi_tools.images import load_image
from mississippi_tools.vlm import MississippiVLM
from tests.documents import Page, build_pdf
from tests.mcp.conftest import make_server
from tests.mcp.support import check_error, check_structured, text_of

PAGES = 8
BUDGET = 2000


@pytest.fixture
def long_pdf(tmp_path: Path) -> Path:
    directory = tmp_path / "docs"
    directory.mkdir()
    path = directory / "long.pdf"
    path.write_bytes(build_pdf([Page("scan") if i % 2 else Page("stamp") for i in range(PAGES)]))
    return path


def _size(result: types.CallToolResult) -> int:
    """Characters of a result as a client counts them: its content and structured content."""
    blocks = sum(len(block.model_dump_json()) for block in result.content)
    return blocks + len(json.dumps(result.structured_content))


def _links(result: types.CallToolResult) -> list[types.ResourceLink]:
    return [block for block in result.content if isinstance(block, types.ResourceLink)]


class Progress:
    def __init__(self) -> None:
        self.events: list[tuple[float, float | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total))


async def test_a_long_result_is_cut_to_the_budget_and_read_to_the_end_with_the_cursor(
    scripted_vlm: MississippiVLM, long_pdf: Path
) -> None:
    server = make_server(scripted_vlm, allow_dirs=[long_pdf.parent], result_budget=BUDGET)
    whole_server = make_server(scripted_vlm, allow_dirs=[long_pdf.parent])
    progress = Progress()
    async with Client(server) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        first = await client.call_tool(
            "ocr", {"image": long_pdf.name, "pages": f"1-{PAGES}"}, progress_callback=progress
        )
        structured = check_structured(first, tools["ocr"])
        parts = [first]
        cursor = structured["next_cursor"]
        pages = list(structured["pages"])
        while cursor is not None:
            more = await client.call_tool("read_more", {"cursor": cursor})
            assert not more.is_error, text_of(more)
            assert more.structured_content is not None
            assert more.structured_content["tool"] == "ocr"
            pages += more.structured_content["pages"]
            cursor = more.structured_content["next_cursor"]
            parts.append(more)
            assert len(parts) <= PAGES, "the cursor never ended"
        used = await client.call_tool("read_more", {"cursor": structured["next_cursor"]})
    async with Client(whole_server) as client:
        whole = await client.call_tool("ocr", {"image": long_pdf.name, "pages": f"1-{PAGES}"})
    assert progress.events == [(float(i), float(PAGES)) for i in range(PAGES + 1)]
    assert len(parts) > 1, "the budget did not cut the result"
    assert all(_size(part) <= BUDGET for part in parts), [_size(part) for part in parts]
    assert "read_more" in text_of(first) and structured["next_cursor"] in text_of(first)
    assert "read_more" not in text_of(parts[-1])
    assert whole.structured_content is not None
    assert whole.structured_content["next_cursor"] is None

    def essentials(entries: list[dict[str, Any]]) -> list[Any]:  # not timings or cache hits
        return [(e["page"], e["result"]["text"], e["result"]["meta"]["page"]) for e in entries]

    assert essentials(pages) == essentials(whole.structured_content["pages"])
    assert [page["page"] for page in pages] == list(range(1, PAGES + 1))
    check_error(used, "unknown or expired cursor")


def test_a_page_larger_than_the_budget_comes_alone() -> None:
    sections = ["a" * 50, "b" * 5000, "c" * 50]
    entries: list[dict[str, Any]] = [{"page": n} for n in (1, 2, 3)]
    parts = split_pages(sections, entries, [], 1000)
    assert [part.entries for part in parts] == [[{"page": 1}], [{"page": 2}], [{"page": 3}]]
    assert split_pages(sections[:1], entries[:1], [], 1000)[0].sections == sections[:1]


async def test_pages_read_are_linked_as_resources_that_render_and_can_be_read_again(
    scripted_vlm: MississippiVLM, long_pdf: Path
) -> None:
    server = make_server(scripted_vlm, allow_dirs=[long_pdf.parent])
    async with Client(server) as client:
        result = await client.call_tool("ocr", {"image": long_pdf.name, "pages": "2-3"})
        links = _links(result)
        assert [link.uri.rsplit("/", 1)[-1] for link in links] == ["2", "3"]
        assert all(link.mime_type == "image/png" for link in links)
        read = await client.read_resource(links[0].uri)
        again = await client.call_tool("ocr", {"image": links[1].uri})
        zoomed = await client.call_tool("ocr", {"image": links[1].uri, "region": [0, 0, 0.5, 0.25]})
        crop = await client.read_resource(_links(zoomed)[0].uri)
        templates = await client.list_resource_templates()
        unknown = await client.call_tool(
            "ocr", {"image": "mississippi://documents/nothing/pages/1"}
        )
    [contents] = read.contents
    assert isinstance(contents, types.BlobResourceContents)
    rendered = Image.open(io.BytesIO(base64.b64decode(contents.blob)))
    expected = load_image(long_pdf.read_bytes(), page=2).image
    assert rendered.size == expected.size
    assert rendered.convert("RGB").tobytes() == expected.convert("RGB").tobytes()
    assert not again.is_error, text_of(again)
    assert again.structured_content is not None
    assert again.structured_content["result"]["meta"]["page"] == 3
    assert result.structured_content is not None
    page_3 = result.structured_content["pages"][1]["result"]
    assert again.structured_content["result"]["text"] == page_3["text"]
    [crop_contents] = crop.contents
    assert isinstance(crop_contents, types.BlobResourceContents)
    cropped = Image.open(io.BytesIO(base64.b64decode(crop_contents.blob)))
    assert cropped.size == (expected.width // 2, expected.height // 4)
    assert [t.uri_template for t in templates.resource_templates] == [
        "mississippi://documents/{document}/pages/{page}"
    ]
    check_error(unknown, "not a page this server still has")


async def test_images_are_accepted_as_image_content_and_embedded_resources(
    scripted_vlm: MississippiVLM, images: Path
) -> None:
    data = base64.b64encode((images / "page.png").read_bytes()).decode()
    server = make_server(scripted_vlm)
    content = {"type": "image", "data": data, "mimeType": "image/png"}
    blob = {
        "type": "resource",
        "resource": {"uri": "file:///elsewhere/page.png", "blob": data, "mimeType": "image/png"},
    }
    text = {
        "type": "resource",
        "resource": {"uri": "file:///notes.txt", "text": "hello", "mimeType": "text/plain"},
    }
    async with Client(server) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        as_uri = await client.call_tool("ocr", {"image": f"data:image/png;base64,{data}"})
        as_content = await client.call_tool("ocr", {"image": content})
        as_blob = await client.call_tool("ocr", {"image": blob})
        as_text = await client.call_tool("ocr", {"image": text})
    expected = check_structured(as_uri, tools["ocr"])["result"]
    for result in (as_content, as_blob):
        got = check_structured(result, tools["ocr"])["result"]
        assert got["text"] == expected["text"]
        assert got["meta"]["source"] == "data URI"
    check_error(as_text, "holds text")
    image_schema = tools["ocr"].input_schema["properties"]["image"]
    assert "image content" in image_schema["description"]
