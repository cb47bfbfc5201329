"""One agent tool call, whatever the framework: what LangChain, LlamaIndex and MCP tools share.

An agent calls a task with an ``image`` (a path, data URI, base64, or an allowed URL), optional
``pages``, an optional ``region`` to zoom into, and the task's own arguments. :func:`call_tool`
runs it and returns a :class:`ToolOutput`: text for the calling model (the catalogue's
rendering; one ``[page N]`` section per page for a range) and the typed result(s) as the
artifact. The adapters only translate this into their framework's shapes and error channels;
none of them reads pages, renders results or parses arguments itself.

Pages:
    ``pages`` left empty reads an ordinary image (a document with several pages is an error whose
    remedy is ``pages``). A single page (``2``, ``"2"``) reads that page: the content is that page's
    text and the artifact its result. A range or list (``"1-3"``, ``"1,4"``, ``[1, 4]``) reads each
    page: one ``[page N]`` section per page, and the artifact is a list with each page's result or,
    for a page that failed, its :class:`~mississippi_tools.errors.MississippiError` (its section
    says so). When every page fails, the call fails. At most ``max_pages`` pages per call
    (:data:`~mississippi_tools.batch.DEFAULT_MAX_PAGES` unless configured). A task that reads a
    document's pages together (``extract_document``) gets the whole selection in one call.

Region:
    ``region`` (``[x0, y0, x1, y1]`` or ``"x0,y0,x1,y1"``: pixels, or fractions of the image in
    0..1) reads only that part of the image, or of each page, at full tile resolution: an agent
    that could not read a small print zooms in and asks again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from mississippi_tools.batch import DEFAULT_MAX_PAGES, PageOutcome, check_source
from mississippi_tools.errors import InvalidInputError, MississippiError
from mississippi_tools.pdf import check_page_selection
from mississippi_tools.tasks.ocr import OCRResult, render_ocr

if TYPE_CHECKING:
    from mississippi_tools.models.base import ModelInfo
    from mississippi_tools.sources import SourcePolicy
    from mississippi_tools.tasks.catalogue import TaskSpec
    from mississippi_tools.vlm import MississippiVLM

__all__ = [
    "DOCUMENT_KEYS",
    "IMAGE_DESCRIPTION",
    "PAGES_DESCRIPTION",
    "REGION_DESCRIPTION",
    "PageArgument",
    "RegionArgument",
    "ToolOutput",
    "ToolSettings",
    "acall_tool",
    "call_tool",
    "check_call",
    "check_tool_arguments",
    "document_fields",
    "policy_note",
    "tool_arguments",
    "tool_description",
]

PageArgument = int | str | list[int] | None
"""What an agent may pass as ``pages``."""

IMAGE_DESCRIPTION = (
    "The image to read: a file path such as 'scans/invoice.png' or '/data/report.pdf', a data "
    "URI ('data:image/png;base64,...') or base64-encoded image bytes; http(s) URLs only if this "
    "tool allows them. PNG, JPEG, GIF, WEBP, BMP, TIFF and PDF are supported."
)
REGION_DESCRIPTION = (
    "Optional zoom: read only this part of the image (or of each page), at full resolution, "
    "as [x0, y0, x1, y1] (left, top, right, bottom) in pixels, or as fractions of the width and "
    "height when all four are between 0 and 1: [0, 0, 0.5, 0.5] is the top-left quarter, "
    "[0, 0.8, 1, 1] the bottom strip. Use it to read small print again more closely."
)
RegionArgument = list[float] | str | None
"""What an agent may pass as ``region``."""

PAGES_DESCRIPTION = (
    "Only for PDFs and multi-page TIFFs: the 1-based page to read (2 or '2'), or a range or list "
    "('1-3', '1,4,6-8', '5-' for page 5 to the end, or [1, 4]) to read each of those pages "
    "separately. Leave it empty for an ordinary image; a document with several pages needs it."
)


logger = logging.getLogger(__name__)

_said: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        logger.warning("%s", message)


@dataclass(frozen=True)
class ToolSettings:
    """How a tool runs its task, set when the tool is built (not by the calling model).

    Attributes:
        max_tiles: Model option: most tiles per image (H2OVL models).
        options: Other model options.
        max_new_tokens: Most tokens per page (the task's default when ``None``).
        timeout: Seconds before one page's request fails.
        max_pages: Most pages one call reads.
        concurrency: Pages in flight for a range (default: the engine's batch size).
        fixed: Task arguments fixed for every call (removed from what the model passes), e.g.
            an extraction schema.
    """

    max_tiles: int | None = None
    options: Mapping[str, Any] | None = None
    max_new_tokens: int | None = None
    timeout: float | None = None
    max_pages: int = DEFAULT_MAX_PAGES
    concurrency: int | None = None
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def run_settings(self, info: ModelInfo | None = None) -> dict[str, Any]:
        """The keyword settings of ``MississippiVLM.run`` for the model ``info`` describes.

        ``max_tiles`` is a server-wide default, set before the model is known: where the loaded
        model has no such option (Idefics, Florence-2 ...) it is left out, said once in the log.
        """
        max_tiles = self.max_tiles
        if max_tiles is not None and info is not None and info.option("max_tiles") is None:
            _say_once(
                f"max_tiles={max_tiles} does not apply to {info.family} models; it is ignored"
            )
            max_tiles = None
        values = {
            "max_tiles": max_tiles,
            "options": self.options,
            "max_new_tokens": self.max_new_tokens,
            "timeout": self.timeout,
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class ToolOutput:
    """The answer of one tool call.

    Attributes:
        content: Text for the calling model.
        artifact: The result (one page or image), or a list with one entry per page (its result
            or its error).
        outcomes: Every page's outcome, in order.
    """

    content: str
    artifact: Any
    outcomes: list[PageOutcome[Any]]


class _ToolArguments(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def tool_arguments(
    spec: TaskSpec[Any, Any], *, fixed: Sequence[str] = (), name: str | None = None
) -> type[BaseModel]:
    """The arguments a calling model passes: ``image``, ``pages``, ``region``, then the task's own.

    Arguments named in ``fixed`` are left out (the tool sets them). The fields keep the task's
    names, aliases and descriptions, so every framework shows the same schema.
    """
    fields: dict[str, Any] = {
        "image": (str, Field(min_length=1, description=IMAGE_DESCRIPTION)),
        "pages": (PageArgument, Field(default=None, description=PAGES_DESCRIPTION)),
        "region": (RegionArgument, Field(default=None, description=REGION_DESCRIPTION)),
    }
    for field_name, info in spec.arguments.model_fields.items():
        if field_name in fixed or (info.alias or field_name) in fixed:
            continue
        fields[field_name] = (info.annotation, info)
    model_name = name or f"{''.join(p.title() for p in spec.name.split('_'))}ToolArguments"
    model: type[BaseModel] = create_model(model_name, __base__=_ToolArguments, **fields)
    return model


def check_tool_arguments(
    spec: TaskSpec[Any, Any], values: Mapping[str, Any], *, fixed: Sequence[str] = ()
) -> dict[str, Any]:
    """``values`` checked against :func:`tool_arguments`, for frameworks that call tools raw.

    Returns:
        The values, unchanged (validation only).

    Raises:
        InvalidInputError: Unknown, missing or mistyped arguments, each named with the fix.
    """
    from pydantic import ValidationError

    try:
        tool_arguments(spec, fixed=fixed).model_validate(dict(values))
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'arguments'}: {error['msg']}"
            for error in e.errors(include_url=False)
        )
        raise InvalidInputError(
            f"invalid arguments for {spec.name}: {problems}; fix them and call the tool again"
        ) from None
    return dict(values)


def tool_description(
    spec: TaskSpec[Any, Any], policy: SourcePolicy, fixed: Mapping[str, Any] | None = None
) -> str:
    """The model-facing description: what the task does, fixed arguments, what it may read."""
    parts = [spec.description]
    if fixed and spec.describe_fixed is not None:
        parts.append(spec.describe_fixed(fixed))
    parts.append(policy_note(policy))
    return "\n".join(part.rstrip() for part in parts if part)


def policy_note(policy: SourcePolicy) -> str:
    """What the calling model must know about which images it may name."""
    roots = policy.allowed_roots
    if roots is None:
        paths = "Any local file path is accepted. "
    elif roots:
        shown = ", ".join(str(root) for root in roots)
        paths = f"File paths must be inside {shown}; relative paths start at {roots[0]}. "
    else:
        paths = "File paths are not accepted; pass a data URI or base64. "
    urls = "http(s) URLs are accepted." if policy.allow_urls else "URLs are not accepted."
    return f"{paths}{urls}"


@dataclass(frozen=True)
class _Selection:
    """What ``pages`` asks for: nothing, one page, or a range (one result per page)."""

    page: int | None = None
    spec: str | list[int] | None = None

    @classmethod
    def of(cls, pages: PageArgument) -> _Selection:
        if pages is None or (isinstance(pages, str) and not pages.strip()):
            return cls()
        if isinstance(pages, bool):
            raise InvalidInputError(f"pages must be a page number or a range, got {pages!r}")
        if isinstance(pages, str) and pages.strip().isdigit():
            pages = int(pages)
        if isinstance(pages, int):
            check_page_selection([pages], what="the image")
            return cls(page=pages)
        spec = pages.strip() if isinstance(pages, str) else list(pages)
        check_page_selection(spec, what="the image")
        return cls(spec=spec)


def _combine(spec: TaskSpec[Any, Any], outcomes: list[PageOutcome[Any]]) -> ToolOutput:
    sections = []
    for outcome in outcomes:
        body = (
            spec.render(outcome.result)
            if outcome.error is None
            else f"error: {outcome.error.code}: {outcome.error.message}"
        )
        sections.append(f"[page {outcome.page}]\n{body}")
    errors = [(o.page, o.error) for o in outcomes if o.error is not None]
    if outcomes and len(errors) == len(outcomes):
        page, error = errors[0]
        if len(outcomes) == 1:
            raise error  # the document itself could not be read
        raise error.rephrased(f"all {len(outcomes)} pages failed; page {page}: {error.message}")
    artifact = [o.result if o.error is None else o.error for o in outcomes]
    return ToolOutput("\n\n".join(sections), artifact, outcomes)


def check_call(image: str, pages: PageArgument, policy: SourcePolicy) -> None:
    """The checks of a call that need neither the model nor the image's bytes.

    Servers run them before waiting for a model that is still loading, so that a malformed
    page selection, a missing file or a path outside the allowed roots is answered at once.

    Raises:
        InvalidInputError: A malformed page selection.
        ImageNotFoundError: No file at the path.
        AccessDeniedError: The path or URL is refused by ``policy``.
    """
    _Selection.of(pages)
    check_source(image, policy)


def _split_region(arguments: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The task's own arguments, and the ``region`` run setting when one was given."""
    values = dict(arguments)
    region = values.pop("region", None)
    if isinstance(region, str) and not region.strip():
        region = None
    return values, ({"region": region} if region is not None else {})


def call_tool(
    vlm: MississippiVLM,
    spec: TaskSpec[Any, Any],
    image: str,
    pages: PageArgument,
    arguments: Mapping[str, Any],
    settings: ToolSettings,
) -> ToolOutput:
    """Run one tool call (see the module docstring).

    ``arguments`` are the task's own, and ``region`` when the calling model gave one.

    Raises:
        MississippiError: The call failed as a whole (bad arguments, unreadable image, every
            page failed); the adapter hands it to the calling model in its framework's way.
    """
    selection = _Selection.of(pages)
    own, zoom = _split_region(arguments)
    values = {**own, **settings.fixed}
    run = {**settings.run_settings(vlm.model_info), **zoom}
    if spec.images == "document":
        result = vlm.run(
            spec.name, image, pages=pages, max_pages=settings.max_pages, **run, **values
        )
        outcome = PageOutcome(0, image, None, result=result)
        return ToolOutput(spec.render(result), result, [outcome])
    if selection.spec is None:
        result = vlm.run(spec.name, image, page=selection.page, **run, **values)
        outcome = PageOutcome(0, image, selection.page, result=result)
        return ToolOutput(spec.render(result), result, [outcome])
    outcomes = list(
        vlm.iter_batch(
            spec.name,
            [image],
            pages=selection.spec,
            max_pages=settings.max_pages,
            concurrency=settings.concurrency,
            **run,
            **values,
        )
    )
    return _combine(spec, outcomes)


async def acall_tool(
    vlm: MississippiVLM,
    spec: TaskSpec[Any, Any],
    image: str,
    pages: PageArgument,
    arguments: Mapping[str, Any],
    settings: ToolSettings,
    on_page: Callable[[int, int | None], Awaitable[None]] | None = None,
) -> ToolOutput:
    """Async twin of :func:`call_tool`.

    For a range of pages, ``on_page(done, total)`` is awaited once before the first page (with
    ``done=0``) and after each page, for progress reports; ``total`` is ``None`` when the
    document cannot be counted beforehand.
    """
    selection = _Selection.of(pages)
    own, zoom = _split_region(arguments)
    values = {**own, **settings.fixed}
    run = {**settings.run_settings(vlm.model_info), **zoom}
    if spec.images == "document":
        result = await vlm.arun(
            spec.name, image, pages=pages, max_pages=settings.max_pages, **run, **values
        )
        outcome = PageOutcome(0, image, None, result=result)
        return ToolOutput(spec.render(result), result, [outcome])
    if selection.spec is None:
        result = await vlm.arun(spec.name, image, page=selection.page, **run, **values)
        outcome = PageOutcome(0, image, selection.page, result=result)
        return ToolOutput(spec.render(result), result, [outcome])
    total = None
    if on_page is not None:
        try:
            total = await asyncio.to_thread(vlm.count_pages, [image], selection.spec)
        except MississippiError:
            total = None  # the batch reports what is wrong with the document
        await on_page(0, total)
    outcomes = []
    async for outcome in vlm.aiter_batch(
        spec.name,
        [image],
        pages=selection.spec,
        max_pages=settings.max_pages,
        concurrency=settings.concurrency,
        **run,
        **values,
    ):
        outcomes.append(outcome)
        if on_page is not None:
            await on_page(len(outcomes), total)
    return _combine(spec, outcomes)


#: Metadata keys a retrieval document always has (an extracted field of the same name is not
#: copied over them).
DOCUMENT_KEYS = frozenset(
    {
        "source",
        "page",
        "task",
        "model",
        "tiles",
        "result",
        "boxes",
        "error",
        "error_code",
        "error_type",
    }
)


def document_fields(
    spec: TaskSpec[Any, Any], outcome: PageOutcome[Any], model: str
) -> tuple[str, dict[str, Any]]:
    """The text and metadata of one page as a retrieval document (LangChain, LlamaIndex).

    A page that succeeded gives the catalogue's rendering and metadata with ``source``,
    ``page`` (1 for an ordinary image), ``task``, ``model``, ``tiles`` and ``result`` (the typed
    result as JSON, without its metadata). For an extraction, each top-level field of the data is
    also copied into the metadata. OCR read with ``boxes=True`` adds ``boxes``: one entry per
    boxed line, its ``text`` with the box's ``pixels`` (and ``points`` on PDF pages); the text
    itself stays plain. A page that failed gives empty text and ``error``,
    ``error_code`` and ``error_type`` (``page`` is ``None`` when the file could not be opened).
    """
    metadata: dict[str, Any] = {
        "source": outcome.source,
        "page": outcome.page or 1,
        "task": spec.name,
        "model": model,
    }
    if outcome.error is not None:
        error = outcome.error
        metadata.update(
            page=(outcome.page or 1) if outcome.opened else outcome.page,
            error=error.message,
            error_code=error.code,
            error_type=type(error).__name__,
        )
        return "", metadata
    result = outcome.unwrap()
    metadata["tiles"] = result.meta.tiles
    metadata["result"] = result.model_dump(mode="json", exclude={"meta"})
    data = metadata["result"].get("data")
    if isinstance(data, dict):
        metadata.update({k: v for k, v in data.items() if k not in DOCUMENT_KEYS})
    if isinstance(result, OCRResult) and (boxes := result.boxes()):
        metadata["boxes"] = boxes
        return render_ocr(result, with_boxes=False), metadata
    return spec.render(result), metadata
