"""Text regions: where on the image a piece of an answer is, from the model's region markup.

A family that can say where text is (H2OVL's InternVL grounding tokens, Florence-2's
``<OCR_WITH_REGION>`` quads) has a dialect whose
:meth:`~mississippi_tools.tasks.dialects.Dialect.parse_regions` turns an answer into a
:class:`RegionText`: the answer without its markup, and one :class:`TextRegion` per box, in
pixels of the image the model saw. :func:`text_box` places such a box on the image as loaded
(adding the offset of a ``region=`` crop) and, for a PDF page, on the page in points, as the
:class:`~mississippi_tools.tasks.results.TextBox` that results carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mississippi_tools.tasks.results import TextBox

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage

__all__ = ["PixelBox", "RegionText", "TextRegion", "line_boxes", "text_box"]

PixelBox = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in pixels: left, top, right, bottom."""


@dataclass(frozen=True)
class TextRegion:
    """One box the model gave, with the text it belongs to.

    Attributes:
        text: The text the box is around (markup removed).
        line: The line of :attr:`RegionText.text` the text is on (0-based).
        box: ``(x0, y0, x1, y1)`` in pixels of the image the model saw.
        quad: The four corners ``(x1, y1, ..., x4, y4)`` in those pixels, when the model gave a
            quadrilateral; :attr:`box` is then its bounding rectangle.
    """

    text: str
    line: int
    box: PixelBox
    quad: tuple[float, ...] | None = None


@dataclass(frozen=True)
class RegionText:
    """An answer read for its regions.

    Attributes:
        text: The answer without region markup, lines as the model wrote them.
        regions: The boxes it gave, in the order it gave them.
    """

    text: str
    regions: tuple[TextRegion, ...] = ()


def text_box(box: PixelBox, image: LoadedImage, quad: Sequence[float] | None = None) -> TextBox:
    """``box`` (pixels of ``image``) as a :class:`TextBox` on the image as loaded and the page.

    A crop (``image.region``) is shifted back into the whole image's pixels; a PDF page also
    gets the box in page points (:attr:`~mississippi_tools.images.LoadedImage.point_scale`).
    """
    dx, dy = (image.region[0], image.region[1]) if image.region else (0, 0)
    pixels = [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]
    corners = (
        [v + (dx if i % 2 == 0 else dy) for i, v in enumerate(quad)] if quad is not None else None
    )
    points = quad_points = None
    if image.point_scale is not None:
        sx, sy = image.point_scale
        points = [_round(v * (sx if i % 2 == 0 else sy)) for i, v in enumerate(pixels)]
        if corners is not None:
            quad_points = [_round(v * (sx if i % 2 == 0 else sy)) for i, v in enumerate(corners)]
    return TextBox(
        pixels=[_round(v) for v in pixels],
        quad=[_round(v) for v in corners] if corners is not None else None,
        points=points,
        quad_points=quad_points,
    )


def line_boxes(found: RegionText, image: LoadedImage) -> list[TextBox | None]:
    """One box per line of ``found.text``: the union of the line's regions (``None``: none).

    A line with a single quadrilateral keeps it; several boxes on a line are merged into the
    rectangle around them.
    """
    count = found.text.count("\n") + 1
    per_line: list[list[TextRegion]] = [[] for _ in range(count)]
    for region in found.regions:
        if 0 <= region.line < count:
            per_line[region.line].append(region)
    boxes: list[TextBox | None] = []
    for regions in per_line:
        if not regions:
            boxes.append(None)
            continue
        union = (
            min(r.box[0] for r in regions),
            min(r.box[1] for r in regions),
            max(r.box[2] for r in regions),
            max(r.box[3] for r in regions),
        )
        quad = regions[0].quad if len(regions) == 1 else None
        boxes.append(text_box(union, image, quad))
    return boxes


def _round(value: float) -> float:
    """Two decimals: finer than any pixel or point anyone draws, and stable in JSON."""
    return round(float(value), 2)
