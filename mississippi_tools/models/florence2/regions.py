"""Florence-2's ``<OCR_WITH_REGION>`` answers: each piece of text with its quadrilateral.

Asked ``<OCR_WITH_REGION>``, Florence-2 writes every line of text followed by the four corners
of its box as location tokens: ``text<loc_x1><loc_y1><loc_x2><loc_y2><loc_x3><loc_y3><loc_x4>
<loc_y4>`` (clockwise from the top-left), repeated for each line. A location is one of 1000 bins
across the image's width or height; its pixel position is the bin's centre,
``(bin + 0.5) * size / 1000``, which is how Microsoft's processor (and transformers' native one)
turn bins back into pixels. Pure functions: no model, no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mississippi_tools.errors import InvalidInputError

__all__ = ["LOCATION_BINS", "TextRegion", "dequantize", "parse_ocr_regions"]

#: Location tokens per image side (``<loc_0>`` .. ``<loc_999>``).
LOCATION_BINS = 1000

_LOC = r"<loc_(\d+)>"
_REGION = re.compile(r"(.*?)" + _LOC * 8, re.DOTALL)
_MARKERS = re.compile(r"</?s>|<pad>")

Point = tuple[float, float]


@dataclass(frozen=True)
class TextRegion:
    """One piece of text and where it is.

    Attributes:
        text: The text, stripped of surrounding whitespace.
        quad: Its four corners ``(x, y)`` in image pixels, clockwise from the top-left as the
            model wrote them.
    """

    text: str
    quad: tuple[Point, Point, Point, Point]

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The axis-aligned box around :attr:`quad`: ``(x0, y0, x1, y1)`` in pixels."""
        xs = [x for x, _ in self.quad]
        ys = [y for _, y in self.quad]
        return (min(xs), min(ys), max(xs), max(ys))


def dequantize(bin_index: int, size: float, bins: int = LOCATION_BINS) -> float:
    """The pixel coordinate of a location bin's centre along a side of ``size`` pixels."""
    return (min(max(bin_index, 0), bins - 1) + 0.5) * size / bins


def parse_ocr_regions(text: str, image_size: tuple[int, int]) -> list[TextRegion]:
    """Every ``text`` + eight location tokens of an ``<OCR_WITH_REGION>`` answer, in order.

    Args:
        text: The answer as generated, special tokens kept (``</s><s>...</s>`` is fine).
        image_size: ``(width, height)`` of the image the model read, in pixels.

    Returns:
        One :class:`TextRegion` per piece; text after the last complete quad (an answer cut by
        the token limit) is dropped.

    Raises:
        InvalidInputError: ``image_size`` is not two positive numbers.
    """
    width, height = image_size
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"image_size must be positive (width, height), got {image_size}")
    cleaned = _MARKERS.sub("", text)
    regions: list[TextRegion] = []
    for match in _REGION.finditer(cleaned):
        bins = [int(v) for v in match.groups()[1:]]
        points = [
            (dequantize(bins[i], width), dequantize(bins[i + 1], height)) for i in range(0, 8, 2)
        ]
        regions.append(
            TextRegion(
                text=match.group(1).strip(),
                quad=(points[0], points[1], points[2], points[3]),
            )
        )
    return regions
