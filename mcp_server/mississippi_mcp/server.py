"""The MCP server: one read-only tool per task of the catalogue, over one model.

Tools: every task the served model can do (``ocr``, ``read_chart``, ``read_table``, ``extract``,
``ask``, and any task it adds such as ``to_html``), with the catalogue's names, descriptions and
arguments (``image``, ``pages``, then the task's own), shared with every other surface. Each
returns the catalogue's text for the model and structured content: ``{"result": ...}`` for one
image or page, ``{"pages": [{"page", "result", "error"}, ...]}`` for a page range. Failures come
back as ``isError`` results whose text says what was wrong and what to change on this server:
:class:`~mississippi_tools.errors.MississippiError` messages pass through with their code, and an
unexpected exception is logged on stderr and reported without its details; the server keeps
serving either way. Page handling, rendering and arguments are the core's
(:mod:`mississippi_tools.agent_tools`); this module translates.

Loading: the model loads once, in a background thread started by the server's lifespan
(:class:`~mississippi_tools.serving.ModelLoader`), so ``initialize`` and ``tools/list`` answer at
once. A tool call that arrives during the load waits for it, sending progress notifications; a
failed load is reported by every call.

Access: every call reads images under a :class:`~mississippi_tools.sources.SourcePolicy` built from
the configured directories plus the client's MCP roots (fetched for each call, so a change of
roots applies at once). With no directory at all, paths are refused and only inline images (and
URLs, when enabled) are read. The policy does every path and URL check.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlparse
from urllib.request import url2pathname

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import ListRoots, Resolve
from mcp.server.mcpserver.tools import Tool
from mcp_types import (
    CallToolResult,
    ListRootsResult,
    ResourceLink,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from mississippi_mcp.results import (
    DOCUMENT_URI,
    ContinuedOutput,
    Document,
    ImageArgument,
    ResultStore,
    image_source,
    split_pages,
)
from mississippi_mcp.settings import DEFAULT_LOAD_TIMEOUT, MCPSettings
from mississippi_tools import MississippiVLM
from mississippi_tools.agent_tools import (
    IMAGE_DESCRIPTION,
    PageArgument,
    ToolOutput,
    ToolSettings,
    acall_tool,
    check_call,
    tool_arguments,
)
from mississippi_tools.errors import (
    MississippiError,
    RemoteConnectionError,
)
from mississippi_tools.images import ImageLimits
from mississippi_tools.serving import Activity, IdleUnloader, ModelLoader, ModelNotReadyError
from mississippi_tools.sources import SourcePolicy
from mississippi_tools.tasks.catalogue import TaskSpec, all_tasks, tasks_for_model

__all__ = [
    "MCP_SPELLING",
    "PROGRESS_INTERVAL",
    "SERVER_NAME",
    "ModelHolder",
    "ServerState",
    "build_server",
    "load_vlm",
    "output_model",
    "root_paths",
    "tool_names",
]

logger = logging.getLogger("mississippi_mcp")

SERVER_NAME = "mississippi"
"""The server's name in ``initialize`` and in client configurations."""
PROGRESS_INTERVAL = 1.0
"""Seconds between progress notifications while a call waits for the model to load."""

#: How the options that fix errors are spelled for the model calling this server's tools.
MCP_SPELLING: dict[str, str] = {
    "allow_urls": "this MCP server does not download URLs; ask the user to start it with "
    "--allow-urls, or pass a file path or a data URI",
    "pages": "pass pages='{value}'",
    "max_pages": "this server reads at most --max-pages pages per call; ask for a range",
    "memory_limit": "ask the user to raise the server's --max-memory (MISSISSIPPI_MCP_MAX_MEMORY) "
    "to {value} or more, or to load it with --dtype bfloat16",
    "allowed_roots": "this MCP server reads files only under its allowed directories: pass "
    "the image inline as a data URI or base64, or ask the user to add the folder with "
    "--allow-dir (MISSISSIPPI_MCP_ALLOW_DIRS) or as a root in the MCP client",
    "follow_symlinks_outside_roots": "pass the image inline as a data URI or base64, or ask the "
    "user to copy the file under an allowed directory",
    "allow_private_urls": "private addresses need --allow-private-urls on this MCP server",
    "url_timeout": "ask the user to raise --url-timeout, or pass the image inline",
    "url_max_bytes": "this MCP server's limit is --max-image-bytes; downscale the image or pass "
    "a smaller page",
    "max_bytes": "this MCP server's limit is --max-image-bytes; downscale the image or pass a "
    "smaller page",
    "max_pixels": "this MCP server's limit is --max-image-pixels; downscale the image",
    "max_side": "crop or downscale the image",
    "max_document_pages": "split the document",
    "max_jpeg_scans": "re-encode the image as PNG",
    "max_pdf_stream_bytes": "pass the pages as images",
    "max_new_tokens": "pass max_new_tokens={value} if the tool takes it, or ask for less",
    "quantization": "ask the user to start this server with --quantization {value} "
    "(MISSISSIPPI_MCP_QUANTIZATION)",
    "no_quantization": "ask the user to start this server without --quantization "
    "(unset MISSISSIPPI_MCP_QUANTIZATION)",
}

T = TypeVar("T")
ToolContext = Context[Any, Any]
ProgressFn = Callable[[float, "float | None", str], Awaitable[None]]
"""Reports ``(progress, total, message)`` for the current call."""


# ------------------------------------------------------------------------------------------------
# Output models: the task's result, one image or page at a time
# ------------------------------------------------------------------------------------------------


class PageError(BaseModel):
    """Why one page failed."""

    code: str
    """The error's stable code."""
    message: str
    """What was wrong and what to do."""


def _as_sent(result: type[BaseModel]) -> type[BaseModel]:
    """``result`` without its fields kept out of dumps: the shape a client receives."""
    excluded = [name for name, info in result.model_fields.items() if info.exclude]
    if not excluded:
        return result
    fields: dict[str, Any] = {
        name: (info.annotation, info)
        for name, info in result.model_fields.items()
        if name not in excluded
    }
    return create_model(  # type: ignore[no-any-return, call-overload]
        result.__name__, __config__=result.model_config, __doc__=result.__doc__, **fields
    )


def output_model(spec: TaskSpec[Any, Any]) -> type[BaseModel]:
    """The structured content of a task's tool: one ``result``, or ``pages`` for a range."""
    result = _as_sent(spec.result)
    page_fields: dict[str, Any] = {
        "page": (int | None, Field(description="The 1-based page.")),
        "result": (result | None, Field(default=None, description="The page's result.")),
        "error": (PageError | None, Field(default=None, description="Why the page failed.")),
    }
    page = create_model(
        f"{result.__name__}Page", __config__=ConfigDict(extra="forbid"), **page_fields
    )
    fields: dict[str, Any] = {
        "result": (result | None, Field(default=None, description="The result, for one image.")),
        "pages": (
            list[page] | None,  # type: ignore[valid-type]
            Field(default=None, description="One entry per page, for a page range."),
        ),
        "next_cursor": (
            str | None,
            Field(
                default=None,
                description="Set when the pages did not all fit in one result: pass it to "
                "read_more for the next ones.",
            ),
        ),
    }
    model: type[BaseModel] = create_model(
        f"{result.__name__}Output", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


def _entries(output: ToolOutput) -> list[dict[str, Any]]:
    pages = []
    for outcome in output.outcomes:
        error = outcome.error
        pages.append(
            {
                "page": outcome.page,
                "result": None
                if outcome.result is None
                else outcome.result.model_dump(mode="json"),
                "error": None if error is None else {"code": error.code, "message": error.message},
            }
        )
    return pages


def _sections(spec: TaskSpec[Any, Any], output: ToolOutput) -> list[str]:
    """Each page's text for the model, as in the whole result's text."""
    sections = []
    for outcome in output.outcomes:
        error = outcome.error
        body = (
            spec.render(outcome.result)
            if error is None
            else f"error: {error.code}: {error.message}"
        )
        sections.append(f"[page {outcome.page}]\n{body}")
    return sections


# ------------------------------------------------------------------------------------------------
# The model, loaded once in the background
# ------------------------------------------------------------------------------------------------


class ModelHolder:
    """The server's one model: a shared loader whose waits report MCP progress.

    Failures and timeouts become tool errors that say what to change on the server.

    Args:
        loader: Builds the model (``MississippiVLM.load`` or ``connect``); runs in a thread.
        name: The model's name for progress messages and errors.
        load_timeout: Seconds a tool call waits for the load before failing (the load goes on).
        progress_interval: Seconds between progress notifications while waiting.
    """

    def __init__(
        self,
        loader: Callable[[], MississippiVLM],
        *,
        name: str,
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        progress_interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.loader = ModelLoader(loader, name=name, retry_on=(RemoteConnectionError,))
        self.activity = Activity()
        self.name = name
        self.load_timeout = load_timeout
        self.progress_interval = progress_interval

    @classmethod
    def loaded(cls, vlm: MississippiVLM) -> ModelHolder:
        """A holder around a model that is already loaded (embedding, tests)."""
        holder = cls(lambda: vlm, name=vlm.model_id)
        holder.loader = ModelLoader.loaded(vlm)
        return holder

    @property
    def state(self) -> str:
        """``idle`` (not started), ``loading``, ``ready``, ``failed`` or ``closed``."""
        return self.loader.state

    @property
    def error(self) -> BaseException | None:
        """Why the load failed, once it has."""
        return self.loader.error

    def start(self) -> None:
        """Start loading in a daemon thread; does nothing when started already."""
        self.loader.start()

    async def get(self, progress: ProgressFn | None = None) -> MississippiVLM:
        """The model, waiting for the load and reporting progress meanwhile.

        Raises:
            ToolError: The load failed, did not finish within ``load_timeout``, or the server
                is shutting down.
        """

        async def report(elapsed: float, message: str) -> None:
            if progress is not None:
                await progress(elapsed, None, message)

        try:
            return await self.loader.await_ready(
                timeout=self.load_timeout, progress=report, interval=self.progress_interval
            )
        except ModelNotReadyError as e:
            raise ToolError(self._failure_message(e)) from None

    def _failure_message(self, error: ModelNotReadyError) -> str:
        if error.state == "closed":
            return "the server is shutting down; reconnect and call the tool again"
        if error.state == "loading":
            return error.message + "; call the tool again in a minute"
        cause = error.cause
        if isinstance(cause, RemoteConnectionError):
            return (
                f"{cause.code}: {cause.message}; start the service (or fix the server's "
                "--base-url); the next call tries to connect again"
            )
        if isinstance(cause, MississippiError):
            return (
                f"{cause.code}: the model {self.name} could not be loaded: "
                f"{cause.describe(MCP_SPELLING)}; "
                "fix the server's model settings (--model, --device, or --engine remote "
                "--base-url) and restart the server"
            )
        return (
            f"the model {self.name} could not be loaded ({type(cause).__name__}); the server's "
            "log (stderr) has the details; fix the model settings and restart the server"
        )

    def close(self) -> None:
        """Release the model (a load still running releases its result when it ends)."""
        self.loader.close()


def load_vlm(settings: MCPSettings) -> MississippiVLM:
    """Build the model the settings describe: loaded locally, or a remote service's client.

    The policy given here is never used by the tools, which build one per call.
    """
    policy = SourcePolicy(allowed_roots=())
    if settings.engine == "remote":
        assert settings.base_url is not None  # checked by MCPSettings
        key = settings.remote_api_key.get_secret_value() if settings.remote_api_key else None
        return MississippiVLM.connect(
            settings.base_url,
            api_key=key or None,
            model=settings.model,
            family=settings.family,
            policy=policy,
        )
    return MississippiVLM.load(
        settings.model_name,
        device=settings.device,
        dtype=settings.dtype,
        quantization=settings.quantization,
        progress=False,  # no progress bars: stdout is the protocol on stdio
        policy=policy,
        memory_limit=settings.max_memory,
    )


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
    """What every tool shares: the settings, the model holder and the error translation."""

    def __init__(self, settings: MCPSettings, holder: ModelHolder) -> None:
        self.settings = settings
        self.holder = holder
        self.limits = ImageLimits(
            max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )
        self.run_settings = ToolSettings(
            max_tiles=settings.max_tiles,
            max_new_tokens=settings.max_new_tokens,
            timeout=settings.request_timeout,
            max_pages=settings.max_pages,
        )
        self.store = ResultStore(settings.result_budget)

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

    async def call(
        self,
        spec: TaskSpec[Any, Any],
        given: ImageArgument,
        pages: PageArgument,
        arguments: dict[str, Any],
        ctx: ToolContext,
        roots: ListRootsResult | None,
    ) -> CallToolResult:
        """Run one tool call on a per-call view of the model, translating every failure."""
        with self.holder.activity.use():  # the model is not unloaded for idleness meanwhile
            return await self._call(spec, given, pages, arguments, ctx, roots)

    async def _call(
        self,
        spec: TaskSpec[Any, Any],
        given: ImageArgument,
        pages: PageArgument,
        arguments: dict[str, Any],
        ctx: ToolContext,
        roots: ListRootsResult | None,
    ) -> CallToolResult:
        progress = _CallProgress(ctx)
        image = image_source(given)
        if image.strip().startswith("mississippi://"):  # a page of an earlier result
            document, page = self.store.resolve(image)
            image, policy = document.source, document.policy
            pages = page if pages is None else pages
        else:
            image, policy = _as_source(image), self.policy(roots)
        try:  # a bad page selection or path is refused before any wait for the model
            check_call(image, pages, policy)
        except MississippiError as e:
            raise ToolError(self.explain(e)) from e
        base = await self.holder.get(progress)
        progress.next_phase()
        vlm = MississippiVLM(base.engine, policy=policy, limits=self.limits)
        started = time.monotonic()

        async def on_page(done: int, total: int | None) -> None:
            if done == 0:
                message = "reading the pages" if total is None else f"reading {total} page(s)"
            else:
                message = "done" if done == total else f"read {done} page(s)"
            await progress(done, total, message)

        try:
            output = await acall_tool(
                vlm, spec, image, pages, arguments, self.run_settings, on_page
            )
        except MississippiError as e:
            raise ToolError(self.explain(e)) from e
        except Exception as e:  # a crash: logged here, reported without its details
            logger.exception("tool %s crashed", spec.name)
            raise ToolError(
                f"internal error in {spec.name} ({type(e).__name__}); the details are in the "
                "server's log (stderr); the server keeps running: retry once, and report the "
                "problem if it happens again"
            ) from e
        logger.info("%s done in %.2f s", spec.name, time.monotonic() - started)
        return self.answer(
            spec, output, Document(image, policy, self.limits, arguments.get("region"))
        )

    def answer(
        self, spec: TaskSpec[Any, Any], output: ToolOutput, document: Document
    ) -> CallToolResult:
        """The call's result: links to the pages read, cut to the budget (with a cursor)."""
        links: list[ResourceLink] = []
        if spec.images != "document":
            key = self.store.remember(document)
            links = [
                self.store.link(key, o.page, f"{spec.name}: page {o.page or 1} as read")
                for o in output.outcomes
            ]
        if not isinstance(output.artifact, list):
            return CallToolResult(
                content=[TextContent(type="text", text=output.content), *links],
                structured_content={
                    "result": output.artifact.model_dump(mode="json"),
                    "pages": None,
                    "next_cursor": None,
                },
            )
        parts = split_pages(_sections(spec, output), _entries(output), links, self.store.budget)
        cursor = self.store.keep(spec.name, parts)
        return CallToolResult(
            content=parts[0].content(cursor),
            structured_content={"result": None, "pages": parts[0].entries, "next_cursor": cursor},
        )

    def read_more(self, cursor: str) -> CallToolResult:
        """The next part of a long result."""
        tool, part, following = self.store.next_part(cursor)
        structured = ContinuedOutput(tool=tool, pages=part.entries, next_cursor=following)
        return CallToolResult(
            content=part.content(following), structured_content=structured.model_dump(mode="json")
        )

    @staticmethod
    def explain(error: MississippiError) -> str:
        """The error's code and message, its remedy in this server's words."""
        return f"{error.code}: {error.describe(MCP_SPELLING)}"


def _tool_function(spec: TaskSpec[Any, Any], tools: _Tools) -> Callable[..., Any]:
    """The tool's function, its signature built from the agent tools' arguments model."""

    async def tool(**kwargs: Any) -> CallToolResult:
        ctx, roots = kwargs.pop("ctx"), kwargs.pop("roots", None)
        image, pages = kwargs.pop("image"), kwargs.pop("pages", None)
        return await tools.call(spec, image, pages, kwargs, ctx, roots)

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
        inspect.Parameter("ctx", keyword, annotation=ToolContext),
        inspect.Parameter("roots", keyword, annotation=RootsArg, default=None),
    ]
    for name, info in tool_arguments(spec).model_fields.items():
        if name == "image":
            parameters.append(
                inspect.Parameter(
                    name, keyword, annotation=Annotated[ImageArgument, Field(description=_IMAGE)]
                )
            )
            continue
        default = (
            inspect.Parameter.empty
            if info.is_required()
            else info.get_default(call_default_factory=True)
        )
        # The default moves to the signature; the constraints and description stay with the type.
        described = Field(
            description=info.description,
            examples=info.examples,
            json_schema_extra=info.json_schema_extra,
        )
        annotation = Annotated[(info.annotation, *info.metadata, described)]  # type: ignore[valid-type,name-defined]
        parameters.append(inspect.Parameter(name, keyword, annotation=annotation, default=default))
    parameters.sort(key=lambda parameter: parameter.default is not inspect.Parameter.empty)
    returns = Annotated[CallToolResult, output_model(spec)]
    tool.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    tool.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": returns}
    tool.__name__ = spec.name
    tool.__doc__ = spec.description
    return tool


_IMAGE = (
    IMAGE_DESCRIPTION
    + " Also: MCP image content ({'type': 'image', 'data': <base64>, 'mimeType': ...}), an "
    "embedded resource with a blob, or a page link from an earlier result "
    "('mississippi://documents/.../pages/N') to read that page again (another task, a region)."
)

READ_MORE = "read_more"
"""The tool that returns the next part of a result cut to the budget."""


def _read_more_tool(tools: _Tools) -> Tool:
    async def read_more(
        cursor: Annotated[
            str, Field(min_length=1, description="The next_cursor of the previous part.")
        ],
    ) -> Annotated[CallToolResult, ContinuedOutput]:
        return tools.read_more(cursor)

    read_more.__doc__ = (
        "Fetch the next pages of a result that was too long for one answer: pass the "
        "next_cursor it ended with. Each cursor works once; the last part has next_cursor null."
    )
    return Tool.from_function(
        read_more,
        name=READ_MORE,
        title="Read the rest of a long result",
        annotations=ToolAnnotations(
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=False,  # a cursor is used up
            open_world_hint=False,
        ),
    )


def tool_names(settings: MCPSettings) -> list[str]:
    """The tools a server with these settings lists, in order."""
    return [spec.name for spec in _served_tasks(settings)] + [READ_MORE]


def _served_tasks(settings: MCPSettings) -> list[TaskSpec[Any, Any]]:
    """The tasks the configured model can do, known before it loads.

    A remote engine whose family is not given lists every task: its service is asked only when
    the first call comes.
    """
    if settings.engine == "remote" and settings.family is None:
        return all_tasks()
    return tasks_for_model(settings.model_name, settings.family)


_INSTRUCTIONS = """\
Reads images and PDF pages with a local vision-language model ({model}).
Tools: {tools}. Use ocr for the text of documents and screenshots, read_table for tables,
read_chart for charts, extract to fill a JSON Schema or template from a form, receipt or ID, and
ask for any other question about an image. Pass images as file paths under the allowed
directories, as data URIs or base64{urls}. Allowed directories at start-up: {dirs}{roots}.
"""


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
    served = model.loader.vlm.tasks if model.loader.vlm is not None else _served_tasks(settings)

    @asynccontextmanager
    async def lifespan(_server: MCPServer[ServerState]) -> AsyncIterator[ServerState]:
        model.start()
        unloader = None
        if settings.idle_unload is not None:
            unloader = IdleUnloader(model.loader, model.activity, settings.idle_unload)
            unloader.start()
        try:
            yield state
        finally:
            if unloader is not None:
                await unloader.stop()

    dirs = ", ".join(str(path) for path in settings.allow_dirs) or "none"
    instructions = _INSTRUCTIONS.format(
        model=settings.model_name,
        tools=", ".join(spec.name for spec in served),
        urls=", or as http(s) URLs" if settings.allow_urls else "",
        dirs=dirs,
        roots=", plus the client's roots" if settings.client_roots else "",
    )
    if settings.desktop:
        instructions += (
            "The user enabled read_screenshot and read_clipboard_image: they run any of these "
            "tasks on the screen (or a window or region) or on the clipboard's image. Use them "
            "only when the user asks about what is on their screen or clipboard.\n"
        )
    annotations = ToolAnnotations(
        read_only_hint=True,
        destructive_hint=False,
        idempotent_hint=True,
        open_world_hint=settings.allow_urls,
    )
    listed = [
        _refusing_unknown_arguments(
            Tool.from_function(
                _tool_function(spec, tools),
                name=spec.name,
                title=spec.title,
                description=spec.description,
                annotations=annotations,
            )
        )
        for spec in served
    ]
    if settings.desktop:
        from mississippi_mcp.desktop_tools import desktop_tools

        listed += [_refusing_unknown_arguments(tool) for tool in desktop_tools(tools, served)]
    listed.append(_refusing_unknown_arguments(_read_more_tool(tools)))
    from mississippi_mcp import __version__

    server: MCPServer[ServerState] = MCPServer(
        SERVER_NAME,
        title="Mississippi vision tools",
        version=__version__,
        instructions=instructions,
        lifespan=lifespan,
        log_level=settings.log_level,
        tools=listed,
    )

    def page(document: str, page: str) -> bytes:
        return tools.store.render(document, page)

    server.resource(
        DOCUMENT_URI,
        name="page",
        title="A page as read",
        description="A page (or its zoomed crop) that a tool read, rendered as PNG.",
        mime_type="image/png",
    )(page)
    return server


def _refusing_unknown_arguments(tool: Tool) -> Tool:
    """``tool`` with an argument it does not take refused, not dropped (``page`` for ``pages``).

    The SDK ignores unknown arguments by default, which would run the call without what the
    caller asked for.
    """
    base = tool.fn_metadata.arg_model
    known = sorted(base.model_fields)

    def refuse_unknown(cls: type[BaseModel], data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(name) for name in data if name not in base.model_fields)
            if unknown:
                raise ValueError(
                    f"{tool.name} takes no argument {', '.join(map(repr, unknown))}; its "
                    f"arguments are: {', '.join(known)}"
                )
        return data

    validators: dict[str, Any] = {"refuse_unknown": model_validator(mode="before")(refuse_unknown)}
    strict = create_model(base.__name__, __base__=base, __validators__=validators)
    tool.fn_metadata.arg_model = strict
    tool.parameters = {**tool.parameters, "additionalProperties": False}
    return tool
