"""The named task methods of :class:`~mississippi_tools.MississippiVLM`: ``vlm.ocr(...)`` ...

Each is a one-liner over the generic ``run`` / ``arun`` / ``run_batch`` / ``arun_batch``, typed
with the task's own arguments and result; tasks registered at run time get the same forms through
``MississippiVLM.__getattr__``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from mississippi_tools.batch import DEFAULT_MAX_PAGES, NamedSource, PageSelection
from mississippi_tools.engine.repetition import RepetitionCheck
from mississippi_tools.images import ImageInput
from mississippi_tools.regions import RegionInput
from mississippi_tools.tasks.extract import DEFAULT_MAX_RETRIES

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mississippi_tools.schema import SchemaInput
    from mississippi_tools.tasks.ask import Answer
    from mississippi_tools.tasks.chart import ChartData
    from mississippi_tools.tasks.extract import ExtractionResult
    from mississippi_tools.tasks.extract_document import DocumentExtractionResult, Strategy
    from mississippi_tools.tasks.html import HTMLResult
    from mississippi_tools.tasks.ocr import OCRFormat, OCRResult
    from mississippi_tools.tasks.table import TableData

__all__ = ["RunOptions", "TaskImages", "TaskMethods"]

TaskImages = ImageInput | NamedSource | Sequence[ImageInput] | None
"""What a task reads: one image (or a named input), several images, or none (text-only)."""


class RunOptions(TypedDict, total=False):
    """The run settings every task method takes besides its own arguments."""

    page: int | None
    """The page of a PDF or multi-page TIFF (1-based)."""
    region: RegionInput | None
    """Read only this part of the image: ``(x0, y0, x1, y1)`` in pixels of the image (a PDF page
    as rendered), or fractions of it when all four are in 0..1; the crop is read at full tile
    resolution (see :mod:`mississippi_tools.regions`)."""
    repetition: RepetitionCheck | bool | None
    """Catch answers that loop (default ``True``: :class:`RepetitionCheck` defaults): the engine
    stops a loop, the task retries it once against loops, then raises ``RepetitionError``.
    ``False``/``None``: a loop runs to ``max_new_tokens``."""
    max_tiles: int | None
    """H2OVL models: most 448-px tiles per image (a model option; see ``model_info.options``)."""
    options: Mapping[str, Any] | None
    """Model-specific options (``model_info.options`` lists the loaded model's)."""
    max_new_tokens: int | None
    """Most tokens to generate (default: the task's)."""
    timeout: float | None
    """Seconds before each request fails with ``DeadlineExceededError``."""


class TaskMethods:
    """The named forms of the built-in tasks, over the generic methods a subclass provides."""

    if TYPE_CHECKING:

        def run(self, task: str, images: TaskImages, **kwargs: Any) -> Any:
            """Run a task by name (``MississippiVLM.run``)."""

        async def arun(self, task: str, images: TaskImages, **kwargs: Any) -> Any:
            """Async twin of :meth:`run`."""

        def run_batch(
            self, task: str, sources: Iterable[ImageInput | NamedSource], **kwargs: Any
        ) -> list[Any]:
            """Run a task over many images and pages (``MississippiVLM.run_batch``)."""

        async def arun_batch(
            self, task: str, sources: Iterable[ImageInput | NamedSource], **kwargs: Any
        ) -> list[Any]:
            """Async twin of :meth:`run_batch`."""

    def ocr(
        self,
        image: ImageInput,
        *,
        format: OCRFormat = "text",
        confidence: bool = False,
        boxes: bool = False,
        **settings: Unpack[RunOptions],
    ) -> OCRResult:
        """Read the text of an image (the model's OCR mode where it has one).

        Args:
            image: A path, bytes, base64, data URI, PIL image or URL (when allowed).
            format: ``"text"``, ``"markdown"`` (headings, lists, tables) or ``"lines"``.
            confidence: Add a per-line confidence from the model's token probabilities.
            boxes: Give each line a ``box`` saying where it is (pixels; page points for PDF
                pages), from the model's region output (``result.boxes()`` lists them).
            settings: ``page`` (PDFs, multi-page TIFFs), ``region`` (read only that part),
                ``max_tiles``, ``options``, ``max_new_tokens``, ``timeout``, ``repetition``.
        """
        result: OCRResult = self.run(
            "ocr", image, format=format, confidence=confidence, boxes=boxes, **settings
        )
        return result

    def read_chart(self, image: ImageInput, **settings: Unpack[RunOptions]) -> ChartData:
        """Read a chart: title, type, axes with units, and series of (label, value) points."""
        result: ChartData = self.run("read_chart", image, **settings)
        return result

    def read_table(self, image: ImageInput, **settings: Unpack[RunOptions]) -> TableData:
        """Read a table: columns and rows (``to_markdown``, ``to_csv``, ``records``)."""
        result: TableData = self.run("read_table", image, **settings)
        return result

    def ask(
        self,
        images: TaskImages,
        question: str,
        *,
        history: Sequence[tuple[str, str]] = (),
        **settings: Unpack[RunOptions],
    ) -> Answer:
        """Answer a question about one image, several (a list), or none."""
        result: Answer = self.run("ask", images, question=question, history=history, **settings)
        return result

    def extract(
        self,
        image: ImageInput,
        json_schema: SchemaInput,
        *,
        pages: PageSelection = None,
        **kwargs: Any,
    ) -> BaseModel | dict[str, Any]:
        """Extract data valid under ``json_schema`` (see :meth:`extract_result` for arguments).

        With ``pages``, the selected pages of the document are read into one object (see
        :meth:`extract_document`, which also says which page each value came from).

        Returns:
            An instance of the pydantic model, or a dict valid under the JSON Schema / template.
        """
        if pages is not None:
            return self.extract_document(image, json_schema, pages=pages, **kwargs).data
        return self.extract_result(image, json_schema, **kwargs).data

    def extract_document(
        self,
        document: ImageInput,
        json_schema: SchemaInput,
        *,
        pages: PageSelection = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        strategy: Strategy = "per_page",
        instructions: str | None = None,
        confidence: bool = False,
        max_retries: int = DEFAULT_MAX_RETRIES,
        **settings: Unpack[RunOptions],
    ) -> DocumentExtractionResult:
        """Fill one schema from several pages of a document, with the page of every value.

        Args:
            document: A PDF or multi-page TIFF (an image is one page).
            json_schema: As for :meth:`extract_result`.
            pages: Which pages (``"1-3"``, ``[1, 4]``; default all, at most ``max_pages``).
            max_pages: Most pages read (0: no limit).
            strategy: ``per_page`` (each page, then merged; the default), ``one_prompt`` (all
                pages in one prompt, when they fit the context) or ``auto``; see
                :mod:`mississippi_tools.tasks.extract_document`.
            instructions: Extra guidance for the model.
            confidence: Add per-field confidences.
            max_retries: Retries with the validation error, for engines without grammars.
            settings: ``region`` (the same region of every page), ``max_tiles``, ``options``,
                ``max_new_tokens``, ``timeout``, ``repetition``.

        Raises:
            SchemaError: The schema uses a feature that cannot be guaranteed.
            ExtractionError: No page gave valid data, or the merged data is not valid.
        """
        result: DocumentExtractionResult = self.run(
            "extract_document",
            document,
            json_schema=json_schema,
            pages=pages,
            max_pages=max_pages,
            strategy=strategy,
            instructions=instructions,
            confidence=confidence,
            max_retries=max_retries,
            **settings,
        )
        return result

    async def aextract_document(
        self, document: ImageInput, json_schema: SchemaInput, **kwargs: Any
    ) -> DocumentExtractionResult:
        """Async twin of :meth:`extract_document`."""
        result: DocumentExtractionResult = await self.arun(
            "extract_document", document, json_schema=json_schema, **kwargs
        )
        return result

    def extract_result(
        self,
        image: ImageInput,
        json_schema: SchemaInput,
        *,
        instructions: str | None = None,
        confidence: bool = False,
        max_retries: int = DEFAULT_MAX_RETRIES,
        **settings: Unpack[RunOptions],
    ) -> ExtractionResult:
        """Extract JSON valid under ``json_schema``, with metadata and optional confidences.

        Args:
            image: The image.
            json_schema: A pydantic model class, a JSON Schema dict, or a template dict like
                ``{"name": "", "date_of_birth": "", "address": ""}`` (types from the values).
            instructions: Extra guidance for the model, added to the prompt.
            confidence: Add per-field confidences from the model's token probabilities.
            max_retries: Retries with the validation error, for engines without grammars.
            settings: ``page``, ``region``, ``max_tiles``, ``options``, ``max_new_tokens``,
                ``timeout``, ``repetition``.

        Raises:
            SchemaError: The schema uses a feature that cannot be guaranteed.
            ExtractionError: No valid output (carries the raw text and the errors).
        """
        result: ExtractionResult = self.run(
            "extract",
            image,
            json_schema=json_schema,
            instructions=instructions,
            confidence=confidence,
            max_retries=max_retries,
            **settings,
        )
        return result

    def to_html(self, image: ImageInput, **settings: Unpack[RunOptions]) -> HTMLResult:
        """Write the HTML/CSS of a web page screenshot (``save()``, ``preview()`` on the result)."""
        result: HTMLResult = self.run("to_html", image, **settings)
        return result

    async def aocr(self, image: ImageInput, **kwargs: Any) -> OCRResult:
        """Async twin of :meth:`ocr`."""
        result: OCRResult = await self.arun("ocr", image, **kwargs)
        return result

    async def aread_chart(self, image: ImageInput, **kwargs: Any) -> ChartData:
        """Async twin of :meth:`read_chart`."""
        result: ChartData = await self.arun("read_chart", image, **kwargs)
        return result

    async def aread_table(self, image: ImageInput, **kwargs: Any) -> TableData:
        """Async twin of :meth:`read_table`."""
        result: TableData = await self.arun("read_table", image, **kwargs)
        return result

    async def aask(self, images: TaskImages, question: str, **kwargs: Any) -> Answer:
        """Async twin of :meth:`ask`."""
        result: Answer = await self.arun("ask", images, question=question, **kwargs)
        return result

    async def aextract(
        self,
        image: ImageInput,
        json_schema: SchemaInput,
        *,
        pages: PageSelection = None,
        **kwargs: Any,
    ) -> BaseModel | dict[str, Any]:
        """Async twin of :meth:`extract`."""
        if pages is not None:
            return (await self.aextract_document(image, json_schema, pages=pages, **kwargs)).data
        return (await self.aextract_result(image, json_schema, **kwargs)).data

    async def aextract_result(
        self, image: ImageInput, json_schema: SchemaInput, **kwargs: Any
    ) -> ExtractionResult:
        """Async twin of :meth:`extract_result`."""
        result: ExtractionResult = await self.arun(
            "extract", image, json_schema=json_schema, **kwargs
        )
        return result

    async def ato_html(self, image: ImageInput, **kwargs: Any) -> HTMLResult:
        """Async twin of :meth:`to_html`."""
        result: HTMLResult = await self.arun("to_html", image, **kwargs)
        return result

    def ocr_batch(self, sources: Iterable[ImageInput], **kwargs: Any) -> list[Any]:
        """:meth:`ocr` over many images and PDF pages (see :meth:`run_batch`)."""
        return self.run_batch("ocr", sources, **kwargs)

    def read_chart_batch(self, sources: Iterable[ImageInput], **kwargs: Any) -> list[Any]:
        """:meth:`read_chart` over many images and pages."""
        return self.run_batch("read_chart", sources, **kwargs)

    def read_table_batch(self, sources: Iterable[ImageInput], **kwargs: Any) -> list[Any]:
        """:meth:`read_table` over many images and pages."""
        return self.run_batch("read_table", sources, **kwargs)

    def extract_batch(
        self, sources: Iterable[ImageInput], json_schema: SchemaInput, **kwargs: Any
    ) -> list[Any]:
        """:meth:`extract_result` over many images and pages."""
        return self.run_batch("extract", sources, json_schema=json_schema, **kwargs)

    def ask_batch(self, sources: Iterable[ImageInput], question: str, **kwargs: Any) -> list[Any]:
        """:meth:`ask` (one image each) over many images and pages."""
        return self.run_batch("ask", sources, question=question, **kwargs)

    def to_html_batch(self, sources: Iterable[ImageInput], **kwargs: Any) -> list[Any]:
        """:meth:`to_html` over many screenshots and pages."""
        return self.run_batch("to_html", sources, **kwargs)

    async def aocr_batch(self, sources: Iterable[ImageInput], **kwargs: Any) -> list[Any]:
        """Async twin of :meth:`ocr_batch`."""
        return await self.arun_batch("ocr", sources, **kwargs)

    async def aread_chart_batch(self, sources: Iterable[ImageInput], **kwargs: Any) -> list[Any]:
        """Async twin of :meth:`read_chart_batch`."""
        return await self.arun_batch("read_chart", sources, **kwargs)

    async def aread_table_batch(self, sources: Iterable[ImageInput], **kwargs: Any) -> list[Any]:
        """Async twin of :meth:`read_table_batch`."""
        return await self.arun_batch("read_table", sources, **kwargs)

    async def aextract_batch(
        self, sources: Iterable[ImageInput], json_schema: SchemaInput, **kwargs: Any
    ) -> list[Any]:
        """Async twin of :meth:`extract_batch`."""
        return await self.arun_batch("extract", sources, json_schema=json_schema, **kwargs)

    async def aask_batch(
        self, sources: Iterable[ImageInput], question: str, **kwargs: Any
    ) -> list[Any]:
        """Async twin of :meth:`ask_batch`."""
        return await self.arun_batch("ask", sources, question=question, **kwargs)

    async def ato_html_batch(self, sources: Iterable[ImageInput], **kwargs: Any) -> list[Any]:
        """Async twin of :meth:`to_html_batch`."""
        return await self.arun_batch("to_html", sources, **kwargs)
