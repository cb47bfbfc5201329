"""``mississippi-tools serve`` as a real process: the port opens at once, SIGTERM drains."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support import wait_until


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow  # a process start with torch: 20-30 s on a busy 2-core machine
def test_serve_command_answers_then_drains_on_sigterm(tiny_checkpoint: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[2]),
        "MISSISSIPPI_LOG_LEVEL": "warning",
    }
    env.pop("MISSISSIPPI_API_KEY", None)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mississippi_tools", "serve",
            "--model", str(tiny_checkpoint), "--device", "cpu", "--dtype", "float32",
            "--port", str(port), "--shutdown-grace", "60",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        statuses = set()
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, f"not ready; saw {statuses}"
            try:
                status = httpx.get(f"{url}/health", timeout=5).status_code
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            statuses.add(status)
            if status == 200:
                break
            time.sleep(0.05)
        results: list[httpx.Response] = []
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": "Tell me everything."}],
            "max_tokens": 60,
            "ignore_eos": True,
        }
        client = threading.Thread(
            target=lambda: results.append(
                httpx.post(f"{url}/v1/chat/completions", json=body, timeout=90)
            )
        )
        client.start()

        def running() -> bool:
            assert client.is_alive() or results, "the request ended before the signal"
            return "mississippi_running_requests 1.0" in httpx.get(f"{url}/metrics").text

        wait_until(running, timeout=60, what="the request running")
        process.send_signal(signal.SIGTERM)
        client.join(90)
        assert results, "no answer to the in-flight request"
        assert results[0].status_code == 200
        assert results[0].json()["usage"]["completion_tokens"] == 60
        process.wait(60)
        # uvicorn re-raises the signal after a graceful shutdown
        assert process.returncode in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def test_serve_command_refuses_a_public_address_without_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from mississippi_tools.cli import app

    monkeypatch.delenv("MISSISSIPPI_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 2
    assert "API key" in result.output
    bad = CliRunner().invoke(app, ["serve", "--max-batch-size", "0"])
    assert bad.exit_code == 2


@pytest.mark.slow  # a process start with torch
def test_serve_refuses_a_model_over_max_memory_naming_the_flag(tiny_checkpoint: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    env.pop("MISSISSIPPI_API_KEY", None)
    completed = subprocess.run(
        [
            sys.executable, "-m", "mississippi_tools", "serve",
            "--model", str(tiny_checkpoint), "--device", "cpu", "--dtype", "float32",
            "--port", str(_free_port()), "--max-memory", "1kB", "--idle-unload", "60",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert completed.returncode != 0
    assert "ceiling is 1.0 kB" in completed.stderr, completed.stderr[-2000:]
    assert "--max-memory" in completed.stderr
