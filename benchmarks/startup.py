"""Start-up costs: CLI help, importing the package without torch, serve and MCP time to ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    paths = [str(ROOT), str(ROOT / "adapters"), str(ROOT / "mcp_server")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}


def _best_of(command: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=_env(), timeout=120)
        best = min(best, time.perf_counter() - started)
    return best


def cli_help_seconds(repeats: int = 5) -> float:
    """Wall time of ``mississippi-tools --help`` (best of ``repeats``)."""
    return _best_of([sys.executable, "-m", "mississippi_tools", "--help"], repeats)


def import_without_torch_seconds(repeats: int = 5) -> float:
    """Wall time of a Python that imports the package with torch made unimportable."""
    code = "import sys; sys.modules['torch'] = None; import mississippi_tools; mississippi_tools.MississippiVLM"
    return _best_of([sys.executable, "-c", code], repeats)


def python_startup_seconds(repeats: int = 5) -> float:
    """Wall time of a bare interpreter, for reference."""
    return _best_of([sys.executable, "-c", "pass"], repeats)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_time_to_ready(checkpoint: Path, timeout: float = 180.0) -> dict[str, float]:
    """Seconds from ``mississippi-tools serve`` start to an open port and to /health = 200."""
    import httpx

    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "mississippi_tools",
        "serve",
        "--model",
        str(checkpoint),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    port_open = ready = None
    try:
        while time.perf_counter() - started < timeout:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code
            except httpx.HTTPError:
                time.sleep(0.02)
                continue
            port_open = port_open or time.perf_counter() - started
            if status == 200:
                ready = time.perf_counter() - started
                break
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(30)
    return {"port_open_seconds": port_open or float("nan"), "ready_seconds": ready or float("nan")}


def mcp_time_to_ready(checkpoint: Path) -> dict[str, float]:
    """Seconds from spawning ``mississippi-mcp`` (stdio) to tools/list, and to a first tool answer."""
    import asyncio

    from mcp import Client, StdioServerParameters

    async def run() -> dict[str, float]:
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "mississippi_mcp", "--model", str(checkpoint), "--device", "cpu"],
            env=_env(),
        )
        started = time.perf_counter()
        async with Client(params) as client:
            await client.list_tools()
            listed = time.perf_counter() - started
            await client.call_tool("ask_image", {"image": _tiny_png_data_uri(), "question": "Hi?"})
            answered = time.perf_counter() - started
        return {"tools_list_seconds": listed, "first_answer_seconds": answered}

    return asyncio.run(run())


def _tiny_png_data_uri() -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def measure_startup(tiny_checkpoint: Path) -> dict[str, Any]:
    """Every start-up number of the report."""
    results: dict[str, Any] = {
        "python_seconds": python_startup_seconds(),
        "cli_help_seconds": cli_help_seconds(),
        "import_without_torch_seconds": import_without_torch_seconds(),
    }
    for name, fn in (("serve", serve_time_to_ready), ("mcp", mcp_time_to_ready)):
        try:
            results[name] = fn(tiny_checkpoint)
        except Exception as e:  # report what failed rather than losing the whole run
            results[name] = {"error": f"{type(e).__name__}: {e}"}
    return results
