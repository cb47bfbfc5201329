r"""IDEFICS 1 (idefics-9b-instruct, idefics-80b-instruct): questions, reading and JSON extraction.

The instruct models' card asks in plain English inside the conversation
(``User: What is in this image?<image><end_of_utterance>\nAssistant:``); the conversation itself
belongs to the backend, so the tasks' instructions go as they are. What the family can do:

* ``ask``: what it was tuned for (VQA, captions, questions on several images);
* ``ocr``: an instruction to read the text; images are squashed to 224 x 224 pixels, so only
  large print (signs, titles, a few words) is read; a page of small text is not;
* ``extract``: JSON extraction, always constrained by the local engine's JSON grammar (the
  logits-processor hook: the model cannot write anything the schema does not allow); the values
  are only as good as what the model can read at 224 pixels.

Chart and table reading are refused: at 224 pixels the model cannot read axis labels or cells,
and its card makes no claim to. ``idefics-9b`` and ``idefics-80b`` are pretrained only: they
continue text and follow no instructions, so every task is refused with the instruct checkpoints
named, known from the hub id even before the model loads.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, ClassVar

from mississippi_tools.tasks.dialects import Dialect

if TYPE_CHECKING:
    from mississippi_tools.models.base import ModelInfo

__all__ = ["Idefics1Dialect"]

#: The pretrained-only checkpoints, by the last part of their hub id.
_PRETRAINED = frozenset({"idefics-9b", "idefics-80b"})


class Idefics1Dialect(Dialect):
    """How IDEFICS 1 (idefics-9b-instruct, idefics-80b-instruct) is asked each task."""

    family: ClassVar[str] = "idefics1"
    tasks: ClassVar[frozenset[str] | None] = frozenset({"ocr", "extract", "ask"})
    instruction_tuned_models: ClassVar[tuple[str, ...]] = (
        "HuggingFaceM4/idefics-9b-instruct",
        "HuggingFaceM4/idefics-80b-instruct",
    )

    def supports(self, task: str, info: ModelInfo) -> str | None:
        """Chart and table reading are refused with the reason (224-pixel images)."""
        if task in ("read_chart", "read_table"):
            return (
                f"{info.family} models see every image as 224 x 224 pixels, too few to read a "
                f"chart's labels or a table's cells ({task}); load HuggingFaceM4/idefics2-8b "
                "or h2oai/h2ovl-mississippi-800m for it"
            )
        return super().supports(task, info)

    def instruction_reason(self, task: str, info: ModelInfo) -> str | None:
        """Pretrained-only checkpoints (loaded, or named by hub id) do not follow instructions."""
        name = PurePosixPath(info.model_id.replace("\\", "/")).name.lower()
        if name in _PRETRAINED and info.instruction_tuned:
            info = replace(info, instruction_tuned=False)
        return super().instruction_reason(task, info)
