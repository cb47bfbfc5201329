"""H2OVL-Mississippi: the tasks' instructions as they are, and the model's own OCR decoding.

The model card's examples ask in plain English ("Read the text in the image.", "Extract the
details ... as JSON:" + a template), which is what the tasks send. For OCR the original
implementation also switches on its OCR decoding (no runs of repeated whitespace tokens), the
``ocr_mode`` option of H2OVL backends; a served H2OVL model without that option (vLLM) is asked
plainly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from mississippi_tools.tasks.dialects import Dialect

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mississippi_tools.models.base import ModelInfo

__all__ = ["H2OVLDialect"]


class H2OVLDialect(Dialect):
    """How H2OVL-Mississippi (800M, 2B) is asked each task."""

    family: ClassVar[str] = "h2ovl"
    tasks: ClassVar[frozenset[str] | None] = frozenset(
        {"ocr", "read_chart", "read_table", "extract", "ask"}
    )

    def options(self, task: str, arguments: BaseModel, info: ModelInfo) -> dict[str, Any]:
        """OCR turns on the model's OCR decoding where the engine offers it."""
        if task == "ocr" and info.option("ocr_mode") is not None:
            return {"ocr_mode": True}
        return {}
