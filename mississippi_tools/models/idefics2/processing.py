r"""Idefics2 inputs: image pieces and sizes, pixel values, and the chat prompt.

Follows the published processor (transformers 4.40 ``Idefics2ImageProcessor`` and
``Idefics2Processor``; Copyright 2024 The HuggingFace Inc. team, Apache-2.0), restated as pure
functions:

* with ``do_image_splitting`` an image becomes its four quarters (cut at ``width // 2`` and
  ``height // 2``) and then the whole image: 5 pieces;
* each piece is resized (PIL, the configured filter, bilinear as published) so that its longer
  side is at most ``longest_edge`` (980) keeping the aspect ratio (``int`` truncation), and then
  each side is raised to at least ``shortest_edge`` (378) independently, which changes the aspect
  ratio of long thin images (as the original does);
* pixels are ``x * rescale_factor`` in float64 then float32, minus the mean, over the std;
* each piece is ``<fake_token_around_image>``, 64 ``<image>`` tokens, ``<fake_token_around_image>``
  in the prompt; where two fake tokens meet (consecutive pieces or images) only one is kept;
* the chat template (the processor's default, and the checkpoints' ``chat_template``) writes
  ``User:`` when a message starts with an image and ``User: `` otherwise, the message, then
  ``<end_of_utterance>\n``; the generation prompt is ``Assistant:``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.models.idefics2.tokenization import Segment

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "END_OF_UTTERANCE",
    "FAKE_TOKEN",
    "IMAGE_PLACEHOLDER",
    "IMAGE_TOKEN",
    "ImagePlan",
    "Message",
    "arrange_images",
    "chat_segments",
    "completion_segments",
    "expand_images",
    "pixel_array",
    "plan_image",
    "resize_output_size",
]

IMAGE_TOKEN = "<image>"
FAKE_TOKEN = "<fake_token_around_image>"
END_OF_UTTERANCE = "<end_of_utterance>"
#: Marks where an image goes in a prompt (the API's placeholder; replaced by the image's tokens).
IMAGE_PLACEHOLDER = "<image>"


def resize_output_size(
    width: int, height: int, *, shortest_edge: int, longest_edge: int
) -> tuple[int, int]:
    """``(width, height)`` after the published resize rule (see the module docstring)."""
    if width < 1 or height < 1:
        raise InvalidInputError(f"image has no pixels ({width}x{height})")
    aspect = width / height
    if width >= height and width > longest_edge:
        width = longest_edge
        height = int(width / aspect)
    elif height > width and height > longest_edge:
        height = longest_edge
        width = int(height * aspect)
    return max(width, shortest_edge), max(height, shortest_edge)


@dataclass(frozen=True)
class ImagePlan:
    """How one image is cut and resized, without touching its pixels.

    Attributes:
        boxes: Each piece's crop box ``(left, top, right, bottom)`` on the original image.
        sizes: Each piece's ``(width, height)`` after resizing.
    """

    boxes: tuple[tuple[int, int, int, int], ...]
    sizes: tuple[tuple[int, int], ...]

    @property
    def num_pieces(self) -> int:
        """Pieces fed to the vision encoder."""
        return len(self.boxes)


def plan_image(
    width: int, height: int, *, split: bool, shortest_edge: int, longest_edge: int
) -> ImagePlan:
    """The pieces of a ``width`` x ``height`` image: the whole, or 4 quarters then the whole."""
    whole = (0, 0, width, height)
    boxes: list[tuple[int, int, int, int]] = []
    if split:
        mid_w, mid_h = width // 2, height // 2
        boxes = [
            (0, 0, mid_w, mid_h),
            (mid_w, 0, width, mid_h),
            (0, mid_h, mid_w, height),
            (mid_w, mid_h, width, height),
        ]
        if mid_w < 1 or mid_h < 1:
            raise InvalidInputError(
                f"a {width}x{height} image is too small to split into quarters; send a larger "
                "image or do_image_splitting=False"
            )
    boxes.append(whole)
    sizes = tuple(
        resize_output_size(
            right - left, bottom - top, shortest_edge=shortest_edge, longest_edge=longest_edge
        )
        for left, top, right, bottom in boxes
    )
    return ImagePlan(boxes=tuple(boxes), sizes=sizes)


def pixel_array(
    piece: Image.Image,
    *,
    rescale_factor: float,
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """Normalised pixels ``[3, H, W]`` float32, with the published operations in their order."""
    import numpy as np

    array = np.asarray(piece.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    scaled = (array.astype(np.float64) * rescale_factor).astype(np.float32)
    mean_a = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std_a = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    result: np.ndarray = ((scaled - mean_a) / std_a).astype(np.float32)
    return result


def render_pieces(image: Image.Image, plan: ImagePlan, *, resample: int) -> list[Image.Image]:
    """Crop and resize ``image`` (RGB) into the plan's pieces."""
    pieces = []
    for box, size in zip(plan.boxes, plan.sizes, strict=True):
        piece = image if box == (0, 0, *image.size) else image.crop(box)
        if piece.size != size:
            piece = piece.resize(size, Image.Resampling(resample))
        pieces.append(piece)
    return pieces


# ------------------------------------------------------------------------------------------------
# The prompt
# ------------------------------------------------------------------------------------------------

Part = str | None
"""A part of a user message: text, or ``None`` for an image."""


@dataclass(frozen=True)
class Message:
    """One turn: ``user`` parts (text and images) or an ``assistant`` answer."""

    role: str
    parts: tuple[Part, ...]


def _split_placeholders(text: str) -> list[Part]:
    parts: list[Part] = []
    for i, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i:
            parts.append(None)
        if piece:
            parts.append(piece)
    return parts


def arrange_images(
    prompt: str, history: Sequence[tuple[str, str]], num_images: int
) -> list[Message]:
    """The conversation with each image in its place.

    ``<image>`` in a question marks where an image goes (images are used in order across the
    history and the prompt); without any, the images go first in the last question, as the
    model card's examples put them.

    Raises:
        InvalidInputError: The placeholders do not match the number of images.
    """
    questions = [q for q, _ in history] + [prompt]
    found = sum(q.count(IMAGE_PLACEHOLDER) for q in questions)
    if found and found != num_images:
        raise InvalidInputError(
            f"the prompt has {found} {IMAGE_PLACEHOLDER} placeholder(s) for {num_images} "
            f"image(s); put one {IMAGE_PLACEHOLDER} where each image belongs, or none to let "
            "the images go first"
        )
    messages: list[Message] = []
    for question, answer in history:
        messages.append(Message("user", tuple(_split_placeholders(question) or [""])))
        messages.append(Message("assistant", (answer,)))
    last = _split_placeholders(prompt)
    if not found and num_images:
        images: list[Part] = [None] * num_images
        last = images + last
    messages.append(Message("user", tuple(last or [""])))
    return messages


def chat_segments(messages: Sequence[Message]) -> list[Segment]:
    r"""The chat template's text, images left as ``<image>`` control segments.

    ``Role:`` before a message starting with an image, ``Role: `` before one starting with text;
    ``<end_of_utterance>\\n`` after each; ``Assistant:`` at the end.
    """
    segments: list[Segment] = []
    for message in messages:
        role = "User" if message.role == "user" else "Assistant"
        starts_with_image = bool(message.parts) and message.parts[0] is None
        segments.append(Segment(role + (":" if starts_with_image else ": ")))
        for part in message.parts:
            segments.append(Segment(IMAGE_TOKEN, control=True) if part is None else Segment(part))
        segments += [Segment(END_OF_UTTERANCE, control=True), Segment("\n")]
    segments.append(Segment("Assistant:"))
    return segments


def completion_segments(messages: Sequence[Message]) -> list[Segment]:
    """A pretrained-only checkpoint's prompt: the questions and answers as plain text."""
    segments: list[Segment] = []
    for message in messages:
        for part in message.parts:
            segments.append(Segment(IMAGE_TOKEN, control=True) if part is None else Segment(part))
    return segments


def expand_images(
    segments: Sequence[Segment], pieces_per_image: Sequence[int], tokens_per_piece: int
) -> list[Segment]:
    """Replace each ``<image>`` with its pieces' fake-token-delimited image tokens.

    Where two ``<fake_token_around_image>`` meet (the pieces of one image, or two images in a
    row) only one is kept, as the published processor does.
    """
    markers = sum(1 for s in segments if s.control and s.text == IMAGE_TOKEN)
    if markers != len(pieces_per_image):
        raise InvalidInputError(
            f"{markers} image place(s) in the prompt for {len(pieces_per_image)} image(s)"
        )
    fake = Segment(FAKE_TOKEN, control=True)
    image = Segment(IMAGE_TOKEN, control=True)
    out: list[Segment] = []
    pieces = iter(pieces_per_image)
    for segment in segments:
        if not (segment.control and segment.text == IMAGE_TOKEN):
            out.append(segment)
            continue
        for _ in range(next(pieces)):
            if not (out and out[-1] == fake):
                out.append(fake)
            out += [image] * tokens_per_piece
            out.append(fake)
    return out
