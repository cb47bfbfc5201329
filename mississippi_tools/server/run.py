"""Running the service with uvicorn: :func:`serve` (the CLI's ``serve``) and :class:`Server`.

While :func:`serve` runs, the service's own messages (what model loads from where, when it is
ready and how long that took) go to stderr in uvicorn's format and at its log level.

Shutdown (SIGTERM or Ctrl-C): uvicorn stops accepting connections and waits for in-flight
requests. :class:`Server` gives them ``shutdown_grace`` seconds; then the engine cancels what is
still running, so those requests end with a clean 503 (``cancelled``) instead of a dropped
connection; then the app's lifespan closes the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.config import LOG_LEVELS
from uvicorn.logging import DefaultFormatter

from mississippi_tools.server.app import create_app
from mississippi_tools.server.settings import ServerSettings
from mississippi_tools.server.state import ServiceState
from mississippi_tools.serving import LOAD_FAILURE

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mississippi_tools.server.state import VLMFactory
    from mississippi_tools.vlm import MississippiVLM

__all__ = ["Server", "build_server", "serve"]

logger = logging.getLogger(__name__)

#: Seconds between cancelling in-flight work and uvicorn giving up on it.
_CANCEL_MARGIN = 2.0
#: Seconds between checks of whether the model has loaded.
_LOAD_POLL = 0.2


class Server(uvicorn.Server):
    """uvicorn's server, with a shutdown that ends in-flight requests cleanly."""

    def __init__(self, config: uvicorn.Config, state: ServiceState) -> None:
        super().__init__(config)
        self.service = state

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, let in-flight requests finish within the grace period, then stop."""
        self.service.begin_stopping()
        grace = self.service.settings.shutdown_grace
        loop = asyncio.get_running_loop()
        timer = loop.call_later(
            grace, lambda: loop.run_in_executor(None, self.service.cancel_in_flight)
        )
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()


def build_server(app: FastAPI, settings: ServerSettings, **config: Any) -> Server:
    """A :class:`Server` for ``app`` with the settings' address, logging and grace period.

    Extra keyword arguments go to :class:`uvicorn.Config`.
    """
    state = app.state.service
    assert isinstance(state, ServiceState)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "ws": "none",
        "lifespan": "on",
        "timeout_graceful_shutdown": settings.shutdown_grace + _CANCEL_MARGIN,
        "proxy_headers": False,
        "server_header": False,
    }
    options.update(config)
    return Server(uvicorn.Config(app, **options), state)


def serve(
    settings: ServerSettings | None = None,
    *,
    vlm: MississippiVLM | None = None,
    vlm_factory: VLMFactory | None = None,
) -> None:
    """Run the service until SIGTERM or Ctrl-C (blocks).

    The port opens at once; the model loads in the background (``GET /health`` says when it is
    ready). A model that fails to load stops the server.

    Args:
        settings: The settings (default: from ``MISSISSIPPI_*`` variables).
        vlm: Serve this model instead of loading one.
        vlm_factory: Builds the model from the settings (default: ``MississippiVLM.load``).

    Raises:
        InsecureBindError: A non-loopback host without an API key.
        ModelLoadError: The model could not be loaded (raised after the server stopped).
    """
    settings = settings or ServerSettings()
    settings.check_bind()
    with _console(settings.log_level):
        app = create_app(settings, vlm, vlm_factory=vlm_factory)
        server = build_server(app, settings)
        state: ServiceState = app.state.service

        async def watch_loading() -> None:
            while state.phase == "loading":
                await asyncio.sleep(_LOAD_POLL)
            if state.phase == "failed":
                server.should_exit = True

        async def main() -> None:
            watcher = asyncio.ensure_future(watch_loading())
            try:
                await server.serve()
            finally:
                watcher.cancel()

        asyncio.run(main())
    if state.load_error is not None:
        raise state.load_error


class _NotLoadFailures(logging.Filter):
    """Drop the record of a failed load: :func:`serve` raises that error to its caller."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, LOAD_FAILURE, False)


@contextlib.contextmanager
def _console(level: str) -> Iterator[None]:
    """Send the service's loggers (and the loader's) to stderr, formatted as uvicorn's lines."""
    loggers = [
        logging.getLogger(n) for n in ("mississippi_tools.server", "mississippi_tools.serving")
    ]
    handler = logging.StreamHandler()
    handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s"))
    handler.addFilter(_NotLoadFailures())
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(LOG_LEVELS[level])
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, level_before in zip(loggers, previous, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level_before)
