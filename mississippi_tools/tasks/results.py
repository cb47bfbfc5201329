"""What every task result carries besides its data: :class:`ResultMetadata`, and the base class.

Results are pydantic models so that the HTTP service and the MCP tools can return them as structured
content as they are: ``result.model_dump(mode="json")`` is plain JSON and
``type(result).model_json_schema()`` is a self-contained JSON Schema (nested models under
``$defs``). Field docstrings become the schema's descriptions.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FinishReason", "Origin", "ResultMetadata", "TaskResult", "TextBox", "cut_note"]

FinishReason = Literal["stop", "length", "cancelled", "repetition"]
"""Why generation ended: an end token (``stop``), ``max_new_tokens`` (``length``), a cancel, or
a loop the engine caught (``repetition``; tasks retry it once, then raise ``RepetitionError``)."""

Origin = Literal["model", "text_layer"]
"""Who answered: the ``model``, or a PDF page's embedded ``text_layer`` (no model ran)."""


class ResultMetadata(BaseModel):
    """How a result was produced: model, engine, cost and timings.

    The engine fills it in; tasks pass it through unchanged into their result.

    Example:
        >>> meta = ResultMetadata(model="h2oai/h2ovl-mississippi-800m", engine="local", tiles=7)
        >>> meta.model_dump(mode="json")["attempts"]
        1
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    model: str
    """Model id, e.g. ``h2oai/h2ovl-mississippi-800m``."""
    engine: Literal["local", "remote"]
    """``local`` for the in-process engine, ``remote`` for an HTTP service."""
    source: str | None = None
    """Short description of the image source (file name, ``bytes``, URL), when known."""
    page: int | None = None
    """Page of a multi-page source (PDF) the image came from, when it came from one."""
    region: list[int] | None = None
    """The part of the image (or page) that was read, ``[x0, y0, x1, y1]`` in pixels of the
    whole image, when a region was asked for; ``null`` when the whole image was read."""
    origin: Origin = "model"
    """``text_layer`` when the answer is a PDF page's embedded text (no model ran; ``model``,
    ``tiles`` and the token counts then describe no generation), else ``model``."""
    tiles: int = Field(default=0, ge=0)
    """Image tiles fed to the vision encoder, thumbnail included."""
    prompt_tokens: int = Field(default=0, ge=0)
    """Tokens in the prompt, image tokens included."""
    new_tokens: int = Field(default=0, ge=0)
    """Tokens generated."""
    timings: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    """Wall-clock seconds per stage: ``preprocess``, ``vision``, ``prefill``, ``decode``,
    ``parse``, ``total``, ``queue``; stages that did not run are absent."""
    cache_hit: bool = False
    """Whether the vision features came from the cache."""
    finish_reason: FinishReason | None = None
    """Why generation ended; ``length`` means the answer was cut by ``max_new_tokens``."""
    attempts: int = Field(default=1, ge=1)
    """Generations tried to obtain a valid result (more than one after retries)."""


class TextBox(BaseModel):
    """Where a piece of text is: in pixels of the image, and on a PDF page in points.

    Pixels are those of the image as loaded (a PDF page as rendered), origin at the top-left
    corner, x to the right, y down; a region read with ``region=`` is still given in pixels of
    the whole image. Page points (1/72 inch) have the same origin and directions on the page as
    displayed (PDF user space has y up: ``y_pdf = page_height - y``).

    Example:
        >>> box = TextBox(pixels=[10, 20, 110, 40])
        >>> box.model_dump(mode="json", exclude_none=True)
        {'pixels': [10.0, 20.0, 110.0, 40.0]}
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    pixels: list[float] = Field(min_length=4, max_length=4)
    """``[x0, y0, x1, y1]``: left, top, right and bottom edges in pixels of the image."""
    quad: list[float] | None = Field(default=None, min_length=8, max_length=8)
    """``[x1, y1, x2, y2, x3, y3, x4, y4]``: the four corners in pixels, when the model gave a
    quadrilateral (Florence-2's regions); ``null`` when it gave a box."""
    points: list[float] | None = Field(default=None, min_length=4, max_length=4)
    """PDF pages: ``[x0, y0, x1, y1]`` in page points; ``null`` for other images."""
    quad_points: list[float] | None = Field(default=None, min_length=8, max_length=8)
    """PDF pages: the quadrilateral in page points, when there is one."""


class TaskResult(BaseModel):
    """Base class of every task result (``OCRResult``, ``ChartData``, ``TableData``, ``Answer``)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    meta: ResultMetadata
    """How the result was produced."""


def cut_note(meta: ResultMetadata) -> str:
    """A line telling an LLM that an answer was cut at the token limit (empty otherwise)."""
    if meta.finish_reason == "length":
        return "\n\n[The answer was cut at the token limit; it may be incomplete.]"
    return ""
