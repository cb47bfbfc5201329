"""``--engine remote``: the tools over a running ``mississippi-tools serve`` (``connect``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mcp import Client

from mississippi_mcp import MCPSettings, ModelHolder, build_server
from mississippi_mcp.server import load_vlm
from tests.mcp.conftest import REPO
from tests.mcp.support import FAST_SETTINGS, check_error, check_structured, result_of, tool_calls


def remote_server(base_url: str, allowed: Path) -> tuple[object, ModelHolder]:
    settings = MCPSettings(
        engine="remote", base_url=base_url, allow_dirs=[allowed], **FAST_SETTINGS
    )
    holder = ModelHolder(lambda: load_vlm(settings), name=settings.model_name)
    return build_server(settings, holder=holder), holder


async def test_an_unreachable_service_is_an_actionable_error(images: Path) -> None:
    server, holder = remote_server("http://127.0.0.1:9", images)
    try:
        async with Client(server) as client:  # type: ignore[arg-type]
            result = await client.call_tool("ocr", {"image": "page.png"})
            refused = await client.call_tool("ocr", {"image": "/etc/hostname"})
    finally:
        holder.close()
    check_error(result, "remote_unreachable", "http://127.0.0.1:9", "base_url")
    check_error(refused, "access_denied")  # paths are still checked here, before any request


@pytest.fixture
def service(tiny_checkpoint: Path, tmp_path: Path) -> Iterator[str]:
    """``mississippi-tools serve`` over the tiny checkpoint, on a free port."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MISSISSIPPI_")},
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mississippi_tools", "serve", "--model", str(tiny_checkpoint),
         "--device", "cpu", "--dtype", "float32", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.slow
async def test_tools_over_a_running_service(service: str, images: Path) -> None:
    server, holder = remote_server(service, images)
    try:
        async with Client(server) as client:  # type: ignore[arg-type]
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            calls = dict(tool_calls("page.png"))
            results = {
                name: await client.call_tool(name, calls[name])
                for name in ("ocr", "extract", "ask")
            }
    finally:
        holder.close()
    for name, result in results.items():
        assert result_of(check_structured(result, tools[name]))["meta"]["engine"] == "remote"
    assert results["extract"].structured_content is not None
    assert set(results["extract"].structured_content["result"]["data"]) == {"ok"}
