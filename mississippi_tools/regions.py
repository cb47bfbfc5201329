"""Zoom: read one region of an image (or page) instead of all of it.

A region is ``(x0, y0, x1, y1)``: the left, top, right and bottom edges, either in pixels of the
image as loaded (a PDF page as rendered, at 200 dpi by default) or, when all four are between 0
and 1, as fractions of its width and height (``(0, 0, 0.5, 0.5)`` is the top-left quarter). The
crop is a new image (its own content hash, so cached features never mix with the whole image's)
that the model tiles like any other, so a small region is read at full tile resolution. A PDF
page's text layer is cut to the characters inside the region.

Agents pass a region as a list of four numbers or the text ``"x0,y0,x1,y1"``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

from mississippi_tools.errors import InvalidInputError

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage

__all__ = ["Region", "RegionInput", "crop_image", "parse_region", "region_box"]

Region: TypeAlias = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)``: pixels, or fractions of the width and height when all are in 0..1."""

RegionInput: TypeAlias = Region | Sequence[float] | str
"""A region as callers pass it: four numbers, or the text ``"x0,y0,x1,y1"``."""

_MIN_SIDE = 4  # pixels: anything smaller holds nothing a model can read


def parse_region(value: RegionInput | None) -> Region | None:
    """Four finite, non-negative numbers with ``x0 < x1`` and ``y0 < y1`` (``None`` stays).

    Raises:
        InvalidInputError: Not four numbers, negative, or an empty box; the message shows the
            form to use.
    """
    if value is None:
        return None
    form = "pass region=(x0, y0, x1, y1) in pixels, or fractions of the image in 0..1"
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            raise InvalidInputError(
                f"region {value!r} is not four numbers separated by commas; {form}, e.g. "
                "'0,0,0.5,0.5'"
            ) from None
    else:
        try:
            numbers = [float(v) for v in value if not isinstance(v, bool)]
        except (TypeError, ValueError):
            raise InvalidInputError(f"region {value!r} is not four numbers; {form}") from None
        if len(numbers) != len(list(value)):
            raise InvalidInputError(f"region {value!r} is not four numbers; {form}")
    if len(numbers) != 4 or not all(math.isfinite(n) for n in numbers):
        raise InvalidInputError(f"region {value!r} is not four finite numbers; {form}")
    x0, y0, x1, y1 = numbers
    if min(numbers) < 0:
        raise InvalidInputError(f"region {value!r} has a negative edge; {form}")
    if not (x0 < x1 and y0 < y1):
        raise InvalidInputError(
            f"region {value!r} is empty: it needs x0 < x1 and y0 < y1 (left, top, right, "
            f"bottom); {form}"
        )
    return (x0, y0, x1, y1)


def region_box(
    region: Region, size: tuple[int, int], *, what: str = "the image"
) -> tuple[int, int, int, int]:
    """The region in whole pixels of an image of ``size`` (fractions resolved, edges rounded out).

    Raises:
        InvalidInputError: The region reaches past the image, or is smaller than 4 pixels a side;
            the message gives the image's size.
    """
    width, height = size
    x0, y0, x1, y1 = region
    fractions = max(region) <= 1.0
    if fractions:
        x0, x1, y0, y1 = x0 * width, x1 * width, y0 * height, y1 * height
    elif x1 > width or y1 > height:
        raise InvalidInputError(
            f"region ({_g(region)}) reaches past {what}, which is {width}x{height} pixels; keep "
            f"x1 <= {width} and y1 <= {height}, or give fractions in 0..1"
        )
    box = (
        math.floor(x0),
        math.floor(y0),
        min(width, math.ceil(x1)),
        min(height, math.ceil(y1)),
    )
    if box[2] - box[0] < _MIN_SIDE or box[3] - box[1] < _MIN_SIDE:
        raise InvalidInputError(
            f"region ({_g(region)}) of {what} ({width}x{height} pixels) is "
            f"{box[2] - box[0]}x{box[3] - box[1]} pixels; a region needs at least "
            f"{_MIN_SIDE} pixels a side"
        )
    return box


def crop_image(image: LoadedImage, region: Region) -> LoadedImage:
    """``image`` cut to ``region``: new pixels and content hash, the text layer cut to match.

    A region of an image that is already a crop is taken within that crop;
    :attr:`LoadedImage.region` is always in pixels of the image as loaded.

    Raises:
        InvalidInputError: See :func:`region_box`.
    """
    from mississippi_tools.images import _content_hash

    what = image.source if image.page is None else f"page {image.page} of {image.source}"
    box = region_box(region, image.size, what=what)
    pixels = image.image.crop(box)
    layer = image.text_layer
    if layer is not None:
        # The layer's boxes are fractions of the image it came with.
        width, height = image.size
        layer = layer.within((box[0] / width, box[1] / height, box[2] / width, box[3] / height))
    offset = image.region[:2] if image.region else (0, 0)
    absolute = (box[0] + offset[0], box[1] + offset[1], box[2] + offset[0], box[3] + offset[1])
    return dataclasses.replace(
        image,
        image=pixels,
        content_hash=_content_hash(pixels),
        region=absolute,
        text_layer=layer,
    )


def _g(region: Region) -> str:
    return ", ".join(f"{v:g}" for v in region)
