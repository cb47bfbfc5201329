"""The server spawned over stdio and driven by the SDK's own client, on the tiny checkpoint.

The model load is held back by a gate file (see ``serve_for_tests.py``), so the listing is
measured while the model is certainly still loading; the loader also writes to stdout the way
libraries do, and the client must see nothing but protocol messages.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.mcp.conftest import server_command, spawn_env
from tests.mcp.serve_for_tests import NOISE
from tests.mcp.support import TASK_TOOLS, TOOL_NAMES, check_error, check_structured, tool_calls
from tests.support import await_until


class Recorder:
    """Progress events and stray transport messages (anything unparseable on stdout)."""

    def __init__(self) -> None:
        self.progress: list[tuple[float, float | None, str | None]] = []
        self.stray: list[Any] = []

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append((progress, total, message))

    async def on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            self.stray.append(message)


async def test_stdio_server_end_to_end(
    scripted_checkpoint: Path, images: Path, tmp_path: Path, stderr_file: Any
) -> None:
    gate = tmp_path / "gate"
    command, *args = server_command()
    params = StdioServerParameters(
        command=command,
        args=args,
        cwd=tmp_path,
        env=spawn_env(
            scripted_checkpoint,
            images,
            MISSISSIPPI_TEST_LOAD_GATE=str(gate),
            MISSISSIPPI_TEST_NOISE="1",
            MISSISSIPPI_TEST_CRASH_QUESTION="crash now",
        ),
    )
    recorder = Recorder()
    first: list[types.CallToolResult] = []
    spawned = time.perf_counter()
    with anyio.fail_after(120):
        transport = stdio_client(params, errlog=stderr_file)
        async with Client(transport, message_handler=recorder.on_message) as client:
            connected = time.perf_counter()
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            listed = time.perf_counter()
            assert not gate.exists()  # the model cannot have finished loading

            calls = dict(tool_calls("page.png"))

            async def call_during_load() -> None:
                first.append(
                    await client.call_tool(
                        "ocr", calls.pop("ocr"), progress_callback=recorder.on_progress
                    )
                )

            async with anyio.create_task_group() as group:
                group.start_soon(call_during_load)
                await await_until(
                    lambda: recorder.progress, timeout=60, what="a progress notification"
                )
                gate.touch()

            results = {name: await client.call_tool(name, a) for name, a in calls.items()}
            results["ocr"] = first[0]
            refused = await client.call_tool("ocr", {"image": "/etc/hostname"})
            crashed = await client.call_tool("ask", {"image": "page.png", "question": "crash now"})
            # Still serving (read and checked; page 2 of a one-page image stops before the model).
            after = await client.call_tool(
                "ask", {"image": "page.png", "question": "ok?", "pages": 2}
            )

    print(
        f"\nstdio: spawn+initialize {connected - spawned:.2f} s, "
        f"tools/list {1000 * (listed - connected):.1f} ms (model loading)"
    )
    assert tuple(tools) == TOOL_NAMES
    assert "loading the model" in (recorder.progress[0][2] or "")
    for name in TASK_TOOLS:
        check_structured(results[name], tools[name])
    check_error(refused, "access_denied")
    assert "secret" not in check_error(crashed, "internal error in ask")
    check_error(after, "invalid_input", "single image")
    # Nothing but protocol on stdout: the loader's prints went to stderr.
    assert recorder.stray == []
    stderr_file.seek(0)
    log = stderr_file.read()
    assert f"{NOISE} print" in log and f"{NOISE} fd1" in log and NOISE in log
    assert "tool ask crashed" in log and "injected crash with a secret detail" in log
