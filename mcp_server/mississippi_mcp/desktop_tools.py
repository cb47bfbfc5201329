"""``read_screenshot`` and ``read_clipboard_image``: any catalogue task on the screen or clipboard.

Listed only when the server runs with ``--desktop`` (``MISSISSIPPI_MCP_DESKTOP=true``): a
screenshot or the clipboard can hold secrets (passwords, messages, keys), and what the task reads
goes back to the client's model. Each tool captures the image (:mod:`mississippi_mcp.capture`),
then runs the chosen task on it exactly as that task's own tool would on an inline image, so every
argument, limit and error is the task's. The structured result adds what was captured (size,
source, pixel digest), never the image itself.
"""

from __future__ import annotations

import base64
import inspect
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from mississippi_mcp.capture import Box, Capture, grab_clipboard, grab_screen
from mississippi_mcp.server import ToolContext, _Tools
from mississippi_tools.agent_tools import check_tool_arguments
from mississippi_tools.errors import MississippiError
from mississippi_tools.tasks.catalogue import TaskSpec

__all__ = ["DESKTOP_TOOL_NAMES", "DESKTOP_WARNING", "CaptureInfo", "desktop_tools"]

DESKTOP_TOOL_NAMES = ("read_screenshot", "read_clipboard_image")
"""The tools ``--desktop`` adds."""

DESKTOP_WARNING = (
    "Privacy: the user enabled this tool when starting the server (--desktop); a screenshot or "
    "the clipboard can hold secrets (passwords, private messages, keys), and what the task reads "
    "is returned to you. Capture only what the user asked you to read."
)

_RESERVED = ("image", "pages", "region")


class CaptureInfo(BaseModel):
    """What the tool captured."""

    model_config = ConfigDict(extra="forbid")

    source: str
    """``screen``, ``window``, ``region`` or ``clipboard``."""
    backend: str
    """What took it: ``xcb``, ``grim``, ``screencapture``, ``imagegrab``, ``xclip`` ..."""
    width: int
    """Width of the captured image, in pixels."""
    height: int
    """Height of the captured image, in pixels."""
    box: list[int] | None = None
    """Where on the screen, ``[x0, y0, x1, y1]``, for a window or a region."""
    rgb_sha256: str
    """SHA-256 of the RGB pixels: equal for two captures of the same pixels."""


class DesktopOutput(BaseModel):
    """The structured content of a desktop tool."""

    model_config = ConfigDict(extra="forbid")

    task: str
    """The task that read the capture."""
    result: dict[str, Any]
    """The task's result, as its own tool returns it."""
    capture: CaptureInfo
    """What was captured."""


def _info(capture: Capture) -> CaptureInfo:
    return CaptureInfo(
        source=capture.source,
        backend=capture.backend,
        width=capture.image.width,
        height=capture.image.height,
        box=None if capture.box is None else list(capture.box),
        rgb_sha256=capture.rgb_sha256,
    )


def _tasks_text(served: list[TaskSpec[Any, Any]]) -> str:
    lines = []
    for spec in served:
        names = [
            (info.alias or name) + ("" if info.is_required() else "?")
            for name, info in spec.arguments.model_fields.items()
        ]
        lines.append(f"- {spec.name}: arguments {{{', '.join(names) or ''}}}")
    return "\n".join(lines)


async def _run_task(
    tools: _Tools,
    served: dict[str, TaskSpec[Any, Any]],
    task: str,
    arguments: dict[str, Any] | None,
    capture: Callable[[], Capture],
    ctx: ToolContext,
) -> CallToolResult:
    spec = served.get(task)
    if spec is None:
        raise ToolError(f"unknown task {task!r}; pass one of: {', '.join(served)}")
    arguments = dict(arguments or {})
    reserved = sorted(set(arguments) & set(_RESERVED))
    if reserved:
        raise ToolError(
            f"'arguments' may not set {', '.join(reserved)}: the image is the capture; pass "
            "'region' to this tool to capture part of the screen"
        )
    try:
        check_tool_arguments(spec, {"image": "capture", **arguments})
        captured = await anyio.to_thread.run_sync(capture)
    except MississippiError as e:
        raise ToolError(f"{e.code}: {e.message}") from e
    image = "data:image/png;base64," + base64.b64encode(captured.png()).decode("ascii")
    result = await tools.call(spec, image, None, arguments, ctx, None)
    structured = result.structured_content or {}
    info = _info(captured)
    what = {"screen": "the whole screen", "window": "a window", "region": "a screen region"}
    where = what.get(captured.source, "the clipboard's image")
    note = f"[{task} on {where}, {info.width}×{info.height} px]"
    text = "\n".join(block.text for block in result.content if isinstance(block, TextContent))
    return CallToolResult(
        content=[TextContent(type="text", text=f"{note}\n{text}")],
        structured_content={
            "task": task,
            "result": structured.get("result") or {},
            "capture": info.model_dump(mode="json"),
        },
    )


def _signature(
    function: Callable[..., Any], parameters: list[inspect.Parameter], name: str, doc: str
) -> None:
    returns = Annotated[CallToolResult, DesktopOutput]
    function.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": returns}
    function.__name__ = name
    function.__doc__ = doc


def desktop_tools(tools: _Tools, served: list[TaskSpec[Any, Any]]) -> list[Tool]:
    """The two desktop tools over the server's tasks (for :func:`~mississippi_mcp.build_server`)."""
    by_name = {spec.name: spec for spec in served}
    names = list(by_name)
    keyword = inspect.Parameter.KEYWORD_ONLY
    task_parameter = inspect.Parameter(
        "task",
        keyword,
        annotation=Annotated[
            str,
            Field(
                description="The task to run on the captured image: " + ", ".join(names) + ".",
                json_schema_extra={"enum": list[Any](names)},
            ),
        ],
        default="ocr" if "ocr" in by_name else names[0],
    )
    arguments_parameter = inspect.Parameter(
        "arguments",
        keyword,
        annotation=Annotated[
            dict[str, Any] | None,
            Field(
                description="The task's own arguments, as its tool takes them (not image or "
                "pages): {'question': '...'} for ask, {'json_schema': {...}} for extract, "
                "{'format': 'markdown'} for ocr; leave empty for the defaults."
            ),
        ],
        default=None,
    )
    ctx_parameter = inspect.Parameter("ctx", keyword, annotation=ToolContext)
    tasks_text = _tasks_text(served)

    async def read_screenshot(**kwargs: Any) -> CallToolResult:
        ctx = kwargs.pop("ctx")
        region = kwargs.get("region")
        box: Box | None = None
        if region is not None:
            box = (int(region[0]), int(region[1]), int(region[2]), int(region[3]))
        capture = partial(grab_screen, window=kwargs.get("window"), region=box)
        return await _run_task(
            tools, by_name, kwargs["task"], kwargs.get("arguments"), capture, ctx
        )

    screenshot_parameters = [
        ctx_parameter,
        task_parameter,
        arguments_parameter,
        inspect.Parameter(
            "window",
            keyword,
            annotation=Annotated[
                str | None,
                Field(
                    description="Capture only this window: its exact title (Linux X11, "
                    "Windows) or its application's name (macOS). Leave empty for the whole "
                    "screen."
                ),
            ],
            default=None,
        ),
        inspect.Parameter(
            "region",
            keyword,
            annotation=Annotated[
                list[int] | None,
                Field(
                    min_length=4,
                    max_length=4,
                    description="Capture only [x0, y0, x1, y1] (left, top, right, bottom) in "
                    "screen pixels, or in the window's pixels with 'window'.",
                ),
            ],
            default=None,
        ),
    ]
    screenshot_doc = (
        "Take a screenshot (the whole screen, one window, or a region) and run a task on it: "
        "read its text (ocr), a table, a chart, extract JSON, or answer a question about what is "
        f"on screen. Tasks and their arguments:\n{tasks_text}\n{DESKTOP_WARNING}"
    )
    _signature(read_screenshot, screenshot_parameters, "read_screenshot", screenshot_doc)

    async def read_clipboard_image(**kwargs: Any) -> CallToolResult:
        ctx = kwargs.pop("ctx")
        return await _run_task(
            tools, by_name, kwargs["task"], kwargs.get("arguments"), grab_clipboard, ctx
        )

    clipboard_doc = (
        "Run a task on the image on the clipboard (a copied picture or screenshot): read its "
        "text (ocr), a table, a chart, extract JSON, or answer a question about it. Tasks and "
        f"their arguments:\n{tasks_text}\n{DESKTOP_WARNING}"
    )
    _signature(
        read_clipboard_image,
        [ctx_parameter, task_parameter, arguments_parameter],
        "read_clipboard_image",
        clipboard_doc,
    )
    annotations = ToolAnnotations(
        read_only_hint=True, destructive_hint=False, idempotent_hint=False, open_world_hint=False
    )
    return [
        Tool.from_function(
            read_screenshot,
            name="read_screenshot",
            title="Read the screen",
            description=screenshot_doc,
            annotations=annotations,
        ),
        Tool.from_function(
            read_clipboard_image,
            name="read_clipboard_image",
            title="Read the clipboard's image",
            description=clipboard_doc,
            annotations=annotations,
        ),
    ]
