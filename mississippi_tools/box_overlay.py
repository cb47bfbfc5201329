"""Text boxes drawn on the page, so that a person can check at a glance where each line was read.

:func:`draw_boxes` outlines every line box of an OCR result on a copy of the image (a
quadrilateral where the model gave one) with a light fill and the line's number, in a few
alternating colours; :func:`write_overlay` loads the image or PDF page again and saves the
drawing as PNG (``mississippi-tools ocr --boxes --overlay out.png``).

On a PDF page the boxes are placed from their page points, so the drawing is right whatever
resolution the page is rendered at.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage
    from mississippi_tools.sources import SourcePolicy
    from mississippi_tools.tasks.ocr import OCRResult
    from mississippi_tools.tasks.results import TextBox

__all__ = ["OVERLAY_COLOURS", "draw_boxes", "write_overlay"]

OVERLAY_COLOURS: tuple[tuple[int, int, int], ...] = (
    (220, 20, 60),
    (0, 114, 178),
    (0, 158, 115),
    (230, 159, 0),
)
"""Outline colours, one per line in turn (colour-blind-safe hues)."""

_FILL_ALPHA = 48  # of 255: the text under a box stays readable


def draw_boxes(image: LoadedImage | Image.Image, result: OCRResult) -> Image.Image:
    """A copy of ``image`` with each line box of ``result`` outlined, filled and numbered.

    Args:
        image: The image the result was read from (a PDF page as loaded: its
            ``point_scale`` places the page-point boxes).
        result: An OCR result read with ``boxes=True``.

    Returns:
        A new RGB image; lines without a box are not drawn.
    """
    pixels = image if isinstance(image, Image.Image) else image.image
    scale = None if isinstance(image, Image.Image) else image.point_scale
    base = pixels.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    width = max(2, round(min(base.size) / 250))
    boxed = [line.box for line in result.lines if line.box is not None]
    for number, box in enumerate(boxed, start=1):
        colour = OVERLAY_COLOURS[(number - 1) % len(OVERLAY_COLOURS)]
        corners = _corners(box, scale)
        draw.polygon(corners, fill=(*colour, _FILL_ALPHA), outline=(*colour, 255), width=width)
        left, top = min(x for x, _ in corners), min(y for _, y in corners)
        label = str(number)
        text_box = draw.textbbox((0, 0), label)
        label_w, label_h = text_box[2] - text_box[0] + 4, text_box[3] - text_box[1] + 4
        y = max(0.0, top - label_h)
        draw.rectangle((left, y, left + label_w, y + label_h), fill=(*colour, 255))
        draw.text((left + 2, y + 1), label, fill=(255, 255, 255, 255))
    return Image.alpha_composite(base, layer).convert("RGB")


def write_overlay(
    source: str,
    result: OCRResult,
    path: str | Path,
    *,
    page: int | None = None,
    policy: SourcePolicy | None = None,
) -> Path:
    """Load ``source`` (its ``page``) again, draw ``result``'s boxes on it, save a PNG at ``path``.

    Raises:
        MississippiError: The source cannot be loaded again.
        OSError: ``path`` cannot be written.
    """
    from mississippi_tools.images import load_image

    loaded = load_image(source, page=page, policy=policy)
    target = Path(path)
    draw_boxes(loaded, result).save(target, format="PNG")
    return target


def _corners(box: TextBox, scale: tuple[float, float] | None) -> list[tuple[float, float]]:
    """The box's corners in pixels of the image being drawn on."""
    flat: Sequence[float]
    if scale is not None and box.points is not None:
        sx, sy = scale
        flat = box.quad_points or box.points
        flat = [v / (sx if i % 2 == 0 else sy) for i, v in enumerate(flat)]
    else:
        flat = box.quad or box.pixels
    if len(flat) == 8:
        return [(flat[i], flat[i + 1]) for i in range(0, 8, 2)]
    x0, y0, x1, y1 = flat
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
