"""``MississippiToolSpec``: image reading tools for LlamaIndex agents.

Five tools, each with a sync and an async path: ``ocr``, ``read_chart``, ``read_table``,
``extract_json`` and ``ask_image``. Their docstrings are the descriptions the agent's LLM reads;
their parameter lines (``name (type): ...``) become the parameters' descriptions in the schema.

Images:
    ``image`` is a file path, a ``data:`` URI or base64 image bytes; an http(s) URL only when the
    source policy allows URLs. Paths and URLs are checked by a
    :class:`~mississippi_tools.sources.SourcePolicy`: the one given to the spec, else the
    model's own (``vlm.policy``), through :func:`~mississippi_tools.sources.agent_policy`: a
    policy allowing any path becomes the current directory only.

Errors:
    A failed call raises the library's :class:`~mississippi_tools.errors.MississippiError`
    unchanged; nothing is turned into a result string. LlamaIndex's agents (``FunctionAgent``,
    ``ReActAgent``; ``BaseWorkflowAgent._call_tool`` in llama-index-core 0.14) catch any exception
    from a tool and hand the LLM a ``ToolOutput`` with ``is_error=True`` whose content is the
    message, which says what was wrong and what to do (for example, which page numbers a PDF
    has). The exception itself stays on ``ToolOutput.exception`` with its ``code``. Called
    directly (``tool.call(...)``), a tool raises.

This module does not use ``from __future__ import annotations``: ``FunctionTool`` builds each
tool's schema from the methods' annotations at runtime, and string annotations would break it.
"""

import asyncio
import inspect
import json
from typing import TYPE_CHECKING, Any, Final, Literal

from llama_index.core.tools import FunctionTool, ToolMetadata
from llama_index.core.tools.tool_spec.base import SPEC_FUNCTION_TYPE, BaseToolSpec

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.images import load_image
from mississippi_tools.sources import agent_policy
from mississippi_tools.vlm import MississippiVLM

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage
    from mississippi_tools.sources import SourcePolicy
    from mississippi_tools.tasks.chart import ChartData
    from mississippi_tools.tasks.table import TableData

__all__ = ["MississippiToolSpec"]

_NO_TEXT: Final = "(no text was found in the image)"
_NO_ANSWER: Final = "(the model gave an empty answer)"
_MAX_DESCRIPTION: Final = 1024  # what OpenAI (and LlamaIndex's to_openai_tool) accept
_MAX_ROOTS_SHOWN: Final = 3


class MississippiToolSpec(BaseToolSpec):
    """OCR, charts, tables, JSON extraction and questions about images, as LlamaIndex tools.

    Setup:
        .. code-block:: bash

            pip install "mississippi-tools[llamaindex,local,pdf]"

    Instantiate:
        .. code-block:: python

            from pathlib import Path

            from mississippi_tools import MississippiVLM, SourcePolicy
            from llama_index.tools.mississippi import MississippiToolSpec

            vlm = MississippiVLM.load("h2oai/h2ovl-mississippi-800m")  # or .connect(url)
            spec = MississippiToolSpec(vlm, policy=SourcePolicy(allowed_roots=(Path("/data"),)))

    Invoke:
        .. code-block:: python

            from llama_index.core.agent.workflow import FunctionAgent

            agent = FunctionAgent(tools=spec.to_tool_list(), llm=llm)
            response = await agent.run("What is the total on /data/invoice.png?")

            spec.ocr("/data/invoice.png")  # the methods can be called directly too

    Async:
        .. code-block:: python

            text = await spec.aocr("/data/invoice.png")

    Args:
        vlm: The model, in this process (:meth:`MississippiVLM.load`) or behind a service
            (:meth:`MississippiVLM.connect`).
        policy: Which paths and URLs the agent may name; ``None`` uses ``vlm.policy``. Either
            way, one allowing any path is narrowed to the current directory.
        max_tiles: Most 448-px tiles per image (the model's default when ``None``).
        max_new_tokens: Most tokens per answer (each task's default when ``None``).
        timeout: Seconds before a call fails with ``DeadlineExceededError``.

    Raises:
        TypeError: ``vlm`` is not a ``MississippiVLM``.
    """

    spec_functions: list[SPEC_FUNCTION_TYPE] = [  # noqa: RUF012 (BaseToolSpec's interface)
        ("ocr", "aocr"),
        ("read_chart", "aread_chart"),
        ("read_table", "aread_table"),
        ("extract_json", "aextract_json"),
        ("ask_image", "aask_image"),
    ]

    def __init__(
        self,
        vlm: MississippiVLM,
        *,
        policy: "SourcePolicy | None" = None,
        max_tiles: int | None = None,
        max_new_tokens: int | None = None,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(vlm, MississippiVLM):
            raise TypeError(
                f"vlm must be a MississippiVLM, got {type(vlm).__name__}; build one with "
                'MississippiVLM.load("h2oai/h2ovl-mississippi-800m") or '
                'MississippiVLM.connect("http://127.0.0.1:8090")'
            )
        self.vlm = vlm
        self.policy = agent_policy(policy or vlm.policy, tool="MississippiToolSpec")
        options: dict[str, Any] = {"max_tiles": max_tiles, "timeout": timeout}
        if max_new_tokens is not None:
            options["max_new_tokens"] = max_new_tokens
        self._options = options

    def to_tool_list(
        self,
        spec_functions: list[SPEC_FUNCTION_TYPE] | None = None,
        func_to_metadata_mapping: dict[str, ToolMetadata] | None = None,
    ) -> list[FunctionTool]:
        """The tools; each description is dedented and ends with what the policy allows.

        Args:
            spec_functions: A subset of :attr:`spec_functions` (default: all five).
            func_to_metadata_mapping: Metadata to use instead of the methods' own (kept as is).

        Returns:
            One ``FunctionTool`` per entry, with a sync and an async path.
        """
        tools = super().to_tool_list(spec_functions, func_to_metadata_mapping)
        given = set(func_to_metadata_mapping or ())
        note, short_note = _policy_note(self.policy), _policy_note(self.policy, short=True)
        for tool in tools:
            name = tool.metadata.name
            if name in given or f"a{name}" in given:  # the caller's metadata, as given
                continue
            signature, _, docstring = tool.metadata.description.partition("\n")
            text = f"{signature}\n{inspect.cleandoc(docstring)}"
            fits = len(text) + len(note) + 2 <= _MAX_DESCRIPTION
            tool.metadata.description = f"{text}\n\n{note if fits else short_note}"
        return tools

    def _load(self, image: str, page: int | None) -> "LoadedImage":
        return load_image(image, page=page, limits=self.vlm.limits, policy=self.policy)

    async def _aload(self, image: str, page: int | None) -> "LoadedImage":
        return await asyncio.to_thread(self._load, image, page)

    # -- ocr --------------------------------------------------------------------------------------

    def ocr(
        self, image: str, page: int | None = None, format: Literal["text", "markdown"] = "text"
    ) -> str:
        """Read all the text in an image or PDF page (OCR): documents, receipts, signs, screens.

        Returns the text in reading order, one line per line of the image.

        Args:
            image (str): File path ('scans/bill.png', '/data/report.pdf'), data URI or base64.
            page (int | None): 1-based page; required for a PDF with several pages, else omit.
            format (str): 'text' (default) or 'markdown' to keep headings, lists and tables.
        """
        result = self.vlm.ocr(self._load(image, page), format=format, **self._options)
        return result.text or _NO_TEXT

    async def aocr(
        self, image: str, page: int | None = None, format: Literal["text", "markdown"] = "text"
    ) -> str:
        """Async twin of :meth:`ocr`."""
        loaded = await self._aload(image, page)
        result = await self.vlm.aocr(loaded, format=format, **self._options)
        return result.text or _NO_TEXT

    # -- charts -----------------------------------------------------------------------------------

    def read_chart(self, image: str, page: int | None = None) -> str:
        """Read the data of a chart (bar, line, pie, scatter...) in an image or a PDF page.

        Returns the chart type and the data as a Markdown table with the title above it: one row
        per label, one column per series, units in the column names; then any notes on values
        that were unclear.

        Args:
            image (str): File path ('charts/sales.png', '/data/report.pdf'), data URI or base64.
            page (int | None): 1-based page; required for a PDF with several pages, else omit.
        """
        return _chart_text(self.vlm.read_chart(self._load(image, page), **self._options))

    async def aread_chart(self, image: str, page: int | None = None) -> str:
        """Async twin of :meth:`read_chart`."""
        loaded = await self._aload(image, page)
        return _chart_text(await self.vlm.aread_chart(loaded, **self._options))

    # -- tables -----------------------------------------------------------------------------------

    def read_table(self, image: str, page: int | None = None) -> str:
        """Read a table in an image or a PDF page (invoice lines, price lists, statements...).

        Returns the table as Markdown (title in bold, then a header row and one row per table
        row), then any notes on what had to be repaired.

        Args:
            image (str): File path ('scans/prices.png', '/data/report.pdf'), data URI or base64.
            page (int | None): 1-based page; required for a PDF with several pages, else omit.
        """
        return _table_text(self.vlm.read_table(self._load(image, page), **self._options))

    async def aread_table(self, image: str, page: int | None = None) -> str:
        """Async twin of :meth:`read_table`."""
        loaded = await self._aload(image, page)
        return _table_text(await self.vlm.aread_table(loaded, **self._options))

    # -- extraction -------------------------------------------------------------------------------

    def extract_json(
        self,
        image: str,
        json_schema: dict[str, Any] | str,
        instructions: str | None = None,
        page: int | None = None,
    ) -> str:
        """Extract fields as JSON from an image or PDF page (forms, invoices, receipts, IDs).

        Returns JSON in exactly the requested shape; a value missing from the image is null.
        Example json_schema (a template; example values give the types):
        {"invoice_number": "", "total": 0.0, "items": [{"description": "", "amount": 0.0}]}

        Args:
            image (str): File path ('scans/bill.png', '/data/form.pdf'), data URI or base64.
            json_schema (dict | str): The JSON shape: a template like the example, or a JSON Schema.
            instructions (str | None): Optional guidance, e.g. 'dates as YYYY-MM-DD'.
            page (int | None): 1-based page; required for a PDF with several pages, else omit.
        """
        schema = _schema(json_schema)
        result = self.vlm.extract_result(
            self._load(image, page), schema, instructions=instructions, **self._options
        )
        return _data_text(result.data)

    async def aextract_json(
        self,
        image: str,
        json_schema: dict[str, Any] | str,
        instructions: str | None = None,
        page: int | None = None,
    ) -> str:
        """Async twin of :meth:`extract_json`."""
        schema = _schema(json_schema)
        loaded = await self._aload(image, page)
        result = await self.vlm.aextract_result(
            loaded, schema, instructions=instructions, **self._options
        )
        return _data_text(result.data)

    # -- questions --------------------------------------------------------------------------------

    def ask_image(self, image: str, question: str, page: int | None = None) -> str:
        """Answer a question about an image or PDF page: what it shows, a value, a yes/no check.

        Prefer ocr, read_table, read_chart or extract_json to get all the text or data.

        Args:
            image (str): File path ('photos/sign.jpg', '/data/report.pdf'), data URI or base64.
            question (str): The question, e.g. 'Is the form signed?' or 'What is the total due?'.
            page (int | None): 1-based page; required for a PDF with several pages, else omit.
        """
        answer = self.vlm.ask(self._load(image, page), question, **self._options)
        return answer.text or _NO_ANSWER

    async def aask_image(self, image: str, question: str, page: int | None = None) -> str:
        """Async twin of :meth:`ask_image`."""
        loaded = await self._aload(image, page)
        answer = await self.vlm.aask(loaded, question, **self._options)
        return answer.text or _NO_ANSWER


def _policy_note(policy: "SourcePolicy", *, short: bool = False) -> str:
    """What the calling model may pass as ``image``, from the policy."""
    roots = policy.allowed_roots
    if short and roots:
        paths = "Paths: only files under the allowed folders (relative paths start at the first)."
    elif roots is None:
        paths = "Paths: any local file."
    elif not roots:
        paths = "Paths: none; pass a data URI or base64."
    elif len(roots) == 1:
        paths = f"Paths: only files under {roots[0]} (relative paths start there)."
    else:
        listed = ", ".join(str(root) for root in roots[:_MAX_ROOTS_SHOWN])
        more = len(roots) - _MAX_ROOTS_SHOWN
        listed += f" and {more} more folders" if more > 0 else ""
        paths = f"Paths: only files under {listed}; relative paths start at {roots[0]}."
    urls = "http(s) URLs: allowed." if policy.allow_urls else "http(s) URLs: not allowed."
    return f"{paths} {urls}"


def _chart_text(chart: "ChartData") -> str:
    parts = [f"Chart type: {chart.chart_type}"] if chart.chart_type else []
    parts.append(chart.to_markdown().rstrip())
    parts += [f"Note: {note}" for note in chart.notes]
    return "\n".join(parts)


def _table_text(table: "TableData") -> str:
    return "\n".join([table.to_markdown().rstrip(), *(f"Note: {note}" for note in table.notes)])


def _schema(json_schema: dict[str, Any] | str) -> dict[str, Any]:
    """The schema argument as a dict (LLMs sometimes send an object as JSON text)."""
    if isinstance(json_schema, str):
        try:
            json_schema = json.loads(json_schema)
        except json.JSONDecodeError as e:
            raise InvalidInputError(
                f"json_schema is not valid JSON ({e.msg} at character {e.pos}); pass an object "
                'such as {"invoice_number": "", "total": 0.0}'
            ) from e
    if not isinstance(json_schema, dict):
        raise InvalidInputError(
            f"json_schema must be a JSON object, got {type(json_schema).__name__}; pass an "
            'object such as {"invoice_number": "", "total": 0.0}'
        )
    return json_schema


def _data_text(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)
