"""ASGI middleware of the service: the request-size limit, and what counts as using the model.

:class:`BodyLimitMiddleware` reads a request's body before the app sees it and answers 413 as soon
as it passes the limit, whether the client declared a ``Content-Length`` or streams chunks. The
app then gets the body from memory; later ``receive`` calls go to the server again, so
disconnects are still noticed.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mississippi_tools.server.errors import error_body
from mississippi_tools.serving import Activity

__all__ = ["ActivityMiddleware", "BodyLimitMiddleware"]

_DRAIN_MIN_BYTES = 64 * 1024 * 1024


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413 and the JSON error shape.

    Args:
        app: The wrapped app.
        max_bytes: Largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call: bodies of POST and the like are read and checked first."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._drain(receive)
            await self._refuse(send, declared)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await self._drain(receive)
                await self._refuse(send, size)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive: Receive) -> None:
        """Read and drop the rest of the body (up to a bound), so the client sees the 413.

        A client still sending when the server answers and closes gets a broken pipe instead of
        the answer; past the bound the connection is closed anyway.
        """
        budget = max(4 * self.max_bytes, _DRAIN_MIN_BYTES)
        while budget > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            budget -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, send: Send, size: int) -> None:
        payload = error_body(
            413,
            "request_too_large",
            f"the request body is {size:,} bytes or more; this server accepts at most "
            f"{self.max_bytes:,} bytes; send a smaller image",
        )
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class ActivityMiddleware:
    """Count ``POST /v1/...`` requests as using the model, for idle unloading.

    Polling a job's status or listing models does not keep the model loaded; the jobs count
    themselves while they run.

    Args:
        app: The wrapped app.
        activity: The service's :class:`~mississippi_tools.serving.Activity`.
    """

    def __init__(self, app: ASGIApp, activity: Activity) -> None:
        self.app = app
        self.activity = activity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call, counting it while it runs when it is a model request."""
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not str(scope["path"]).startswith("/v1/")
            or str(scope["path"]).startswith("/v1/jobs")
        ):
            await self.app(scope, receive, send)
            return
        with self.activity.use():
            await self.app(scope, receive, send)
