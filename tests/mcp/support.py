"""Helpers for the MCP server tests (not fixtures): settings and result checks.

Tests that need successful charts and tables use the ``scripted_vlm`` / ``scripted_checkpoint``
fixtures: a real tiny checkpoint whose weights make greedy decoding write a known answer, run by
the same loader, engine, grammar and parsers as any model. The random tiny model's behaviour (an
``isError`` result for an unparseable chart) is tested too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import jsonschema
import mcp_types as types
from mcp import Client

#: A schema the tiny model fills in a handful of tokens under the grammar.
BOOLEAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}

#: Server settings that keep the tiny models fast: one tile, and enough tokens for the scripted
#: model to finish a grammar-constrained chart (about 140 tokens).
FAST_SETTINGS: dict[str, Any] = {"max_new_tokens": 160, "max_tiles": 1}


def tool_calls(image: str) -> list[tuple[str, dict[str, Any]]]:
    """One successful call of every tool on ``image``."""
    return [
        ("ocr", {"image": image}),
        ("read_chart", {"image": image}),
        ("read_table", {"image": image}),
        ("extract", {"image": image, "json_schema": BOOLEAN_SCHEMA, "confidence": True}),
        ("extract_document", {"image": image, "json_schema": BOOLEAN_SCHEMA}),
        ("ask", {"image": image, "question": "What is written?"}),
    ]


#: The task tools of a server over an H2OVL model, in order.
TASK_TOOLS = ("ocr", "read_chart", "read_table", "extract", "extract_document", "ask")
#: Every tool it lists: the task tools, then the continuation of long results.
TOOL_NAMES = (*TASK_TOOLS, "read_more")


def result_of(structured: dict[str, Any]) -> dict[str, Any]:
    """The one result of a tool's structured content (for one image or page)."""
    assert structured["pages"] is None, structured
    result: dict[str, Any] = structured["result"]
    return result


def text_of(result: types.CallToolResult) -> str:
    """The text blocks of a result, joined."""
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def check_structured(result: types.CallToolResult, tool: types.Tool) -> dict[str, Any]:
    """Assert a successful result whose structured content is valid under the tool's schema."""
    assert not result.is_error, text_of(result)
    assert tool.output_schema is not None
    assert result.structured_content is not None
    jsonschema.Draft202012Validator.check_schema(tool.output_schema)
    jsonschema.validate(result.structured_content, tool.output_schema)
    assert text_of(result).strip()
    return result.structured_content


def check_error(result: types.CallToolResult, *fragments: str) -> str:
    """Assert an ``isError`` result whose text holds every fragment (case-insensitive)."""
    text = text_of(result)
    assert result.is_error, text
    for fragment in fragments:
        assert fragment.lower() in text.lower(), text
    return text


async def probe(server: Any, image: str, roots: list[Path] | None = None) -> str:
    """``allowed``, or the error text: whether the server may read ``image``, without the model.

    Asks for page 2 of a one-page image: the path is checked and the file read first, so an
    allowed file fails afterwards with ``invalid_input`` (no generation), a refused one with
    ``access_denied``.
    """

    async def list_roots(_context: Any) -> types.ListRootsResult:
        assert roots is not None
        return types.ListRootsResult(roots=[types.Root(uri=root.as_uri()) for root in roots])

    with anyio.fail_after(10):
        async with Client(server, list_roots_callback=list_roots if roots else None) as client:
            result = await client.call_tool("ask", {"image": image, "question": "?", "pages": 2})
    text = text_of(result)
    assert result.is_error
    return "allowed" if "single image" in text else text
