"""Running the server: stdio (the default) and streamable HTTP behind an optional bearer token.

stdio: the SDK's transport points file descriptor 1 at stderr while it serves, so library prints,
progress bars and warnings can never corrupt the protocol; everything this package logs goes to
stderr as well.

Streamable HTTP: the SDK's Starlette app, served by uvicorn on ``127.0.0.1`` unless told
otherwise. With a token, every request must carry ``Authorization: Bearer <token>`` (compared in
constant time) or gets ``401``. Settings refuse a non-loopback address without a token. On
loopback the SDK also checks ``Host`` and ``Origin`` headers against DNS rebinding.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from starlette.types import ASGIApp, Receive, Scope, Send

    from mississippi_mcp.server import ServerState
    from mississippi_mcp.settings import MCPSettings

__all__ = ["HTTP_PATH", "BearerTokenMiddleware", "http_app", "serve_http", "serve_stdio"]

logger = logging.getLogger("mississippi_mcp")

HTTP_PATH = "/mcp"
"""Path of the streamable HTTP endpoint."""


class BearerTokenMiddleware:
    """ASGI middleware refusing HTTP requests without ``Authorization: Bearer <token>``.

    Args:
        app: The application to protect (lifespan events pass through).
        token: The expected token.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("the bearer token must not be empty")
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an authorised request on; answer ``401`` to any other."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                given = value
                break
        if hmac.compare_digest(given, self._expected):
            await self.app(scope, receive, send)
            return
        reason = "missing" if not given else "wrong"
        logger.warning("refused an HTTP request with a %s bearer token", reason)
        response = JSONResponse(
            {
                "error": "unauthorized",
                "message": f"{reason} bearer token; send 'Authorization: Bearer <token>' with "
                "the token the server was started with (MISSISSIPPI_MCP_HTTP_TOKEN)",
            },
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="mississippi-mcp"'},
        )
        await response(scope, receive, send)


def http_app(server: MCPServer[ServerState], settings: MCPSettings) -> ASGIApp:
    """The streamable HTTP application, behind the bearer token when one is set."""
    app: ASGIApp = server.streamable_http_app(streamable_http_path=HTTP_PATH, host=settings.host)
    token = settings.token_value
    return BearerTokenMiddleware(app, token) if token else app


async def serve_http(server: MCPServer[ServerState], settings: MCPSettings) -> None:
    """Serve streamable HTTP with uvicorn until interrupted."""
    import uvicorn

    config = uvicorn.Config(
        http_app(server, settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # uvicorn's loggers propagate to ours, on stderr
        log_level=settings.log_level.lower(),
        lifespan="on",
    )
    guard = "a bearer token is required" if settings.token_value else "no token"
    logger.info(
        "serving MCP over streamable HTTP at http://%s:%s%s (%s)",
        settings.host,
        settings.port,
        HTTP_PATH,
        guard,
    )
    await uvicorn.Server(config).serve()


async def serve_stdio(server: MCPServer[ServerState]) -> None:
    """Serve over stdin/stdout until the client closes stdin."""
    await server.run_stdio_async()
