"""An OpenAI-compatible server on 127.0.0.1 that answers from a script.

It stands in for servers this machine cannot run (vLLM needs a GPU) and for failures a healthy
server does not produce on demand. The answers travel over a real socket, so the remote engine's
HTTP client, retries and timeouts are exercised as they are against a live server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

#: Close the connection without answering (the client sees the server disconnect).
DROP = "drop"


@dataclass(frozen=True)
class Stall:
    """Hold the request for ``seconds`` without answering, then close the connection."""

    seconds: float


Answer = httpx.Response | str | Stall


@dataclass
class Script:
    """What the server says: ``/v1/models`` as ``owned_by`` (404 when ``None``), then ``answers``
    to successive POSTs, in order. ``bodies`` collects the JSON bodies received."""

    owned_by: str | None
    answers: list[Answer]
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_answer(self, body: dict[str, Any]) -> Answer:
        with self.lock:
            self.bodies.append(body)
            return self.answers.pop(0)


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, response: httpx.Response) -> None:
            body = response.content
            self.send_response(response.status_code)
            for name, value in response.headers.items():
                if name.lower() not in ("content-length", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/v1/models" and script.owned_by is not None:
                models = {"data": [{"id": "served", "owned_by": script.owned_by}]}
                self._send(httpx.Response(200, json=models))
            else:
                self._send(httpx.Response(404, json={"detail": "Not Found"}))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            answer = script.next_answer(json.loads(self.rfile.read(length)))
            if isinstance(answer, Stall):
                time.sleep(answer.seconds)
                self.close_connection = True
            elif answer == DROP:
                self.close_connection = True
            else:
                assert isinstance(answer, httpx.Response)
                self._send(answer)

    return Handler


@contextmanager
def scripted_server(script: Script) -> Iterator[str]:
    """Serve ``script`` on a free port of 127.0.0.1; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="scripted-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
