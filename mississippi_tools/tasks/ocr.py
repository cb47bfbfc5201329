"""Reading text: the OCR prompts, the :class:`OCRResult` result, and the parser of the answer.

``text`` and ``lines`` use the instruction of H2OVL-Mississippi's own examples, "Read the text in
the image." (``lines`` differs only in how the result is presented: the same text, with per-line
confidences when the engine computed them). ``markdown`` asks for Markdown. As in the
original model's OCR mode, runs of spaces in the answer are collapsed to one.

PDF pages that carry their own text need no model: with ``text_layer="auto"`` (the default) a
page whose embedded text passes :meth:`~mississippi_tools.text_layer.TextLayer.problem` (enough
characters, no glyph-less fonts, mapped characters, not an invisible OCR layer with garbage) is
answered from that text, in the layer's reading order, through the same parser as the model's
answer; its metadata says ``origin="text_layer"``. Other pages, and images, go to the model.
``"never"`` always asks the model; ``"only"`` never does, and fails for a page without a usable
layer. With a ``region``, only the text inside it counts.

With ``boxes=True`` each line also says where it is (:class:`~mississippi_tools.tasks.results.
TextBox`: pixels, and page points for PDF pages). The model is asked in its family's region
dialect (:meth:`~mississippi_tools.tasks.dialects.Dialect.region_prompt`; H2OVL: InternVL's
``<ref>``/``<box>`` grounding tokens) and its markup is read back by the dialect; a line the
model gave no box for has ``box=None``. A page answered from its text layer takes its line
boxes from the layer's character boxes.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from mississippi_tools.errors import InvalidInputError, UnsupportedTaskError
from mississippi_tools.tasks.base import (
    OneShotPlan,
    ResultPlan,
    RunSettings,
    TaskContext,
    TaskPlan,
    line_confidences,
)
from mississippi_tools.tasks.catalogue import TaskSpec
from mississippi_tools.tasks.dialects import region_families
from mississippi_tools.tasks.results import ResultMetadata, TaskResult, TextBox, cut_note
from mississippi_tools.tasks.text_regions import line_boxes, text_box

if TYPE_CHECKING:
    from mississippi_tools.engine.base import GenerationOutput
    from mississippi_tools.images import LoadedImage

__all__ = [
    "OCR_MARKDOWN_PROMPT",
    "OCR_TEXT_PROMPT",
    "SPEC",
    "OCRArguments",
    "OCRFormat",
    "OCRLine",
    "OCRResult",
    "TextLayerMode",
    "build_ocr_prompt",
    "collapse_spaces",
    "parse_ocr_output",
    "render_ocr",
]

OCRFormat = Literal["text", "markdown", "lines"]
"""How the text is wanted: plain ``text``, ``markdown`` (headings, lists, tables), or ``lines``."""

OCR_TEXT_PROMPT: Final = "Read the text in the image."
"""The OCR instruction of the H2OVL-Mississippi examples, for ``text`` and ``lines``."""

OCR_MARKDOWN_PROMPT: Final = (
    "Read the text in the image and format it as Markdown. "
    "Keep the reading order, headings, lists and tables; write tables as Markdown tables."
)
"""The OCR instruction for ``markdown``."""

TextLayerMode = Literal["auto", "never", "only"]
"""For PDF pages: use a usable embedded text layer instead of the model (``auto``), never use it
(``never``), or use only it, never the model (``only``)."""

_FORMATS: Final = frozenset(get_args(OCRFormat))
_FENCE_OPEN_RE: Final = re.compile(r"[ \t]*(?:`{3,}|~{3,})[ \t]*(?:markdown|md|text|txt)?[ \t]*")
_FENCE_CLOSE_RE: Final = re.compile(r"[ \t]*(?:`{3,}|~{3,})[ \t]*")


def _check_format(format: str) -> None:
    if format not in _FORMATS:
        raise InvalidInputError(
            f"unknown OCR format {format!r}; use one of {', '.join(sorted(_FORMATS))}"
        )


def build_ocr_prompt(format: OCRFormat = "text") -> str:
    """Return the prompt that asks the model to read the text in an image.

    Args:
        format: ``text`` and ``lines`` give :data:`OCR_TEXT_PROMPT`; ``markdown`` gives
            :data:`OCR_MARKDOWN_PROMPT`.

    Returns:
        The prompt, without the ``<image>`` placeholder (the engine adds it).

    Raises:
        InvalidInputError: ``format`` is not one of the :data:`OCRFormat` values.
    """
    _check_format(format)
    return OCR_MARKDOWN_PROMPT if format == "markdown" else OCR_TEXT_PROMPT


def collapse_spaces(text: str) -> str:
    """Collapse every run of spaces to one space, as the original model's OCR mode does.

    Only spaces (U+0020) are touched; tabs and line breaks are kept.

    Args:
        text: OCR output.

    Returns:
        The text with no two consecutive spaces.

    Example:
        >>> collapse_spaces("Total   due:  $1,200")
        'Total due: $1,200'
    """
    return re.sub(r" {2,}", " ", text)


class OCRLine(BaseModel):
    """One non-empty line of OCR text."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    text: str
    """The line's text."""
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """The model's confidence in the line (a probability from its token scores), when computed."""
    box: TextBox | None = None
    """Where the line is (pixels; page points on PDF pages), when boxes were asked for and the
    model (or the page's text layer) said; ``null`` otherwise."""


class OCRResult(TaskResult):
    """Text read from an image.

    ``str(result)`` is the text. ``lines`` always holds the non-empty lines of the text; for the
    ``markdown`` format, ``markdown`` holds the Markdown (``text`` is the same Markdown).

    Example:
        >>> result = vlm.ocr("receipt.png")  # doctest: +SKIP
        >>> print(result)
        ACME Store
        Total due: $1,200
        >>> [line.text for line in result.lines]
        ['ACME Store', 'Total due: $1,200']
    """

    text: str
    """The text as read, one line per line of the image."""
    format: OCRFormat = "text"
    """The format that was asked for."""
    lines: list[OCRLine] = Field(default_factory=list)
    """The non-empty lines of ``text``, in order, with their confidences when computed."""
    markdown: str | None = None
    """The Markdown, for the ``markdown`` format; ``null`` otherwise."""

    def __str__(self) -> str:
        return self.text

    def boxes(self) -> list[dict[str, object]]:
        """The lines that have a box, as plain JSON: ``text`` with the box's fields.

        Example:
            >>> result.boxes()  # doctest: +SKIP
            [{'text': 'Total due', 'pixels': [24.0, 34.5, 135.6, 96.1]}]
        """
        return [
            {"text": line.text, **line.box.model_dump(mode="json", exclude_none=True)}
            for line in self.lines
            if line.box is not None
        ]


def parse_ocr_output(
    raw: str,
    format: OCRFormat,
    line_confidences: Sequence[float] | None,
    meta: ResultMetadata,
    line_boxes: Sequence[TextBox | None] | None = None,
) -> OCRResult:
    r"""Turn the model's answer to :func:`build_ocr_prompt` into an :class:`OCRResult`.

    Runs of spaces are collapsed (Markdown keeps its indentation, which nests lists), trailing
    spaces and blank lines at both ends are removed, and a Markdown answer loses the code fence
    around it when the model added one.

    Args:
        raw: The model's answer, as generated.
        format: The format that was asked for.
        line_confidences: One confidence in ``[0, 1]`` per line of ``raw`` (``raw.split("\n")``),
            or ``None`` when the engine did not compute them.
        meta: The engine's metadata for this generation.
        line_boxes: One box (or ``None``) per line of ``raw``, when boxes were asked for.

    Returns:
        The text, its lines and, for ``markdown``, the Markdown.

    Raises:
        InvalidInputError: ``format`` is unknown, or ``line_confidences`` or ``line_boxes`` does
            not have one value per line of ``raw``.
    """
    _check_format(format)
    raw_lines = [line.rstrip("\r") for line in raw.split("\n")]
    if line_confidences is not None:
        if len(line_confidences) != len(raw_lines):
            raise InvalidInputError(
                f"got {len(line_confidences)} line confidences for {len(raw_lines)} lines of "
                'output; pass one per line of raw.split("\\n"), or None'
            )
        bad = [c for c in line_confidences if not (math.isfinite(c) and 0.0 <= c <= 1.0)]
        if bad:
            raise InvalidInputError(
                f"line confidences must be probabilities in [0, 1]; got {bad[:3]} "
                "(convert log-probabilities with math.exp)"
            )
    if line_boxes is not None and len(line_boxes) != len(raw_lines):
        raise InvalidInputError(
            f"got {len(line_boxes)} line boxes for {len(raw_lines)} lines of output; pass one "
            'per line of raw.split("\\n") (None for a line without a box), or None'
        )
    confidences: list[float | None] = (
        list(line_confidences) if line_confidences is not None else [None] * len(raw_lines)
    )
    boxes: list[TextBox | None] = list(line_boxes) if line_boxes else [None] * len(raw_lines)
    pairs = list(zip(raw_lines, zip(confidences, boxes, strict=True), strict=True))

    if format == "markdown":
        content = [i for i, (line, _) in enumerate(pairs) if line.strip()]
        if content and _FENCE_OPEN_RE.fullmatch(pairs[content[0]][0]):
            last = content[-1]
            end = last if len(content) > 1 and _FENCE_CLOSE_RE.fullmatch(pairs[last][0]) else None
            pairs = pairs[content[0] + 1 : end]
        pairs = [(_collapse_inner(line).rstrip(), c) for line, c in pairs]
    else:
        pairs = [(collapse_spaces(line).strip(), c) for line, c in pairs]

    while pairs and not pairs[0][0]:
        pairs.pop(0)
    while pairs and not pairs[-1][0]:
        pairs.pop()
    text = "\n".join(line for line, _ in pairs)
    lines = [
        OCRLine(text=line.strip(), confidence=c, box=box)
        for line, (c, box) in pairs
        if line.strip()
    ]
    return OCRResult(
        text=text,
        format=format,
        lines=lines,
        markdown=text if format == "markdown" else None,
        meta=meta,
    )


def _collapse_inner(line: str) -> str:
    """Collapse runs of spaces after the indentation, which Markdown needs for nested lists."""
    indent = len(line) - len(line.lstrip(" "))
    return line[:indent] + collapse_spaces(line[indent:])


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


class OCRArguments(BaseModel):
    """Arguments of the ``ocr`` task."""

    model_config = ConfigDict(extra="forbid")

    format: OCRFormat = Field(
        default="text",
        description=(
            "'text' (the default) for plain text, one line per line of the image; 'markdown' to "
            "keep headings, lists and tables as Markdown; 'lines' for the text with one "
            "confidence per line (with confidence)."
        ),
    )
    confidence: bool = Field(
        default=False,
        description="Also give each line the model's confidence (its weakest token probability).",
    )
    boxes: bool = Field(
        default=False,
        description=(
            "Also say where each line is on the image: a box [x0, y0, x1, y1] in pixels (and in "
            "page points for PDF pages), for highlighting or citing text. Needs a model that can "
            "give text regions."
        ),
    )
    text_layer: TextLayerMode = Field(
        default="auto",
        description=(
            "PDF pages only. 'auto' (the default): a page that carries usable text of its own "
            "(enough characters, real fonts, not an invisible OCR layer with garbage) returns "
            "that text at once without running the model; other pages are read by the model. "
            "'never': always read with the model. 'only': return the embedded text, never run "
            "the model, and fail for a page without usable text."
        ),
    )


def plan_ocr(
    ctx: TaskContext, images: list[LoadedImage], args: OCRArguments, settings: RunSettings
) -> TaskPlan[OCRResult]:
    """The page's text layer when it answers; else one request in the model's OCR mode.

    Raises:
        InvalidInputError: ``text_layer="only"`` and the image has no usable text layer.
        UnsupportedTaskError: ``boxes=True`` on a model whose family cannot give text regions
            (a page answered by its text layer still gets the layer's boxes).
    """
    if args.text_layer != "never":
        answered = _from_text_layer(ctx, images[0], args)
        if answered is not None:
            return ResultPlan(answered)
    instruction = build_ocr_prompt(args.format)
    dialect = ctx.dialect
    keep_markup = False
    if args.boxes:
        asked = dialect.region_prompt("ocr", instruction)
        if asked is None:
            families = ", ".join(region_families()) or "none installed"
            raise UnsupportedTaskError(
                f"{ctx.info.model_id} ({ctx.info.family}) cannot say where text is; read "
                f"without boxes, or load a model of a family that can: {families}",
                task="ocr",
                model=ctx.info.model_id,
                supported_by=region_families(),
            )
        instruction, keep_markup = asked, dialect.keeps_region_tokens()
    request = ctx.request(
        "ocr",
        instruction,
        args,
        images,
        settings,
        default_max_new_tokens=SPEC.default_max_new_tokens,
        logprobs=args.confidence,
        skip_special_tokens=not keep_markup,
    )

    def parse(output: GenerationOutput, meta: ResultMetadata) -> OCRResult:
        raw = output.raw_text or output.text
        confidences = line_confidences(output, raw)
        if not args.boxes:
            return parse_ocr_output(raw, args.format, confidences, meta)
        found = dialect.parse_regions(raw, images[0].size)
        if confidences is not None and len(confidences) != found.text.count("\n") + 1:
            confidences = None  # the markup changed the lines: no per-line mapping
        boxes = line_boxes(found, images[0])
        return parse_ocr_output(found.text, args.format, confidences, meta, boxes)

    return OneShotPlan(request, images, parse)


def _from_text_layer(ctx: TaskContext, image: LoadedImage, args: OCRArguments) -> OCRResult | None:
    """The page's embedded text as the result, when usable (``None``: ask the model)."""
    started = time.perf_counter()
    layer = image.text_layer
    problem = "it is not a PDF page" if layer is None else layer.problem()
    if problem is not None:
        if args.text_layer == "only":
            where = image.source if image.page is None else f"{image.source}, page {image.page}"
            raise InvalidInputError(
                f"{where} has no usable text layer: {problem}; use text_layer='auto' to read "
                "such pages with the model"
            )
        return None
    assert layer is not None
    meta = ResultMetadata(
        model=ctx.info.model_id,
        engine=ctx.engine,
        source=image.source,
        page=image.page,
        region=list(image.region) if image.region else None,
        origin="text_layer",
    )
    boxes: list[TextBox | None] | None = None
    if args.boxes:
        width, height = image.size
        boxes = [
            text_box((b[0] * width, b[1] * height, b[2] * width, b[3] * height), image)
            if b is not None
            else None
            for b in layer.line_boxes()
        ]
    result = parse_ocr_output(layer.clean_text, args.format, None, meta, boxes)
    meta.timings["parse"] = time.perf_counter() - started
    return result


def render_ocr(result: OCRResult, *, with_boxes: bool = True) -> str:
    """The text as an LLM reads it (a note when nothing was found or the answer was cut).

    With boxes (unless ``with_boxes`` is false: retrieval documents keep them in metadata), each
    line that has one ends with it, ``[x0, y0, x1, y1]``: page points on a PDF page, else
    pixels (a first line says which).
    """
    if not with_boxes or not any(line.box is not None for line in result.lines):
        return (result.text or "(no text found)") + cut_note(result.meta)
    on_page = any(line.box is not None and line.box.points for line in result.lines)
    unit = "page points (1/72 inch)" if on_page else "pixels"
    shown = [f"Each boxed line ends with its box [x0, y0, x1, y1] in {unit}, from the top left."]
    for line in result.lines:
        box = line.box
        edges = (box.points or box.pixels) if box is not None else None
        shown.append(
            line.text if edges is None else f"{line.text} [{', '.join(f'{v:g}' for v in edges)}]"
        )
    return "\n".join(shown) + cut_note(result.meta)


SPEC: TaskSpec[OCRArguments, OCRResult] = TaskSpec(
    name="ocr",
    title="Read the text",
    description=(
        "Read all the text in an image, a scanned document or a PDF page (OCR, runs locally). "
        "Use it to transcribe receipts, invoices, letters, screenshots, forms and signs. "
        "Returns the text, one line per line of the image; format='markdown' keeps headings, "
        "lists and tables. For chart data, table rows, specific fields as JSON, or questions "
        "about the picture, use read_chart, read_table, extract or ask instead."
    ),
    arguments=OCRArguments,
    result=OCRResult,
    plan=plan_ocr,
    render=render_ocr,
)
