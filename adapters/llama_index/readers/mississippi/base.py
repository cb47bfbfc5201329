"""``MississippiImageReader``: images and PDFs as LlamaIndex Documents, through any task.

One Document per image, and one per page of a PDF or multi-page TIFF. The reader translates: it
hands files to :class:`~mississippi_tools.MississippiVLM`'s batch iterator with one task of the
catalogue (``ocr`` by default) and turns each page's result (or error) into a
:class:`~llama_index.core.Document`. Prompts, parsing, page handling and image decoding all live in
``mississippi_tools``.

Batching:
    Pages are read lazily, at most ``concurrency`` in flight across files, so the engine batches
    them and memory holds only those pages. The async forms share one budget of pages in flight
    per reader across concurrent calls, so ``SimpleDirectoryReader.aload_data()``, which starts
    every file at once, keeps at most ``concurrency`` pages in flight and does not overrun the
    engine's queue.

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
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import Document

from mississippi_tools import MississippiVLM
from mississippi_tools.agent_tools import document_fields
from mississippi_tools.batch import (
    DEFAULT_MAX_PAGES,
    NamedSource,
    PageOutcome,
    PageSelection,
    aiter_outcomes,
    iter_source_pages,
)
from mississippi_tools.errors import (
    EngineDeadError,
    InvalidInputError,
    MissingDependencyError,
    MississippiError,
    ModelLoadError,
    QueueFullError,
    RemoteError,
    SchemaError,
)
from mississippi_tools.tasks.catalogue import get_task

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
"""Former names of what the reader asks of each page (``task=``/``arguments=`` say it now)."""

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
#: The former modes as (task, arguments).
_MODES: Final[dict[str, tuple[str, dict[str, Any]]]] = {
    "ocr": ("ocr", {}),
    "markdown": ("ocr", {"format": "markdown"}),
    "chart": ("read_chart", {}),
    "table": ("read_table", {}),
    "extract": ("extract", {}),
}
#: Bookkeeping never worth embedding or showing to an LLM.
_ALWAYS_EXCLUDED: Final = (
    "task",
    "model",
    "tiles",
    "finish_reason",
    "result_json",
    "boxes_json",
)
#: Kept out of the embedding text only (the LLM may read them).
_EMBED_ONLY_EXCLUDED: Final = ("file_path", "error_code", "error_type", "error_message")


class MississippiImageReader(BaseReader):
    """Read images and PDFs into LlamaIndex Documents through a task of the catalogue.

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
            reader = MississippiImageReader(vlm, arguments={"format": "markdown"})
            invoices = MississippiImageReader(
                vlm, task="extract", arguments={"json_schema": {"number": "", "total": 0.0}}
            )

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
        One per image, and one per page of a PDF or multi-page TIFF, in input order. The text is
        the task's rendering (the page's text, its Markdown, a chart or table as Markdown, the
        extracted JSON ...). Metadata: ``file_path``, ``file_name``, ``page_label`` (the 1-based
        page as a string; ``"1"`` for a plain image; ``None`` for a file that could not be
        opened), ``task``, ``model``, ``tiles``, ``finish_reason`` (``"length"``: the answer was
        cut by ``max_new_tokens``), ``result_json`` (the typed result, without its metadata, as
        compact JSON), ``boxes_json`` for OCR read with ``boxes=True`` (each boxed line's
        ``text`` with its ``pixels`` and, on PDF pages, ``points``, as compact JSON), for an
        extraction each top-level field holding a string, number, bool or
        null, and everything passed in ``extra_info`` (``SimpleDirectoryReader``'s file
        metadata). Records of failures carry ``error_code``, ``error_type`` and
        ``error_message`` and have empty text. Every value is a string, a number, a bool or
        ``None``, so vector stores that need flat metadata accept the Documents.

        Excluded metadata: ``task``, ``model``, ``tiles``, ``finish_reason``, ``result_json``,
        ``boxes_json`` and the extracted fields (already in the text) are kept out of both the
        embedding text and the LLM's view; ``file_path`` and the ``error_*`` keys are kept out of
        the embedding only.

    Args:
        vlm: The model, in this process (:meth:`MississippiVLM.load`) or behind a service
            (:meth:`MississippiVLM.connect`). Its ``policy`` and ``limits`` apply to every file.
        task: The catalogue task each page goes through (``vlm.tasks`` lists the model's).
        arguments: The task's own arguments (``{"format": "markdown"}``,
            ``{"json_schema": ...}``).
        mode: Former spelling of ``task``: ``ocr``, ``markdown``, ``chart``, ``table`` or
            ``extract`` (with ``schema``).
        schema: Former spelling of ``arguments={"json_schema": ...}``.
        instructions: Former spelling of ``arguments={"instructions": ...}``.
        pages: Pages of PDFs and multi-page TIFFs to read: ``"1-3,5"``, ``[1, 2]`` or ``None``
            (all). Plain images are always read.
        max_pages: Most pages read from one document (0: no limit).
        max_tiles: H2OVL models: most 448-px tiles per page (the model's default when ``None``).
        options: Other model options.
        max_new_tokens: Most tokens per answer (the task's default when ``None``).
        timeout: Seconds before one page's request fails.
        concurrency: Pages in flight at once.
        on_error: ``"raise"`` or ``"record"``; see the module documentation.

    Raises:
        TypeError: ``vlm`` is not a ``MississippiVLM``.
        InvalidInputError: An unknown task, mode or policy, invalid task arguments, or a
            ``concurrency`` below 1.
    """

    def __init__(
        self,
        vlm: MississippiVLM,
        *,
        task: str | None = None,
        arguments: Mapping[str, Any] | None = None,
        mode: ReaderMode | None = None,
        schema: SchemaInput | None = None,
        instructions: str | None = None,
        pages: PageSelection = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        max_tiles: int | None = None,
        options: Mapping[str, Any] | None = None,
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
        if on_error not in get_args(OnError):
            raise InvalidInputError(f"unknown on_error {on_error!r}; use 'raise' or 'record'")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidInputError(f"concurrency must be an int of 1 or more, got {concurrency!r}")
        task, values = _task_of(task, arguments, mode, schema, instructions)
        self.spec = get_task(task)
        self.spec.parse_arguments(values)  # invalid arguments fail here, not on every page
        self.arguments = values
        self.vlm = vlm
        self.pages = pages
        self.max_pages = max_pages
        self.concurrency = concurrency
        self.on_error: OnError = on_error
        settings: dict[str, Any] = {
            "max_tiles": max_tiles,
            "options": options,
            "max_new_tokens": max_new_tokens,
            "timeout": timeout,
        }
        self._settings = {k: v for k, v in settings.items() if v is not None}
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
        """Yield Documents as their pages are read, in input order.

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
        sources, metadata = _sources(file, extra_info, fs)
        outcomes = self.vlm.iter_batch(
            self.spec.name,
            sources,
            pages=self.pages,
            max_pages=self.max_pages,
            concurrency=self.concurrency,
            **self._settings,
            **self.arguments,
        )
        for outcome in outcomes:
            yield self._document(outcome, metadata[outcome.source])

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
        sources, metadata = await asyncio.to_thread(_sources, file, extra_info, fs)
        items = iter_source_pages(
            sources,
            self.pages,
            limits=self.vlm.limits,
            policy=self.vlm.policy,
            max_pages=self.max_pages,
        )
        return [
            self._document(outcome, metadata[outcome.source])
            async for outcome in self._aoutcomes(items)
        ]

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

    # -- pages to Documents -----------------------------------------------------------------------

    def _aoutcomes(
        self, items: Iterable[tuple[str, LoadedImage | MississippiError]]
    ) -> AsyncIterator[PageOutcome[Any]]:
        async def run_one(image: LoadedImage) -> Any:
            async with self._slots.held():
                return await self.vlm.arun(
                    self.spec.name, image, **self._settings, **self.arguments
                )

        return aiter_outcomes(run_one, items, concurrency=self.concurrency)

    def _document(self, outcome: PageOutcome[Any], source_metadata: dict[str, Any]) -> Document:
        if outcome.error is not None:
            self._check(outcome.error, source_metadata["file_path"], outcome.page)
        text, fields = document_fields(self.spec, outcome, self.vlm.model_id)
        metadata: dict[str, Any] = {
            **source_metadata,
            "page_label": None if fields["page"] is None else str(fields["page"]),
            "task": self.spec.name,
            "model": fields["model"],
        }
        data_keys: list[str] = []
        if outcome.error is not None:
            metadata.update(
                tiles=0,
                finish_reason=None,
                error_code=fields["error_code"],
                error_type=fields["error_type"],
                error_message=outcome.error.describe({}),
            )
        else:
            result = fields.pop("result")
            metadata.update(
                tiles=fields["tiles"],
                finish_reason=outcome.unwrap().meta.finish_reason,
                result_json=json.dumps(result, ensure_ascii=False, separators=(",", ":")),
            )
            if "boxes" in fields:
                metadata["boxes_json"] = json.dumps(
                    fields["boxes"], ensure_ascii=False, separators=(",", ":")
                )
            data = result.get("data")
            if isinstance(data, dict):
                for key, value in data.items():
                    if key not in metadata and _is_flat(value):
                        metadata[key] = value
                        data_keys.append(key)
        present = set(metadata)
        both = [k for k in (*_ALWAYS_EXCLUDED, *data_keys) if k in present]
        embed_only = [k for k in _EMBED_ONLY_EXCLUDED if k in present]
        return Document(
            text=text,
            metadata=metadata,
            excluded_embed_metadata_keys=list(dict.fromkeys([*both, *embed_only])),
            excluded_llm_metadata_keys=list(dict.fromkeys(both)),
        )

    def _check(self, error: MississippiError, path: str, page: int | None) -> None:
        """Raise ``error`` (noting the file and page) unless the policy is to record it."""
        if self.on_error == "raise" or isinstance(error, _FATAL_ERRORS):
            where = path if page is None else f"{path} (page {page})"
            if where not in str(error):
                error.add_note(f"while reading {where} with MississippiImageReader")
            raise error


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

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold one slot while the block runs."""
        async with self._semaphore():
            yield

    def available(self) -> int:
        """Slots free now, in the running loop."""
        return self._semaphore()._value


def _task_of(
    task: str | None,
    arguments: Mapping[str, Any] | None,
    mode: str | None,
    schema: Any,
    instructions: str | None,
) -> tuple[str, dict[str, Any]]:
    """The task and its arguments, from the current or the former spellings."""
    values = dict(arguments or {})
    if mode is not None:
        if task is not None:
            raise InvalidInputError("give task= (or the former mode=), not both")
        if mode not in _MODES:
            raise InvalidInputError(f"unknown mode {mode!r}; use one of {', '.join(_MODES)}")
        task, preset = _MODES[mode]
        values = {**preset, **values}
    task = task or "ocr"
    if schema is not None:
        values.setdefault("json_schema", schema)
    if instructions is not None:
        values.setdefault("instructions", instructions)
    if get_task(task).name == "extract" and "json_schema" not in values:
        raise InvalidInputError(
            'the extract task needs arguments={"json_schema": ...}: a pydantic model, a JSON '
            'Schema, or a template such as {"invoice_number": "", "total": 0.0}'
        )
    return task, values


def _sources(
    file: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    extra_info: dict[str, Any] | None,
    fs: Any,
) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """The inputs (bytes read through ``fs`` when given) and each one's Document metadata."""
    paths = [file] if isinstance(file, str | os.PathLike) else list(file)
    sources: list[Any] = []
    metadata: dict[str, dict[str, Any]] = {}
    for path in paths:
        text = os.fspath(path)
        metadata[text] = {"file_path": text, "file_name": Path(text).name, **(extra_info or {})}
        if fs is None:
            sources.append(text)
        else:
            with fs.open(text, "rb") as handle:
                sources.append(NamedSource(text, handle.read()))
    return sources, metadata


def _is_flat(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
