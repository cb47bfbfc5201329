"""Document-wide extraction: one schema filled from several pages, with the page of every value.

``extract`` reads one page. ``extract_document`` reads the selected pages of a document (a PDF,
a multi-page TIFF; an image is one page) into one object valid under the schema, and records
where each value came from (:attr:`DocumentExtractionResult.provenance`, keyed by JSON pointer).

Two strategies, chosen with ``strategy``:

- **per_page** (the default): every page is read on its own, as ``extract`` reads it (all pages
  sent at once, so the engine batches them), and the answers are merged:

  - a single value (string, number, boolean, null) comes from the first page, in page order,
    that gives one; a value equal to the template's example (``""``, ``0``, ``false``: what a
    page without the field answers) or ``null`` counts only when no page gives another. Other
    pages' different values are kept in :attr:`DocumentExtractionResult.conflicts`;
  - a list is the pages' lists joined in page order (line items that run over several pages),
    without items that are the template's example item;
  - an object is merged field by field.

  Every value records its page (and the region read, when one was asked for), and the merged
  object is validated against the schema. A page that fails (its JSON never validated, its
  answer looped) is listed in :attr:`DocumentExtractionResult.page_results` and the others go
  on; when every page fails, the first failure is raised.
- **one_prompt**: all pages in one prompt, so the model sees the whole document (a total on page
  3 that sums items on pages 1 and 2). It must fit the model's context: the prompt, every page's
  image tokens and ``max_new_tokens``. The page of a value is then not known (``page`` is
  ``null`` in the provenance).
- **auto**: one prompt when the engine can measure the prompt (the model runs in this process)
  and it fits the context with ``max_new_tokens`` to spare, and the model takes that many images
  in one prompt; page by page otherwise. :attr:`DocumentExtractionResult.strategy_reason` says
  which and why.

Each page's extraction (and the one prompt) detects a schema echo (the template's example values
returned as the answer) and retries it once, and retries a loop once (see
:mod:`mississippi_tools.tasks.extract`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, WithJsonSchema

from mississippi_tools.engine.base import GenerationOutput, GenerationRequest
from mississippi_tools.errors import ExtractionError, InvalidInputError, MississippiError
from mississippi_tools.schema import normalize_schema, render_template, validate
from mississippi_tools.tasks.base import (
    BatchOutputs,
    RequestBatch,
    RunSettings,
    TaskContext,
)
from mississippi_tools.tasks.catalogue import TaskSpec
from mississippi_tools.tasks.extract import (
    ExtractArguments,
    ExtractionPlan,
    ExtractionResult,
    _same_json,
    plan_extract,
)
from mississippi_tools.tasks.results import ResultMetadata, TaskResult, cut_note

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage
    from mississippi_tools.schema import NormalizedSchema

__all__ = [
    "SPEC",
    "DocumentExtractionPlan",
    "DocumentExtractionResult",
    "ExtractDocumentArguments",
    "FieldConflict",
    "FieldSource",
    "PageExtraction",
    "Strategy",
    "merge_pages",
    "render_document_extraction",
]

Strategy = Literal["per_page", "one_prompt", "auto"]
"""How the pages are read: each on its own then merged, all in one prompt, or one prompt when it
fits (see the module docstring)."""

ONE_PROMPT_NOTE = (
    "The images are the pages of one document, in order; fill the JSON from all of them."
)
"""What a one-prompt extraction adds to the instructions."""


class FieldSource(BaseModel):
    """Where one value of a document extraction came from."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    page: int | None
    """The page (1-based) whose answer gave the value; ``null`` when no page gave one (the value
    is the template's example or null) or when all pages were read in one prompt."""
    region: list[int] | None = None
    """The part of the page that was read, ``[x0, y0, x1, y1]`` in pixels, when a region was
    asked for."""


class FieldConflict(BaseModel):
    """A page that gave another value for a field than the one kept."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    pointer: str
    """The field, as a JSON pointer (``/total``)."""
    page: int
    """The page that gave the other value."""
    value: Any
    """The other value."""


class PageExtraction(BaseModel):
    """What one page gave, page by page."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    page: int
    """The page (1-based)."""
    data: Any = None
    """The page's answer as JSON, when it validated."""
    echo: bool = False
    """The page's answer was the template's example values (none of the fields on the page)."""
    error: str | None = None
    """Why the page gave nothing, when it failed."""
    error_code: str | None = None
    """The failure's error code."""


class DocumentExtractionResult(TaskResult):
    """Data extracted from a whole document, valid under the schema, with each value's page.

    Example:
        >>> result = vlm.extract_document("invoice.pdf", {"number": "", "total": 0.0,
        ...     "items": [{"description": "", "amount": 0.0}]})  # doctest: +SKIP
        >>> result.data["total"], result.provenance["/total"].page
        (1200.0, 3)
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    data: Annotated[
        dict[str, Any] | SerializeAsAny[BaseModel],
        WithJsonSchema({"type": "object", "description": "The extracted data."}),
    ]
    """The merged value: an instance of the pydantic model, or a dict valid under the schema."""
    strategy: Literal["per_page", "one_prompt"]
    """How the pages were read."""
    strategy_reason: str
    """Why that strategy."""
    pages: list[int]
    """The pages read, in order."""
    provenance: dict[str, FieldSource] = Field(default_factory=dict)
    """Where each value came from, keyed by JSON pointer (``/total``, ``/items/3``,
    ``/items/3/amount``)."""
    conflicts: list[FieldConflict] = Field(default_factory=list)
    """Other values pages gave for fields whose value came from an earlier page."""
    confidence: dict[str, float] | None = None
    """When requested: the model's probability for each leaf value, keyed by JSON pointer."""
    page_results: list[PageExtraction] = Field(default_factory=list)
    """Each page's own answer or failure (page by page only)."""
    errors: list[str] = Field(default_factory=list)
    """Why pages or earlier attempts failed."""


class ExtractDocumentArguments(ExtractArguments):
    """Arguments of the ``extract_document`` task."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = Field(
        default="per_page",
        description=(
            "'per_page' (the default): read each page on its own and merge: a single value comes "
            "from the first page that has it, lists are joined in page order, and every value "
            "records its page. 'one_prompt': all pages in one prompt (the model sees the whole "
            "document; the page of a value is not known); fails when the pages do not fit the "
            "model's context. 'auto': one prompt when it fits, else page by page."
        ),
    )


# --------------------------------------------------------------------------------------------
# Merging the pages' answers
# --------------------------------------------------------------------------------------------


class _Merge:
    """The state of one merge: provenance, conflicts and confidences as they are found."""

    def __init__(
        self,
        regions: dict[int, list[int] | None],
        confidences: dict[int, dict[str, float]] | None,
    ) -> None:
        self.regions = regions
        self.page_confidences = confidences
        self.provenance: dict[str, FieldSource] = {}
        self.conflicts: list[FieldConflict] = []
        self.confidence: dict[str, float] = {}

    def source(self, pointer: str, page: int | None, local: str | None) -> None:
        region = self.regions.get(page) if page is not None else None
        self.provenance[pointer] = FieldSource(page=page, region=region)
        if page is not None and local is not None and self.page_confidences is not None:
            value = self.page_confidences.get(page, {}).get(local)
            if value is not None:
                self.confidence[pointer] = value

    def merge(self, values: list[tuple[int, str, Any]], template: Any, pointer: str) -> Any:
        """Merge ``(page, page-local pointer, value)`` answers for the field at ``pointer``."""
        objects = [v for _, _, v in values if isinstance(v, dict)]
        if objects and (isinstance(template, dict) or len(objects) == len(values)):
            return self._merge_object(
                values, template if isinstance(template, dict) else {}, pointer
            )
        lists = [v for _, _, v in values if isinstance(v, list)]
        if lists and (isinstance(template, list) or len(lists) == len(values)):
            return self._merge_list(values, template if isinstance(template, list) else [], pointer)
        return self._merge_scalar(values, template, pointer)

    def _merge_object(
        self, values: list[tuple[int, str, Any]], template: dict[str, Any], pointer: str
    ) -> dict[str, Any]:
        keys = list(template)
        for _, _, value in values:
            if isinstance(value, dict):
                keys.extend(k for k in value if k not in keys)
        merged: dict[str, Any] = {}
        for key in keys:
            escaped = key.replace("~", "~0").replace("/", "~1")
            found = [
                (page, f"{local}/{escaped}", value[key])
                for page, local, value in values
                if isinstance(value, dict) and key in value
            ]
            if found:
                merged[key] = self.merge(found, template.get(key), f"{pointer}/{escaped}")
        return merged

    def _merge_list(
        self, values: list[tuple[int, str, Any]], template: list[Any], pointer: str
    ) -> list[Any]:
        example = template[0] if len(template) == 1 else None
        items: list[Any] = []
        for page, local, value in values:
            if not isinstance(value, list):
                continue
            for index, item in enumerate(value):
                if example is not None and _same_json(item, example):
                    continue  # the template's example item: nothing read
                where = f"{pointer}/{len(items)}"
                items.append(item)
                self._record(item, page, f"{local}/{index}", where)
        if not items:
            self.source(pointer, None, None)
        return items

    def _record(self, value: Any, page: int, local: str, pointer: str) -> None:
        """A value taken whole from one page: it and everything inside it came from there."""
        self.source(pointer, page, local)
        if isinstance(value, dict):
            for key, sub in value.items():
                escaped = key.replace("~", "~0").replace("/", "~1")
                self._record(sub, page, f"{local}/{escaped}", f"{pointer}/{escaped}")
        elif isinstance(value, list):
            for index, sub in enumerate(value):
                self._record(sub, page, f"{local}/{index}", f"{pointer}/{index}")

    def _merge_scalar(self, values: list[tuple[int, str, Any]], template: Any, pointer: str) -> Any:
        given = [(p, loc, v) for p, loc, v in values if v is not None]
        real = [(p, loc, v) for p, loc, v in given if not _same_json(v, template)]
        chosen = real[0] if real else (given[0] if given else None)
        if chosen is None:
            self.source(pointer, None, None)
            return None
        page, local, value = chosen
        if real:
            self._record(value, page, local, pointer)
        else:  # only the template's example value: no page read one
            self.source(pointer, None, None)
        for other_page, _, other in real[1:]:
            if not _same_json(other, value):
                self.conflicts.append(
                    FieldConflict(pointer=pointer or "/", page=other_page, value=other)
                )
        return value


def merge_pages(
    answers: Sequence[tuple[int, Any]],
    schema: NormalizedSchema,
    *,
    regions: dict[int, list[int] | None] | None = None,
    confidences: dict[int, dict[str, float]] | None = None,
) -> tuple[Any, dict[str, FieldSource], list[FieldConflict], dict[str, float]]:
    """Merge the pages' answers (JSON values, in page order) by the rules of the module docstring.

    Args:
        answers: ``(page, answer)`` pairs, in page order.
        schema: The schema (its template gives the example values that count as "not read").
        regions: The region read on each page, for the provenance.
        confidences: Each page's confidences by JSON pointer, carried to the merged pointers.

    Returns:
        The merged JSON value, the provenance by JSON pointer, the conflicts, the confidences.
    """
    merge = _Merge(regions or {}, confidences)
    merged = merge.merge([(page, "", value) for page, value in answers], schema.template, "")
    return merged, merge.provenance, merge.conflicts, merge.confidence


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


class DocumentExtractionPlan:
    """The document's extraction: one plan per page sent as a batch, or one plan for all pages.

    Args:
        ctx: The task context.
        images: The document's pages, in order.
        args: The task's arguments.
        settings: The run settings.

    Raises:
        InvalidInputError: ``one_prompt`` and the pages do not fit the model's context or image
            limit (when it can be measured).
    """

    def __init__(
        self,
        ctx: TaskContext,
        images: list[LoadedImage],
        args: ExtractDocumentArguments,
        settings: RunSettings,
    ) -> None:
        if not images:
            raise InvalidInputError("extract_document needs at least one page")
        self.images = images
        self.args = args
        self.schema = normalize_schema(args.json_schema)
        self.pages = [image.page or 1 for image in images]
        page_args = ExtractArguments.model_construct(
            **{name: getattr(args, name) for name in ExtractArguments.model_fields}
        )
        self.strategy, self.reason = self._strategy(ctx, page_args, settings)
        self.single: ExtractionPlan | None = None
        self.page_plans: list[ExtractionPlan] = []
        if self.strategy == "one_prompt":
            note = "\n".join(filter(None, [args.instructions, ONE_PROMPT_NOTE]))
            one_args = page_args.model_copy(update={"instructions": note})
            self.single = plan_extract(ctx, images, one_args, settings)
        else:
            self.page_plans = [plan_extract(ctx, [image], page_args, settings) for image in images]
        self.done: dict[int, ExtractionResult] = {}
        self.failed: dict[int, MississippiError] = {}
        self.pending: list[int] = []

    def _strategy(
        self, ctx: TaskContext, page_args: ExtractArguments, settings: RunSettings
    ) -> tuple[Literal["per_page", "one_prompt"], str]:
        wanted = self.args.strategy
        if len(self.images) == 1:
            return "per_page", "the document has one page"
        if wanted == "per_page":
            return "per_page", "asked for (strategy='per_page')"
        limit = ctx.info.max_images
        if limit is not None and len(self.images) > limit:
            why = f"{ctx.info.model_id} takes at most {limit} images in one prompt"
            return self._no_one_prompt(why)
        if ctx.prompt_tokens is None:
            if wanted == "one_prompt":
                return "one_prompt", "asked for (strategy='one_prompt'); not measured"
            return "per_page", "the engine cannot measure prompts (a remote model), so page by page"
        probe = plan_extract(ctx, self.images, page_args, settings).first_request()
        needed = ctx.prompt_tokens(probe) + probe.sampling.max_new_tokens
        context = ctx.info.max_context
        if needed > context:
            why = (
                f"the {len(self.images)} pages need {needed} tokens with max_new_tokens="
                f"{probe.sampling.max_new_tokens}, and the model's context is {context}"
            )
            return self._no_one_prompt(why)
        return (
            "one_prompt",
            f"the {len(self.images)} pages fit the context ({needed} of {context} tokens)",
        )

    def _no_one_prompt(self, why: str) -> tuple[Literal["per_page"], str]:
        if self.args.strategy == "one_prompt":
            raise InvalidInputError(
                f"cannot read the document in one prompt: {why}; use strategy='per_page', fewer "
                "pages, or fewer tiles per page (max_tiles)"
            )
        return "per_page", f"{why}, so page by page"

    # -- the protocol ------------------------------------------------------------------------------

    def first_request(self) -> GenerationRequest | RequestBatch:
        """The one prompt, or every page's first request at once."""
        if self.single is not None:
            return self.single.first_request()
        self.pending = list(range(len(self.page_plans)))
        return RequestBatch(tuple(plan.first_request() for plan in self.page_plans))

    def handle(self, output: GenerationOutput) -> DocumentExtractionResult | GenerationRequest:
        """One prompt: the next attempt, or the result."""
        assert self.single is not None
        step = self.single.handle(output)
        if isinstance(step, GenerationRequest):
            return step
        return self._one_prompt_result(step)

    def handle_batch(self, outputs: BatchOutputs) -> DocumentExtractionResult | RequestBatch:
        """Page by page: each page's next attempt, or the merged result once all are done."""
        retries: list[tuple[int, GenerationRequest]] = []
        for index, output in zip(self.pending, outputs, strict=True):
            if isinstance(output, MississippiError):
                self.failed[index] = output
                continue
            try:
                step = self.page_plans[index].handle(output)
            except MississippiError as e:
                self.failed[index] = e
                continue
            if isinstance(step, GenerationRequest):
                retries.append((index, step))
            else:
                self.done[index] = step
        if retries:
            self.pending = [index for index, _ in retries]
            return RequestBatch(tuple(request for _, request in retries))
        return self._merged()

    # -- results -------------------------------------------------------------------------------

    def _one_prompt_result(self, result: ExtractionResult) -> DocumentExtractionResult:
        data = result.data
        value = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
        provenance = {pointer: FieldSource(page=None) for pointer in _pointers(value)}
        return DocumentExtractionResult(
            data=data,
            strategy="one_prompt",
            strategy_reason=self.reason,
            pages=self.pages,
            provenance=provenance,
            confidence=result.confidence,
            errors=result.errors,
            meta=result.meta.model_copy(update={"page": None}),
        )

    def _merged(self) -> DocumentExtractionResult:
        started = time.perf_counter()
        page_results: list[PageExtraction] = []
        answers: list[tuple[int, Any]] = []
        confidences: dict[int, dict[str, float]] = {}
        errors: list[str] = []
        for index, page in enumerate(self.pages):
            if index in self.failed:
                error = self.failed[index]
                page_results.append(
                    PageExtraction(page=page, error=error.message, error_code=error.code)
                )
                errors.append(f"page {page}: {error.message}")
                continue
            result = self.done[index]
            data = result.data
            value = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
            page_results.append(PageExtraction(page=page, data=value, echo=result.echo))
            errors.extend(f"page {page}: {e}" for e in result.errors)
            answers.append((page, value))
            if result.confidence is not None:
                confidences[page] = result.confidence
        if not answers:
            index, first = next(iter(sorted(self.failed.items())))
            if len(self.pages) == 1:
                raise first
            raise first.rephrased(
                f"all {len(self.pages)} pages failed; page {self.pages[index]}: {first.message}"
            )
        regions = {
            image.page or 1: (list(image.region) if image.region else None) for image in self.images
        }
        merged, provenance, conflicts, confidence = merge_pages(
            answers,
            self.schema,
            regions=regions,
            confidences=confidences if self.args.confidence else None,
        )
        try:
            data = validate(merged, self.schema)
        except ExtractionError as e:
            raise ExtractionError(
                f"the pages' answers were each valid, but merged they are not: {e.message}; "
                "read the pages with extract one by one, or use strategy='one_prompt'",
                raw_text=e.raw_text,
                errors=e.errors,
                attempts=sum(r.meta.attempts for r in self.done.values()),
            ) from None
        meta = _combined_meta([self.done[i] for i in sorted(self.done)], self.images)
        meta.timings["merge"] = time.perf_counter() - started
        return DocumentExtractionResult(
            data=data,
            strategy="per_page",
            strategy_reason=self.reason,
            pages=self.pages,
            provenance=provenance,
            conflicts=conflicts,
            confidence=confidence if self.args.confidence else None,
            page_results=page_results,
            errors=errors,
            meta=meta,
        )


def _pointers(value: Any, pointer: str = "") -> list[str]:
    found = [pointer] if pointer else []
    if isinstance(value, dict):
        for key, sub in value.items():
            escaped = key.replace("~", "~0").replace("/", "~1")
            found.extend(_pointers(sub, f"{pointer}/{escaped}"))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            found.extend(_pointers(sub, f"{pointer}/{index}"))
    return found


def _combined_meta(results: list[ExtractionResult], images: list[LoadedImage]) -> ResultMetadata:
    """One metadata for all pages: their costs added up."""
    first = results[0].meta
    timings: dict[str, float] = {}
    for result in results:
        for stage, seconds in result.meta.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
    reasons = {r.meta.finish_reason for r in results}
    return ResultMetadata(
        model=first.model,
        engine=first.engine,
        source=images[0].source,
        page=None,
        region=first.region,
        tiles=sum(r.meta.tiles for r in results),
        prompt_tokens=sum(r.meta.prompt_tokens for r in results),
        new_tokens=sum(r.meta.new_tokens for r in results),
        timings=timings,
        cache_hit=all(r.meta.cache_hit for r in results),
        finish_reason="length" if "length" in reasons else first.finish_reason,
        attempts=sum(r.meta.attempts for r in results),
    )


def plan_extract_document(
    ctx: TaskContext,
    images: list[LoadedImage],
    args: ExtractDocumentArguments,
    settings: RunSettings,
) -> DocumentExtractionPlan:
    """The document's extraction (see :class:`DocumentExtractionPlan`)."""
    return DocumentExtractionPlan(ctx, images, args, settings)


def render_document_extraction(result: DocumentExtractionResult) -> str:
    """The merged JSON, then the page of each top-level value and any conflicts, for an LLM."""
    import json

    data = (
        result.data.model_dump(mode="json") if isinstance(result.data, BaseModel) else result.data
    )
    text = json.dumps(data, ensure_ascii=False, indent=2)
    if result.strategy == "per_page":
        found = [
            f"{pointer[1:]} p.{source.page}"
            for pointer, source in result.provenance.items()
            if pointer.count("/") == 1 and source.page is not None
        ]
        if found:
            text += "\nFrom pages: " + ", ".join(found)
    else:
        text += f"\n(Read in one prompt from pages {', '.join(map(str, result.pages))}.)"
    if result.conflicts:
        text += "\nOther values on later pages: " + "; ".join(
            f"{c.pointer} p.{c.page}: {json.dumps(c.value, ensure_ascii=False)}"
            for c in result.conflicts[:5]
        )
    failed = [p for p in result.page_results if p.error is not None]
    if failed:
        text += "\nPages that failed: " + ", ".join(str(p.page) for p in failed)
    return text + cut_note(result.meta)


SPEC: TaskSpec[ExtractDocumentArguments, DocumentExtractionResult] = TaskSpec(
    name="extract_document",
    title="Extract JSON from a whole document",
    description=(
        "Fill one JSON shape from several pages of a document (a multi-page invoice, a contract, "
        "a report), running locally: single values come from the page that has them, lists "
        "(line items) are joined across pages, and each value records the page it came from. "
        "Give the pages to read (all by default). For one page or image, extract does the same."
    ),
    arguments=ExtractDocumentArguments,
    result=DocumentExtractionResult,
    plan=plan_extract_document,
    render=render_document_extraction,
    images="document",
    describe_fixed=lambda fixed: (
        "The answer always has this shape:\n"
        + render_template(normalize_schema(fixed["json_schema"]))
    ),
)
