"""Florence-2 input processing: task prompts, the image's pixels and the prompt's token ids.

Florence-2 is asked with task tokens. Its processor (Microsoft's ``processing_florence2.py``, and
transformers' native ``Florence2Processor`` after it) replaces a task token that stands alone by a
fixed English question (``<OCR>`` -> "What is the text in the image?") and one that takes an
argument by a template (``<REGION_TO_OCR>`` + region); anything else is sent as written, which is
how the DocVQA fine-tune was trained (``<DocVQA>`` + the question, the task token as plain text).
The encoder's input is then the image's features, ``<s>``, the prompt, ``</s>``.

Images are resized to the processor's fixed size (768 x 768 published; the aspect ratio is not
kept) with PIL's bicubic filter, scaled by ``1/255`` and normalised with ImageNet's mean and
standard deviation, which is what the published ``CLIPImageProcessor`` settings compute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from PIL import Image

from mississippi_tools.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

    from mississippi_tools.models.florence2.configuration import Florence2ProcessorSettings

__all__ = [
    "DOCVQA_TOKEN",
    "IMAGE_TOKEN",
    "TASK_PROMPTS",
    "TASK_PROMPTS_WITH_INPUT",
    "construct_prompt",
    "pixel_values",
    "resize_image",
]

#: The placeholder the prompt carries for each image position (not in the published vocabulary).
IMAGE_TOKEN = "<image>"
#: The DocVQA fine-tune's task token (sent as text, followed by the question).
DOCVQA_TOKEN = "<DocVQA>"

#: Task tokens that stand alone, and the question the processor sends for them.
TASK_PROMPTS: Mapping[str, str] = {
    "<OCR>": "What is the text in the image?",
    "<OCR_WITH_REGION>": "What is the text in the image, with regions?",
    "<CAPTION>": "What does the image describe?",
    "<DETAILED_CAPTION>": "Describe in detail what is shown in the image.",
    "<MORE_DETAILED_CAPTION>": "Describe with a paragraph what is shown in the image.",
    "<OD>": "Locate the objects with category name in the image.",
    "<DENSE_REGION_CAPTION>": "Locate the objects in the image, with their descriptions.",
    "<REGION_PROPOSAL>": "Locate the region proposals in the image.",
}
#: Task tokens followed by an argument, and the template the argument fills.
TASK_PROMPTS_WITH_INPUT: Mapping[str, str] = {
    "<CAPTION_TO_PHRASE_GROUNDING>": "Locate the phrases in the caption: {input}",
    "<REFERRING_EXPRESSION_SEGMENTATION>": "Locate {input} in the image with mask",
    "<REGION_TO_SEGMENTATION>": "What is the polygon mask of region {input}",
    "<OPEN_VOCABULARY_DETECTION>": "Locate {input} in the image.",
    "<REGION_TO_CATEGORY>": "What is the region {input}?",
    "<REGION_TO_DESCRIPTION>": "What does the region {input} describe?",
    "<REGION_TO_OCR>": "What text is in the region {input}?",
}


def construct_prompt(prompt: str) -> str:
    """The text Florence-2's processor sends for ``prompt`` (task tokens expanded).

    Raises:
        InvalidInputError: A stand-alone task token with other text beside it.
    """
    for token, question in TASK_PROMPTS.items():
        if token in prompt:
            if prompt != token:
                raise InvalidInputError(
                    f"the Florence-2 task token {token} must be the whole prompt, got {prompt!r}"
                )
            return question
    for token, template in TASK_PROMPTS_WITH_INPUT.items():
        if token in prompt:
            return template.format(input=prompt.replace(token, "").strip())
    return prompt


def resize_image(image: Image.Image, settings: Florence2ProcessorSettings) -> Image.Image:
    """The RGB image resized to the processor's size with its filter (bicubic published)."""
    return image.convert("RGB").resize(
        (settings.width, settings.height), Image.Resampling(settings.resample)
    )


def pixel_values(
    images: Sequence[Image.Image], settings: Florence2ProcessorSettings
) -> torch.Tensor:
    """Normalised pixels of resized images, ``[n, 3, H, W]`` float32."""
    import numpy as np
    import torch

    array = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    scaled = (array.astype(np.float64) * settings.rescale_factor).astype(np.float32)
    mean = np.array(settings.mean, dtype=np.float32)
    std = np.array(settings.std, dtype=np.float32)
    normalised = (scaled - mean) / std
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))
