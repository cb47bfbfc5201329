"""A task over many images and document pages: one iterator, used by every surface.

:func:`iter_outcomes` (and :func:`aiter_outcomes`) read each source's pages lazily, run a task on
each page with a bounded number in flight, and yield one :class:`PageOutcome` per page *in input
order, as soon as it and every page before it are done*: a long PDF streams page by page, and a
source that cannot be read (a missing file, a corrupt PDF, a page past the end) yields its error in
its place while the next source goes on. The CLI, the LangChain loader, the LlamaIndex reader and
the MCP server all read documents through it; ``MississippiVLM.run_batch`` collects it into a list.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from mississippi_tools.errors import InvalidInputError, MississippiError, Remedy

if TYPE_CHECKING:
    from mississippi_tools.images import ImageInput, ImageLimits, LoadedImage
    from mississippi_tools.sources import SourcePolicy

__all__ = [
    "DEFAULT_MAX_PAGES",
    "DocumentItem",
    "NamedSource",
    "PageOutcome",
    "PageSelection",
    "aiter_outcomes",
    "check_source",
    "describe_source",
    "iter_documents",
    "iter_outcomes",
    "iter_source_pages",
    "load_document",
    "page_selection",
]

R = TypeVar("R")


class _Item(Protocol):
    """What a batch runs a task on: a page (:class:`LoadedImage`) or a whole document."""

    @property
    def page(self) -> int | None:
        """The 1-based page, ``None`` for a plain image or a whole document."""
        ...


I = TypeVar("I", bound=_Item)  # noqa: E741

PageSelection = str | int | Sequence[int] | None
"""Pages of PDFs and multi-page TIFFs: ``"1-3,5"``, ``"5-"``, ``2``, ``[1, 2]``, ``None`` (all)."""


def page_selection(pages: PageSelection) -> str | Sequence[int] | None:
    """``pages`` in the forms the page readers take (an int becomes ``"N"``).

    Raises:
        InvalidInputError: ``pages`` is a bool (``True`` is not a page).
    """
    if isinstance(pages, bool):
        raise InvalidInputError(
            f"pages must be a page number, a selection such as '1-3' or None, got {pages!r}"
        )
    return str(pages) if isinstance(pages, int) else pages


DEFAULT_MAX_PAGES = 20
"""Most pages read from one document by default, on every surface (API batch forms, CLI, loaders,
readers, agent tools, MCP); a larger selection is refused up front, naming the pages to ask for
and the option that raises the limit. ``0`` means no limit."""


@dataclass(frozen=True)
class NamedSource:
    """An input with the name to report it by (bytes read from a remote filesystem, say).

    Attributes:
        name: What outcomes and errors call it (``s3://bucket/scan.pdf``).
        data: The input itself.
    """

    name: str
    data: ImageInput


@dataclass(frozen=True)
class PageOutcome(Generic[R]):
    """What a task gave for one image or document page: its result, or why it failed.

    Attributes:
        index: Position among everything yielded (0-based).
        source: The input as the caller named it (a path or URL as given; ``bytes``,
            ``PIL image`` ... for in-memory inputs).
        page: The 1-based page of a document, ``None`` for a single image.
        result: The task's result, when it succeeded.
        error: The error, when it failed (the source could not be read, or the task failed).
        opened: Whether the image or page was read (``False``: the error is about the source
            itself: missing, refused, corrupt, a page outside the document).
    """

    index: int
    source: str
    page: int | None
    result: R | None = None
    error: MississippiError | None = None
    opened: bool = True

    @property
    def ok(self) -> bool:
        """Whether the page has a result."""
        return self.error is None

    def unwrap(self) -> R:
        """The result; the page's error is raised when it failed."""
        if self.error is not None:
            raise self.error
        assert self.result is not None  # a page without an error has its result
        return self.result

    @property
    def where(self) -> str:
        """``source`` with its page, for messages (``report.pdf, page 3``)."""
        return self.source if self.page is None else f"{self.source}, page {self.page}"

    def as_json(self) -> dict[str, Any]:
        """``{"page", "result", "error"}`` as plain JSON (a result's ``model_dump``)."""
        result, error = self.result, self.error
        dump = getattr(result, "model_dump", None)
        return {
            "page": self.page,
            "result": dump(mode="json") if dump is not None else result,
            "error": None if error is None else {"code": error.code, "message": error.message},
        }


def describe_source(source: ImageInput | NamedSource) -> str:
    """How to name ``source`` to a person: the path or URL as given, else its kind."""
    if isinstance(source, NamedSource):
        return source.name
    if isinstance(source, Path):
        return str(source)
    if isinstance(source, str):
        text = source.strip()
        if text.startswith("data:") or len(text) > 300:
            return "inline image data"
        return text
    if isinstance(source, bytes | bytearray | memoryview):
        return "bytes"
    loaded_source = getattr(source, "source", None)
    if isinstance(loaded_source, str):
        return loaded_source
    return "PIL image" if type(source).__module__.startswith("PIL.") else type(source).__name__


def iter_source_pages(
    sources: Iterable[ImageInput | NamedSource],
    pages: PageSelection,
    *,
    limits: ImageLimits,
    policy: SourcePolicy,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> Iterator[tuple[str, LoadedImage | MississippiError]]:
    """Every image, and the selected pages of every document, lazily, with its source's name.

    A source that cannot be read, or stops being readable part-way, yields its error in its place
    (once), and the next source follows. A document whose selection has more than ``max_pages``
    pages yields an error naming the limit instead of any page (``0``: no limit).
    """
    from mississippi_tools.images import iter_pages

    selection = page_selection(pages)
    for given in sources:
        name = describe_source(given)
        source = given.data if isinstance(given, NamedSource) else given
        try:
            if max_pages:
                _check_page_count(source, name, selection, policy, max_pages)
            for page in iter_pages(
                source, pages=selection, limits=limits, policy=policy, documents_only=True
            ):
                yield name, page
        except MississippiError as e:
            yield name, e


@dataclass(frozen=True)
class DocumentItem:
    """One document of a batch whose task reads its selected pages together (``extract_document``).

    Attributes:
        source: The input.
        page: Always ``None``: the outcome is the whole document's.
    """

    source: ImageInput | NamedSource
    page: None = None


def iter_documents(
    sources: Iterable[ImageInput | NamedSource],
) -> Iterator[tuple[str, DocumentItem]]:
    """Every source as one item with its name; its pages are read when its turn comes."""
    for given in sources:
        yield describe_source(given), DocumentItem(given)


def load_document(
    given: ImageInput | NamedSource,
    pages: PageSelection,
    *,
    limits: ImageLimits,
    policy: SourcePolicy,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> list[LoadedImage]:
    """The selected pages of one document (an image is one page), within ``max_pages``.

    Raises:
        MississippiError: The first reason a page could not be read (the limit included).
    """
    loaded: list[LoadedImage] = []
    for _, item in iter_source_pages(
        [given], pages, limits=limits, policy=policy, max_pages=max_pages
    ):
        if isinstance(item, MississippiError):
            raise item
        loaded.append(item)
    return loaded


def _check_page_count(
    source: ImageInput,
    name: str,
    selection: str | Sequence[int] | None,
    policy: SourcePolicy,
    max_pages: int,
) -> None:
    from mississippi_tools.images import count_pages
    from mississippi_tools.pdf import parse_page_selection

    if not isinstance(source, str | Path | bytes | bytearray | memoryview):
        return  # an image in memory has one page
    count = count_pages(source, policy=policy)
    selected = count
    if selection is not None and count > 1:
        try:
            selected = len(parse_page_selection(selection, count, what=name))
        except InvalidInputError:
            return  # a bad selection: the pages themselves say what is wrong with it
    if selected > max_pages:
        raise InvalidInputError(
            f"{name} has {selected} pages to read and at most {max_pages} are read from one "
            f"document; choose pages 1-{max_pages} (then the rest), or raise the limit",
            remedy=Remedy("max_pages", str(selected)),
        )


def iter_outcomes(
    run: Callable[[I], R],
    items: Iterable[tuple[str, I | MississippiError]],
    *,
    concurrency: int = 8,
) -> Iterator[PageOutcome[R]]:
    """Run ``run`` on every page, ``concurrency`` at a time, yielding outcomes in input order.

    A page is read only when one of the ``concurrency`` slots is free, so a 500-page PDF never
    sits in memory at once and nothing is read ahead of its turn. A
    :class:`MississippiError` from ``run`` becomes that page's outcome; anything else is a bug and
    propagates (the pages still running are waited for first). Closing the iterator early stops
    reading pages and waits for the ones in flight.
    """
    window: deque[tuple[str, int | None, Future[R] | MississippiError]] = deque()
    with ThreadPoolExecutor(
        max_workers=max(1, concurrency), thread_name_prefix="mississippi-batch"
    ) as pool:
        index = 0
        for name, item in items:
            if isinstance(item, MississippiError):
                window.append((name, None, item))
            else:
                window.append((name, item.page, pool.submit(run, item)))
            while window and (len(window) >= concurrency or _done(window[0][2])):
                yield _outcome(index, *window.popleft())
                index += 1
        while window:
            yield _outcome(index, *window.popleft())
            index += 1


def _done(pending: Future[Any] | MississippiError) -> bool:
    return isinstance(pending, MississippiError) or pending.done()


def _outcome(
    index: int, name: str, page: int | None, pending: Future[R] | MississippiError
) -> PageOutcome[R]:
    if isinstance(pending, MississippiError):
        return PageOutcome(index, name, getattr(pending, "page", None), error=pending, opened=False)
    try:
        return PageOutcome(index, name, page, result=pending.result())
    except MississippiError as e:
        return PageOutcome(index, name, page, error=e)


async def aiter_outcomes(
    run: Callable[[I], Awaitable[R]],
    items: Iterable[tuple[str, I | MississippiError]],
    *,
    concurrency: int = 8,
) -> AsyncIterator[PageOutcome[R]]:
    """Async twin of :func:`iter_outcomes` (pages are read in a worker thread)."""
    window: deque[tuple[str, int | None, asyncio.Task[R] | MississippiError]] = deque()
    source = iter(items)
    lock = threading.Lock()  # the page iterator is advanced from worker threads, one at a time

    def next_item() -> tuple[str, I | MississippiError] | None:
        with lock:
            return next(source, None)

    index = 0
    try:
        while True:
            item = await asyncio.to_thread(next_item)
            if item is None:
                break
            name, page = item
            if isinstance(page, MississippiError):
                window.append((name, None, page))
            else:
                window.append((name, page.page, asyncio.ensure_future(run(page))))
            while window and (len(window) >= concurrency or _adone(window[0][2])):
                yield await _aoutcome(index, *window.popleft())
                index += 1
        while window:
            yield await _aoutcome(index, *window.popleft())
            index += 1
    finally:
        for _, _, pending in window:
            if isinstance(pending, asyncio.Task):
                pending.cancel()


def _adone(pending: asyncio.Task[Any] | MississippiError) -> bool:
    return isinstance(pending, MississippiError) or pending.done()


async def _aoutcome(
    index: int, name: str, page: int | None, pending: asyncio.Task[R] | MississippiError
) -> PageOutcome[R]:
    if isinstance(pending, MississippiError):
        return PageOutcome(index, name, getattr(pending, "page", None), error=pending, opened=False)
    try:
        return PageOutcome(index, name, page, result=await pending)
    except MississippiError as e:
        return PageOutcome(index, name, page, error=e)


_PATH_MAX = 4096
"""Longest path Linux opens; a longer string can only be (bad) inline data."""


def check_source(source: ImageInput, policy: SourcePolicy) -> None:
    """Fail now, without reading it, when ``source`` names a file that cannot be read.

    Paths are checked against ``policy`` (existence, roots, file type); an http(s) URL against
    whether the policy fetches URLs. Other inputs (bytes, base64, data URIs, images) pass: they
    are checked when decoded.

    Raises:
        ImageNotFoundError: No file at the path.
        AccessDeniedError: The path or URL is refused by the policy.
    """
    from mississippi_tools.images import is_inline_image
    from mississippi_tools.sources import check_url_allowed, resolve_path

    if not isinstance(source, str | Path):
        return
    text = str(source).strip()
    if isinstance(source, str) and (is_inline_image(text) or len(text) >= _PATH_MAX):
        return  # image data (or no path at all): checked when decoded, with the precise reason
    scheme, sep, _ = text.partition("://")
    if sep and scheme.isalpha():
        if scheme.lower() in ("http", "https"):
            check_url_allowed(text, policy)
        return
    resolve_path(source, policy)
