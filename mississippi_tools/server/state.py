"""What the service shares between requests: the model (once loaded), limits, and shutdown.

The model loads in a background thread while the port already answers: :class:`ServiceState`
starts ``loading``, becomes ``ready`` (or ``failed``), and ``stopping`` on shutdown. Endpoints get
the model through :meth:`ServiceState.require_vlm`, which raises
:class:`~mississippi_tools.server.errors.NotReadyError` (503 with ``Retry-After``) otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from starlette.requests import Request

from mississippi_tools.engine.base import Engine, GenerationOutput, GenerationRequest
from mississippi_tools.errors import MississippiError
from mississippi_tools.images import ImageLimits
from mississippi_tools.server.errors import (
    SERVER_SPELLING,
    ClientDisconnectedError,
    NotReadyError,
)
from mississippi_tools.serving import Activity, ModelLoader
from mississippi_tools.sources import SourcePolicy

if TYPE_CHECKING:
    from mississippi_tools.server.metrics import ServiceMetrics
    from mississippi_tools.server.settings import ServerSettings
    from mississippi_tools.vlm import MississippiVLM

__all__ = ["Phase", "ServiceState", "VLMFactory", "generate", "run_cancellable", "submit"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

Phase = Literal["loading", "ready", "idle", "failed", "stopping"]
"""Where the service is in its life (``idle``: the model was unloaded after idle time; the next
request loads it again)."""

VLMFactory = Callable[["ServerSettings"], "MississippiVLM"]
"""Builds the model from the settings (runs in a background thread)."""

#: Seconds suggested to clients while the model loads.
LOADING_RETRY_AFTER = 5.0
#: Seconds between log lines while a request waits for the model to load again.
_RELOAD_REPORT = 5.0


class ServiceState:
    """The service's shared state, stored on ``app.state.service``.

    Args:
        settings: The settings.
        metrics: The Prometheus metrics of this app.
    """

    def __init__(self, settings: ServerSettings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.loader: ModelLoader | None = None
        self.activity = Activity()
        self.stopping = False
        self.started = time.time()
        self.limits = ImageLimits(
            max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )
        # Servers never read local paths; URLs only when enabled.
        self.policy = SourcePolicy(
            allowed_roots=(),
            allow_urls=settings.allow_urls,
            allow_private_urls=settings.allow_private_urls,
        )
        # Streams wait on the engine's text queue in threads; a pool of their own keeps them
        # from starving the default executor (which decodes images and prepares prompts).
        self.stream_pool = ThreadPoolExecutor(
            max_workers=settings.max_batch_size + settings.max_queue_size + 4,
            thread_name_prefix="mississippi-stream",
        )

    # -- life cycle ---------------------------------------------------------------------------

    def start_loading(self, loader: ModelLoader) -> None:
        """Serve the model ``loader`` loads (started here unless it is loaded already)."""
        self.loader = loader
        loader.start()

    @property
    def phase(self) -> Phase:
        """``loading``, ``ready``, ``idle``, ``failed`` or ``stopping``, from the loader."""
        if self.stopping or self.loader is None:
            return "stopping" if self.stopping else "loading"
        if self.loader.unloaded:
            return "idle"
        return {
            "idle": "loading",
            "loading": "loading",
            "ready": "ready",
            "failed": "failed",
            "closed": "stopping",
        }[self.loader.state]  # type: ignore[return-value]

    @property
    def vlm(self) -> MississippiVLM | None:
        """The model, once loaded."""
        return None if self.loader is None else self.loader.vlm

    @property
    def load_error(self) -> BaseException | None:
        """Why the model could not be loaded."""
        return None if self.loader is None else self.loader.error

    def begin_stopping(self) -> None:
        """Shutdown started: refuse new work."""
        self.stopping = True

    def cancel_in_flight(self) -> None:
        """Cancel every request still running (their handlers answer 503 at once)."""
        vlm = self.vlm
        if vlm is None:
            return
        close = getattr(vlm.engine, "close", None)
        if close is not None:
            logger.warning("shutdown grace period over: cancelling in-flight requests")
            close()

    # -- access ---------------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The name clients use for the model."""
        if self.settings.served_model_name:
            return self.settings.served_model_name
        return self.vlm.model_id if self.vlm is not None else self.settings.model

    def require_vlm(self) -> MississippiVLM:
        """The loaded model.

        Raises:
            NotReadyError: Still loading (503, retry in a few seconds), failed to load, or
                shutting down.
        """
        vlm = self.vlm
        if self.phase == "ready" and vlm is not None:
            return vlm
        if self.phase == "loading":
            raise NotReadyError(
                f"the model {self.settings.model!r} is still loading; retry shortly "
                "(GET /health answers 200 once it is ready)",
                retry_after=LOADING_RETRY_AFTER,
            )
        if self.phase == "failed":
            reason = self.load_error
            detail = (
                reason.describe(SERVER_SPELLING)
                if isinstance(reason, MississippiError)
                else str(reason)
            )
            raise NotReadyError(
                f"the model could not be loaded: {detail}; fix the cause and restart the server",
                code="model_load_failed",
                retry_after=60.0,
            )
        raise NotReadyError(
            "the server is shutting down; retry on another instance or after it restarts",
            code="shutting_down",
            retry_after=LOADING_RETRY_AFTER,
        )

    async def acquire_vlm(self) -> MississippiVLM:
        """The model, loading it again first when it was unloaded for idleness.

        The reload's progress goes to the log (and ``GET /health`` says ``loading``); the
        request waits for it, up to the request timeout.

        Raises:
            NotReadyError: See :meth:`require_vlm`; also a reload that failed or took too long.
        """
        loader = self.loader
        if loader is not None and loader.unloads and loader.state in ("idle", "loading"):
            if loader.state == "idle":
                logger.info("loading the model %s again for a request", loader.name)

            async def report(elapsed: float, message: str) -> None:
                if elapsed:
                    logger.info("%s", message)

            try:
                await loader.await_ready(
                    timeout=self.request_timeout, progress=report, interval=_RELOAD_REPORT
                )
            except MississippiError as e:
                logger.error("the model could not be loaded again: %s", e)
        return self.require_vlm()

    def require_open(self) -> None:
        """Refuse new work (jobs) when the model failed to load or the service is stopping.

        Raises:
            NotReadyError: Failed to load, or shutting down (a load still running is fine: jobs
                wait for it).
        """
        if self.phase not in ("loading", "idle"):
            self.require_vlm()

    @property
    def request_timeout(self) -> float | None:
        """The deadline of every generation, from the settings."""
        return self.settings.request_timeout

    def close(self) -> None:
        """Release the stream threads."""
        self.stream_pool.shutdown(wait=False, cancel_futures=True)


def _cancel_once_submitted(pending: asyncio.Future[Any]) -> None:
    if not pending.cancelled() and pending.exception() is None:
        pending.result().cancel()


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def submit(engine: Engine, request: GenerationRequest) -> Any:
    """Submit to a local engine from async code; returns its request handle.

    Preparation runs in a worker thread. If the caller is cancelled meanwhile, the request is
    cancelled as soon as it is queued instead of running with nobody waiting for it.
    """
    submit_now = engine.submit  # type: ignore[attr-defined]
    pending = asyncio.get_running_loop().run_in_executor(None, submit_now, request)
    try:
        return await asyncio.shield(pending)
    except asyncio.CancelledError:
        pending.add_done_callback(_cancel_once_submitted)
        raise


async def generate(engine: Engine, request: GenerationRequest) -> GenerationOutput:
    """Run a request from async code; cancelling the caller cancels the request in the engine.

    With a local engine the request goes through its handle, so a cancelled request is freed at
    the next step and counted as cancelled; other engines use their own ``agenerate``.
    """
    if not hasattr(engine, "submit"):
        return await engine.agenerate(request)
    handle = await submit(engine, request)
    result = asyncio.wrap_future(handle.future)
    result.add_done_callback(_retrieve)
    try:
        output: GenerationOutput = await asyncio.shield(result)
    except asyncio.CancelledError:
        handle.cancel()
        raise
    return output


async def _until_disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def run_cancellable(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it when the client disconnects first.

    Cancelling a generation frees its batch slot at the engine's next step.

    Raises:
        ClientDisconnectedError: The client went away (nobody is left to answer).
    """
    task: asyncio.Future[T] = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnected(request))
    try:
        both: set[asyncio.Future[Any]] = {task, watcher}
        done, _ = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):  # the cancellation, or a failure: nobody listens
            await task
        raise ClientDisconnectedError
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
