"""Run the real service on 127.0.0.1 in a thread of the test process (shared by server and remote
engine tests)."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from mississippi_tools.server import ServerSettings, build_server, create_app
from mississippi_tools.server.run import Server
from mississippi_tools.server.state import ServiceState


@dataclass
class LiveServer:
    url: str
    server: Server
    thread: threading.Thread

    @property
    def state(self) -> ServiceState:
        return self.server.service

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the server did not stop"


def quiet_settings(**overrides: Any) -> ServerSettings:
    """Settings for tests: any free port, little logging; nothing read from the environment."""
    values: dict[str, Any] = {"port": 0, "log_level": "warning", "access_log": False}
    values.update(overrides)
    return ServerSettings(**values)


@contextmanager
def run_server(
    settings: ServerSettings | None = None, vlm: Any = None, **app_options: Any
) -> Iterator[LiveServer]:
    """Start uvicorn with the app on a free port; stop it (gracefully) afterwards."""
    settings = settings or quiet_settings()
    app = create_app(settings, vlm, **app_options)
    server = build_server(app, settings)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the server thread died while starting"
        assert time.monotonic() < deadline, "the server did not start within 30 s"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    live = LiveServer(f"http://127.0.0.1:{port}", server, thread)
    try:
        yield live
    finally:
        if thread.is_alive():
            live.stop()


def png_bytes(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 64)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


PDF_BYTES = (Path(__file__).parents[1] / "bad_inputs" / "three_pages.pdf").read_bytes()
"""A three-page PDF, for page selections."""
