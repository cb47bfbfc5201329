"""``MississippiImageReader``: images and PDFs as LlamaIndex Documents, read by H2OVL-Mississippi.

One Document per image, and one per page of a PDF or multi-page TIFF. The reader translates: it
hands pages to :class:`~mississippi_tools.MississippiVLM`'s batch forms and turns each result (or
error) into a :class:`~llama_index.core.Document`. Prompts, parsing and image decoding all live in
``mississippi_tools``.

Batching:
    Pages are read lazily and sent in windows of ``concurrency`` pages, across files, through one
    ``*_batch`` call per window (``a*_batch`` in the async forms), so the engine batches them.
    Memory holds one window of decoded pages. The async forms share one page budget per reader
    across concurrent calls, so ``SimpleDirectoryReader.aload_data()``, which starts every file at
    once, keeps at most ``concurrency`` pages in flight and does not overrun the engine's queue.

Failures:
    ``on_error="raise"`` (the default) raises the first error, with a note naming the file and
    page. ``on_error="record"`` turns it into a Document with empty text whose metadata holds
    ``error_code``, ``error_type`` and ``error_message``, and goes on: no file is dropped. Errors
    that would fail every file (a bad schema, a dead engine, a missing extra, an unreachable
    service, a full queue) are raised under both policies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import weakref
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import Document
from pydantic import BaseModel

from mississippi_tools.errors import (
    EngineDeadError,
    InvalidInputError,
    MissingDependencyError,
    ModelLoadError,
    QueueFullError,
    RemoteError,
    SchemaError,
)
from mississippi_tools.vlm import MississippiVLM, PageSelection

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage
    from mississippi_tools.schema import SchemaInput

__all__ = [
    "DEFAULT_CONCURRENCY",
    "SUPPORTED_EXTENSIONS",
    "MississippiImageReader",
    "OnError",
    "ReaderMode",
]

ReaderMode = Literal["ocr", "markdown", "chart", "table", "extract"]
"""What the reader asks of each page: text, Markdown, a chart, a table, or schema fields."""

OnError = Literal["raise", "record"]
"""What a failed file or page does: raise, or become a Document that records the error."""

SUPPORTED_EXTENSIONS: Final = (
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
    ".pdf",
)
"""File extensions to map to this reader in ``SimpleDirectoryReader(file_extractor=...)``; the
format itself is recognised from the content, not the name."""

DEFAULT_CONCURRENCY: Final = 8
"""Pages in flight by default (the local engine's default batch size)."""

#: Errors that are not about one file: raised whatever ``on_error`` says.
_FATAL_ERRORS: Final = (
    SchemaError,
    MissingDependencyError,
    EngineDeadError,
    ModelLoadError,
    RemoteError,
    QueueFullError,
)
#: Keys this reader writes; a top-level extracted field of the same name is not copied over them.
_READER_KEYS: Final = frozenset(
    {
        "file_path",
        "file_name",
        "page_label",
        "mode",
        "model",
        "tiles",
        "finish_reason",
        "error_code",
        "error_type",
        "error_message",
        "chart_json",
        "chart_title",
        "chart_type",
        "table_json",
        "extracted_json",
    }
)
#: Bookkeeping never worth embedding or showing to an LLM.
_ALWAYS_EXCLUDED: Final = ("mode", "model", "tiles", "finish_reason")
#: Kept out of the embedding text only (the LLM may read them).
_EMBED_ONLY_EXCLUDED: Final = ("file_path", "error_code", "error_type", "error_message")
#: Structured data, already rendered in the Document's text: out of both.
_DATA_KEYS: Final = ("chart_json", "chart_title", "chart_type", "table_json", "extracted_json")
_BATCH_METHODS: Final[dict[str, str]] = {
    "ocr": "ocr_batch",
    "markdown": "ocr_batch",
    "chart": "read_chart_batch",
    "table": "read_table_batch",
    "extract": "extract_batch",
}
_OCR_FORMATS: Final[dict[str, Literal["text", "markdown"]]] = {
    "ocr": "text",
    "markdown": "markdown",
}


@dataclass(frozen=True)
class _Source:
    """One input file and the metadata every Document from it starts with."""

    path: str
    metadata: dict[str, Any]
    fs: Any = None


@dataclass(frozen=True)
class _Page:
    """A decoded page, ready for the engine."""

    source: _Source
    image: LoadedImage


@dataclass(frozen=True)
class _Failure:
    """A file (or one of its pages) that could not be read."""

    source: _Source
    error: Exception
    page: int | None = None


_Item = _Page | _Failure


class MississippiImageReader(BaseReader):
    """Read images and PDFs into LlamaIndex Documents with H2OVL-Mississippi.

    Setup:
        .. code-block:: bash

            pip install "mississippi-tools[llamaindex,local,pdf]"

    Instantiate:
        The model is never loaded implicitly: build a
        :class:`~mississippi_tools.MississippiVLM` and pass it in.

        .. code-block:: python

            from mississippi_tools import MississippiVLM
            from llama_index.readers.mississippi import MississippiImageReader

            vlm = MississippiVLM.load("h2oai/h2ovl-mississippi-800m")  # or .connect(url)
            reader = MississippiImageReader(vlm, mode="markdown", on_error="record")

    Invoke:
        .. code-block:: python

            docs = reader.load_data("scan.png")
            docs = reader.load_data(["a.png", "report.pdf"])  # batched across files

            from llama_index.core import SimpleDirectoryReader

            docs = SimpleDirectoryReader(
                "scans/", file_extractor=reader.file_extractor()
            ).load_data()

    Async:
        .. code-block:: python

            docs = await reader.aload_data("scan.png")
            docs = await SimpleDirectoryReader(
                "scans/", file_extractor=reader.file_extractor()
            ).aload_data()  # every file at once; the reader bounds the pages in flight

    Documents:
        One per image, and one per page of a PDF or multi-page TIFF, in input order. The text
        and the mode-specific metadata:

        ========  ==============================  ==========================================
        mode      text                            metadata besides the common keys
        ========  ==============================  ==========================================
        ocr       the text, line by line          none
        markdown  the page as Markdown            none
        chart     the data as a Markdown table    ``chart_title``, ``chart_type``,
                                                  ``chart_json``
        table     the table in Markdown           ``table_json``
        extract   the data as indented JSON       ``extracted_json``, and each top-level field
                                                  holding a string, number, bool or null
        ========  ==============================  ==========================================

        Common keys: ``file_path``, ``file_name``, ``page_label`` (the 1-based page as a string;
        ``"1"`` for a plain image; ``None`` for a file that could not be opened), ``mode``,
        ``model``, ``tiles``, ``finish_reason`` (``"length"``: the answer was cut by
        ``max_new_tokens``), and everything passed in ``extra_info`` (``SimpleDirectoryReader``'s
        file metadata). Records of failures carry ``error_code``, ``error_type`` and
        ``error_message`` and have empty text. Every value is a string, a number, a bool or
        ``None``, so vector stores that need flat metadata accept the Documents.

        Excluded metadata: ``mode``, ``model``, ``tiles``, ``finish_reason`` and the structured
        data (``*_json``, ``chart_title``, ``chart_type``, extracted fields; already in the text)
        are kept out of both the embedding text and the LLM's view; ``file_path`` and the
        ``error_*`` keys are kept out of the embedding only. ``SimpleDirectoryReader`` then also
        excludes its own ``file_name``, ``file_size`` and date keys.

    Args:
        vlm: The model, in this process (:meth:`MississippiVLM.load`) or behind a service
            (:meth:`MississippiVLM.connect`). Its ``policy`` and ``limits`` apply to every file.
        mode: What to read from each page; see the table above.
        schema: For ``mode="extract"`` only: a pydantic model class, a JSON Schema, or a template
            dict such as ``{"invoice_number": "", "total": 0.0}``.
        instructions: For ``mode="extract"``: extra guidance added to the prompt.
        pages: Pages of PDFs and multi-page TIFFs to read: ``"1-3,5"``, ``[1, 2]`` or ``None``
            (all). Plain images are always read.
        max_tiles: Most 448-px tiles per page (the model's default when ``None``).
        max_new_tokens: Most tokens per answer (the task's default when ``None``).
        timeout: Seconds before one page's request fails.
        concurrency: Pages in flight at once, and pages per batch.
        on_error: ``"raise"`` or ``"record"``; see the module documentation.

    Raises:
        TypeError: ``vlm`` is not a ``MississippiVLM``.
        InvalidInputError: An unknown mode or policy, a schema missing for ``extract`` or given
            for another mode, or a ``concurrency`` below 1.
    """

    def __init__(
        self,
        vlm: MississippiVLM,
        *,
        mode: ReaderMode = "ocr",
        schema: SchemaInput | None = None,
        instructions: str | None = None,
        pages: PageSelection = None,
        max_tiles: int | None = None,
        max_new_tokens: int | None = None,
        timeout: float | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        on_error: OnError = "raise",
    ) -> None:
        if not isinstance(vlm, MississippiVLM):
            raise TypeError(
                f"vlm must be a MississippiVLM, got {type(vlm).__name__}; build one with "
                'MississippiVLM.load("h2oai/h2ovl-mississippi-800m") or '
                'MississippiVLM.connect("http://127.0.0.1:8090")'
            )
        if mode not in get_args(ReaderMode):
            raise InvalidInputError(
                f"unknown mode {mode!r}; use one of {', '.join(get_args(ReaderMode))}"
            )
        if on_error not in get_args(OnError):
            raise InvalidInputError(f"unknown on_error {on_error!r}; use 'raise' or 'record'")
        if mode == "extract" and schema is None:
            raise InvalidInputError(
                'mode="extract" needs a schema: a pydantic model, a JSON Schema, or a template '
                'such as {"invoice_number": "", "total": 0.0}'
            )
        if mode != "extract" and (schema is not None or instructions is not None):
            raise InvalidInputError(
                f'schema and instructions are for mode="extract", not mode={mode!r}; '
                'pass mode="extract" or drop them'
            )
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidInputError(f"concurrency must be an int of 1 or more, got {concurrency!r}")
        self.vlm = vlm
        self.mode: ReaderMode = mode
        self.schema = schema
        self.instructions = instructions
        self.pages = pages
        self.concurrency = concurrency
        self.on_error: OnError = on_error
        options: dict[str, Any] = {"max_tiles": max_tiles, "timeout": timeout}
        if max_new_tokens is not None:
            options["max_new_tokens"] = max_new_tokens
        self._options = options
        self._slots = _PageSlots(concurrency)

    def file_extractor(self) -> dict[str, BaseReader]:
        """This reader for every supported extension, for ``SimpleDirectoryReader``.

        Returns:
            ``{".png": self, ".jpg": self, ..., ".pdf": self}``.
        """
        return dict.fromkeys(SUPPORTED_EXTENSIONS, self)

    # -- LlamaIndex reader API --------------------------------------------------------------------

    def lazy_load_data(
        self,
        file: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        extra_info: dict[str, Any] | None = None,
        *,
        fs: Any = None,
    ) -> Iterator[Document]:
        """Yield Documents one batch of pages at a time.

        Args:
            file: A path, or a list of paths (batched together).
            extra_info: Metadata added to every Document (``SimpleDirectoryReader`` passes the
                file's metadata here).
            fs: An ``fsspec`` filesystem to read from (``SimpleDirectoryReader`` passes it for
                non-local filesystems); the local filesystem when ``None``.

        Yields:
            One Document per image or page, in input order.

        Raises:
            MississippiError: Under ``on_error="raise"``, the first failure, with a note naming
                the file and page; under both policies, failures that are not about one file.
        """
        items = self._items(_sources(file, extra_info, fs))
        try:
            while window := _take(items, self.concurrency):
                yield from self._documents(window, self._run(window))
        finally:
            items.close()

    def load_data(
        self,
        file: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        extra_info: dict[str, Any] | None = None,
        *,
        fs: Any = None,
    ) -> list[Document]:
        """Read ``file`` (a path or a list of paths) into Documents; see :meth:`lazy_load_data`."""
        return list(self.lazy_load_data(file, extra_info, fs=fs))

    async def aload_data(
        self,
        file: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        extra_info: dict[str, Any] | None = None,
        *,
        fs: Any = None,
    ) -> list[Document]:
        """Async twin of :meth:`load_data`.

        Concurrent calls on one reader share its ``concurrency`` budget of pages in flight.
        """
        documents: list[Document] = []
        items = self._items(_sources(file, extra_info, fs))
        try:
            while True:
                window, held = await self._atake(items)
                try:
                    results = await self._arun(window) if window else None
                finally:
                    self._slots.release(held)
                if results is None:
                    return documents
                documents.extend(self._documents(window, results))
        finally:
            with contextlib.suppress(ValueError):  # still running in a thread after a cancel
                await asyncio.to_thread(items.close)

    async def alazy_load_data(
        self,
        file: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        extra_info: dict[str, Any] | None = None,
        *,
        fs: Any = None,
    ) -> Iterable[Document]:
        """Async form of :meth:`lazy_load_data`; returns the Documents of :meth:`aload_data`.

        (``BaseReader.alazy_load_data`` returns an iterable once awaited; a lazy one would do
        its blocking work in the event loop.)
        """
        return await self.aload_data(file, extra_info, fs=fs)

    # -- the shared implementation: read pages, run a window, build Documents ---------------------

    def _items(self, sources: list[_Source]) -> Generator[_Item, None, None]:
        """Every page of every source, lazily; a source that cannot be read becomes a failure."""
        for source in sources:
            page: int | None = None
            try:
                data: Any = source.path
                if source.fs is not None:
                    with source.fs.open(source.path, "rb") as handle:
                        data = handle.read()
                for image in self.vlm.pages([data], self.pages):
                    page = image.page
                    yield _Page(source, image)
            except Exception as e:
                # A page that fails to render is the one after the last good page.
                failed = None if page is None else page + 1
                self._check(e, source, failed)
                yield _Failure(source, e, failed)

    def _batch_call(
        self, window: list[_Item], prefix: str
    ) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        """The batch method for this mode (``prefix="a"``: its async twin), its arguments."""
        images = [item.image for item in window if isinstance(item, _Page)]
        kwargs: dict[str, Any] = {
            **self._options,
            "return_exceptions": True,
            "concurrency": max(1, len(images)),
        }
        if self.mode in _OCR_FORMATS:
            kwargs["format"] = _OCR_FORMATS[self.mode]
        args: tuple[Any, ...] = (images,)
        if self.mode == "extract":
            args = (images, self.schema)
            kwargs["instructions"] = self.instructions
        method = getattr(self.vlm, f"{prefix}{_BATCH_METHODS[self.mode]}")
        return method, args, kwargs

    def _run(self, window: list[_Item]) -> list[Any]:
        method, args, kwargs = self._batch_call(window, "")
        return list(method(*args, **kwargs)) if args[0] else []

    async def _arun(self, window: list[_Item]) -> list[Any]:
        method, args, kwargs = self._batch_call(window, "a")
        return list(await method(*args, **kwargs)) if args[0] else []

    async def _atake(self, items: Iterator[_Item]) -> tuple[list[_Item], int]:
        """The next window and the slots it holds: waits for one slot, takes more only if free.

        A window never waits for a second slot, so concurrent calls cannot deadlock, and each
        page is decoded only once a slot is reserved for it.
        """
        await self._slots.acquire()
        held, pages = 1, 0
        window: list[_Item] = []
        try:
            while item := await asyncio.to_thread(next, items, None):
                window.append(item)
                if isinstance(item, _Page):
                    pages += 1
                    if pages >= self.concurrency or not await self._slots.try_acquire():
                        break
                    held += 1
        except BaseException:
            self._slots.release(held)
            raise
        self._slots.release(held - pages)
        return window, pages

    def _documents(self, window: list[_Item], results: list[Any]) -> Iterator[Document]:
        outcomes = iter(results)
        for item in window:
            if isinstance(item, _Failure):
                yield self._failure(item.source, item.error, item.page)
                continue
            outcome = next(outcomes)
            if isinstance(outcome, Exception):
                yield self._failure(item.source, outcome, item.image.page or 1)
            else:
                yield self._document(item, outcome)

    # -- results and failures as Documents --------------------------------------------------------

    def _document(self, page: _Page, result: Any) -> Document:
        meta = result.meta
        metadata = {
            **page.source.metadata,
            "page_label": str(page.image.page or 1),
            "mode": self.mode,
            "model": meta.model,
            "tiles": meta.tiles,
            "finish_reason": meta.finish_reason,
        }
        data_keys: list[str] = []
        if self.mode in _OCR_FORMATS:
            text = result.text
        elif self.mode == "chart":
            text = result.to_markdown()
            metadata["chart_title"] = result.title
            metadata["chart_type"] = result.chart_type
            metadata["chart_json"] = _json(result.model_dump(mode="json", exclude={"meta"}))
            data_keys = ["chart_title", "chart_type", "chart_json"]
        elif self.mode == "table":
            text = result.to_markdown()
            metadata["table_json"] = _json(result.model_dump(mode="json", exclude={"meta"}))
            data_keys = ["table_json"]
        else:
            data = result.data
            if isinstance(data, BaseModel):
                data = data.model_dump(mode="json")
            text = json.dumps(data, ensure_ascii=False, indent=2)
            metadata["extracted_json"] = _json(data)
            data_keys = ["extracted_json"]
            if isinstance(data, dict):
                for key, value in data.items():
                    if key not in metadata and key not in _READER_KEYS and _is_flat(value):
                        metadata[key] = value
                        data_keys.append(key)
        return _new_document(text, metadata, data_keys)

    def _check(self, error: Exception, source: _Source, page: int | None) -> None:
        """Raise ``error`` (noting the file and page) unless the policy is to record it."""
        if self.on_error == "raise" or isinstance(error, _FATAL_ERRORS):
            where = source.path if page is None else f"{source.path} (page {page})"
            if where not in str(error):
                error.add_note(f"while reading {where} with MississippiImageReader")
            raise error

    def _failure(self, source: _Source, error: Exception, page: int | None) -> Document:
        self._check(error, source, page)
        metadata = {
            **source.metadata,
            "page_label": None if page is None else str(page),
            "mode": self.mode,
            "model": self.vlm.model_id,
            "tiles": 0,
            "finish_reason": None,
            "error_code": getattr(error, "code", "internal_error"),
            "error_type": type(error).__name__,
            "error_message": str(error),
        }
        return _new_document("", metadata, [])


class _PageSlots:
    """A reader's budget of pages in flight, shared by its concurrent async calls.

    One semaphore per event loop, since an asyncio semaphore belongs to the loop that first
    waits on it.
    """

    def __init__(self, total: int) -> None:
        self._total = total
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._by_loop.get(loop)
        if semaphore is None:
            semaphore = self._by_loop[loop] = asyncio.Semaphore(self._total)
        return semaphore

    async def acquire(self) -> None:
        await self._semaphore().acquire()

    async def try_acquire(self) -> bool:
        """Take a slot only if one is free now (never suspends)."""
        semaphore = self._semaphore()
        if semaphore.locked():
            return False
        return await semaphore.acquire()  # returns at once: a slot is free and no one waits

    def release(self, count: int) -> None:
        semaphore = self._semaphore()
        for _ in range(count):
            semaphore.release()


def _sources(
    file: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    extra_info: dict[str, Any] | None,
    fs: Any,
) -> list[_Source]:
    paths = [file] if isinstance(file, str | os.PathLike) else list(file)
    sources = []
    for path in paths:
        text = os.fspath(path)
        metadata = {"file_path": text, "file_name": Path(text).name, **(extra_info or {})}
        sources.append(_Source(text, metadata, fs))
    return sources


def _take(items: Iterator[_Item], size: int) -> list[_Item]:
    """Up to ``size`` items, counting only pages (failures cost the engine nothing)."""
    window: list[_Item] = []
    pages = 0
    for item in items:
        window.append(item)
        pages += isinstance(item, _Page)
        if pages >= size:
            break
    return window


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _is_flat(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _new_document(text: str, metadata: dict[str, Any], data_keys: list[str]) -> Document:
    present = set(metadata)
    both = [k for k in (*_ALWAYS_EXCLUDED, *_DATA_KEYS, *data_keys) if k in present]
    embed_only = [k for k in _EMBED_ONLY_EXCLUDED if k in present]
    return Document(
        text=text,
        metadata=metadata,
        excluded_embed_metadata_keys=list(dict.fromkeys([*both, *embed_only])),
        excluded_llm_metadata_keys=list(dict.fromkeys(both)),
    )
