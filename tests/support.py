"""Small helpers shared by tests (not fixtures)."""

from __future__ import annotations

from PIL import Image

from mississippi_tools.images import LoadedImage, load_image


def loaded_image(image: Image.Image) -> LoadedImage:
    """A PIL image through the project's one image-input path."""
    return load_image(image)
