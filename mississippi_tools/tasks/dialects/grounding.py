"""InternVL's grounding markup: ``<ref>text</ref><box>[[x1, y1, x2, y2]]</box>``, 0-1000 scale.

The InternVL family (H2OVL-Mississippi among it) has the added tokens ``<ref>``, ``</ref>``,
``<box>``, ``</box>``, ``<quad>`` and ``</quad>``. In InternVL's convention (its RefCOCO
evaluation and its demo's box drawing) a grounded answer names a piece of text in ``<ref>`` and
follows it with its boxes, ``[[x1, y1, x2, y2], ...]``, each coordinate an integer from 0 to 1000:
a fraction of the image's width (x) or height (y) times 1000, whatever the image's pixel size.
A ``<quad>`` holds four corners, ``[[x1, y1, x2, y2, x3, y3, x4, y4]]``, on the same scale.

:func:`parse_grounding` reads that markup; it is forgiving where models stray: whitespace
anywhere (the slow tokenizer spaces added tokens from the text), numbers separated by commas or
spaces, decimals, a ``<box>`` with no ``<ref>`` (its text is the rest of its line), and
coordinates past 1000 (clamped to the image). A malformed box is dropped and its text kept.
"""

from __future__ import annotations

import re
from typing import Final

from mississippi_tools.tasks.text_regions import PixelBox, RegionText, TextRegion

__all__ = ["GROUNDING_SCALE", "OCR_REGION_PROMPT", "parse_grounding", "strip_grounding"]

GROUNDING_SCALE: Final = 1000
"""Coordinates run from 0 to this across the image's width and down its height."""

OCR_REGION_PROMPT: Final = (
    "Write each line of text as <ref>the line</ref><box>[[x1, y1, x2, y2]]</box>, the box's "
    "corners on a 0 to 1000 scale of the image's width and height."
)
"""What an InternVL-family model is asked, after the OCR instruction, to ground each line."""

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_INNER = re.compile(r"\[([^\[\]]*)\]")
_MARKUP = re.compile(
    r"(?:<ref>(?P<ref>.*?)</ref>\s*)?<(?P<kind>box|quad)>(?P<coords>.*?)</(?P=kind)>"
)
_STRAY = re.compile(r"</?(?:ref|box|quad)>")


def parse_grounding(text: str, image_size: tuple[int, int]) -> RegionText:
    """The answer without grounding markup, and its boxes in pixels of an image of that size.

    Args:
        text: The answer, decoded with its special tokens kept.
        image_size: ``(width, height)`` in pixels of the image the model saw.

    Returns:
        The text (each ``<ref>``'s text left in place, markup and boxes removed) and one region
        per box, on the line its text is on.

    Example:
        >>> found = parse_grounding("<ref>Total</ref><box>[[100, 200, 500, 300]]</box>", (640, 480))
        >>> found.text, found.regions[0].box
        ('Total', (64.0, 96.0, 320.0, 144.0))
    """
    lines: list[str] = []
    regions: list[TextRegion] = []
    for number, line in enumerate(text.split("\n")):
        clean: list[str] = []
        position = 0
        for match in _MARKUP.finditer(line):
            before = _STRAY.sub("", line[position : match.start()])
            clean.append(before)
            position = match.end()
            ref = match.group("ref")
            if ref is not None:
                label = _STRAY.sub("", ref).strip()
                clean.append(label)
            else:  # a box after its text: the text so far on this line
                label = "".join(clean).strip()
            for box, quad in _boxes(match.group("coords"), match.group("kind"), image_size):
                regions.append(TextRegion(text=label, line=number, box=box, quad=quad))
        if position == 0 and not _STRAY.search(line):
            lines.append(line)  # no markup: the line as it is
            continue
        clean.append(_STRAY.sub("", line[position:]))
        joined = "".join(clean)
        if _MARKUP.match(line.lstrip()):
            joined = joined.lstrip()
        lines.append(re.sub(r"(?<=\S)[ \t]{2,}(?=\S)", " ", joined).rstrip())
    return RegionText("\n".join(lines), tuple(regions))


def strip_grounding(text: str) -> str:
    """``text`` without grounding markup (the boxes dropped, the ``<ref>`` texts kept)."""
    return parse_grounding(text, (1, 1)).text


def _boxes(
    coords: str, kind: str, size: tuple[int, int]
) -> list[tuple[PixelBox, tuple[float, ...] | None]]:
    width, height = size
    found: list[tuple[PixelBox, tuple[float, ...] | None]] = []
    for inner in _INNER.findall(coords):
        values = [float(v) for v in _NUMBER.findall(inner)]
        wanted = 8 if kind == "quad" else 4
        if len(values) != wanted:
            continue
        xs = [_scale(v, width) for v in values[0::2]]
        ys = [_scale(v, height) for v in values[1::2]]
        box = (min(xs), min(ys), max(xs), max(ys))
        if box[2] <= box[0] or box[3] <= box[1]:
            continue  # an empty box marks nothing
        quad = tuple(v for xy in zip(xs, ys, strict=True) for v in xy) if kind == "quad" else None
        found.append((box, quad))
    return found


def _scale(value: float, side: int) -> float:
    return min(max(value, 0.0), GROUNDING_SCALE) / GROUNDING_SCALE * side
