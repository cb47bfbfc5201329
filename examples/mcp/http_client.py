"""Call mississippi-mcp over streamable HTTP with the MCP SDK's client.

Start the server first (it reads files under --allow-dir; the token is optional on 127.0.0.1):

    export MISSISSIPPI_MCP_HTTP_TOKEN=$(openssl rand -hex 32)
    mississippi-mcp --transport streamable-http --allow-dir ~/Documents

then, in another shell with the same token:

    python examples/mcp/http_client.py ~/Documents/invoice.png
    python examples/mcp/http_client.py ~/Documents/report.pdf --tool ocr --pages 1-2
    python examples/mcp/http_client.py chart.png --tool read_chart --url http://127.0.0.1:8765/mcp
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def show_progress(progress: float, total: float | None, message: str | None) -> None:
    print(f"  ... {message or progress}")


async def main(options: argparse.Namespace) -> None:
    token = os.environ.get("MISSISSIPPI_MCP_HTTP_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=600) as http,
        Client(streamable_http_client(options.url, http_client=http)) as client,
    ):
        tools = (await client.list_tools()).tools
        print("tools:", ", ".join(tool.name for tool in tools))

        arguments: dict[str, Any] = {"image": options.image}
        if options.tool == "ocr" and options.pages:
            arguments["pages"] = options.pages
        elif options.tool == "ask_image":
            arguments["question"] = options.question
        elif options.tool == "extract_json":
            arguments["template"] = {"vendor": "", "date": "", "total": 0.0}
        result = await client.call_tool(options.tool, arguments, progress_callback=show_progress)

    for block in result.content:
        if block.type == "text":
            print(block.text)
    if result.is_error:
        raise SystemExit(1)
    print(json.dumps(result.structured_content, indent=2)[:2000])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="A path the server may read, a data URI, or a URL.")
    parser.add_argument(
        "--tool",
        default="read_table",
        choices=["ocr", "read_chart", "read_table", "extract_json", "ask_image"],
    )
    parser.add_argument("--pages", help="Pages for ocr, e.g. 1-3.")
    parser.add_argument("--question", default="What is this document?")
    parser.add_argument("--url", default="http://127.0.0.1:8765/mcp")
    anyio.run(main, parser.parse_args())
