r"""Idefics2 and Idefics3: the tasks' instructions as plain chat questions; small print in pieces.

The model cards ask in plain English inside the chat template (``User:<image>What do we see in
this image?<end_of_utterance>\\nAssistant:``); the template itself belongs to the backends, so
the tasks' instructions go as they are. Idefics2's card advises image splitting (each image's
four quarters read as well, 320 image tokens instead of 64) for OCR-heavy work and notes that only
the instruction-tuned checkpoints were trained with it, so the reading tasks turn it on where the
model offers the option; Idefics3 splits by default (its processor tiles to ``longest_edge``).
``idefics2-8b-base`` is pretrained only: every task is refused with the instruction-tuned
checkpoints named.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from mississippi_tools.tasks.dialects import Dialect

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mississippi_tools.models.base import ModelInfo

__all__ = ["Idefics2Dialect", "Idefics3Dialect"]

_TASKS = frozenset({"ocr", "read_chart", "read_table", "extract", "ask"})
#: Tasks that read small print (the card's OCR advice applies).
_READING = frozenset({"ocr", "read_chart", "read_table", "extract"})


class Idefics2Dialect(Dialect):
    """How Idefics2 (idefics2-8b, -chatty) is asked each task."""

    family: ClassVar[str] = "idefics2"
    tasks: ClassVar[frozenset[str] | None] = _TASKS
    instruction_tuned_models: ClassVar[tuple[str, ...]] = (
        "HuggingFaceM4/idefics2-8b",
        "HuggingFaceM4/idefics2-8b-chatty",
    )

    def options(self, task: str, arguments: BaseModel, info: ModelInfo) -> dict[str, Any]:
        """Reading tasks split images into quarters where the model offers it."""
        if task in _READING and info.option("do_image_splitting") is not None:
            return {"do_image_splitting": True}
        return {}


class Idefics3Dialect(Dialect):
    """How Idefics3 (Idefics3-8B-Llama3) is asked each task."""

    family: ClassVar[str] = "idefics3"
    tasks: ClassVar[frozenset[str] | None] = _TASKS
    instruction_tuned_models: ClassVar[tuple[str, ...]] = ("HuggingFaceM4/Idefics3-8B-Llama3",)
