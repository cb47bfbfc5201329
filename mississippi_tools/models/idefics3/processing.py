r"""Idefics3 inputs: the resize, the tile grid, pixel values and the image tokens of a prompt.

Follows the published processor (transformers 4.46 ``Idefics3ImageProcessor`` and
``Idefics3Processor``; Copyright 2024 The HuggingFace Inc. team, Apache-2.0), restated as pure
functions:

* the image is resized (PIL, Lanczos as published) so that its longer side is ``longest_edge``
  (1456 = 4 x 364), *up or down*, the other side ``int``-truncated and rounded up to even, then
  capped at 4096 px; so a small image is upscaled to a full grid;
* with splitting, both sides are rounded up to multiples of the tile size (364) and the image is
  resized again and cut into ``rows x cols`` tiles, row-major, followed by the whole image
  resized to 364 x 364 (the global view); an image of exactly one tile is not split; without
  splitting the image is resized to 364 x 364;
* each tile is 169 ``<image>`` tokens; the prompt text of an image is, per row,
  ``<fake_token_around_image><row_r_col_c>`` + 169 x ``<image>`` per tile and ``\n``, then
  ``\n<fake_token_around_image><global-img>`` + 169 x ``<image>`` +
  ``<fake_token_around_image>`` (the row/column and ``<global-img>`` tags are plain text to the
  tokenizer, not added tokens);
* the chat template starts with ``<|begin_of_text|>`` and the tokenizer adds its own BOS too, so
  prompts start with two BOS tokens, as the published processor and the model card's examples
  give them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.models.idefics2.processing import FAKE_TOKEN, IMAGE_TOKEN
from mississippi_tools.models.idefics2.tokenization import Segment

__all__ = [
    "BOS",
    "GLOBAL_TAG",
    "MAX_IMAGE_SIDE",
    "TilePlan",
    "expand_images",
    "plan_tiles",
    "render_tiles",
    "resize_to_longest_edge",
]

BOS = "<|begin_of_text|>"
GLOBAL_TAG = "<global-img>"
#: The processor's absolute cap on an image side.
MAX_IMAGE_SIDE = 4096


def resize_to_longest_edge(width: int, height: int, longest_edge: int) -> tuple[int, int]:
    """``(width, height)`` after the first resize (see the module docstring)."""
    if width < 1 or height < 1:
        raise InvalidInputError(f"image has no pixels ({width}x{height})")
    aspect = width / height
    if width >= height:
        width = longest_edge
        height = int(width / aspect)
        height += height % 2
    else:
        height = longest_edge
        width = int(height * aspect)
        width += width % 2
    width, height = max(width, 1), max(height, 1)
    aspect = width / height
    if width >= height and width > MAX_IMAGE_SIDE:
        width = MAX_IMAGE_SIDE
        height = int(width / aspect)
    elif height > width and height > MAX_IMAGE_SIDE:
        height = MAX_IMAGE_SIDE
        width = int(height * aspect)
    return max(width, 1), max(height, 1)


def _multiple_of_tiles(width: int, height: int, tile: int) -> tuple[int, int]:
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    return width, height


@dataclass(frozen=True)
class TilePlan:
    """How one image becomes tiles, without touching its pixels.

    Attributes:
        first: ``(width, height)`` after the resize to ``longest_edge``.
        grid_size: ``(width, height)`` of the tiled image (``None`` without splitting).
        rows: Tile rows (0: no grid, the image is one tile).
        cols: Tile columns.
        tile: The tile side.
    """

    first: tuple[int, int]
    grid_size: tuple[int, int] | None
    rows: int
    cols: int
    tile: int

    @property
    def num_tiles(self) -> int:
        """Tiles fed to the vision encoder, the global view included."""
        return self.rows * self.cols + 1


def plan_tiles(width: int, height: int, *, longest_edge: int, tile: int, split: bool) -> TilePlan:
    """The tile grid of a ``width`` x ``height`` image."""
    first = resize_to_longest_edge(width, height, longest_edge)
    if not split:
        return TilePlan(first=first, grid_size=None, rows=0, cols=0, tile=tile)
    grid = _multiple_of_tiles(*first, tile)
    if grid[0] > tile or grid[1] > tile:
        return TilePlan(
            first=first, grid_size=grid, rows=grid[1] // tile, cols=grid[0] // tile, tile=tile
        )
    return TilePlan(first=first, grid_size=grid, rows=0, cols=0, tile=tile)


def render_tiles(image: Image.Image, plan: TilePlan, *, resample: int) -> list[Image.Image]:
    """The plan's tiles of ``image`` (RGB), row-major, then the global view."""
    filt = Image.Resampling(resample)
    resized = image if image.size == plan.first else image.resize(plan.first, filt)
    if plan.grid_size is None:
        return [resized.resize((plan.tile, plan.tile), filt)]
    grid = resized if resized.size == plan.grid_size else resized.resize(plan.grid_size, filt)
    if plan.rows == 0:
        return [grid]
    tiles = [
        grid.crop((c * plan.tile, r * plan.tile, (c + 1) * plan.tile, (r + 1) * plan.tile))
        for r in range(plan.rows)
        for c in range(plan.cols)
    ]
    tiles.append(grid.resize((plan.tile, plan.tile), filt))
    return tiles


def expand_images(
    segments: Sequence[Segment], plans: Sequence[tuple[int, int]], tokens_per_tile: int
) -> list[Segment]:
    """Replace each ``<image>`` with its tiles' tags and image tokens (``plans``: rows, cols)."""
    markers = sum(1 for s in segments if s.control and s.text == IMAGE_TOKEN)
    if markers != len(plans):
        raise InvalidInputError(f"{markers} image place(s) in the prompt for {len(plans)} image(s)")
    fake = Segment(FAKE_TOKEN, control=True)
    image = [Segment(IMAGE_TOKEN, control=True)] * tokens_per_tile
    out: list[Segment] = []
    grids = iter(plans)
    for segment in segments:
        if not (segment.control and segment.text == IMAGE_TOKEN):
            out.append(segment)
            continue
        rows, cols = next(grids)
        for r in range(rows):
            for c in range(cols):
                out += [fake, Segment(f"<row_{r + 1}_col_{c + 1}>"), *image]
            out.append(Segment("\n"))
        out += [Segment("\n")] if rows else []
        out += [fake, Segment(GLOBAL_TAG), *image, fake]
    return out
