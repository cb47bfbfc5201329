"""Interop: langchain-mcp-adapters loads and calls our tools over stdio, from its own venv.

langchain-mcp-adapters pins ``mcp<2``, so it cannot share our environment (mcp 2.x). The test
builds a separate virtual environment with ``python -m venv`` and ``pip install``, cached under
the temporary directory by adapter version and Python version (the first run takes a minute or
two; later runs reuse it), and runs a small client script there against our server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import venv
from pathlib import Path
from typing import Any

import pytest

from tests.mcp.conftest import server_command, spawn_env
from tests.mcp.support import TOOL_NAMES

ADAPTERS_VERSION = "0.3.2"

CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys

    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langchain_mcp_adapters.tools import load_mcp_tools


    async def main() -> None:
        client = MultiServerMCPClient({"mississippi": json.loads(sys.argv[1])})
        async with client.session("mississippi") as session:  # one server process
            tools = {tool.name: tool for tool in await load_mcp_tools(session)}

            async def call(name, args, call_id):
                message = await tools[name].ainvoke(
                    {"type": "tool_call", "id": call_id, "name": name, "args": args}
                )
                return {
                    "status": message.status,
                    "content": message.content,
                    "artifact": message.artifact,
                }

            out = {
                "tools": {name: tool.description for name, tool in tools.items()},
                "schemas": {name: tool.args_schema for name, tool in tools.items()},
                "table": await call("read_table", {"image": "page.png"}, "1"),
                "ocr": await call("ocr", {"image": "page.png"}, "2"),
                "refused": await call("ocr", {"image": "/etc/hostname"}, "3"),
            }
        print(json.dumps(out, default=str))


    asyncio.run(main())
    """
)


def adapters_python() -> Path:
    """The interpreter of a cached venv holding langchain-mcp-adapters (built on first use)."""
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    root = Path(tempfile.gettempdir()) / f"mississippi-lc-mcp-adapters-{ADAPTERS_VERSION}-{tag}"
    python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    ready = root / ".ready"
    if not ready.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             f"langchain-mcp-adapters=={ADAPTERS_VERSION}"],
            check=True,
            timeout=900,
        )  # fmt: skip
        ready.write_text(ADAPTERS_VERSION)
    return python


@pytest.mark.slow
def test_langchain_mcp_adapters_load_and_call_our_tools(
    scripted_checkpoint: Path, images: Path, tmp_path: Path
) -> None:
    python = adapters_python()
    versions = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('mcp'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert versions.startswith("1."), versions  # the adapters really run on mcp 1.x
    command, *args = server_command()
    connection: dict[str, Any] = {
        "transport": "stdio",
        "command": command,
        "args": args,
        "env": spawn_env(scripted_checkpoint, images),
        "cwd": str(tmp_path),
    }
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    completed = subprocess.run(
        [str(python), str(script), json.dumps(connection)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    assert tuple(out["tools"]) == TOOL_NAMES
    assert "image" in out["schemas"]["ocr"]["properties"]
    table = out["table"]
    assert table["status"] == "success"
    assert "| total |" in json.dumps(table["content"])
    assert table["artifact"]["structured_content"]["result"]["columns"] == ["total"]
    assert out["ocr"]["status"] == "success"
    ocr = out["ocr"]["artifact"]["structured_content"]
    assert ocr["pages"] is None  # one image: one result, not a list of pages
    assert ocr["result"]["meta"]["engine"] == "local"
    assert out["refused"]["status"] == "error"
    assert "access_denied" in json.dumps(out["refused"]["content"])
