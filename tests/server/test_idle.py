"""Idle unloading and the memory ceiling on the real service, with the tiny checkpoint loaded by
the service itself."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from mississippi_tools.errors import EngineDeadError
from tests.server.live import png_bytes, quiet_settings, run_server
from tests.support import wait_until

IMAGE = base64.b64encode(png_bytes((240, 240, 240))).decode()


def _health(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/health", timeout=30).json()
    return body


def _ocr(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/ocr", json={"image": IMAGE, "max_new_tokens": 4}, timeout=240)


def test_the_model_is_unloaded_when_idle_and_reloaded_by_the_next_request(
    tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = quiet_settings(
        model=str(tiny_checkpoint), device="cpu", dtype="float32", idle_unload=1.0
    )
    caplog.set_level(logging.INFO, logger="mississippi_tools")
    with run_server(settings) as live:
        wait_until(lambda: _health(live.url)["status"] == "ok", timeout=120, what="the load")
        first = _ocr(live.url)
        assert first.status_code == 200, first.text
        loaded = live.state.vlm
        assert loaded is not None
        wait_until(lambda: _health(live.url)["status"] == "idle", timeout=60, what="the unload")
        assert live.state.vlm is None and live.state.loader is not None
        assert live.state.loader.unloads == 1
        with pytest.raises(EngineDeadError, match="shut down"):
            loaded.ocr(png_bytes(), max_new_tokens=2)  # the unloaded engine is really closed
        second = _ocr(live.url)
        assert second.status_code == 200, second.text
        assert second.json()["text"] == first.json()["text"]
        # (it may be unloaded again already: the test only waits for the answer)
    messages = [record.getMessage() for record in caplog.records]
    assert any("unloaded the model" in m and "next request loads it again" in m for m in messages)
    assert any("loading the model" in m and "again for a request" in m for m in messages)


def test_a_model_over_the_memory_ceiling_is_refused_with_a_typed_error(
    tiny_checkpoint: Path,
) -> None:
    settings = quiet_settings(
        model=str(tiny_checkpoint), device="cpu", dtype="float32", max_memory="1kB"
    )
    with run_server(settings) as live:
        wait_until(lambda: _health(live.url)["status"] == "failed", timeout=60, what="a refusal")
        error = _health(live.url)["error"]
        assert error["code"] == "model_too_large"
        assert "ceiling is 1.0 kB" in error["message"]
        refused = _ocr(live.url)
        assert refused.status_code == 503
        assert "--max-memory" in refused.json()["error"]["message"]
