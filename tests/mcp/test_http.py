"""The server spawned over streamable HTTP with a bearer token, driven by the SDK's client.

One server process serves every test of this module (as in production, several clients share
one loaded model). Its model load is held back by a gate file until the first test has measured
the listing while the model loads.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.mcp.conftest import server_command, spawn_env
from tests.mcp.support import (
    TASK_TOOLS,
    TOOL_NAMES,
    check_error,
    check_structured,
    text_of,
    tool_calls,
)
from tests.support import await_until

TOKEN = "test-token-0123456789"
PDF = Path(__file__).parents[1] / "bad_inputs" / "three_pages.pdf"


@dataclass
class HTTPServer:
    url: str
    gate: Path
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def http_server(
    scripted_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HTTPServer]:
    root = tmp_path_factory.mktemp("mcp-http")
    allowed = root / "allowed"
    allowed.mkdir()
    from PIL import Image

    Image.new("RGB", (160, 120), "white").save(allowed / "page.png")
    (allowed / "three_pages.pdf").write_bytes(PDF.read_bytes())
    port = free_port()
    gate = root / "gate"
    env = spawn_env(
        scripted_checkpoint,
        allowed,
        MISSISSIPPI_MCP_TRANSPORT="streamable-http",
        MISSISSIPPI_MCP_PORT=str(port),
        MISSISSIPPI_MCP_HTTP_TOKEN=TOKEN,
        MISSISSIPPI_TEST_LOAD_GATE=str(gate),
        MISSISSIPPI_TEST_CRASH_QUESTION="crash now",
    )
    stdout, stderr = root / "stdout.log", root / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(server_command(), cwd=root, env=env, stdout=out, stderr=err)
    server = HTTPServer(f"http://127.0.0.1:{port}/mcp", gate, process, stdout, stderr)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, server.log()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.1)
        yield server
    finally:
        gate.touch()
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # A graceful shutdown on SIGTERM (uvicorn then exits with the signal's status, -15).
    assert process.returncode in (0, -15), server.log()
    assert "Application shutdown complete" in server.log()
    assert stdout.read_text() == ""  # logs go to stderr only
    assert server.log().count("loading the model") == 1  # one load for every client


@asynccontextmanager
async def connect(server: HTTPServer, token: str = TOKEN) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(server.url, http_client=http)) as client,
    ):
        yield client


@pytest.fixture
def ready(http_server: HTTPServer) -> HTTPServer:
    """The server with its model loaded (opens the gate)."""
    http_server.gate.touch()
    return http_server


def test_requests_without_the_token_are_refused(http_server: HTTPServer) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = httpx.post(http_server.url, json=body, headers=headers, timeout=10)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "MISSISSIPPI_MCP_HTTP_TOKEN" in response.json()["message"]


async def test_listing_answers_while_loading_then_every_tool(http_server: HTTPServer) -> None:
    progress: list[str | None] = []
    first: list[types.CallToolResult] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    with anyio.fail_after(120):
        started = time.perf_counter()
        async with connect(http_server) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            listed = time.perf_counter() - started
            assert not http_server.gate.exists()  # the model is certainly still loading

            calls = dict(tool_calls("page.png"))

            async def call_during_load() -> None:
                first.append(
                    await client.call_tool(
                        "read_table", calls.pop("read_table"), progress_callback=on_progress
                    )
                )

            async with anyio.create_task_group() as group:
                group.start_soon(call_during_load)
                await await_until(lambda: progress, timeout=60, what="a progress notification")
                http_server.gate.touch()
            results = {name: await client.call_tool(name, a) for name, a in calls.items()}
            results["read_table"] = first[0]
    print(f"\nstreamable HTTP: initialize + tools/list {1000 * listed:.1f} ms (model loading)")
    assert listed < 2.0
    assert tuple(tools) == TOOL_NAMES
    assert "loading the model" in (progress[0] or "")
    for name in TASK_TOOLS:
        check_structured(results[name], tools[name])


async def test_a_client_disconnecting_mid_call_leaves_the_server_serving(ready: HTTPServer) -> None:
    progress: list[str | None] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    with anyio.fail_after(60):
        with anyio.CancelScope() as scope:
            async with connect(ready) as client, anyio.create_task_group() as group:

                async def long_call() -> None:
                    await client.call_tool(
                        "ocr",
                        {"image": "three_pages.pdf", "pages": "1-3"},
                        progress_callback=on_progress,
                    )

                group.start_soon(long_call)
                await await_until(lambda: progress, timeout=30, what="a progress notification")
                scope.cancel()  # drop the connection in the middle of the call
        assert scope.cancelled_caught
        async with connect(ready) as client:
            assert len((await client.list_tools()).tools) == len(TOOL_NAMES)
            after = await client.call_tool("ask", {"image": "page.png", "question": "?"})
    assert not after.is_error, text_of(after)
    assert ready.process.poll() is None


async def test_errors_and_crashes_are_results_and_the_server_goes_on(ready: HTTPServer) -> None:
    with anyio.fail_after(60):
        async with connect(ready) as client:
            refused = await client.call_tool("read_chart", {"image": "../stderr.log"})
            crashed = await client.call_tool("ask", {"image": "page.png", "question": "crash now"})
            after = await client.call_tool("ask", {"image": "page.png", "question": "?"})
    check_error(refused, "access_denied", "outside the allowed roots")
    assert "secret" not in check_error(crashed, "internal error in ask (RuntimeError)")
    assert not after.is_error
    assert "injected crash with a secret detail" in ready.log()


async def test_several_clients_at_once(ready: HTTPServer) -> None:
    answers: list[types.CallToolResult] = []

    async def one(index: int) -> None:
        async with connect(ready) as client:
            assert len((await client.list_tools()).tools) == len(TOOL_NAMES)
            # Read and checked, then refused before any generation (page 2 of a 1-page image).
            answers.append(
                await client.call_tool("read_chart", {"image": "page.png", "pages": 2 + index})
            )

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for index in range(4):
                group.start_soon(one, index)
    assert len(answers) == 4
    for answer in answers:
        check_error(answer, "invalid_input", "single image")
