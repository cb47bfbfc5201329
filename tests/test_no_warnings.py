"""No warning from our own calls reaches a user: each command runs with warnings as errors.

The CLI, the HTTP service and the MCP server run as real processes under
``-W error::FutureWarning -W error::DeprecationWarning`` (what a user or a downstream project with
strict warnings runs), do real work on the tiny checkpoint, and must neither fail nor print a
warning. A deprecated call into transformers or any other dependency would end the command here.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from PIL import Image

from tests.mcp.conftest import spawn_env

REPO = Path(__file__).resolve().parent.parent
STRICT = ["-W", "error::FutureWarning", "-W", "error::DeprecationWarning"]
FAST = ["--max-new-tokens", "2", "--max-tiles", "1"]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "mcp_server")])}
    env.pop("MISSISSIPPI_API_KEY", None)
    env.pop("PYTHONWARNINGS", None)
    return env


def _page(tmp_path: Path) -> Path:
    path = tmp_path / "page.png"
    Image.new("RGB", (96, 64), "white").save(path)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli(tiny_checkpoint: Path, tmp_path: Path) -> None:
    page = _page(tmp_path)
    done = subprocess.run(
        [sys.executable, *STRICT, "-m", "mississippi_tools", "ocr", str(page),
         "--model", str(tiny_checkpoint), "--json", *FAST],
        env=_env(), capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"result"' in done.stdout
    assert "Warning" not in done.stderr, done.stderr


def test_http_service(tiny_checkpoint: Path, tmp_path: Path) -> None:
    port = _free_port()
    log = (tmp_path / "serve.log").open("w+", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, *STRICT, "-m", "mississippi_tools", "serve",
         "--model", str(tiny_checkpoint), "--device", "cpu", "--dtype", "float32",
         "--port", str(port)],
        env=_env(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"serve exited: {(tmp_path / 'serve.log').read_text()}"
            assert time.monotonic() < deadline, "serve was not ready within 180 s"
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        image = base64.b64encode(_page(tmp_path).read_bytes()).decode()
        response = httpx.post(
            f"{url}/v1/ocr",
            json={"image": image, "max_new_tokens": 2, "max_tiles": 1},
            timeout=120,
        )
        assert response.status_code == 200, response.text
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()
    output = (tmp_path / "serve.log").read_text(encoding="utf-8")
    assert "Warning" not in output, output


async def test_mcp_server(tiny_checkpoint: Path, tmp_path: Path) -> None:
    page = _page(tmp_path)
    params = StdioServerParameters(
        command=sys.executable,
        args=[*STRICT, "-m", "mississippi_mcp"],
        cwd=tmp_path,
        env=spawn_env(tiny_checkpoint, tmp_path),
    )
    with (tmp_path / "stderr.log").open("w+", encoding="utf-8") as stderr:
        with anyio.fail_after(240):
            async with Client(stdio_client(params, errlog=stderr)) as client:
                result = await client.call_tool("ocr", {"image": str(page)})
        assert not result.is_error, result
    output = (tmp_path / "stderr.log").read_text(encoding="utf-8")
    assert "Warning" not in output, output
