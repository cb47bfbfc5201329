"""``MississippiImageLoader``: images, scans and PDFs as LangChain ``Document`` objects, for RAG."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from langchain_core.document_loaders import BaseLoader
from langchain_core.documents import Document

from mississippi_tools import MississippiVLM
from mississippi_tools.agent_tools import document_fields
from mississippi_tools.batch import DEFAULT_MAX_PAGES, PageSelection
from mississippi_tools.errors import InvalidInputError
from mississippi_tools.tasks.catalogue import get_task

if TYPE_CHECKING:
    from mississippi_tools.batch import PageOutcome
    from mississippi_tools.schema import SchemaInput

__all__ = [
    "DEFAULT_SUFFIXES",
    "LoaderMode",
    "MississippiImageLoader",
    "OnError",
]

LoaderMode = Literal["ocr", "markdown", "chart", "table", "extract"]
"""Former names of what a page becomes (``task=`` and ``arguments=`` say it now)."""

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

#: The former modes as (task, arguments).
_MODES: Final[dict[str, tuple[str, dict[str, Any]]]] = {
    "ocr": ("ocr", {}),
    "markdown": ("ocr", {"format": "markdown"}),
    "chart": ("read_chart", {}),
    "table": ("read_table", {}),
    "extract": ("extract", {}),
}


class MississippiImageLoader(BaseLoader):
    """Load images, scans, PDFs and multi-page TIFFs as Documents, one per page.

    Each page goes through one task of the catalogue (``task``, default ``ocr``; any task the
    model can do, with its ``arguments``): the Document's text is the task's rendering (the page's
    text, its Markdown, a chart or table as Markdown, the extracted JSON ...), and its metadata
    has ``source`` (the file's path), ``page`` (1-based; 1 for an ordinary image), ``task``,
    ``model``, ``tiles`` and ``result``, the typed result as JSON (its type's ``model_validate``
    restores it); an extraction's top-level fields are also copied into the metadata under their
    own names. OCR with ``arguments={"boxes": True}`` adds ``boxes``: each boxed line's ``text``
    with its ``pixels`` (and ``points`` on PDF pages). Directories are listed in sorted order,
    and a document's pages follow in order.

    ``lazy_load`` streams: pages are decoded (PDF pages rendered) as requests free up, with at
    most ``concurrency`` in flight, and each Document is yielded as soon as it and the ones before
    it are done. A document with more selected pages than ``max_pages`` is refused before any of
    its pages is read.

    Errors: with ``on_error="raise"`` (the default) the first
    :class:`~mississippi_tools.MississippiError` (a corrupt file, a page the model's answer could
    not be parsed from, a refused path) is raised. With ``on_error="continue"`` it becomes a
    Document with empty ``page_content`` and ``error``, ``error_code`` and ``error_type`` in its
    metadata, and loading goes on. Nothing is dropped silently. Filter such Documents out before
    indexing: ``[d for d in docs if "error" not in d.metadata]``.

    Setup:
        .. code-block:: bash

            pip install "mississippi-tools[langchain,local,pdf]"

    Instantiate:
        .. code-block:: python

            from mississippi_tools import MississippiVLM
            from langchain_mississippi import MississippiImageLoader

            vlm = MississippiVLM.load("h2oai/h2ovl-mississippi-800m")
            loader = MississippiImageLoader(
                "scans/", vlm=vlm, arguments={"format": "markdown"}, recursive=True
            )
            invoices = MississippiImageLoader(
                "invoices/", vlm=vlm, task="extract",
                arguments={"json_schema": {"number": "", "date": "", "total": 0.0}},
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
        task: The catalogue task each page goes through (``vlm.tasks`` lists the model's).
        arguments: The task's own arguments (``{"format": "markdown"}``, ``{"json_schema": ...}``).
        mode: Former spelling of ``task``: ``ocr``, ``markdown``, ``chart``, ``table`` or
            ``extract`` (with ``schema``).
        schema: Former spelling of ``arguments={"json_schema": ...}``.
        instructions: Former spelling of ``arguments={"instructions": ...}``.
        glob: File-name pattern within directories.
        recursive: Also look in subdirectories.
        suffixes: Keep only directory entries with these suffixes (case-insensitive); ``None``
            keeps every file matching ``glob``. Files named directly are always kept.
        pages: Pages of PDFs and multi-page TIFFs: ``"1-3,5"``, ``[1, 2]`` or ``None`` (all).
        max_pages: Most pages read from one document (0: no limit).
        on_error: ``"raise"`` or ``"continue"`` (see above).
        progress: Show a progress bar (tqdm, on stderr) over all pages.
        concurrency: Requests in flight (default: the engine's batch size).
        max_tiles: H2OVL models: most 448-px tiles per page.
        options: Other model options.
        max_new_tokens: Most tokens generated per page.
        timeout: Seconds before one page's request fails.

    Raises:
        InvalidInputError: An unknown task, mode or ``on_error``, invalid task arguments, or a
            task the model cannot do.
        SchemaError: The schema cannot be honoured.
    """

    def __init__(
        self,
        path: str | Path | Sequence[str | Path],
        *,
        vlm: MississippiVLM,
        task: str | None = None,
        arguments: Mapping[str, Any] | None = None,
        mode: LoaderMode | None = None,
        schema: SchemaInput | None = None,
        instructions: str | None = None,
        glob: str = "*",
        recursive: bool = False,
        suffixes: Sequence[str] | None = DEFAULT_SUFFIXES,
        pages: PageSelection = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        on_error: OnError = "raise",
        progress: bool = False,
        concurrency: int | None = None,
        max_tiles: int | None = None,
        options: Mapping[str, Any] | None = None,
        max_new_tokens: int | None = None,
        timeout: float | None = None,
    ) -> None:
        if on_error not in get_args(OnError):
            raise InvalidInputError(f"unknown on_error {on_error!r}; use 'raise' or 'continue'")
        task, arguments = _task_of(task, arguments, mode, schema, instructions)
        self.spec = get_task(task)
        self.spec.parse_arguments(arguments)  # invalid arguments fail here, not on every page
        self.arguments = arguments
        self.paths = [Path(p) for p in ([path] if isinstance(path, str | Path) else path)]
        self.vlm = vlm
        self.glob = glob
        self.recursive = recursive
        self.suffixes = None if suffixes is None else {s.lower() for s in suffixes}
        self.pages = pages
        self.max_pages = max_pages
        self.on_error: OnError = on_error
        self.progress = progress
        self.concurrency = concurrency
        self.settings: dict[str, Any] = {
            "max_tiles": max_tiles,
            "options": options,
            "max_new_tokens": max_new_tokens,
            "timeout": timeout,
        }

    # -- files ----------------------------------------------------------------------------------

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

    # -- Documents ------------------------------------------------------------------------------

    def _batch_options(self) -> dict[str, Any]:
        settings = {k: v for k, v in self.settings.items() if v is not None}
        return {
            "pages": self.pages,
            "max_pages": self.max_pages,
            "concurrency": self.concurrency,
            **settings,
            **self.arguments,
        }

    def _document(self, outcome: PageOutcome[Any]) -> Document:
        if outcome.error is not None and self.on_error == "raise":
            raise outcome.error
        text, metadata = document_fields(self.spec, outcome, self.vlm.model_id)
        return Document(page_content=text, metadata=metadata)

    def lazy_load(self) -> Iterator[Document]:
        """Yield one Document per page, in order, as each is read."""
        files = self.files()
        bar = _progress_bar(self.vlm, files, self.pages) if self.progress else None
        try:
            for outcome in self.vlm.iter_batch(self.spec.name, files, **self._batch_options()):
                if bar is not None:
                    bar.update(1)
                yield self._document(outcome)
        finally:
            if bar is not None:
                bar.close()

    async def alazy_load(self) -> AsyncIterator[Document]:
        """Async twin of :meth:`lazy_load` (decoding in threads, requests on the event loop)."""
        files = self.files()
        bar = _progress_bar(self.vlm, files, self.pages) if self.progress else None
        try:
            async for outcome in self.vlm.aiter_batch(
                self.spec.name, files, **self._batch_options()
            ):
                if bar is not None:
                    bar.update(1)
                yield self._document(outcome)
        finally:
            if bar is not None:
                bar.close()


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
            'the extract task needs arguments={"json_schema": ...}: a pydantic model class, a '
            'JSON Schema or a template such as {"number": "", "total": 0.0}'
        )
    return task, values


def _progress_bar(vlm: MississippiVLM, files: list[Path], pages: PageSelection) -> Any:
    from tqdm.auto import tqdm

    total = 0
    for file in files:
        try:
            total += vlm.count_pages([file], pages)
        except Exception:  # unreadable: it takes one place, with its error
            total += 1
    return tqdm(total=total, unit="page", desc="mississippi", leave=True)
