"""``MississippiImageLoader``: images, scans and PDFs as LangChain ``Document`` objects, for RAG."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from langchain_core.document_loaders import BaseLoader
from langchain_core.documents import Document
from pydantic import BaseModel

from mississippi_tools.errors import InvalidInputError, MississippiError
from mississippi_tools.images import LoadedImage
from mississippi_tools.vlm import MississippiVLM, PageSelection

if TYPE_CHECKING:
    from mississippi_tools.schema import SchemaInput

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SUFFIXES",
    "LoaderMode",
    "MississippiImageLoader",
    "OnError",
]

LoaderMode = Literal["ocr", "markdown", "chart", "table", "extract"]
"""What each page becomes: its text, its Markdown, its chart data, its table, or schema JSON."""

OnError = Literal["raise", "continue"]
"""On a file or page that cannot be read: raise, or record the error in a Document and go on."""

DEFAULT_SUFFIXES: Final = (
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".webp",
    ".bmp",
    ".tif",
    ".tiff",
    ".pdf",
)
"""File suffixes picked from directories (case-insensitive)."""

DEFAULT_BATCH_SIZE: Final = 8
"""Pages decoded and sent to the engine per round; bounds the memory held by decoded pages."""

_RESERVED_KEYS: Final = frozenset(
    {"source", "page", "mode", "model", "tiles", "data", "error", "error_code", "error_type"}
)


@dataclass(frozen=True)
class _Failure:
    """A file (or its remaining pages) that could not be read."""

    source: str
    page: int | None
    error: MississippiError


class MississippiImageLoader(BaseLoader):
    """Load images, scans, PDFs and multi-page TIFFs as Documents, one per page.

    Each page is read by H2OVL-Mississippi in one of five modes:

    - ``ocr``: the page's text;
    - ``markdown``: the page as Markdown (headings, lists, tables);
    - ``chart``: the chart's data as a Markdown table; ``metadata["chart"]`` holds the
      :class:`~mississippi_tools.ChartData` as JSON (``ChartData.model_validate`` restores it);
    - ``table``: the table as Markdown; ``metadata["table"]`` holds the
      :class:`~mississippi_tools.TableData` as JSON;
    - ``extract``: JSON valid under ``schema``; ``metadata["data"]`` holds the value and each
      top-level field is also copied into the metadata under its own name (unless it collides
      with the keys below).

    Every Document's metadata has ``source`` (the file's path), ``page`` (1-based; 1 for an
    ordinary image), ``mode``, ``model`` and ``tiles``. Directories are listed in sorted order,
    and a document's pages follow in order.

    ``lazy_load`` streams: pages are decoded (PDF pages rendered) a few at a time and sent to
    the engine in rounds of ``batch_size`` with at most ``concurrency`` requests in flight,
    through :class:`~mississippi_tools.MississippiVLM`'s batch methods.

    Errors: with ``on_error="raise"`` (the default) the first
    :class:`~mississippi_tools.MississippiError` (a corrupt file, a page the model's answer
    could not be parsed from, a refused path) is raised. With ``on_error="continue"`` it becomes
    a Document with empty ``page_content`` and ``error``, ``error_code`` and ``error_type`` in
    its metadata, and loading goes on; a file that fails partway records the page it failed at
    (pages after it are not read). Nothing is dropped silently. Filter such Documents out
    before indexing: ``[d for d in docs if "error" not in d.metadata]``.

    Setup:
        .. code-block:: bash

            pip install "mississippi-tools[langchain,local,pdf]"

    Instantiate:
        .. code-block:: python

            from mississippi_tools import MississippiVLM
            from langchain_mississippi import MississippiImageLoader

            vlm = MississippiVLM.load("h2oai/h2ovl-mississippi-800m")
            loader = MississippiImageLoader("scans/", vlm=vlm, mode="markdown", recursive=True)
            invoices = MississippiImageLoader(
                "invoices/", vlm=vlm, mode="extract",
                schema={"number": "", "date": "", "total": 0.0},
                on_error="continue", progress=True,
            )

    Invoke:
        .. code-block:: python

            for doc in loader.lazy_load():
                print(doc.metadata["source"], doc.metadata["page"], doc.page_content[:80])

    Async:
        .. code-block:: python

            docs = [doc async for doc in loader.alazy_load()]

    Args:
        path: A file, a directory, or a list of them.
        vlm: The model to read with (constructing a loader never loads one).
        mode: ``ocr``, ``markdown``, ``chart``, ``table`` or ``extract``.
        schema: For ``extract``: a pydantic model class, a JSON Schema or a template dict.
        instructions: For ``extract``: extra guidance added to the prompt.
        glob: File-name pattern within directories.
        recursive: Also look in subdirectories.
        suffixes: Keep only directory entries with these suffixes (case-insensitive); ``None``
            keeps every file matching ``glob``. Files named directly are always kept.
        pages: Pages of PDFs and multi-page TIFFs: ``"1-3,5"``, ``[1, 2]`` or ``None`` (all).
        on_error: ``"raise"`` or ``"continue"`` (see above).
        progress: Show a progress bar (tqdm, on stderr) over all pages.
        batch_size: Pages decoded and sent per round.
        concurrency: Requests in flight (default: the engine's batch size).
        max_tiles: Most 448-px tiles per page.
        max_new_tokens: Most tokens generated per page.
        timeout: Seconds before one page's request fails.

    Raises:
        InvalidInputError: An unknown ``mode`` or ``on_error``, or ``schema`` missing for
            ``extract`` (or given for another mode).
        SchemaError: The schema cannot be honoured.
    """

    def __init__(
        self,
        path: str | Path | Sequence[str | Path],
        *,
        vlm: MississippiVLM,
        mode: LoaderMode = "ocr",
        schema: SchemaInput | None = None,
        instructions: str | None = None,
        glob: str = "*",
        recursive: bool = False,
        suffixes: Sequence[str] | None = DEFAULT_SUFFIXES,
        pages: PageSelection = None,
        on_error: OnError = "raise",
        progress: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        concurrency: int | None = None,
        max_tiles: int | None = None,
        max_new_tokens: int | None = None,
        timeout: float | None = None,
    ) -> None:
        if mode not in get_args(LoaderMode):
            raise InvalidInputError(
                f"unknown mode {mode!r}; use one of {', '.join(get_args(LoaderMode))}"
            )
        if on_error not in get_args(OnError):
            raise InvalidInputError(f"unknown on_error {on_error!r}; use 'raise' or 'continue'")
        if mode == "extract" and schema is None:
            raise InvalidInputError(
                'mode="extract" needs a schema: a pydantic model class, a JSON Schema or a '
                'template such as {"number": "", "total": 0.0}'
            )
        if mode != "extract" and schema is not None:
            raise InvalidInputError(f'a schema is only used with mode="extract", not {mode!r}')
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
        if schema is not None:
            from mississippi_tools.schema import normalize_schema

            normalize_schema(schema)  # a SchemaError now rather than on every page
        self.paths = [Path(p) for p in ([path] if isinstance(path, str | Path) else path)]
        self.vlm = vlm
        self.mode: LoaderMode = mode
        self.schema = schema
        self.instructions = instructions
        self.glob = glob
        self.recursive = recursive
        self.suffixes = None if suffixes is None else {s.lower() for s in suffixes}
        self.pages = pages
        self.on_error: OnError = on_error
        self.progress = progress
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.max_tiles = max_tiles
        self.max_new_tokens = max_new_tokens
        self.timeout = timeout

    # -- files and pages ----------------------------------------------------------------------

    def files(self) -> list[Path]:
        """The files to read, in order: each named file, then each directory's sorted entries."""
        found: list[Path] = []
        for path in self.paths:
            if not path.is_dir():
                found.append(path)  # read (and refused, or reported missing) by the core
                continue
            matches = path.rglob(self.glob) if self.recursive else path.glob(self.glob)
            entries = [
                entry
                for entry in matches
                if entry.is_file()
                and not any(part.startswith(".") for part in entry.relative_to(path).parts)
                and (self.suffixes is None or entry.suffix.lower() in self.suffixes)
            ]
            found.extend(sorted(entries, key=lambda entry: entry.relative_to(path).as_posix()))
        return found

    def _items(self) -> Iterator[LoadedImage | _Failure]:
        """Every page of every file, decoded one at a time, or the failure that stopped a file."""
        for file in self.files():
            last_page: int | None = None
            try:
                for loaded in self.vlm.pages([file], self.pages):
                    last_page = loaded.page
                    yield loaded
            except MississippiError as e:
                # Raised (under "raise") in order, once the pages before it are yielded.
                yield _Failure(str(file), None if last_page is None else last_page + 1, e)

    def _total(self) -> int:
        total = 0
        for file in self.files():
            try:
                total += self.vlm.count_pages([file], self.pages)
            except MississippiError:
                total += 1
        return total

    # -- the engine ---------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_tiles": self.max_tiles,
            "max_new_tokens": self.max_new_tokens,
            "timeout": self.timeout,
        }
        options = {k: v for k, v in options.items() if v is not None}
        options.update(return_exceptions=True, concurrency=self.concurrency)
        if self.mode == "extract":
            options["instructions"] = self.instructions
        return options

    def _batch(self, images: list[LoadedImage]) -> list[Any]:
        vlm, options = self.vlm, self._options()
        if self.mode in ("ocr", "markdown"):
            return vlm.ocr_batch(images, format=_OCR_FORMAT[self.mode], **options)
        if self.mode == "chart":
            return vlm.read_chart_batch(images, **options)
        if self.mode == "table":
            return vlm.read_table_batch(images, **options)
        assert self.schema is not None
        return vlm.extract_batch(images, self.schema, **options)

    async def _abatch(self, images: list[LoadedImage]) -> list[Any]:
        vlm, options = self.vlm, self._options()
        if self.mode in ("ocr", "markdown"):
            return await vlm.aocr_batch(images, format=_OCR_FORMAT[self.mode], **options)
        if self.mode == "chart":
            return await vlm.aread_chart_batch(images, **options)
        if self.mode == "table":
            return await vlm.aread_table_batch(images, **options)
        assert self.schema is not None
        return await vlm.aextract_batch(images, self.schema, **options)

    # -- Documents ----------------------------------------------------------------------------

    def _document(self, image: LoadedImage, result: Any) -> Document:
        if isinstance(result, MississippiError):
            if self.on_error == "raise":
                raise result
            return self._error_document(image.source, image.page or 1, result)
        if isinstance(result, BaseException):
            raise result  # not ours: a bug, never recorded as a page error
        metadata: dict[str, Any] = {
            "source": image.source,
            "page": image.page or 1,
            "mode": self.mode,
            "model": result.meta.model,
            "tiles": result.meta.tiles,
        }
        if self.mode in ("ocr", "markdown"):
            content = result.text
        elif self.mode in ("chart", "table"):
            content = result.to_markdown().rstrip()
            metadata[self.mode] = result.model_dump(mode="json")
        else:
            data = result.data
            value = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
            content = json.dumps(value, ensure_ascii=False)
            metadata["data"] = value
            if isinstance(value, dict):
                metadata.update({k: v for k, v in value.items() if k not in _RESERVED_KEYS})
        return Document(page_content=content, metadata=metadata)

    def _error_document(self, source: str, page: int | None, error: MississippiError) -> Document:
        return Document(
            page_content="",
            metadata={
                "source": source,
                "page": page,
                "mode": self.mode,
                "model": self.vlm.model_id,
                "error": str(error),
                "error_code": error.code,
                "error_type": type(error).__name__,
            },
        )

    def _emit(self, chunk: list[LoadedImage | _Failure], results: list[Any]) -> Iterator[Document]:
        answers = iter(results)
        for item in chunk:
            if isinstance(item, _Failure):
                if self.on_error == "raise":
                    raise item.error
                yield self._error_document(item.source, item.page, item.error)
            else:
                yield self._document(item, next(answers))

    def _take(self, items: Iterator[LoadedImage | _Failure]) -> list[LoadedImage | _Failure]:
        """The next round: ``batch_size`` items, cut after a failure when it is to be raised."""
        chunk: list[LoadedImage | _Failure] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= self.batch_size or (
                isinstance(item, _Failure) and self.on_error == "raise"
            ):
                break
        return chunk

    # -- BaseLoader ---------------------------------------------------------------------------

    def lazy_load(self) -> Iterator[Document]:
        """Yield one Document per page, reading a round of ``batch_size`` pages at a time."""
        bar = _progress_bar(self._total()) if self.progress else None
        items = self._items()
        try:
            while chunk := self._take(items):
                images = [item for item in chunk if isinstance(item, LoadedImage)]
                results = self._batch(images) if images else []
                for document in self._emit(chunk, results):
                    if bar is not None:
                        bar.update(1)
                    yield document
        finally:
            if bar is not None:
                bar.close()

    async def alazy_load(self) -> AsyncIterator[Document]:
        """Async twin of :meth:`lazy_load` (decoding in a thread, requests on the event loop)."""
        bar = _progress_bar(await asyncio.to_thread(self._total)) if self.progress else None
        items = self._items()
        try:
            while chunk := await asyncio.to_thread(self._take, items):
                images = [item for item in chunk if isinstance(item, LoadedImage)]
                results = await self._abatch(images) if images else []
                for document in self._emit(chunk, results):
                    if bar is not None:
                        bar.update(1)
                    yield document
        finally:
            if bar is not None:
                bar.close()


_OCR_FORMAT: Final = {"ocr": "text", "markdown": "markdown"}


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    return tqdm(total=total, unit="page", desc="mississippi", leave=True)
