"""VLM_WebSight input processing: the screenshot's pixels and the prompt's token ids.

As the model card's "how to get started" code does it (its ``custom_transform``, which replaces
the processor's own transform because the model was trained with bilinear resizing):

* the image is resized to ``image_size`` x ``image_size`` (960 published; the aspect ratio is not
  kept) with PIL's bilinear filter;
* pixels become ``uint8 * (1 / 255)`` in float64, then float32, then ``(x - mean) / std`` in
  float32 with the ``image_mean``/``image_std`` of ``preprocessor_config.json`` (0.5 published),
  which is what transformers' ``rescale`` and ``normalize`` compute.

The prompt is the image alone: ``<s><fake_token_around_image>`` + ``<image>`` x 64 +
``<fake_token_around_image>``. Text after it (``generate`` with a prompt) is tokenized as text.

Everything here is a pure function of its inputs; only :func:`pixel_values` needs torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from mississippi_tools.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

__all__ = [
    "FAKE_IMAGE_TOKEN",
    "IMAGE_TOKEN",
    "ImageNormalization",
    "image_block",
    "pixel_values",
    "read_normalization",
    "resize_image",
]

#: Surrounds an image's ``<image>`` tokens.
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
#: One per image latent.
IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class ImageNormalization:
    """Per-channel mean and standard deviation (``preprocessor_config.json``)."""

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


def read_normalization(directory: Path) -> ImageNormalization:
    """The checkpoint's ``image_mean``/``image_std`` (the published values when absent)."""
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return ImageNormalization()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        mean = tuple(float(v) for v in data.get("image_mean", (0.5, 0.5, 0.5)))
        std = tuple(float(v) for v in data.get("image_std", (0.5, 0.5, 0.5)))
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as e:
        raise ModelLoadError(f"{path} is not a valid preprocessor config: {e}") from e
    if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
        raise ModelLoadError(
            f"{path}: image_mean and image_std need 3 values each (std > 0), got {mean} and {std}"
        )
    return ImageNormalization(mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]))


def resize_image(image: Image.Image, image_size: int) -> Image.Image:
    """The RGB screenshot resized to ``image_size`` square with PIL's bilinear filter."""
    return image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)


def pixel_values(images: Sequence[Image.Image], normalization: ImageNormalization) -> torch.Tensor:
    """Normalised pixels of resized images, ``[n, 3, H, W]`` float32."""
    import numpy as np
    import torch

    array = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    scaled = (array.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array(normalization.mean, dtype=np.float32)
    std = np.array(normalization.std, dtype=np.float32)
    normalised = (scaled - mean) / std
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))


def image_block(fake_id: int, image_id: int, image_seq_len: int) -> list[int]:
    """The ids of one image: ``<fake>``, ``<image>`` x ``image_seq_len``, ``<fake>``."""
    return [fake_id, *([image_id] * image_seq_len), fake_id]
