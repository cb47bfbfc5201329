"""Small helpers and constants shared by tests (not fixtures)."""

from __future__ import annotations

from PIL import Image

from mississippi_tools.images import LoadedImage, load_image


def loaded_image(image: Image.Image) -> LoadedImage:
    """A PIL image through the project's one image-input path."""
    return load_image(image)


SCRIPTED_ANSWER = '{"total": 5}'
"""What the scripted tiny model (fixture ``scripted_vlm``) writes for any unconstrained prompt."""
