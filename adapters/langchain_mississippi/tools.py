"""LangChain tools over :class:`~mississippi_tools.MississippiVLM`, one per catalogue task.

Every tool is a :class:`MississippiTaskTool` for one task of the task catalogue: its name is
``mississippi_<task>``, its description and arguments are the task's (``image``, ``pages``, then
the task's own), and it answers in ``content_and_artifact`` form: the catalogue's text for the
model, the typed result as the artifact. :func:`tool_class` makes the class of any task; the
built-in ones have names of their own (:class:`MississippiOCRTool` ...). Page handling, rendering
and argument parsing are the core's (:mod:`mississippi_tools.agent_tools`); this module
translates.

Errors:
    A :class:`~mississippi_tools.errors.MississippiError` becomes a
    :class:`~langchain_core.tools.ToolException` here, once, whose message is
    ``"<error code>: <what was wrong and what to do>"``. ``handle_tool_error`` is on, so the agent
    receives it as a ``ToolMessage`` with ``status="error"`` and can correct its call. Arguments
    that do not match the input schema come back the same way (``handle_validation_error``).
    Any other exception is a bug and propagates.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, Field, PrivateAttr, ValidationError, model_validator

from mississippi_tools import MississippiVLM
from mississippi_tools.agent_tools import (
    PageArgument,
    ToolSettings,
    acall_tool,
    call_tool,
    tool_arguments,
    tool_description,
)
from mississippi_tools.batch import DEFAULT_MAX_PAGES
from mississippi_tools.errors import MississippiError
from mississippi_tools.sources import agent_policy
from mississippi_tools.tasks.catalogue import TaskSpec, get_task

__all__ = [
    "DEFAULT_MAX_PAGES",
    "LANGCHAIN_SPELLING",
    "MississippiAskTool",
    "MississippiChartTool",
    "MississippiExtractTool",
    "MississippiOCRTool",
    "MississippiTableTool",
    "MississippiTaskTool",
    "tool_class",
]

#: How the options that fix errors are spelled for a LangChain developer (not the calling model).
LANGCHAIN_SPELLING: dict[str, str] = {
    "allow_urls": "the tool or toolkit is built without allow_urls=True",
    "allowed_roots": "the tool or toolkit's allowed_roots do not include it",
    "follow_symlinks_outside_roots": "the toolkit's policy does not follow links out of its roots",
    "allow_private_urls": "the toolkit's policy refuses private addresses "
    "(SourcePolicy(allow_private_urls=True))",
    "url_timeout": "the toolkit's policy sets url_timeout",
    "url_max_bytes": "the toolkit's policy sets url_max_bytes",
    "max_bytes": "the toolkit's limits set max_bytes",
    "max_pixels": "the toolkit's limits set max_pixels",
    "pages": "pass pages='{value}'",
}


def _tool_exception(error: MississippiError) -> ToolException:
    """The one translation of our errors into LangChain's tool-error channel."""
    return ToolException(f"{error.code}: {error.describe(LANGCHAIN_SPELLING)}")


def _validation_message(error: ValidationError | Exception) -> str:
    """Tell the calling model which arguments were wrong and how."""
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
            for e in error.errors()
        )
    else:
        problems = str(error)
    return f"invalid_arguments: {problems}; fix these arguments and call the tool again"


class MississippiTaskTool(BaseTool):
    """A task of the catalogue as a LangChain tool (subclasses name the task in ``task``).

    Setup:
        .. code-block:: bash

            pip install "mississippi-tools[langchain,local]"

    Instantiate:
        .. code-block:: python

            from mississippi_tools import MississippiVLM
            from langchain_mississippi import MississippiOCRTool, tool_class

            vlm = MississippiVLM.load("h2oai/h2ovl-mississippi-800m")
            tool = MississippiOCRTool(vlm=vlm, allowed_roots=["/data/scans"])
            any_task = tool_class("read_table")(vlm=vlm)

    Invoke:
        .. code-block:: python

            tool.invoke({"image": "invoice.png"})                  # the text
            message = tool.invoke(
                {"type": "tool_call", "id": "1", "name": tool.name,
                 "args": {"image": "report.pdf", "pages": "1-2", "format": "markdown"}}
            )
            message.content                                        # "[page 1]" sections
            message.artifact                                       # [OCRResult, OCRResult]

    Async:
        .. code-block:: python

            await tool.ainvoke({"image": "invoice.png"})
    """

    task: ClassVar[str]
    """The catalogue task this tool runs."""

    vlm: MississippiVLM
    """The model, in this process or behind a service; tools of a toolkit share one."""
    allowed_roots: list[Path] | None = None
    """Directories image paths must stay inside; ``None``: the agent default of
    :func:`~mississippi_tools.sources.agent_policy`. Relative paths start at the first root."""
    allow_urls: bool | None = None
    """Fetch http(s) image URLs; ``None`` keeps ``vlm.policy``'s setting (off by default)."""
    max_tiles: int | None = None
    """H2OVL models: most 448-px tiles per image (the model's default when ``None``)."""
    options: dict[str, Any] | None = None
    """Other model options (``vlm.model_info.options`` lists them)."""
    max_new_tokens: int | None = None
    """Most tokens generated per page (the task's default when ``None``)."""
    timeout: float | None = None
    """Seconds before one page's request fails."""
    max_pages: int = Field(default=DEFAULT_MAX_PAGES, ge=1)
    """Most pages one call reads."""
    concurrency: int | None = Field(default=None, ge=1)
    """Pages in flight for a range (default: the engine's batch size)."""
    fixed_arguments: dict[str, Any] = Field(default_factory=dict)
    """Task arguments fixed for every call; the calling model no longer passes them."""

    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: Any = True
    handle_validation_error: Any = _validation_message

    _reader: MississippiVLM = PrivateAttr()
    _settings: ToolSettings = PrivateAttr()

    @classmethod
    def spec(cls) -> TaskSpec[Any, Any]:
        """The tool's task."""
        return get_task(cls.task)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, values: Any) -> Any:
        if isinstance(values, dict):
            spec = cls.spec()
            values.setdefault("name", f"mississippi_{spec.name}")
            values.setdefault("description", spec.description)
        return values

    @model_validator(mode="after")
    def _set_up(self) -> Self:
        spec = self.spec()
        policy = agent_policy(self.vlm.policy, allowed_roots=self.allowed_roots, tool=self.name)
        if self.allow_urls is not None:
            policy = dataclasses.replace(policy, allow_urls=self.allow_urls)
        self._reader = self.vlm.with_policy(policy)
        self._settings = ToolSettings(
            max_tiles=self.max_tiles,
            options=self.options,
            max_new_tokens=self.max_new_tokens,
            timeout=self.timeout,
            max_pages=self.max_pages,
            concurrency=self.concurrency,
            fixed=self.fixed_arguments,
        )
        if "args_schema" not in self.model_fields_set:
            self.args_schema = tool_arguments(spec, fixed=list(self.fixed_arguments))
        if "description" not in self.model_fields_set or self.description == spec.description:
            self.description = tool_description(spec, policy, self.fixed_arguments)
        return self

    def _run(
        self,
        image: str,
        pages: PageArgument = None,
        run_manager: CallbackManagerForToolRun | None = None,
        **arguments: Any,
    ) -> tuple[str, Any]:
        try:
            output = call_tool(self._reader, self.spec(), image, pages, arguments, self._settings)
        except MississippiError as e:
            raise _tool_exception(e) from e
        return output.content, output.artifact

    async def _arun(
        self,
        image: str,
        pages: PageArgument = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
        **arguments: Any,
    ) -> tuple[str, Any]:
        try:
            output = await acall_tool(
                self._reader, self.spec(), image, pages, arguments, self._settings
            )
        except MississippiError as e:
            raise _tool_exception(e) from e
        return output.content, output.artifact


class MississippiOCRTool(MississippiTaskTool):
    """Read the text of an image or a PDF page (the ``ocr`` task).

    The artifact is an :class:`~mississippi_tools.OCRResult` (a list for a page range).
    """

    task: ClassVar[str] = "ocr"


class MississippiChartTool(MississippiTaskTool):
    """Read the data of a chart image: title, type, axes and every series (``read_chart``).

    The artifact is a :class:`~mississippi_tools.ChartData` (a list for a page range).
    """

    task: ClassVar[str] = "read_chart"


class MississippiTableTool(MississippiTaskTool):
    """Read a table in an image or a PDF page into columns and rows (``read_table``).

    The artifact is a :class:`~mississippi_tools.TableData` (a list for a page range).
    """

    task: ClassVar[str] = "read_table"


class MississippiExtractTool(MississippiTaskTool):
    """Extract JSON valid under a schema from an image: forms, invoices, IDs (``extract``).

    The schema is fixed at construction (``extraction_schema``: a pydantic model class, a JSON
    Schema or a template dict; the description then shows the calling model the JSON it gets
    back), or passed by the calling model in each call (``json_schema``). With the local engine
    the answer is grammar-constrained, so it always matches the schema.

    The artifact is an :class:`~mississippi_tools.ExtractionResult` (``data``, ``confidence``,
    ``raw_text``, ``meta``), or a list of them for a page range.
    """

    task: ClassVar[str] = "extract"

    extraction_schema: type[BaseModel] | dict[str, Any] | None = None
    """The schema of every call (a pydantic model class, a JSON Schema or a template dict);
    ``None`` lets the calling model pass ``json_schema`` in each call."""

    @model_validator(mode="before")
    @classmethod
    def _fix_schema(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("extraction_schema") is not None:
            fixed = dict(values.get("fixed_arguments") or {})
            fixed["json_schema"] = values["extraction_schema"]
            values["fixed_arguments"] = fixed
        return values


class MississippiAskTool(MississippiTaskTool):
    """Answer a question about an image or a PDF page (``ask``).

    The artifact is an :class:`~mississippi_tools.Answer` (a list for a page range).
    """

    task: ClassVar[str] = "ask"


_BUILTIN: dict[str, type[MississippiTaskTool]] = {
    tool.task: tool
    for tool in (
        MississippiOCRTool,
        MississippiChartTool,
        MississippiTableTool,
        MississippiExtractTool,
        MississippiAskTool,
    )
}


def tool_class(task: str) -> type[MississippiTaskTool]:
    """The tool class of a catalogue task (built-in tasks have named classes)."""
    spec = get_task(task)
    if spec.name in _BUILTIN:
        return _BUILTIN[spec.name]
    name = "Mississippi" + "".join(part.title() for part in spec.name.split("_")) + "Tool"
    made = type(name, (MississippiTaskTool,), {"__doc__": spec.description, "task": spec.name})
    _BUILTIN[spec.name] = made
    return made
