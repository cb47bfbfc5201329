"""The tools through the SDK's in-process client, on the tiny model: listing, results, errors."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client

from mississippi_mcp import MCPSettings, ModelHolder, build_server
from mississippi_tools.errors import ModelNotFoundError
from mississippi_tools.vlm import MississippiVLM
from tests.mcp.conftest import make_server
from tests.mcp.support import (
    BOOLEAN_SCHEMA,
    FAST_SETTINGS,
    TASK_TOOLS,
    TOOL_NAMES,
    check_error,
    check_structured,
    probe,
    result_of,
    text_of,
    tool_calls,
)
from tests.support import await_until

PDF = Path(__file__).parents[1] / "bad_inputs" / "three_pages.pdf"


class Progress:
    """A progress callback that records what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message))


async def tools_by_name(client: Client) -> dict[str, types.Tool]:
    return {tool.name: tool for tool in (await client.list_tools()).tools}


async def test_lists_one_described_read_only_tool_per_task(scripted_vlm: MississippiVLM) -> None:
    async with Client(make_server(scripted_vlm)) as client:
        tools = await tools_by_name(client)
    assert tuple(tools) == TOOL_NAMES
    for tool in tools.values():
        assert tool.description and len(tool.description) > 40
        assert tool.title
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
        properties = tool.input_schema["properties"]
        argument = "cursor" if tool.name == "read_more" else "image"
        assert argument in properties and "ctx" not in properties and "roots" not in properties
        assert all(spec.get("description") for spec in properties.values()), tool.name
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is True
        assert tool.annotations.destructive_hint is False
        assert tool.annotations.open_world_hint is False
        # a cursor is used up by read_more; every task tool gives the same answer again
        assert tool.annotations.idempotent_hint is (tool.name != "read_more")
    assert tools["ask"].input_schema["required"] == ["image", "question"]
    assert tools["extract"].input_schema["required"] == ["image", "json_schema"]
    assert "template" in tools["extract"].input_schema["properties"]["json_schema"]["description"]


async def test_every_tool_returns_structured_content_valid_under_its_schema(
    scripted_vlm: MississippiVLM, images: Path
) -> None:
    async with Client(make_server(scripted_vlm, allow_dirs=[images])) as client:
        tools = await tools_by_name(client)
        results = {
            name: await client.call_tool(name, args) for name, args in tool_calls("page.png")
        }
    structured = {
        name: result_of(check_structured(results[name], tools[name])) for name in TASK_TOOLS
    }
    assert structured["ocr"]["meta"]["engine"] == "local"
    assert structured["read_chart"]["series"][0]["points"]  # the grammar guarantees one point
    assert "| total |" in text_of(results["read_table"])  # the scripted answer {"total": 5}
    assert structured["read_table"]["columns"] == ["total"]
    assert structured["read_table"]["rows"] == [[5]]
    assert structured["extract"]["data"] in ({"ok": True}, {"ok": False})
    assert set(structured["extract"]["confidence"]) == {"/ok"}
    assert (
        json.loads(text_of(results["extract"]).split("\nLeast certain")[0])
        == structured["extract"]["data"]
    )
    assert structured["ask"]["meta"]["source"].endswith("page.png")


async def test_unparseable_chart_from_the_random_model_is_an_error_result(
    tiny_vlm: MississippiVLM, images: Path
) -> None:
    async with Client(make_server(tiny_vlm, allow_dirs=[images])) as client:
        result = await client.call_tool("read_chart", {"image": "page.png"})
    check_error(result, "extraction_failed", "chart")


async def test_inline_images_need_no_allowed_directory(
    scripted_vlm: MississippiVLM, images: Path
) -> None:
    data = base64.b64encode((images / "page.png").read_bytes()).decode()
    server = make_server(scripted_vlm)
    async with Client(server) as client:
        from_uri = await client.call_tool("read_table", {"image": f"data:image/png;base64,{data}"})
    assert not from_uri.is_error, text_of(from_uri)
    assert from_uri.structured_content is not None
    assert result_of(from_uri.structured_content)["meta"]["source"] == "data URI"
    assert await probe(server, data) == "allowed"  # plain base64 is decoded too


async def test_ocr_reads_a_page_range_with_progress(scripted_vlm: MississippiVLM) -> None:
    progress = Progress()
    async with Client(make_server(scripted_vlm, allow_dirs=[PDF.parent])) as client:
        tool = (await tools_by_name(client))["ocr"]
        result = await client.call_tool(
            "ocr", {"image": PDF.name, "pages": "2-3"}, progress_callback=progress
        )
    structured = check_structured(result, tool)
    assert structured["result"] is None
    assert [page["page"] for page in structured["pages"]] == [2, 3]
    assert [page["result"]["meta"]["page"] for page in structured["pages"]] == [2, 3]
    assert "[page 2]" in text_of(result) and "[page 3]" in text_of(result)
    assert [(p, t) for p, t, _ in progress.events] == [(0, 2), (1, 2), (2, 2)]


async def test_page_limits_and_missing_page_are_explained(scripted_vlm: MississippiVLM) -> None:
    server = make_server(scripted_vlm, allow_dirs=[PDF.parent], max_pages=2)
    async with Client(server) as client:
        too_many = await client.call_tool("ocr", {"image": str(PDF), "pages": "1-"})
        no_page = await client.call_tool("read_table", {"image": str(PDF)})
        beyond = await client.call_tool("ask", {"image": str(PDF), "question": "?", "pages": 9})
        bad_range = await client.call_tool("ocr", {"image": str(PDF), "pages": "7-9"})
        int_page = await client.call_tool("ocr", {"image": str(PDF), "pages": 9})
    check_error(too_many, "3 pages", "at most 2", "pages 1-2")
    check_error(no_page, "invalid_input", "3 pages")
    check_error(beyond, "pdf_error", "3 page")
    check_error(bad_range, "pdf_error")
    check_error(int_page, "pdf_error", "9")


async def test_extract_arguments(scripted_vlm: MississippiVLM, images: Path) -> None:
    async with Client(make_server(scripted_vlm, allow_dirs=[images])) as client:
        missing = await client.call_tool("extract", {"image": "page.png"})
        unsupported = await client.call_tool(
            "extract",
            {"image": "page.png", "json_schema": {"type": "object", "not": {"type": "null"}}},
        )
        as_string = await client.call_tool(
            "extract", {"image": "page.png", "json_schema": json.dumps({"ok": True})}
        )
        not_json = await client.call_tool("extract", {"image": "page.png", "json_schema": "{ok:"})
    check_error(missing, "json_schema")
    check_error(unsupported, "unsupported_schema")
    check_error(not_json, "not valid JSON")
    assert not as_string.is_error, text_of(as_string)
    assert as_string.structured_content is not None
    assert set(result_of(as_string.structured_content)["data"]) == {"ok"}


async def test_invalid_arguments_are_error_results(scripted_vlm: MississippiVLM) -> None:
    async with Client(make_server(scripted_vlm)) as client:
        missing = await client.call_tool("ask", {"question": "What?"})
        bad_page = await client.call_tool("read_chart", {"image": "x.png", "pages": "0"})
        bad_format = await client.call_tool("ocr", {"image": "x.png", "format": "html"})
        unknown = await client.call_tool("ask", {"image": "x.png", "question": "?", "page": 2})
        tools = await tools_by_name(client)
    check_error(unknown, "ask takes no argument 'page'", "pages, question")
    assert tools["ask"].input_schema["additionalProperties"] is False
    check_error(missing, "image")
    check_error(bad_page, "page")
    check_error(bad_format, "format")


class GatedLoader:
    """A loader that returns the model only once the test opens the gate."""

    def __init__(self, vlm: MississippiVLM) -> None:
        self.vlm = vlm
        self.gate = threading.Event()
        self.calls = 0

    def __call__(self) -> MississippiVLM:
        self.calls += 1
        assert self.gate.wait(30), "the test never opened the gate"
        return self.vlm


async def test_listing_answers_while_the_model_loads_and_calls_wait_with_progress(
    scripted_vlm: MississippiVLM, images: Path
) -> None:
    loader = GatedLoader(scripted_vlm)
    holder = ModelHolder(loader, name="tiny", progress_interval=0.1)
    server = build_server(MCPSettings(allow_dirs=[images], **FAST_SETTINGS), holder=holder)
    progress = Progress()
    result: list[types.CallToolResult] = []
    started = time.perf_counter()
    async with Client(server) as client:
        tools = await client.list_tools()
        listed = time.perf_counter() - started
        assert holder.state == "loading"
        assert len(tools.tools) == len(TOOL_NAMES)

        async def call() -> None:
            result.append(
                await client.call_tool(
                    "ask", {"image": "page.png", "question": "?"}, progress_callback=progress
                )
            )

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await await_until(lambda: len(progress.events) >= 3, timeout=10, what="3 events")
            assert not result
            loader.gate.set()
    assert listed < 2.0
    assert holder.state == "ready" and loader.calls == 1
    assert not result[0].is_error, text_of(result[0])
    assert all("loading the model tiny" in (message or "") for _, _, message in progress.events)
    values = [value for value, _, _ in progress.events]
    assert values == sorted(values) and len(set(values)) == len(values)


async def test_progress_keeps_increasing_from_the_load_to_the_pages(
    scripted_vlm: MississippiVLM,
) -> None:
    loader = GatedLoader(scripted_vlm)
    holder = ModelHolder(loader, name="tiny", progress_interval=0.05)
    server = build_server(MCPSettings(allow_dirs=[PDF.parent], **FAST_SETTINGS), holder=holder)
    progress = Progress()
    result: list[types.CallToolResult] = []
    async with Client(server) as client:

        async def call() -> None:
            result.append(
                await client.call_tool(
                    "ocr", {"image": PDF.name, "pages": "2-3"}, progress_callback=progress
                )
            )

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await await_until(lambda: len(progress.events) >= 2, timeout=10, what="2 events")
            loader.gate.set()
    assert not result[0].is_error, text_of(result[0])
    values = [value for value, _, _ in progress.events]
    assert all(later > earlier for earlier, later in itertools.pairwise(values))
    *loading, first_page, second_page, done = progress.events
    assert all("loading the model" in (message or "") for _, _, message in loading)
    offset = first_page[0]
    assert offset >= 1 and first_page[1] == offset + 2 and first_page[2] == "reading 2 page(s)"
    assert second_page[:2] == (offset + 1, offset + 2) and done[:2] == (offset + 2, offset + 2)


async def test_a_failed_load_is_reported_by_every_call(images: Path) -> None:
    def loader() -> MississippiVLM:
        raise ModelNotFoundError("no weights for 'nope/model' in the cache; download them")

    holder = ModelHolder(loader, name="nope/model")
    server = build_server(MCPSettings(allow_dirs=[images]), holder=holder)
    async with Client(server) as client:
        first = await client.call_tool("ocr", {"image": "page.png"})
        second = await client.call_tool("read_table", {"image": "page.png"})
        tools = await client.list_tools()
    for result in (first, second):
        check_error(result, "model_not_found", "nope/model", "restart the server")
    assert holder.state == "failed" and len(tools.tools) == len(TOOL_NAMES)


async def test_waiting_for_the_load_gives_up_after_the_timeout(
    scripted_vlm: MississippiVLM, images: Path
) -> None:
    loader = GatedLoader(scripted_vlm)
    holder = ModelHolder(loader, name="slow", load_timeout=0.3, progress_interval=0.05)
    server = build_server(MCPSettings(allow_dirs=[images]), holder=holder)
    try:
        async with Client(server) as client:
            result = await client.call_tool("ocr", {"image": "page.png"})
    finally:
        loader.gate.set()
    check_error(result, "still loading", "call the tool again")


async def test_a_crash_inside_a_tool_is_an_error_result_and_the_server_goes_on(
    scripted_vlm: MississippiVLM, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = MississippiVLM.arun

    async def crashing(self: MississippiVLM, task: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("question") == "crash":
            raise RuntimeError("a secret detail")
        return await original(self, task, *args, **kwargs)

    monkeypatch.setattr(MississippiVLM, "arun", crashing)
    async with Client(make_server(scripted_vlm, allow_dirs=[images])) as client:
        crashed = await client.call_tool("ask", {"image": "page.png", "question": "crash"})
        after = await client.call_tool("ask", {"image": "page.png", "question": "fine?"})
    text = check_error(crashed, "internal error in ask (RuntimeError)", "keeps running")
    assert "secret" not in text
    assert not after.is_error


async def test_server_instructions_name_the_allowed_directories(
    scripted_vlm: MississippiVLM, images: Path
) -> None:
    server = make_server(scripted_vlm, allow_dirs=[images])
    assert server.instructions is not None and str(images) in server.instructions
    assert "URLs" not in server.instructions
    with_urls = make_server(scripted_vlm, allow_urls=True)
    assert with_urls.instructions is not None and "URLs" in with_urls.instructions


def test_closing_the_holder_releases_the_model(scripted_vlm: MississippiVLM) -> None:
    closed: list[bool] = []

    class Closing(MississippiVLM):
        def close(self) -> None:
            closed.append(True)

    holder = ModelHolder(lambda: Closing(scripted_vlm.engine), name="tiny")
    holder.start()
    deadline = time.monotonic() + 10
    while holder.state == "loading" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert holder.state == "ready"
    holder.close()
    assert closed == [True]
    holder.start()  # no restart after close
    assert holder.state == "closed"


async def test_region_and_document_tools(scripted_vlm: MississippiVLM) -> None:
    async with Client(make_server(scripted_vlm, allow_dirs=[PDF.parent])) as client:
        tools = await tools_by_name(client)
        zoomed = await client.call_tool(
            "ocr", {"image": PDF.name, "pages": 1, "region": "0,0,0.5,0.5"}
        )
        document = await client.call_tool(
            "extract_document",
            {"image": PDF.name, "pages": "1-2", "json_schema": BOOLEAN_SCHEMA},
        )
    assert "region" in tools["ocr"].input_schema["properties"]
    assert result_of(check_structured(zoomed, tools["ocr"]))["meta"]["region"] is not None
    merged = result_of(check_structured(document, tools["extract_document"]))
    assert merged["pages"] == [1, 2] and set(merged["data"]) == {"ok"}
