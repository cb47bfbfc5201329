r"""IDEFICS 1 prompts and images, as the published ``IdeficsProcessor`` (transformers 4.32) does.

Images: each is converted to RGB (alpha dropped, not composited), resized to a 224 x 224 square
with PIL's bicubic filter whatever its aspect ratio, scaled to [0, 1] and normalised with
OpenAI CLIP's mean and standard deviation. 224 pixels is little for small print: a full page of
text is unreadable at that size, which is why the reading tasks are weak on this family.

Prompts: the processor starts every prompt with ``<s>``, writes
``<fake_token_around_image><image><fake_token_around_image>`` for an image (``<image>
<fake_token_around_image>`` for an image right after another) and strips spaces around each text
item. The instruct models' card writes the conversation as::

    User: What is in this image?<fake_token_around_image><image><fake_token_around_image>
    <end_of_utterance>
    Assistant:

(wrapped here: there is no newline before ``<end_of_utterance>``; one ``<end_of_utterance>``
after each turn, a newline between turns). The pretrained-only
models get the text and the images as they are.

Each text token cross-attends to the image that came last before it (none before the first
image, and none after an end-of-document ``</s>`` until the next image):
:func:`image_attention_indices` is that rule, as the processor's ``image_attention_mask``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mississippi_tools.models.idefics2.processing import Message, arrange_images
from mississippi_tools.models.idefics2.tokenization import Segment

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "END_OF_UTTERANCE",
    "FAKE_TOKEN",
    "IMAGE_TOKEN",
    "arrange_images",
    "chat_segments",
    "completion_segments",
    "image_attention_indices",
    "pixel_array",
]

IMAGE_TOKEN = "<image>"
FAKE_TOKEN = "<fake_token_around_image>"
END_OF_UTTERANCE = "<end_of_utterance>"

#: OpenAI CLIP's normalisation (the published ``preprocessor_config.json`` values).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def pixel_array(
    image: Image.Image,
    *,
    size: int = 224,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> np.ndarray:
    """``[3, size, size]`` float32 pixels: RGB, bicubic square resize, CLIP normalisation."""
    import numpy as np
    from PIL import Image as PILImage

    rgb = image.convert("RGB") if image.mode != "RGB" else image
    resized = rgb.resize((size, size), PILImage.Resampling.BICUBIC)
    scaled = np.asarray(resized, dtype=np.float32) * np.float32(1 / 255)
    normed = (scaled - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(normed.transpose(2, 0, 1), dtype=np.float32)


def _image_segments(previous: Segment | None) -> list[Segment]:
    """An image's tokens; right after another image the opening fake token is shared."""
    fake = Segment(FAKE_TOKEN, control=True)
    image = Segment(IMAGE_TOKEN, control=True)
    if previous == fake:
        return [image, fake]
    return [fake, image, fake]


def _append_parts(segments: list[Segment], parts: Sequence[str | None], *, lead: str) -> None:
    """A message's parts: text stripped of surrounding spaces (as the processor does), images."""
    first = True
    for part in parts:
        if part is None:
            if first and lead:
                segments.append(Segment(lead))
            segments += _image_segments(segments[-1] if segments else None)
        else:
            text = part.strip(" ")
            segments.append(Segment((lead + " " if first and lead else "") + text))
        first = False
    if first and lead:
        segments.append(Segment(lead))


def chat_segments(messages: Sequence[Message]) -> list[Segment]:
    r"""The instruct models' conversation: ``User: …<end_of_utterance>\nAssistant:``."""
    segments: list[Segment] = []
    for message in messages:
        if message.role == "user":
            _append_parts(segments, message.parts, lead="User:")
        else:
            answer = " ".join(p.strip(" ") for p in message.parts if p is not None)
            segments.append(Segment("Assistant: " + answer))
        segments += [Segment(END_OF_UTTERANCE, control=True), Segment("\n")]
    segments.append(Segment("Assistant:"))
    return segments


def completion_segments(messages: Sequence[Message]) -> list[Segment]:
    """A pretrained-only model's prompt: the text and images as they are, to be continued."""
    segments: list[Segment] = []
    for message in messages:
        _append_parts(segments, message.parts, lead="")
    return segments


def image_attention_indices(
    input_ids: Sequence[int], *, image_token_id: int, eos_token_id: int
) -> list[int]:
    """Per token, the index of the image it cross-attends to, or -1 for none.

    The image is the last one whose ``<image>`` token came at or before the token; after an
    end-of-document token (``</s>``) no image is attended until the next ``<image>``.
    """
    indices: list[int] = []
    current = -1
    after_end = False
    for token in input_ids:
        if token == image_token_id:
            current += 1
            after_end = False
        indices.append(-1 if after_end else current)
        if token == eos_token_id:
            after_end = True
    return indices
