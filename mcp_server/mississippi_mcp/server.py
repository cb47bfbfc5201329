"""The MCP server: five read-only tools over one :class:`~mississippi_tools.MississippiVLM`.

Tools: ``ocr``, ``read_chart``, ``read_table``, ``extract_json`` and ``ask_image``. Each returns
structured content (its output schema is the core's result model) and a short text for the model.
Failures come back as ``isError`` results whose text says what was wrong and what to do:
:class:`~mississippi_tools.errors.MississippiError` messages pass through with their code, and an
unexpected exception is logged on stderr and reported without its details; the server keeps
serving either way.

Loading: :class:`ModelHolder` loads the model once, in a background thread started by the server's
lifespan, so ``initialize`` and ``tools/list`` answer at once. A tool call that arrives during the
load waits for it, sending progress notifications; a failed load is reported by every call.

Access: every call reads images under a :class:`~mississippi_tools.sources.SourcePolicy` built from
the configured directories plus the client's MCP roots (fetched for each call, so a change of
roots applies at once). With no directory at all, paths are refused and only inline images (and
URLs, when enabled) are read. The policy does every path and URL check.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlparse
from urllib.request import url2pathname

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import ListRoots, Resolve
from mcp_types import CallToolResult, ListRootsResult, TextContent, ToolAnnotations
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from mississippi_mcp.settings import DEFAULT_LOAD_TIMEOUT, MCPSettings
from mississippi_tools.errors import (
    AccessDeniedError,
    ImageTooLargeError,
    MississippiError,
)
from mississippi_tools.images import ImageLimits, LoadedImage
from mississippi_tools.sources import SourcePolicy
from mississippi_tools.tasks.ask import Answer
from mississippi_tools.tasks.chart import ChartData
from mississippi_tools.tasks.ocr import OCRResult
from mississippi_tools.tasks.results import ResultMetadata
from mississippi_tools.tasks.table import TableData
from mississippi_tools.vlm import MississippiVLM

__all__ = [
    "PROGRESS_INTERVAL",
    "SERVER_NAME",
    "TOOL_NAMES",
    "ExtractionOutput",
    "ModelHolder",
    "OCRDocument",
    "ServerState",
    "build_server",
    "load_vlm",
    "root_paths",
]

logger = logging.getLogger("mississippi_mcp")

SERVER_NAME = "mississippi"
"""The server's name in ``initialize`` and in client configurations."""
PROGRESS_INTERVAL = 1.0
"""Seconds between progress notifications while a call waits for the model to load."""
TOOL_NAMES = ("ocr", "read_chart", "read_table", "extract_json", "ask_image")
"""The tools of the server, in the order they are listed."""

T = TypeVar("T")
ToolContext = Context[Any, Any]
ProgressFn = Callable[[float, "float | None", str], Awaitable[None]]
"""Reports ``(progress, total, message)`` for the current call."""
State = Literal["idle", "loading", "ready", "failed", "closed"]


# ------------------------------------------------------------------------------------------------
# Output models (the core's results, plus what a tool adds around them)
# ------------------------------------------------------------------------------------------------


class OCRDocument(BaseModel):
    """Text read from an image or from the selected pages of a document."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    text: str
    """All the text, pages in order and separated by a blank line."""
    page_count: int = Field(ge=1)
    """How many images or pages were read."""
    pages: list[OCRResult]
    """One result per image or page (``meta.page`` numbers document pages)."""


class ExtractionOutput(BaseModel):
    """Data extracted from an image, valid under the requested JSON Schema or template."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    data: Any
    """The extracted JSON value (an object for object schemas and templates)."""
    confidence: dict[str, float] | None = None
    """When requested: the model's probability for each leaf value, keyed by JSON pointer
    (``/items/0/price``). Not a calibrated accuracy."""
    meta: ResultMetadata
    """How the result was produced."""


# ------------------------------------------------------------------------------------------------
# The model, loaded once in the background
# ------------------------------------------------------------------------------------------------


class ModelHolder:
    """The server's one :class:`MississippiVLM`, loaded in a background thread on first start.

    Args:
        loader: Builds the model (``MississippiVLM.load`` or ``connect``); runs in a thread.
        name: The model's name for progress messages and errors.
        load_timeout: Seconds a tool call waits for the load before failing (the load goes on).
        progress_interval: Seconds between progress notifications while waiting.

    Example:
        >>> holder = ModelHolder(lambda: MississippiVLM.load(path), name="tiny")  # doctest: +SKIP
        >>> holder.start()  # returns at once
        >>> vlm = await holder.get(ctx.report_progress)  # waits, reporting progress
    """

    def __init__(
        self,
        loader: Callable[[], MississippiVLM],
        *,
        name: str,
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        progress_interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.name = name
        self.load_timeout = load_timeout
        self.progress_interval = progress_interval
        self._loader = loader
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._vlm: MississippiVLM | None = None
        self._error: BaseException | None = None
        self._started_at: float | None = None
        self._closed = False

    @classmethod
    def loaded(cls, vlm: MississippiVLM) -> ModelHolder:
        """A holder around a model that is already loaded (embedding, tests)."""
        holder = cls(lambda: vlm, name=vlm.model_id)
        holder._vlm = vlm
        holder._done.set()
        return holder

    @property
    def state(self) -> State:
        """``idle`` (not started), ``loading``, ``ready``, ``failed`` or ``closed``."""
        if self._closed:
            return "closed"
        if self._done.is_set():
            return "ready" if self._vlm is not None else "failed"
        return "idle" if self._thread is None else "loading"

    @property
    def error(self) -> BaseException | None:
        """Why the load failed, once it has."""
        return self._error

    def start(self) -> None:
        """Start loading in a daemon thread; does nothing when started already."""
        with self._lock:
            if self._thread is not None or self._done.is_set() or self._closed:
                return
            self._started_at = time.monotonic()
            self._thread = threading.Thread(
                target=self._load, name="mississippi-mcp-load", daemon=True
            )
            self._thread.start()

    def _load(self) -> None:
        logger.info("loading the model %s in the background", self.name)
        started = time.monotonic()
        try:
            vlm = self._loader()
        except BaseException as e:  # reported to every tool call; the server keeps serving
            self._error = e
            if isinstance(e, MississippiError):
                logger.error("the model could not be loaded: %s", e.message)
            else:
                logger.exception("the model could not be loaded")
        else:
            with self._lock:
                if self._closed:
                    vlm.close()
                else:
                    self._vlm = vlm
            logger.info("model %s ready in %.1f s", self.name, time.monotonic() - started)
        finally:
            self._done.set()

    async def get(self, progress: ProgressFn | None = None) -> MississippiVLM:
        """The model, waiting for the load and calling ``progress`` every ``progress_interval``.

        Raises:
            ToolError: The load failed, did not finish within ``load_timeout``, or the server
                is shutting down.
        """
        if not self._done.is_set():
            self.start()
            await self._wait(progress)
        if self._vlm is not None:
            return self._vlm
        raise ToolError(self._failure_message())

    async def _wait(self, progress: ProgressFn | None) -> None:
        started = self._started_at or time.monotonic()
        while not self._done.is_set():
            elapsed = time.monotonic() - started
            if elapsed > self.load_timeout:
                raise ToolError(
                    f"the model {self.name} is still loading after {elapsed:.0f} s; the load "
                    "goes on in the background; call the tool again in a minute"
                )
            if progress is not None:
                await progress(
                    round(elapsed, 2),
                    None,
                    f"loading the model {self.name} ({elapsed:.0f} s so far); the call goes on "
                    "when it is ready",
                )
            await anyio.to_thread.run_sync(
                self._done.wait, self.progress_interval, abandon_on_cancel=True
            )

    def _failure_message(self) -> str:
        error = self._error
        if self._closed:
            return "the server is shutting down; reconnect and call the tool again"
        if isinstance(error, MississippiError):
            return (
                f"{error.code}: the model {self.name} could not be loaded: {error.message}; "
                "fix the server's model settings (--model, --device, or --engine remote "
                "--base-url) and restart the server"
            )
        return (
            f"the model {self.name} could not be loaded ({type(error).__name__}); the server's "
            "log (stderr) has the details; fix the model settings and restart the server"
        )

    def close(self) -> None:
        """Release the model (a load still running releases its result when it ends)."""
        with self._lock:
            self._closed = True
            vlm, self._vlm = self._vlm, None
        if vlm is not None:
            vlm.close()


def load_vlm(settings: MCPSettings) -> MississippiVLM:
    """Build the model the settings describe: loaded locally, or a remote service's client.

    The policy given here is never used by the tools, which build one per call.
    """
    policy = SourcePolicy(allowed_roots=())
    if settings.engine == "remote":
        assert settings.base_url is not None  # checked by MCPSettings
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        return MississippiVLM.connect(
            settings.base_url,
            api_key=api_key or None,
            model=settings.model,
            policy=policy,
        )
    return MississippiVLM.load(
        settings.model_name,
        device=settings.device,
        dtype=settings.dtype,
        progress=False,  # no progress bars: stdout is the protocol on stdio
        policy=policy,
    )


# ------------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------------


def _page_selection(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _json_object(value: Any) -> Any:
    """Accept an object sent as a JSON string (some models stringify nested arguments)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as e:
            raise ValueError(f"not a JSON object ({e}); pass a JSON object") from None
    return value


ImageArg = Annotated[
    str,
    Field(
        min_length=1,
        description=(
            "The image or document: a file path (absolute, or relative to the first allowed "
            "directory), a data URI ('data:image/png;base64,...') or plain base64, or an "
            "http(s) URL when the server allows URLs. PNG, JPEG, GIF, WEBP, BMP, TIFF or PDF."
        ),
    ),
]
PageArg = Annotated[
    int | None,
    Field(
        ge=1,
        description="Page to read (1-based), required for PDFs and TIFFs with several pages.",
    ),
]
PagesArg = Annotated[
    str | None,
    BeforeValidator(_page_selection),
    Field(
        description=(
            "Pages of a PDF or multi-page TIFF: '3', '1-3', '1,3,5-7' or '5-' (to the end). "
            "Default: every page (up to the server's per-call limit). Ignored for plain images."
        ),
    ),
]
JsonObjectArg = Annotated[dict[str, Any] | None, BeforeValidator(_json_object)]


@dataclass(frozen=True)
class ServerState:
    """What the server's lifespan yields: its settings and its model."""

    settings: MCPSettings
    holder: ModelHolder


def _client_roots(ctx: ToolContext) -> ListRoots | None:
    """Ask the client for its roots (``roots/list``) when it has some and they are trusted.

    A resolver: the SDK sends the request (mid-call on 2025 protocol versions, as an
    input-required round on 2026-07-28) and hands the answer to the tool.
    """
    try:
        state = ctx.request_context.lifespan_context
    except ValueError:  # called outside a request (MCPServer.call_tool without a session)
        return None
    capabilities = ctx.client_capabilities
    if (
        isinstance(state, ServerState)
        and state.settings.client_roots
        and capabilities is not None
        and capabilities.roots is not None
    ):
        return ListRoots()
    return None


RootsArg = Annotated[ListRootsResult | None, Resolve(_client_roots)]
"""The client's roots, filled by the SDK before the tool runs (not a tool argument)."""


# ------------------------------------------------------------------------------------------------
# Roots and policies
# ------------------------------------------------------------------------------------------------


def root_paths(result: ListRootsResult | None) -> list[Path]:
    """The local directories of a client's roots (``file://`` URIs; others are skipped)."""
    if result is None:
        return []
    paths: list[Path] = []
    for root in result.roots:
        uri = str(root.uri)
        parsed = urlparse(uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            logger.debug("ignoring client root %r: not a local file:// URI", uri)
            continue
        path = Path(url2pathname(parsed.path))
        if path.is_absolute() and path not in paths:
            paths.append(path)
    return paths


def _as_source(image: str) -> str:
    """The image argument as the core reads it: ``file://`` URIs and ``~`` become paths."""
    text = image.strip()
    if text[:7].lower() == "file://":
        parsed = urlparse(text)
        if parsed.netloc in ("", "localhost"):
            return url2pathname(parsed.path)
    if text == "~" or text.startswith("~/"):
        return str(Path(text).expanduser())
    return image


def _is_url(image: str) -> bool:
    return image.strip()[:8].lower().startswith(("http://", "https://"))


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------


def _tool_result(text: str, structured: BaseModel) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=structured.model_dump(mode="json"),
    )


def _cut_note(meta: ResultMetadata) -> str:
    if meta.finish_reason == "length":
        return "\n\n[The answer was cut at the token limit; it may be incomplete.]"
    return ""


def _ocr_text(document: OCRDocument) -> str:
    if len(document.pages) == 1:
        text = document.pages[0].text
        return (text or "(no text found)") + _cut_note(document.pages[0].meta)
    parts = []
    for index, page in enumerate(document.pages, start=1):
        number = page.meta.page or index
        parts.append(f"[page {number}]\n{page.text or '(no text found)'}{_cut_note(page.meta)}")
    return "\n\n".join(parts)


def _chart_text(chart: ChartData) -> str:
    head = [f"Chart: {chart.title or '(untitled)'}"]
    if chart.chart_type:
        head[0] += f" ({chart.chart_type})"
    for name, axis in (("x axis", chart.x_axis), ("y axis", chart.y_axis)):
        label = axis.text() if axis is not None else None
        if label:
            head.append(f"{name}: {label}")
    text = "\n".join(head) + "\n\n" + chart.to_markdown()
    if chart.notes:
        text += "\nNotes: " + "; ".join(chart.notes)
    return text + _cut_note(chart.meta)


def _table_text(table: TableData) -> str:
    text = table.to_markdown()
    if table.notes:
        text += "\nNotes: " + "; ".join(table.notes)
    return text + _cut_note(table.meta)


# ------------------------------------------------------------------------------------------------
# The server
# ------------------------------------------------------------------------------------------------


_INSTRUCTIONS = """\
Reads images and PDF pages with a local vision-language model (H2OVL-Mississippi).
Use ocr for the text of documents and screenshots, read_table for tables, read_chart for
charts, extract_json to fill a JSON Schema or template from a form, receipt or ID, and
ask_image for any other question about an image. Pass images as file paths under the
allowed directories, as data URIs or base64{urls}. Allowed directories at start-up: {dirs}{roots}.
"""


class _CallProgress:
    """The progress notifications of one call, increasing across its phases (as MCP requires).

    Waiting for the model reports elapsed seconds; the work after it (pages) starts above the
    last value sent, so a client never sees progress go back.
    """

    def __init__(self, ctx: ToolContext) -> None:
        self._ctx = ctx
        self._offset = 0.0
        self._last: float | None = None

    async def __call__(self, progress: float, total: float | None, message: str) -> None:
        value = self._offset + progress
        if self._last is not None and value <= self._last:
            value = self._last + 0.001
        self._last = value
        await self._ctx.report_progress(
            value, None if total is None else self._offset + total, message
        )

    def next_phase(self) -> None:
        """Count the next phase's progress from above everything reported so far."""
        if self._last is not None:
            self._offset = float(int(self._last) + 1)


class _Tools:
    """The tool bodies, sharing the settings, the model holder and the error translation."""

    def __init__(self, settings: MCPSettings, holder: ModelHolder) -> None:
        self.settings = settings
        self.holder = holder
        self.limits = ImageLimits(
            max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )

    def policy(self, roots: ListRootsResult | None) -> SourcePolicy:
        """The reading policy of one call: client roots first, then the configured ones."""
        client = root_paths(roots) if self.settings.client_roots else []
        allowed = tuple(dict.fromkeys([*client, *self.settings.allow_dirs]))
        return SourcePolicy(
            allowed_roots=allowed,
            allow_urls=self.settings.allow_urls,
            allow_private_urls=self.settings.allow_private_urls,
            url_max_bytes=self.settings.max_image_bytes,
            url_timeout=self.settings.url_timeout,
        )

    def task_kwargs(self) -> dict[str, Any]:
        """Server-wide generation settings, passed to every task when set."""
        kwargs: dict[str, Any] = {}
        if self.settings.max_tiles is not None:
            kwargs["max_tiles"] = self.settings.max_tiles
        if self.settings.max_new_tokens is not None:
            kwargs["max_new_tokens"] = self.settings.max_new_tokens
        if self.settings.request_timeout is not None:
            kwargs["timeout"] = self.settings.request_timeout
        return kwargs

    async def run(
        self,
        tool: str,
        image: str,
        ctx: ToolContext,
        roots: ListRootsResult | None,
        work: Callable[[MississippiVLM, str, ProgressFn], Awaitable[T]],
    ) -> T:
        """Run ``work`` on a per-call model view, translating every failure for the model."""
        progress = _CallProgress(ctx)
        base = await self.holder.get(progress)
        progress.next_phase()
        policy = self.policy(roots)
        vlm = MississippiVLM(base.engine, policy=policy, limits=self.limits)
        started = time.monotonic()
        try:
            result = await work(vlm, _as_source(image), progress)
        except ToolError:
            raise
        except MississippiError as e:
            raise ToolError(self.explain(e, image, policy)) from e
        except Exception as e:  # a crash: logged here, reported without its details
            logger.exception("tool %s crashed", tool)
            raise ToolError(
                f"internal error in {tool} ({type(e).__name__}); the details are in the "
                "server's log (stderr); the server keeps running: retry once, and report the "
                "problem if it happens again"
            ) from e
        logger.info("%s done in %.2f s", tool, time.monotonic() - started)
        return result

    def explain(self, error: MississippiError, image: str, policy: SourcePolicy) -> str:
        """The error's message with its code, plus what to change on this MCP server."""
        message = f"{error.code}: {error.message}"
        settings = self.settings
        if isinstance(error, AccessDeniedError):
            if _is_url(image):
                if not settings.allow_urls:
                    message += (
                        ". This MCP server does not download URLs: pass the image as a file "
                        "path or a data URI, or ask the user to start the server with "
                        "--allow-urls"
                    )
                elif not settings.allow_private_urls:
                    message += ". Private addresses need --allow-private-urls on this MCP server"
            else:
                roots = policy.allowed_roots or ()
                where = ", ".join(str(root) for root in roots) or "none"
                message += (
                    f". This MCP server reads files only under its allowed directories "
                    f"({where}): pass the image inline as a data URI or base64, or ask the user "
                    "to add the folder with --allow-dir (MISSISSIPPI_ALLOW_DIRS) or as a root "
                    "in the MCP client"
                )
        elif isinstance(error, ImageTooLargeError):
            message += (
                f". This MCP server accepts inputs up to {settings.max_image_bytes:,} bytes and "
                f"{settings.max_image_pixels:,} pixels (--max-image-bytes, "
                "--max-image-pixels); downscale the image or pass a smaller page"
            )
        return message

    # -- the tools --------------------------------------------------------------------------

    async def ocr(
        self,
        image: str,
        ctx: ToolContext,
        roots: ListRootsResult | None,
        pages: str | None,
        format: Literal["text", "markdown"],
    ) -> CallToolResult:
        async def work(vlm: MississippiVLM, source: str, progress: ProgressFn) -> OCRDocument:
            count = await anyio.to_thread.run_sync(vlm.count_pages, [source], pages)
            limit = self.settings.max_pages
            if count > limit:
                raise ToolError(
                    f"the selection has {count} pages; this server reads at most {limit} per "
                    f"call (--max-pages); pass pages='1-{limit}', then the next pages in "
                    "further calls"
                )
            results: list[OCRResult] = []
            async for loaded in _pages(vlm, source, pages):
                if count > 1:
                    await progress(
                        len(results), count, f"reading page {loaded.page or len(results) + 1}"
                    )
                results.append(await vlm.aocr(loaded, format=format, **self.task_kwargs()))
            if count > 1:
                await progress(count, count, "done")
            return OCRDocument(
                text="\n\n".join(result.text for result in results),
                page_count=len(results),
                pages=results,
            )

        document = await self.run("ocr", image, ctx, roots, work)
        return _tool_result(_ocr_text(document), document)

    async def read_chart(
        self, image: str, ctx: ToolContext, roots: ListRootsResult | None, page: int | None
    ) -> CallToolResult:
        async def work(vlm: MississippiVLM, source: str, _progress: ProgressFn) -> ChartData:
            return await vlm.aread_chart(source, page=page, **self.task_kwargs())

        chart = await self.run("read_chart", image, ctx, roots, work)
        return _tool_result(_chart_text(chart), chart)

    async def read_table(
        self, image: str, ctx: ToolContext, roots: ListRootsResult | None, page: int | None
    ) -> CallToolResult:
        async def work(vlm: MississippiVLM, source: str, _progress: ProgressFn) -> TableData:
            return await vlm.aread_table(source, page=page, **self.task_kwargs())

        table = await self.run("read_table", image, ctx, roots, work)
        return _tool_result(_table_text(table), table)

    async def extract_json(
        self,
        image: str,
        ctx: ToolContext,
        roots: ListRootsResult | None,
        json_schema: dict[str, Any] | None,
        template: dict[str, Any] | None,
        instructions: str | None,
        page: int | None,
        confidence: bool,
    ) -> CallToolResult:
        schema = _check_schema_arguments(json_schema, template)

        async def work(vlm: MississippiVLM, source: str, _progress: ProgressFn) -> ExtractionOutput:
            result = await vlm.aextract_result(
                source,
                schema,
                instructions=instructions,
                page=page,
                confidence=confidence,
                **self.task_kwargs(),
            )
            data = (
                result.data.model_dump(mode="json")
                if isinstance(result.data, BaseModel)
                else (result.data)
            )
            return ExtractionOutput(data=data, confidence=result.confidence, meta=result.meta)

        output = await self.run("extract_json", image, ctx, roots, work)
        text = json.dumps(output.data, indent=2, ensure_ascii=False) + _cut_note(output.meta)
        return _tool_result(text, output)

    async def ask_image(
        self,
        image: str,
        question: str,
        ctx: ToolContext,
        roots: ListRootsResult | None,
        page: int | None,
    ) -> CallToolResult:
        async def work(vlm: MississippiVLM, source: str, _progress: ProgressFn) -> Answer:
            return await vlm.aask(source, question, page=page, **self.task_kwargs())

        answer = await self.run("ask_image", image, ctx, roots, work)
        return _tool_result((answer.text or "(no answer)") + _cut_note(answer.meta), answer)


def _check_schema_arguments(
    json_schema: dict[str, Any] | None, template: dict[str, Any] | None
) -> dict[str, Any]:
    """The one schema of an ``extract_json`` call, refusing ambiguous or missing ones."""
    from mississippi_tools.schema import is_json_schema

    if (json_schema is None) == (template is None):
        raise ToolError(
            "pass exactly one of json_schema (a JSON Schema) or template (an example object "
            'such as {"name": "", "total": 0})'
        )
    if json_schema is not None:
        if not is_json_schema(json_schema):
            raise ToolError(
                "json_schema does not look like a JSON Schema (it needs keywords such as "
                '"type": "object" and "properties"); pass example values as template instead'
            )
        return json_schema
    assert template is not None
    if is_json_schema(template):
        raise ToolError(
            "template looks like a JSON Schema (its keys are schema keywords); pass it as "
            "json_schema instead"
        )
    return template


async def _pages(vlm: MississippiVLM, source: str, pages: str | None) -> AsyncIterator[LoadedImage]:
    """The selected pages of ``source``, rendered one at a time in a worker thread."""
    iterator: Iterator[LoadedImage] = await anyio.to_thread.run_sync(
        lambda: iter(vlm.pages([source], pages))
    )
    try:
        while True:
            loaded = await anyio.to_thread.run_sync(next, iterator, None)
            if loaded is None:
                return
            yield loaded
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def build_server(
    settings: MCPSettings | None = None,
    *,
    holder: ModelHolder | None = None,
) -> MCPServer[ServerState]:
    """Create the MCP server (the model starts loading when the server starts running).

    Args:
        settings: The configuration (default: from the environment).
        holder: The model to serve (default: one loaded from ``settings`` in the background).
            Pass ``ModelHolder.loaded(vlm)`` to serve a model you already hold.

    Returns:
        The server; run it with ``server.run()`` (stdio) or serve
        ``server.streamable_http_app()``; :func:`mississippi_mcp.main` does both.
    """
    settings = settings or MCPSettings()
    if holder is None:
        configured = settings
        holder = ModelHolder(
            lambda: load_vlm(configured),
            name=settings.model_name,
            load_timeout=settings.load_timeout,
        )
    model = holder
    tools = _Tools(settings, model)

    state = ServerState(settings=settings, holder=model)

    @asynccontextmanager
    async def lifespan(_server: MCPServer[ServerState]) -> AsyncIterator[ServerState]:
        model.start()
        yield state

    dirs = ", ".join(str(path) for path in settings.allow_dirs) or "none"
    instructions = _INSTRUCTIONS.format(
        urls=", or as http(s) URLs" if settings.allow_urls else "",
        dirs=dirs,
        roots=", plus the client's roots" if settings.client_roots else "",
    )
    from mississippi_mcp import __version__

    server: MCPServer[ServerState] = MCPServer(
        SERVER_NAME,
        title="Mississippi vision tools",
        version=__version__,
        instructions=instructions,
        lifespan=lifespan,
        log_level=settings.log_level,
    )
    annotations = ToolAnnotations(
        read_only_hint=True,
        destructive_hint=False,
        idempotent_hint=True,
        open_world_hint=settings.allow_urls,
    )

    def tool(title: str) -> Callable[[Callable[..., Awaitable[CallToolResult]]], Any]:
        """Register a tool; its docstring, dedented, is the description the model reads."""

        def register(fn: Callable[..., Awaitable[CallToolResult]]) -> Any:
            description = inspect.cleandoc(fn.__doc__ or "")
            server.add_tool(fn, title=title, description=description, annotations=annotations)
            return fn

        return register

    @tool("Read text (OCR)")
    async def ocr(
        image: ImageArg,
        ctx: ToolContext,
        roots: RootsArg,
        pages: PagesArg = None,
        format: Annotated[
            Literal["text", "markdown"],
            Field(description="'text' (plain lines) or 'markdown' (headings, lists, tables)."),
        ] = "text",
    ) -> Annotated[CallToolResult, OCRDocument]:
        """Read all the text of an image, a screenshot or PDF pages (OCR), in reading order.

        Returns the text, and per page its lines. Best for documents, receipts, forms, slides
        and screenshots; for a table's cells use read_table, for specific fields extract_json.
        """
        return await tools.ocr(image, ctx, roots, pages, format)

    @tool("Read a chart")
    async def read_chart(
        image: ImageArg, ctx: ToolContext, roots: RootsArg, page: PageArg = None
    ) -> Annotated[CallToolResult, ChartData]:
        """Read a chart (bar, line, pie, scatter): title, type, axes with units, and data series.

        Returns every series as (label, value) points, plus a Markdown table of the values.
        """
        return await tools.read_chart(image, ctx, roots, page)

    @tool("Read a table")
    async def read_table(
        image: ImageArg, ctx: ToolContext, roots: RootsArg, page: PageArg = None
    ) -> Annotated[CallToolResult, TableData]:
        """Read a table from an image or a PDF page: its title, column names and rows of cells.

        Returns the cells as structured data and the table as Markdown.
        """
        return await tools.read_table(image, ctx, roots, page)

    @tool("Extract JSON")
    async def extract_json(
        image: ImageArg,
        ctx: ToolContext,
        roots: RootsArg,
        json_schema: Annotated[
            JsonObjectArg,
            Field(
                description=(
                    'A JSON Schema the result must be valid under, e.g. {"type": "object", '
                    '"properties": {"total": {"type": "number"}}, "required": '
                    '["total"]}. Give this or template.'
                )
            ),
        ] = None,
        template: Annotated[
            JsonObjectArg,
            Field(
                description=(
                    "An example of the wanted JSON whose values give the types, e.g. "
                    '{"name": "", "date_of_birth": "", "total": 0.0, "items": '
                    '[{"name": "", "price": 0.0}]}; a field that is absent comes back '
                    "null. Give this or json_schema."
                )
            ),
        ] = None,
        instructions: Annotated[
            str | None,
            Field(description="Extra guidance for the model, e.g. 'dates as YYYY-MM-DD'."),
        ] = None,
        page: PageArg = None,
        confidence: Annotated[
            bool, Field(description="Add the model's confidence for each extracted value.")
        ] = False,
    ) -> Annotated[CallToolResult, ExtractionOutput]:
        """Extract data from an image (form, receipt, invoice, ID card...) as JSON.

        The output is guaranteed to be valid under the given JSON Schema or template. Use it to
        pull specific fields; use ocr for all the text.
        """
        return await tools.extract_json(
            image, ctx, roots, json_schema, template, instructions, page, confidence
        )

    @tool("Ask about an image")
    async def ask_image(
        image: ImageArg,
        question: Annotated[
            str, Field(min_length=1, description="The question about the image, in any language.")
        ],
        ctx: ToolContext,
        roots: RootsArg,
        page: PageArg = None,
    ) -> Annotated[CallToolResult, Answer]:
        """Answer a question about an image: what it shows, where something is, what it says.

        Short factual questions work best; for all the text use ocr, for charts read_chart.
        """
        return await tools.ask_image(image, question, ctx, roots, page)

    return server
