"""H2OVL-Mississippi input processing: image tiling (with MSAC), pixel values and the prompt.

Adapted from the published H2OVL-Mississippi remote code (``image_process.py``,
``modeling_h2ovl_chat.py``, ``conversation.py``; Copyright (c) 2024 H2O.AI, Apache-2.0) and
InternVL's dynamic preprocessing, as documented point by point in the project's reference notes.
Everything here is a pure function of its inputs; only :func:`pixel_values` needs torch.

Tiling, as the model was trained:

* candidate grids ``(cols, rows)`` with ``min_tiles <= cols * rows <= max_tiles``, in ascending
  tile count; a grid replaces the best so far when its aspect ratio is strictly closer to the
  image's, or equally close while the image area exceeds half the grid's pixel area;
* the image is resized (PIL bicubic) to ``(448 * cols, 448 * rows)`` and cut row-major; a 448 x 448
  thumbnail of the whole image is appended when the grid has more than one tile;
* MSAC (``use_msac``, single image only) adds a second pass over grids of 3..max tiles whose
  sides do not divide the first grid's; the order is second-pass tiles, first-pass tiles, then the
  second pass's thumbnail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.models.h2ovl.tokenization import IMG_CONTEXT, IMG_END, IMG_START, TURN_END

if TYPE_CHECKING:
    import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_PLACEHOLDER",
    "ROLE_ANSWER",
    "ROLE_PROMPT",
    "Grid",
    "TilePlan",
    "build_prompt",
    "candidate_grids",
    "closest_grid",
    "expand_image_placeholders",
    "pixel_values",
    "plan_tiles",
    "render_tiles",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Marks where an image goes in a question; replaced by ``<img><IMG_CONTEXT>...</img>``.
IMAGE_PLACEHOLDER = "<image>"
ROLE_PROMPT = "<|prompt|>"
ROLE_ANSWER = "<|answer|>"

Grid = tuple[int, int]
"""A tiling grid as ``(columns, rows)``."""


def candidate_grids(min_tiles: int, max_tiles: int) -> list[Grid]:
    """Grids with ``min_tiles <= cols * rows <= max_tiles``, ascending in tile count.

    Grids with the same tile count keep the order in which CPython iterates the original's set
    of tuples; that order decides exact ties in :func:`closest_grid`, so it is reproduced by
    building the same set the same way.
    """
    grids = {
        (i, j)
        for n in range(min_tiles, max_tiles + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_tiles <= i * j <= max_tiles
    }
    return sorted(grids, key=lambda grid: grid[0] * grid[1])


def closest_grid(width: int, height: int, grids: Sequence[Grid], image_size: int) -> Grid:
    """The grid whose aspect ratio is closest to the image's, with the original's tie-break."""
    aspect_ratio = width / height
    best_diff = float("inf")
    best: Grid = (1, 1)
    area = width * height
    for cols, rows in grids:
        diff = abs(aspect_ratio - cols / rows)
        if diff < best_diff:
            best_diff = diff
            best = (cols, rows)
        elif diff == best_diff and area > 0.5 * image_size * image_size * cols * rows:
            best = (cols, rows)
    return best


@dataclass(frozen=True)
class TilePlan:
    """How one image is cut into tiles, without touching its pixels.

    Attributes:
        grids: The grid of each pass (one pass, or two with MSAC).
        thumbnail: Whether a whole-image thumbnail tile is added.
    """

    grids: tuple[Grid, ...]
    thumbnail: bool

    @property
    def num_tiles(self) -> int:
        """Tiles fed to the vision encoder, thumbnail included."""
        return sum(c * r for c, r in self.grids) + (1 if self.thumbnail else 0)


def plan_tiles(
    width: int,
    height: int,
    *,
    image_size: int = 448,
    min_tiles: int = 1,
    max_tiles: int = 6,
    use_thumbnail: bool = True,
    use_msac: bool = False,
) -> TilePlan:
    """Choose the grid(s) for an image of ``width`` x ``height`` pixels."""
    if width < 1 or height < 1:
        raise InvalidInputError(f"image has no pixels ({width}x{height})")
    if not 1 <= min_tiles <= max_tiles:
        raise InvalidInputError(
            f"max_tiles must be at least {min_tiles} (min tiles); got {max_tiles}"
        )
    if use_msac:
        first = closest_grid(width, height, candidate_grids(1, max_tiles), image_size)
        second_candidates = [
            (c, r) for c, r in candidate_grids(3, max_tiles) if first[0] % c and first[1] % r
        ]
        # With no candidate left, the original falls back to a 1 x 1 grid.
        second = closest_grid(width, height, second_candidates, image_size)
        # The original keeps pass2[:-1] + pass1[:-1] + pass2[-1:], where a pass of more than
        # one tile ends with its thumbnail. So a one-tile pass contributes no grid tiles, and the
        # last tile is always the whole image at 448 x 448 (a thumbnail, or the 1 x 1 grid).
        grids = tuple(grid for grid in (second, first) if grid[0] * grid[1] > 1)
        return TilePlan(grids=grids, thumbnail=True)
    grid = closest_grid(width, height, candidate_grids(min_tiles, max_tiles), image_size)
    return TilePlan(grids=(grid,), thumbnail=use_thumbnail and grid[0] * grid[1] > 1)


def render_tiles(image: Image.Image, plan: TilePlan, *, image_size: int = 448) -> list[Image.Image]:
    """Cut ``image`` (RGB) into the plan's tiles, in the order the model expects."""
    tiles: list[Image.Image] = []
    for cols, rows in plan.grids:
        resized = image.resize((image_size * cols, image_size * rows), Image.Resampling.BICUBIC)
        for k in range(cols * rows):
            left, top = (k % cols) * image_size, (k // cols) * image_size
            tiles.append(resized.crop((left, top, left + image_size, top + image_size)))
    if plan.thumbnail:
        tiles.append(image.resize((image_size, image_size), Image.Resampling.BICUBIC))
    return tiles


def pixel_values(tiles: Sequence[Image.Image]) -> torch.Tensor:
    """Normalised pixels of the tiles, ``[num_tiles, 3, H, W]`` float32.

    Computed as ``(uint8 / 255 - mean) / std`` in float32, the same operations in the same
    order as torchvision's ``ToTensor`` + ``Normalize`` in the original, so values match exactly.
    """
    import numpy as np
    import torch

    array = np.stack([np.asarray(tile.convert("RGB"), dtype=np.uint8) for tile in tiles])
    values = torch.from_numpy(array).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return values.sub(mean).div(std).contiguous()


def build_prompt(
    question: str,
    *,
    history: Sequence[tuple[str, str]] = (),
    num_images: int = 0,
    system_message: str = "",
) -> str:
    r"""The h2ogpt2 conversation text, with ``<image>`` placeholders still in place.

    ``<|prompt|>q1<|end|><|answer|>a1<|end|><|prompt|>q<|end|><|answer|>`` with no BOS, colon,
    space or newline. With images and no history, a question without ``<image>`` gets
    ``"<image>\\n"`` in front (one image) or ``"Image-1: <image>\\nImage-2: <image>\\n"`` (several;
    InternVL's multi-image convention — the original would fail on that input).
    """
    if num_images and not history and IMAGE_PLACEHOLDER not in question:
        if num_images == 1:
            question = IMAGE_PLACEHOLDER + "\n" + question
        else:
            prefix = "".join(f"Image-{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(num_images))
            question = prefix + question
    parts = [system_message]
    for old_question, old_answer in history:
        parts.append(_turn(ROLE_PROMPT, old_question))
        parts.append(_turn(ROLE_ANSWER, old_answer))
    parts.append(_turn(ROLE_PROMPT, question))
    parts.append(ROLE_ANSWER)
    return "".join(parts)


def _turn(role: str, message: str) -> str:
    # The original's NO_COLON_SINGLE style: an empty message writes the role alone.
    return role + message + TURN_END if message else role


def expand_image_placeholders(
    prompt: str, tiles_per_image: Sequence[int], num_image_token: int
) -> str:
    """Replace each ``<image>`` in turn with ``<img>``, the image tokens, ``</img>``.

    Image i gets ``num_image_token * tiles_per_image[i]`` ``<IMG_CONTEXT>`` tokens.
    """
    found = prompt.count(IMAGE_PLACEHOLDER)
    if found != len(tiles_per_image):
        raise InvalidInputError(
            f"the prompt has {found} {IMAGE_PLACEHOLDER} placeholder(s) for "
            f"{len(tiles_per_image)} image(s); put one {IMAGE_PLACEHOLDER} where each image "
            "belongs, or none to let the images go first"
        )
    for tiles in tiles_per_image:
        block = IMG_START + IMG_CONTEXT * (num_image_token * tiles) + IMG_END
        prompt = prompt.replace(IMAGE_PLACEHOLDER, block, 1)
    return prompt
