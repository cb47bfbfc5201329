"""LangChain tools over :class:`~mississippi_tools.MississippiVLM`, one per task.

Every tool takes an ``image`` (a file path, a data URI or base64; an http(s) URL only when the
source policy allows URLs) and optional ``pages`` for PDFs and multi-page TIFFs, and answers in
``content_and_artifact`` form: concise text for the model, the typed result as the artifact.

Pages:
    ``pages`` left empty reads an ordinary image (a document with several pages then fails with a
    message asking for pages). An int or a single number (``2``, ``"2"``) reads that page: the
    content is that page's text and the artifact its result. A range or list (``"1-3"``,
    ``"1,4"``) reads each page: the content has one ``[page N]`` section per page, and the
    artifact is a list with one entry per page, in order, each the page's result or, for a page
    that failed, the :class:`~mississippi_tools.errors.MississippiError` it raised (its section
    says so). When every page fails, the call fails. At most ``max_pages`` pages per call.

Errors:
    A :class:`~mississippi_tools.errors.MississippiError` becomes a
    :class:`~langchain_core.tools.ToolException` here, once, whose message is
    ``"<error code>: <what was wrong and what to do>"``. ``handle_tool_error`` is on, so the agent
    receives it as a ``ToolMessage`` with ``status="error"`` and can correct its call. Arguments
    that do not match the input schema come back the same way (``handle_validation_error``).
    Any other exception is a bug and propagates.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, Self

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.tools import ArgsSchema, BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from mississippi_tools.errors import InvalidInputError, MississippiError
from mississippi_tools.pdf import parse_page_selection
from mississippi_tools.vlm import MississippiVLM

__all__ = [
    "DEFAULT_MAX_PAGES",
    "AskInput",
    "ChartInput",
    "ExtractInput",
    "FixedSchemaExtractInput",
    "MississippiAskTool",
    "MississippiChartTool",
    "MississippiExtractTool",
    "MississippiOCRTool",
    "MississippiTableTool",
    "OCRInput",
    "TableInput",
]

DEFAULT_MAX_PAGES: Final = 20
"""Most pages one tool call reads (a range beyond it is refused with a smaller range to try)."""

PageArg = int | str | list[int] | None

_IMAGE_DESCRIPTION: Final = (
    "The image to read: a file path such as 'scans/invoice.png' or '/data/report.pdf', a data "
    "URI ('data:image/png;base64,...') or base64-encoded image bytes; http(s) URLs only if this "
    "tool allows them. PNG, JPEG, GIF, WEBP, BMP, TIFF and PDF are supported."
)
_PAGES_DESCRIPTION: Final = (
    "Only for PDFs and multi-page TIFFs: the 1-based page to read (2 or '2'), or a range or list "
    "('1-3', '1,4,6-8', '5-' for page 5 to the end, or [1, 4]) to read each of those pages "
    "separately. Leave it empty for an ordinary image; a document with several pages needs it."
)


# --------------------------------------------------------------------------------------------
# Input schemas (the field descriptions are what the calling model reads)
# --------------------------------------------------------------------------------------------


class _ImageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(description=_IMAGE_DESCRIPTION)
    pages: int | str | list[int] | None = Field(default=None, description=_PAGES_DESCRIPTION)


class OCRInput(_ImageInput):
    """Arguments of :class:`MississippiOCRTool`."""

    format: Literal["text", "markdown"] = Field(
        default="text",
        description=(
            "'text' (the default) for plain text, one line per line of the image; 'markdown' "
            "to keep headings, lists and tables as Markdown."
        ),
    )


class ChartInput(_ImageInput):
    """Arguments of :class:`MississippiChartTool`."""


class TableInput(_ImageInput):
    """Arguments of :class:`MississippiTableTool`."""


class FixedSchemaExtractInput(_ImageInput):
    """Arguments of :class:`MississippiExtractTool` when its schema is fixed at construction."""

    instructions: str | None = Field(
        default=None,
        description=(
            "Optional extra guidance for the extraction, e.g. 'dates as YYYY-MM-DD' or "
            "'amounts without currency symbols'."
        ),
    )


class ExtractInput(FixedSchemaExtractInput):
    """Arguments of :class:`MississippiExtractTool` when the caller passes the schema."""

    json_schema: dict[str, Any] | str = Field(
        description=(
            "The shape of the JSON to extract. Either a template whose example values give the "
            'types, e.g. {"name": "", "total": 0.0, "paid": false, "items": [{"description": '
            '"", "amount": 0.0}]}, or a JSON Schema, e.g. {"type": "object", "properties": '
            '{"name": {"type": "string"}}, "required": ["name"]}. Every key of a template is '
            "returned; a value missing from the image comes back as null."
        )
    )


class AskInput(_ImageInput):
    """Arguments of :class:`MississippiAskTool`."""

    question: str = Field(
        description=(
            "The question about the image, in plain language, e.g. 'What is the total amount "
            "due?' or 'Is the form signed?'."
        )
    )


# --------------------------------------------------------------------------------------------
# Errors at the boundary
# --------------------------------------------------------------------------------------------


def _tool_exception(error: MississippiError) -> ToolException:
    """The one translation of our errors into LangChain's tool-error channel."""
    return ToolException(f"{error.code}: {error}")


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


# --------------------------------------------------------------------------------------------
# The shared base
# --------------------------------------------------------------------------------------------


class _Selection:
    """What ``pages`` asks for: no page, one page, or a range or list (one result per page)."""

    def __init__(self, pages: PageArg) -> None:
        self.page: int | None = None
        self.spec: str | list[int] | None = None
        if isinstance(pages, bool):
            raise InvalidInputError(f"pages must be a page number or a range, got {pages!r}")
        if isinstance(pages, int):
            self.page = pages
        elif isinstance(pages, list):
            self.spec = pages
        elif isinstance(pages, str) and pages.strip().isdigit():
            self.page = int(pages)
        elif isinstance(pages, str) and pages.strip():
            self.spec = pages.strip()


class _MississippiTool(BaseTool):
    """Fields, page handling and error mapping shared by the Mississippi tools."""

    vlm: MississippiVLM
    """The model, in this process or behind a service; tools of a toolkit share one."""
    allowed_roots: list[Path] | None = None
    """Directories image paths must stay inside; ``None`` keeps ``vlm.policy``'s roots.
    Relative paths start at the first root."""
    allow_urls: bool | None = None
    """Fetch http(s) image URLs; ``None`` keeps ``vlm.policy``'s setting (off by default)."""
    max_tiles: int | None = None
    """Most 448-px tiles per image (the model's default when ``None``; more reads smaller print)."""
    max_new_tokens: int | None = None
    """Most tokens generated per page (the task's default when ``None``)."""
    timeout: float | None = None
    """Seconds before one page's request fails."""
    max_pages: int = Field(default=DEFAULT_MAX_PAGES, ge=1)
    """Most pages one call reads."""
    concurrency: int | None = Field(default=None, ge=1)
    """Pages in flight for a range (default: the engine's batch size)."""

    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: Any = True
    handle_validation_error: Any = _validation_message

    _reader: MississippiVLM = PrivateAttr()

    @model_validator(mode="after")
    def _set_up(self) -> Self:
        self._reader = self.vlm
        changes: dict[str, Any] = {}
        if self.allowed_roots is not None:
            changes["allowed_roots"] = tuple(self.allowed_roots)
        if self.allow_urls is not None:
            changes["allow_urls"] = self.allow_urls
        if changes:
            policy = dataclasses.replace(self.vlm.policy, **changes)
            # The same engine (and model) under this tool's policy.
            self._reader = MississippiVLM(self.vlm.engine, policy=policy, limits=self.vlm.limits)
        self._configure()
        if "description" not in self.model_fields_set:
            described = self._describe().rstrip()
            separator = "\n" if "\n" in described else " "
            self.description = f"{described}{separator}{_policy_note(self._reader)}"
        return self

    def _configure(self) -> None:
        """Adjust the tool to its fields, once, at construction."""

    def _describe(self) -> str:
        """The model-facing description (the policy note is appended to it)."""
        return self.description

    # -- what each tool supplies ------------------------------------------------------------

    _method: ClassVar[str]
    """The :class:`MississippiVLM` method for one page (``a`` + it is the async one)."""
    _batch_method: ClassVar[str]
    """The method for a page range."""

    def _positional(self, args: dict[str, Any]) -> tuple[Any, ...]:
        """The method's arguments after the image (the question, the schema)."""
        return ()

    def _options(self, args: dict[str, Any]) -> dict[str, Any]:
        """The method's keyword options from the call's arguments and the tool's fields."""
        return self._task_options()

    def _content(self, result: Any) -> str:
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------

    def _task_options(self) -> dict[str, Any]:
        options = {
            "max_tiles": self.max_tiles,
            "max_new_tokens": self.max_new_tokens,
            "timeout": self.timeout,
        }
        return {k: v for k, v in options.items() if v is not None}

    def _batch_options(self) -> dict[str, Any]:
        return {"return_exceptions": True, "concurrency": self.concurrency}

    def _one(self, reader: MississippiVLM, image: str, page: int | None, **args: Any) -> Any:
        read = getattr(reader, self._method)
        return read(image, *self._positional(args), page=page, **self._options(args))

    async def _aone(self, reader: MississippiVLM, image: str, page: int | None, **args: Any) -> Any:
        read = getattr(reader, f"a{self._method}")
        return await read(image, *self._positional(args), page=page, **self._options(args))

    def _many(
        self, reader: MississippiVLM, image: str, pages: str | list[int], **args: Any
    ) -> list[Any]:
        read = getattr(reader, self._batch_method)
        options = {**self._options(args), **self._batch_options()}
        return read([image], *self._positional(args), pages=pages, **options)  # type: ignore[no-any-return]

    async def _amany(
        self, reader: MississippiVLM, image: str, pages: str | list[int], **args: Any
    ) -> list[Any]:
        read = getattr(reader, f"a{self._batch_method}")
        options = {**self._options(args), **self._batch_options()}
        return await read([image], *self._positional(args), pages=pages, **options)  # type: ignore[no-any-return]

    def _selected(self, reader: MississippiVLM, image: str, spec: str | list[int]) -> list[int]:
        count = reader.count_pages([image])
        selected = parse_page_selection(spec, count, what="the document")
        if len(selected) > self.max_pages:
            first = selected[0]
            raise ToolException(
                f"too_many_pages: pages {spec!r} selects {len(selected)} pages; this tool reads "
                f"at most {self.max_pages} per call; ask for a smaller range such as "
                f"'{first}-{first + self.max_pages - 1}' and call again for the rest"
            )
        return selected

    def _combine(self, selected: Sequence[int], results: list[Any]) -> tuple[str, list[Any]]:
        sections = []
        for number, result in zip(selected, results, strict=True):
            if isinstance(result, MississippiError):
                body = f"error: {_tool_exception(result)}"
            elif isinstance(result, BaseException):
                raise result  # not ours: a bug, not a page error
            else:
                body = self._content(result)
            sections.append(f"[page {number}]\n{body}")
        errors = [r for r in results if isinstance(r, MississippiError)]
        if results and len(errors) == len(results):
            first = errors[0]
            raise ToolException(
                f"{first.code}: all {len(results)} pages failed; page {selected[0]}: {first}"
            ) from first
        return "\n\n".join(sections), results

    def _call(self, image: str, pages: PageArg, **args: Any) -> tuple[str, Any]:
        reader = self._reader
        try:
            selection = _Selection(pages)
            spec = selection.spec
            if spec is None:
                result = self._one(reader, image, selection.page, **args)
                return self._content(result), result
            selected = self._selected(reader, image, spec)
            return self._combine(selected, self._many(reader, image, spec, **args))
        except MississippiError as e:
            raise _tool_exception(e) from e

    async def _acall(self, image: str, pages: PageArg, **args: Any) -> tuple[str, Any]:
        reader = self._reader
        try:
            selection = _Selection(pages)
            spec = selection.spec
            if spec is None:
                result = await self._aone(reader, image, selection.page, **args)
                return self._content(result), result
            selected = await asyncio.to_thread(self._selected, reader, image, spec)
            return self._combine(selected, await self._amany(reader, image, spec, **args))
        except MississippiError as e:
            raise _tool_exception(e) from e


def _policy_note(reader: MississippiVLM) -> str:
    """What the calling model must know about which images it may name."""
    policy = reader.policy
    roots = policy.allowed_roots
    if roots is None:
        paths = ""
    elif roots:
        shown = ", ".join(str(root) for root in roots)
        paths = f"File paths must be inside {shown}; relative paths start at {roots[0]}. "
    else:
        paths = "File paths are not accepted; pass a data URI or base64. "
    urls = "http(s) URLs are accepted." if policy.allow_urls else "URLs are not accepted."
    return f"{paths}{urls}"


def _notes(notes: Sequence[str]) -> str:
    return "\nNotes: " + "; ".join(notes) if notes else ""


# --------------------------------------------------------------------------------------------
# The tools
# --------------------------------------------------------------------------------------------


class MississippiOCRTool(_MississippiTool):
    """Read the text of an image or a PDF page with H2OVL-Mississippi (local OCR).

    Setup:
        .. code-block:: bash

            pip install "mississippi-tools[langchain,local]"

    Instantiate:
        .. code-block:: python

            from mississippi_tools import MississippiVLM
            from langchain_mississippi import MississippiOCRTool

            vlm = MississippiVLM.load("h2oai/h2ovl-mississippi-800m")
            tool = MississippiOCRTool(vlm=vlm, allowed_roots=["/data/scans"])

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

    The artifact is an :class:`~mississippi_tools.OCRResult` (a list for a page range).
    """

    name: str = "mississippi_ocr"
    description: str = (
        "Read all the text in an image, a scanned document or a PDF page (OCR, runs locally). "
        "Use it to transcribe receipts, invoices, letters, screenshots, forms and signs. "
        "Returns the text, one line per line of the image; format='markdown' keeps headings, "
        "lists and tables. For chart data, table rows, specific fields as JSON, or questions "
        "about the picture, use the chart, table, extract or ask tools instead."
    )
    args_schema: ArgsSchema | None = OCRInput
    _method: ClassVar[str] = "ocr"
    _batch_method: ClassVar[str] = "ocr_batch"

    def _options(self, args: dict[str, Any]) -> dict[str, Any]:
        return {**args, **self._task_options()}  # format

    def _content(self, result: Any) -> str:
        return str(result.text) or "(no text found)"

    def _run(
        self,
        image: str,
        pages: PageArg = None,
        format: Literal["text", "markdown"] = "text",
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, Any]:
        return self._call(image, pages, format=format)

    async def _arun(
        self,
        image: str,
        pages: PageArg = None,
        format: Literal["text", "markdown"] = "text",
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, Any]:
        return await self._acall(image, pages, format=format)


class MississippiChartTool(_MississippiTool):
    """Read the data of a chart image: title, type, axes and every series' values.

    Setup:
        .. code-block:: bash

            pip install "mississippi-tools[langchain,local]"

    Instantiate:
        .. code-block:: python

            from langchain_mississippi import MississippiChartTool

            tool = MississippiChartTool(vlm=vlm)

    Invoke:
        .. code-block:: python

            tool.invoke({"image": "sales.png"})    # a Markdown table, one column per series
            message = tool.invoke(
                {"type": "tool_call", "id": "1", "name": tool.name, "args": {"image": "sales.png"}}
            )
            message.artifact.to_csv()              # ChartData

    Async:
        .. code-block:: python

            await tool.ainvoke({"image": "sales.png"})

    The artifact is a :class:`~mississippi_tools.ChartData` (a list for a page range).
    """

    name: str = "mississippi_chart"
    description: str = (
        "Read the numbers behind a chart or graph (bar, line, pie, scatter, area) in an image "
        "or a PDF page, running locally. Returns the chart as a Markdown table: one row per "
        "label (x value), one column per series, with the title, chart type and axis units. "
        "Use it to answer questions that need the plotted values. For plain text use the OCR "
        "tool; for a printed table use the table tool."
    )
    args_schema: ArgsSchema | None = ChartInput
    _method: ClassVar[str] = "read_chart"
    _batch_method: ClassVar[str] = "read_chart_batch"

    def _content(self, result: Any) -> str:
        kind = f"Chart type: {result.chart_type}\n" if result.chart_type else ""
        return f"{kind}{result.to_markdown().rstrip()}{_notes(result.notes)}"

    def _run(
        self,
        image: str,
        pages: PageArg = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, Any]:
        return self._call(image, pages)

    async def _arun(
        self,
        image: str,
        pages: PageArg = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, Any]:
        return await self._acall(image, pages)


class MississippiTableTool(_MississippiTool):
    """Read a table in an image or a PDF page into columns and rows.

    Setup:
        .. code-block:: bash

            pip install "mississippi-tools[langchain,local]"

    Instantiate:
        .. code-block:: python

            from langchain_mississippi import MississippiTableTool

            tool = MississippiTableTool(vlm=vlm)

    Invoke:
        .. code-block:: python

            tool.invoke({"image": "invoice.png"})  # a Markdown table
            message = tool.invoke(
                {"type": "tool_call", "id": "1", "name": tool.name,
                 "args": {"image": "invoice.png"}}
            )
            message.artifact.records(typed=True)   # TableData

    Async:
        .. code-block:: python

            await tool.ainvoke({"image": "invoice.png"})

    The artifact is a :class:`~mississippi_tools.TableData` (a list for a page range).
    """

    name: str = "mississippi_table"
    description: str = (
        "Read a table (invoice lines, price lists, spreadsheets, timetables, statements) from "
        "an image or a PDF page, running locally. Returns it as a Markdown table with its "
        "column names and every row as printed. For charts use the chart tool; for running "
        "text use the OCR tool; for a few named fields use the extract tool."
    )
    args_schema: ArgsSchema | None = TableInput
    _method: ClassVar[str] = "read_table"
    _batch_method: ClassVar[str] = "read_table_batch"

    def _content(self, result: Any) -> str:
        return f"{result.to_markdown().rstrip()}{_notes(result.notes)}"

    def _run(
        self,
        image: str,
        pages: PageArg = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, Any]:
        return self._call(image, pages)

    async def _arun(
        self,
        image: str,
        pages: PageArg = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, Any]:
        return await self._acall(image, pages)


class MississippiExtractTool(_MississippiTool):
    """Extract JSON that is valid under a schema from an image (forms, invoices, IDs, receipts).

    The schema is either fixed at construction (``extraction_schema``: a pydantic model class,
    a JSON Schema or a template dict; the tool's description then shows the calling model the
    JSON it gets back) or, when not fixed, passed by the calling model in each call
    (``json_schema``: a JSON Schema or a template). With the local engine the answer is
    constrained by a grammar, so it always matches the schema.

    Setup:
        .. code-block:: bash

            pip install "mississippi-tools[langchain,local]"

    Instantiate:
        .. code-block:: python

            from pydantic import BaseModel
            from langchain_mississippi import MississippiExtractTool

            class Invoice(BaseModel):
                number: str
                total: float

            tool = MississippiExtractTool(vlm=vlm, extraction_schema=Invoice)
            open_tool = MississippiExtractTool(vlm=vlm)          # schema in each call

    Invoke:
        .. code-block:: python

            tool.invoke({"image": "invoice.png"})                # '{"number": "...", ...}'
            open_tool.invoke({"image": "id.png", "json_schema": {"name": "", "born": ""}})
            message = tool.invoke(
                {"type": "tool_call", "id": "1", "name": tool.name, "args": {"image": "inv.png"}}
            )
            message.artifact.data                                # Invoice(number=..., total=...)

    Async:
        .. code-block:: python

            await tool.ainvoke({"image": "invoice.png"})

    The artifact is an :class:`~mississippi_tools.ExtractionResult` (``data``, ``confidence``,
    ``raw_text``, ``meta``), or a list of them for a page range.
    """

    name: str = "mississippi_extract"
    description: str = (
        "Extract specific fields from an image or a PDF page as JSON (forms, invoices, "
        "receipts, ID cards, business cards, labels), running locally. The answer always "
        "matches the requested JSON shape; fields not found in the image are null. Use it when "
        "you need named values rather than all the text."
    )
    args_schema: ArgsSchema | None = ExtractInput
    _method: ClassVar[str] = "extract_result"
    _batch_method: ClassVar[str] = "extract_batch"
    extraction_schema: type[BaseModel] | dict[str, Any] | None = None
    """The schema of every call (a pydantic model class, a JSON Schema or a template dict);
    ``None`` lets the calling model pass ``json_schema`` in each call."""
    confidence: bool = False
    """Add per-field confidences (from token probabilities) to the artifact."""
    max_retries: int | None = Field(default=None, ge=0)
    """Retries after an invalid answer, for engines without grammars (the core's default)."""

    def _configure(self) -> None:
        if self.extraction_schema is None:
            return
        from mississippi_tools.schema import normalize_schema

        normalize_schema(self.extraction_schema)  # a SchemaError now rather than in every call
        if "args_schema" not in self.model_fields_set:
            self.args_schema = FixedSchemaExtractInput

    def _describe(self) -> str:
        if self.extraction_schema is None:
            return self.description
        from mississippi_tools.schema import normalize_schema, render_template

        template = render_template(normalize_schema(self.extraction_schema))
        return (
            "Extract fields from an image or a PDF page as JSON (forms, invoices, receipts, "
            "ID cards, labels), running locally. The answer always has this shape:\n"
            f"{template}\n"
        )

    def _extract_options(self, instructions: str | None) -> dict[str, Any]:
        options: dict[str, Any] = {"instructions": instructions, "confidence": self.confidence}
        if self.max_retries is not None:
            options["max_retries"] = self.max_retries
        return {**options, **self._task_options()}

    def _schema(self, json_schema: dict[str, Any] | str | None) -> Any:
        if self.extraction_schema is not None:
            return self.extraction_schema
        if json_schema is None:
            raise ToolException(
                "invalid_arguments: json_schema is required: pass a template such as "
                '{"name": "", "total": 0.0} or a JSON Schema'
            )
        if isinstance(json_schema, str):
            try:
                return json.loads(json_schema)
            except json.JSONDecodeError as e:
                raise ToolException(
                    f"invalid_arguments: json_schema is not valid JSON ({e}); pass it as a JSON "
                    'object such as {"name": "", "total": 0.0}'
                ) from None
        return json_schema

    def _positional(self, args: dict[str, Any]) -> tuple[Any, ...]:
        return (args["schema"],)

    def _options(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._extract_options(args["instructions"])

    def _content(self, result: Any) -> str:
        data = result.data
        value = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
        return json.dumps(value, ensure_ascii=False)

    def _run(
        self,
        image: str,
        pages: PageArg = None,
        instructions: str | None = None,
        json_schema: dict[str, Any] | str | None = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, Any]:
        schema = self._schema(json_schema)
        return self._call(image, pages, schema=schema, instructions=instructions)

    async def _arun(
        self,
        image: str,
        pages: PageArg = None,
        instructions: str | None = None,
        json_schema: dict[str, Any] | str | None = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, Any]:
        schema = self._schema(json_schema)
        return await self._acall(image, pages, schema=schema, instructions=instructions)


class MississippiAskTool(_MississippiTool):
    """Answer a question about an image or a PDF page (visual question answering).

    Setup:
        .. code-block:: bash

            pip install "mississippi-tools[langchain,local]"

    Instantiate:
        .. code-block:: python

            from langchain_mississippi import MississippiAskTool

            tool = MississippiAskTool(vlm=vlm)

    Invoke:
        .. code-block:: python

            tool.invoke({"image": "photo.jpg", "question": "What does the sign say?"})

    Async:
        .. code-block:: python

            await tool.ainvoke({"image": "photo.jpg", "question": "How many people?"})

    The artifact is an :class:`~mississippi_tools.Answer` (a list for a page range).
    """

    name: str = "mississippi_ask"
    description: str = (
        "Ask a question about an image or a PDF page and get a short answer from a local "
        "vision model: what is shown, what a sign or label says, whether a form is signed, "
        "which bar is highest. For the full text use the OCR tool; for exact numbers from a "
        "chart or table use the chart or table tool."
    )
    args_schema: ArgsSchema | None = AskInput
    _method: ClassVar[str] = "ask"
    _batch_method: ClassVar[str] = "ask_batch"

    def _positional(self, args: dict[str, Any]) -> tuple[Any, ...]:
        return (args["question"],)

    def _content(self, result: Any) -> str:
        return str(result.text) or "(no answer)"

    def _run(
        self,
        image: str,
        question: str,
        pages: PageArg = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, Any]:
        return self._call(image, pages, question=question)

    async def _arun(
        self,
        image: str,
        question: str,
        pages: PageArg = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, Any]:
        return await self._acall(image, pages, question=question)
