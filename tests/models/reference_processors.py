"""transformers' PIL image processors, under the name each supported release gives them.

Up to 5.x's early releases the PIL/NumPy processor is ``<Family>ImageProcessor`` in
``image_processing_<family>``; later releases move it to ``<Family>ImageProcessorPil`` in
``image_processing_pil_<family>`` (the old name becoming the torchvision one). The references
use the PIL one, which needs no torchvision, in both.
"""

from __future__ import annotations

import importlib
from typing import Any


def pil_image_processor(family: str, class_prefix: str) -> Any:
    """The PIL image processor class of ``transformers.models.<family>``."""
    try:
        module = importlib.import_module(
            f"transformers.models.{family}.image_processing_pil_{family}"
        )
        return getattr(module, f"{class_prefix}ImageProcessorPil")
    except ModuleNotFoundError:
        module = importlib.import_module(f"transformers.models.{family}.image_processing_{family}")
        return getattr(module, f"{class_prefix}ImageProcessor")
