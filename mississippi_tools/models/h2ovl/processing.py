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
from typing import TYPE_CHECKING, Literal

from PIL import Image

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.models.h2ovl.tokenization import (
    IMG_CONTEXT,
    IMG_END,
    IMG_START,
    TURN_END,
    check_text,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_PLACEHOLDER",
    "ROLE_ANSWER",
    "ROLE_PROMPT",
    "Grid",
    "PartKind",
    "PromptPart",
    "TilePlan",
    "build_prompt",
    "candidate_grids",
    "closest_grid",
    "expand_image_placeholders",
    "pixel_values",
    "plan_tiles",
    "prompt_segments",
    "prompt_text",
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


PartKind = Literal["template", "text", "image"]


@dataclass(frozen=True)
class PromptPart:
    """A span of the prompt; who wrote it decides how it is tokenized.

    Attributes:
        text: The span's text.
        kind: ``"template"``: written by the chat template; its added tokens (``<|end|>``,
            ``<img>``, ``<IMG_CONTEXT>``, ``</img>``) become their ids. ``"text"``: written by
            the caller (question, history, system message); tokenized as plain text, so typing
            ``<|end|>`` or ``<img>`` never yields those tokens. ``"image"``: where an image goes,
            until :func:`expand_image_placeholders` puts the image block there.
    """

    text: str
    kind: PartKind = "text"


def prompt_text(parts: Sequence[PromptPart]) -> str:
    """The prompt as one string (image slots appear as ``<image>``)."""
    return "".join(part.text for part in parts)


def build_prompt(
    question: str,
    *,
    history: Sequence[tuple[str, str]] = (),
    num_images: int = 0,
    system_message: str = "",
) -> list[PromptPart]:
    r"""The h2ogpt2 conversation, as template and caller spans with image slots.

    ``<|prompt|>q1<|end|><|answer|>a1<|end|><|prompt|>q<|end|><|answer|>`` with no BOS, colon,
    space or newline. With images and no history, a question without ``<image>`` gets
    ``"<image>\\n"`` in front (one image) or ``"Image-1: <image>\\nImage-2: <image>\\n"`` (several;
    InternVL's multi-image convention — the original would fail on that input).

    ``<image>`` marks an image slot in the question and in history questions (as in the
    original, whose history questions carry the placeholder of their turn's image); in history
    answers it is plain text, since an answer cannot hold an image.

    Raises:
        InvalidInputError: A text holds a lone surrogate (the message names which text).
    """
    check_text(question, "the prompt")
    check_text(system_message, "the system message")
    for turn, (old_question, old_answer) in enumerate(history, start=1):
        check_text(old_question, f"the question of history turn {turn}")
        check_text(old_answer, f"the answer of history turn {turn}")
    parts: list[PromptPart] = []
    if system_message:
        parts.append(PromptPart(system_message))
    for old_question, old_answer in history:
        _turn(parts, ROLE_PROMPT, _with_image_slots(old_question))
        _turn(parts, ROLE_ANSWER, [PromptPart(old_answer)] if old_answer else [])
    asked = _with_image_slots(question)
    if num_images and not history and not any(part.kind == "image" for part in asked):
        slot = PromptPart(IMAGE_PLACEHOLDER, "image")
        newline = PromptPart("\n", "template")
        if num_images == 1:
            prefix = [slot, newline]
        else:
            prefix = []
            for i in range(num_images):
                prefix += [PromptPart(f"Image-{i + 1}: ", "template"), slot, newline]
        asked = prefix + asked
    _turn(parts, ROLE_PROMPT, asked)
    parts.append(PromptPart(ROLE_ANSWER, "template"))
    return parts


def _with_image_slots(text: str) -> list[PromptPart]:
    parts: list[PromptPart] = []
    for k, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if k:
            parts.append(PromptPart(IMAGE_PLACEHOLDER, "image"))
        if piece:
            parts.append(PromptPart(piece))
    return parts


def _turn(parts: list[PromptPart], role: str, message: list[PromptPart]) -> None:
    # The original's NO_COLON_SINGLE style: an empty message writes the role alone.
    parts.append(PromptPart(role, "template"))
    if message:
        parts.extend(message)
        parts.append(PromptPart(TURN_END, "template"))


def expand_image_placeholders(
    parts: Sequence[PromptPart], tiles_per_image: Sequence[int], num_image_token: int
) -> list[PromptPart]:
    """Put ``<img>``, the image tokens and ``</img>`` in each image slot, in turn.

    Image i gets ``num_image_token * tiles_per_image[i]`` ``<IMG_CONTEXT>`` tokens.

    Raises:
        InvalidInputError: The number of slots differs from the number of images.
    """
    found = sum(1 for part in parts if part.kind == "image")
    if found != len(tiles_per_image):
        raise InvalidInputError(
            f"the prompt has {found} {IMAGE_PLACEHOLDER} placeholder(s) for "
            f"{len(tiles_per_image)} image(s); put one {IMAGE_PLACEHOLDER} where each image "
            "belongs, or none to let the images go first"
        )
    tiles = iter(tiles_per_image)
    expanded: list[PromptPart] = []
    for part in parts:
        if part.kind == "image":
            block = IMG_START + IMG_CONTEXT * (num_image_token * next(tiles)) + IMG_END
            part = PromptPart(block, "template")
        expanded.append(part)
    return expanded


def prompt_segments(parts: Sequence[PromptPart]) -> list[tuple[str, bool]]:
    """``(text, is_template)`` pairs for :meth:`H2OVLTokenizer.encode_segments`.

    Raises:
        InvalidInputError: An image slot is left (expand the placeholders first).
    """
    if any(part.kind == "image" for part in parts):
        raise InvalidInputError("the prompt still has image slots; expand them first")
    return [(part.text, part.kind == "template") for part in parts]
