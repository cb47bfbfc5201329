"""What the HTTP service and the MCP server share: background loading, readiness, settings.

A server answers at once (``/health``, ``initialize``, ``tools/list``) while the model loads in a
:class:`ModelLoader` thread; requests that need the model wait for it (:meth:`ModelLoader.wait`,
:meth:`ModelLoader.await_ready`, with progress callbacks) or are told to retry. Each server reads
:class:`ModelSettings` (the model, where it runs, what inputs it takes) under its own environment
prefix: ``MISSISSIPPI_`` for ``mississippi-tools serve``, ``MISSISSIPPI_MCP_`` for
``mississippi-mcp``, so that one machine can run both without their settings colliding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from mississippi_tools.batch import DEFAULT_MAX_PAGES
from mississippi_tools.errors import MississippiError
from mississippi_tools.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from mississippi_tools.vlm import MississippiVLM

__all__ = [
    "LOAD_FAILURE",
    "Activity",
    "IdleUnloader",
    "LoaderState",
    "ModelLoader",
    "ModelNotReadyError",
    "ModelSettings",
    "describe_compute",
    "describe_origin",
    "describe_placement",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

LOAD_FAILURE = "mississippi_load_failure"
"""Attribute set on the log record of a failed load, so that a server which raises the error
itself (``mississippi-tools serve``) can keep it off its console."""

LoaderState = Literal["idle", "loading", "ready", "failed", "closed"]
"""Where a :class:`ModelLoader` is: not started, loading, ready, failed, or closed."""

ProgressCallback = Callable[[float, str], Awaitable[None]]
"""Reports ``(seconds waited, message)`` while a caller waits for the model."""


class ModelNotReadyError(MississippiError):
    """The model is not there (yet): still loading past the wait, failed to load, or closed.

    Attributes:
        state: The loader's state when the wait ended.
        cause: The load's error, when it failed.
    """

    code = "model_not_ready"

    def __init__(
        self, message: str, *, state: LoaderState, cause: BaseException | None = None
    ) -> None:
        super().__init__(message)
        self.state: LoaderState = state
        self.cause = cause


class ModelLoader:
    """A server's one :class:`~mississippi_tools.MississippiVLM`, loaded in a background thread.

    Args:
        build: Loads or connects to the model (``MississippiVLM.load``, ``.connect``); runs in a
            daemon thread.
        name: The model's name, for messages.
        retry_on: Failures after which the next :meth:`start` (every wait calls it) tries again,
            instead of reporting the failure for ever: a remote service that was not reachable
            yet (:class:`~mississippi_tools.errors.RemoteConnectionError`), say.

    Example:
        >>> loader = ModelLoader(lambda: MississippiVLM.load(path), name="tiny")  # doctest: +SKIP
        >>> loader.start()                      # returns at once
        >>> vlm = await loader.await_ready()    # waits (with optional progress reports)
    """

    def __init__(
        self,
        build: Callable[[], MississippiVLM],
        *,
        name: str,
        retry_on: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.name = name
        self._build = build
        self._retry_on = retry_on
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._vlm: MississippiVLM | None = None
        self._error: BaseException | None = None
        self._closed = False
        self.reloadable = True
        self.unloads = 0
        self.started_at: float | None = None
        self.load_seconds: float | None = None

    @classmethod
    def loaded(cls, vlm: MississippiVLM) -> ModelLoader:
        """A loader around a model that is already loaded (embedding, tests); never unloaded."""
        loader = cls(lambda: vlm, name=vlm.model_id)
        loader.reloadable = False
        loader._vlm = vlm
        loader.load_seconds = 0.0
        loader._done.set()
        return loader

    @property
    def state(self) -> LoaderState:
        """``idle``, ``loading``, ``ready``, ``failed`` or ``closed``."""
        if self._closed:
            return "closed"
        if self._done.is_set():
            return "ready" if self._vlm is not None else "failed"
        return "idle" if self._thread is None else "loading"

    @property
    def error(self) -> BaseException | None:
        """Why the load failed, once it has."""
        return self._error

    @property
    def vlm(self) -> MississippiVLM | None:
        """The model once loaded (``None`` before, after a failure, or once closed)."""
        return self._vlm

    def start(self) -> None:
        """Start loading in a daemon thread; does nothing once started, loaded or closed.

        After a failure listed in ``retry_on``, starts a new attempt.
        """
        with self._lock:
            if self._closed:
                return
            if self._done.is_set() and isinstance(self._error, self._retry_on):
                logger.info("loading the model %s again after: %s", self.name, self._error)
                self._error, self._thread = None, None
                self._done.clear()
            if self._thread is not None or self._done.is_set():
                return
            self.started_at = time.monotonic()
            logger.info("loading the model %s", self.name)
            self._thread = threading.Thread(target=self._load, name="mississippi-load", daemon=True)
            self._thread.start()

    def _load(self) -> None:
        started = time.monotonic()
        try:
            vlm = self._build()
            ready = f"model {vlm.model_id} ready"  # a remote engine asks its service here
            placement = describe_placement(vlm)
        except BaseException as e:  # reported to every caller; the server keeps answering
            self._error = e
            failure = {LOAD_FAILURE: True}
            if isinstance(e, MississippiError):  # expected (no such model ...): one line
                logger.error("the model could not be loaded: %s", e, extra=failure)
            else:  # a bug: with its traceback
                logger.error("the model could not be loaded: %r", e, exc_info=e, extra=failure)
        else:
            with self._lock:
                closed = self._closed
                if not closed:
                    self._vlm = vlm
            if closed:
                vlm.close()
            self.load_seconds = time.monotonic() - started
            logger.info("%s in %.1f s (%s); serving", ready, self.load_seconds, placement)
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the load has ended (``True``) or ``timeout`` seconds passed (``False``)."""
        return self._done.wait(timeout)

    async def await_ready(
        self,
        *,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
        interval: float = 1.0,
    ) -> MississippiVLM:
        """The model, starting the load if needed and waiting for it without blocking the loop.

        Args:
            timeout: Most seconds to wait (``None``: as long as it takes).
            progress: Called every ``interval`` seconds while waiting.
            interval: Seconds between progress reports.

        Raises:
            ModelNotReadyError: Still loading after ``timeout``, failed, or closed.
        """
        self.start()
        started = self.started_at or time.monotonic()
        while not self._done.is_set():
            elapsed = time.monotonic() - started
            if timeout is not None and elapsed > timeout:
                raise ModelNotReadyError(
                    f"the model {self.name} is still loading after {elapsed:.0f} s; the load "
                    "goes on in the background; try again in a minute",
                    state="loading",
                )
            if progress is not None:
                await progress(
                    round(elapsed, 2),
                    f"loading the model {self.name} ({elapsed:.0f} s so far); the call goes on "
                    "when it is ready",
                )
            await asyncio.to_thread(self._done.wait, interval)
        return self.require()

    def require(self) -> MississippiVLM:
        """The loaded model, or :class:`ModelNotReadyError` saying why there is none."""
        if self._vlm is not None and not self._closed:
            return self._vlm
        state = self.state
        if state == "failed":
            error = self._error
            detail = error.message if isinstance(error, MississippiError) else type(error).__name__
            raise ModelNotReadyError(
                f"the model {self.name} could not be loaded: {detail}",
                state=state,
                cause=error,
            )
        if state == "closed":
            raise ModelNotReadyError("the server is shutting down", state=state)
        raise ModelNotReadyError(f"the model {self.name} is still loading", state=state)

    @property
    def unloaded(self) -> bool:
        """Whether the model was unloaded for idleness (the next :meth:`start` loads it again)."""
        return self.unloads > 0 and self.state == "idle"

    def unload(self) -> bool:
        """Release a loaded model so that the next :meth:`start` loads it again.

        Returns:
            Whether a model was released (``False``: not loaded, closed, or not reloadable).
        """
        vlm = self.detach()
        if vlm is None:
            return False
        vlm.close()
        _release_memory()
        return True

    def detach(self) -> MississippiVLM | None:
        """Forget the loaded model (the caller closes it); the next :meth:`start` loads again."""
        with self._lock:
            if self._closed or not self.reloadable or self._vlm is None:
                return None
            vlm, self._vlm = self._vlm, None
            self._thread = None
            self._done.clear()
            self.unloads += 1
        return vlm

    def close(self) -> None:
        """Release the model (a load still running releases its result when it ends)."""
        with self._lock:
            self._closed = True
            vlm, self._vlm = self._vlm, None
        if vlm is not None:
            vlm.close()


def _release_memory() -> None:
    """Give freed tensors back: a garbage collection, and the accelerators' cached blocks."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")  # loaded only if a local model ever was
    if torch is None:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def _close_and_release(vlm: MississippiVLM) -> None:
    vlm.close()
    _release_memory()


class Activity:
    """Requests using the model right now, and when it was last used (for idle unloading)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last_used = time.monotonic()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def use(self) -> Iterator[None]:
        """Count the enclosed work as using the model."""
        with self._lock:
            self.in_flight += 1
            self.last_used = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1
                self.last_used = time.monotonic()

    def when_idle(self, seconds: float, action: Callable[[], T]) -> T | None:
        """Run ``action`` if the model has been idle ``seconds``; ``None`` otherwise.

        No request starts meanwhile: one that starts right after sees what ``action`` did.
        """
        with self._lock:
            if self.in_flight or time.monotonic() - self.last_used < seconds:
                return None
            return action()

    def touch(self) -> None:
        """Count now as the last use (the model has just been loaded)."""
        with self._lock:
            self.last_used = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the model was last used (0 while it is in use)."""
        with self._lock:
            return 0.0 if self.in_flight else time.monotonic() - self.last_used


class IdleUnloader:
    """Unloads a server's model after ``seconds`` without use; the next request reloads it.

    Args:
        loader: The server's model.
        activity: What uses it.
        seconds: Idle time before unloading.
    """

    def __init__(self, loader: ModelLoader, activity: Activity, seconds: float) -> None:
        self.loader = loader
        self.activity = activity
        self.seconds = seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start watching (from the server's event loop)."""
        self._task = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        interval = min(max(self.seconds / 4, 0.05), 5.0)
        was_ready = False
        while True:
            await asyncio.sleep(interval)
            ready = self.loader.state == "ready"
            if ready and not was_ready:  # idle time counts from the end of a load
                self.activity.touch()
            was_ready = ready
            if not ready:
                continue
            idle = self.activity.idle_for()
            vlm = self.activity.when_idle(self.seconds, self.loader.detach)
            if vlm is not None:
                await asyncio.to_thread(_close_and_release, vlm)
                logger.info(
                    "unloaded the model %s after %.0f s idle; the next request loads it again",
                    self.loader.name,
                    idle,
                )


class ModelSettings(BaseSettings):
    """The settings every server of the model shares (each subclass sets its env prefix).

    Field docstrings are the help of the settings; the servers' command-line flags take the same
    names.
    """

    model: str | None = None
    """Hub id or local checkpoint directory (default ``h2oai/h2ovl-mississippi-800m``)."""
    device: str = "auto"
    """``auto`` (CUDA, else Apple's MPS, when available), ``cpu``, ``cuda``, ``cuda:1``, ``mps``
    ..."""
    dtype: str = "auto"
    """``auto``, ``float32``, ``bfloat16`` or ``float16``."""
    quantization: Literal["int8"] | None = None
    """``int8``: int8 linear layers on the CPU, the rest in float32 (faster and smaller; answers
    can change slightly; H2OVL only). ``None``: off."""
    allow_urls: bool = False
    """Fetch http(s) image URLs (public addresses only)."""
    allow_private_urls: bool = False
    """Also fetch URLs on private, loopback and link-local addresses (trusted intranets)."""
    max_image_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=1)
    """Largest input accepted, in bytes."""
    max_image_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    """Largest image accepted, in pixels (checked before decoding)."""
    max_pages: int = Field(default=DEFAULT_MAX_PAGES, ge=0)
    """Most pages read from one document per request or call (0: no limit)."""
    idle_unload: float | None = Field(default=None, gt=0)
    """Unload the model after this many seconds without a request; the next one loads it again
    (showing the load's progress). ``None``: keep it loaded."""
    max_memory: int | None = None
    """Memory ceiling (``8GB``, ``512MiB`` or bytes): refuse to load a model whose weights at the
    load dtype plus the cache budgets are estimated above it. ``None``: no ceiling."""

    @field_validator("max_memory", mode="before")
    @classmethod
    def _memory_size(cls, value: object) -> object:
        from mississippi_tools.models.footprint import parse_bytes

        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return parse_bytes(value)  # type: ignore[arg-type]


def describe_origin(model: str) -> str:
    """Where a model is read from, for start-up messages."""
    if Path(model).expanduser().is_dir():
        return "a local directory"
    return "the hub cache (downloaded first if missing)"


def describe_compute(vlm: MississippiVLM) -> dict[str, object]:
    """How a loaded model computes, for ``/health``, ``/v1/models`` and ``info``.

    ``device``, ``dtype``, ``quantization`` (``int8`` or ``None``) and, when int8, the kernel
    ``engine`` and the ``cpu_flags`` it was chosen for. Empty for a remote engine.
    """
    backend = getattr(vlm.engine, "backend", None)
    if backend is None:
        return {}
    report = getattr(backend, "quantization", None)
    described: dict[str, object] = {
        "device": str(backend.device),
        "dtype": str(backend.dtype).removeprefix("torch."),
        "quantization": None if report is None else report.mode,
    }
    if report is not None:
        described["kernel_engine"] = report.engine
        described["cpu_flags"] = list(report.cpu.flags)
    return described


def describe_placement(vlm: MississippiVLM) -> str:
    """Device and dtype of a loaded model, e.g. ``cpu, bfloat16`` (the engine's name if remote)."""
    backend = getattr(vlm.engine, "backend", None)
    if backend is None:
        return f"{vlm.engine.name} engine"
    placed = f"{backend.device}, {str(backend.dtype).removeprefix('torch.')}"
    report = getattr(backend, "quantization", None)
    return placed if report is None else f"{placed}, {report.describe()}"
