"""H2OVL-Mississippi: the tasks' instructions as they are, and the model's own OCR decoding.

The model card's examples ask in plain English ("Read the text in the image.", "Extract the
details ... as JSON:" + a template), which is what the tasks send. For OCR the original
implementation also switches on its OCR decoding (no runs of repeated whitespace tokens), the
``ocr_mode`` option of H2OVL backends; a served H2OVL model without that option (vLLM) is asked
plainly.

Text regions use the InternVL grounding tokens the model's tokenizer has (``<ref>``, ``<box>``,
``<quad>``; see :mod:`~mississippi_tools.tasks.dialects.grounding`). The model card does not
document grounding; whether a given checkpoint answers with boxes is up to its training, and an
answer without them gives lines without boxes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from mississippi_tools.tasks.dialects import Dialect
from mississippi_tools.tasks.dialects.grounding import OCR_REGION_PROMPT, parse_grounding

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mississippi_tools.models.base import ModelInfo
    from mississippi_tools.tasks.text_regions import RegionText

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

    def region_prompt(self, task: str, instruction: str) -> str | None:
        """OCR asks for each line in InternVL's grounding markup."""
        if task != "ocr":
            return None
        return f"{instruction} {OCR_REGION_PROMPT}".strip()

    def keeps_region_tokens(self) -> bool:
        """``<ref>``, ``<box>`` ... are special tokens: the answer is decoded with them."""
        return True

    def parse_regions(self, text: str, image_size: tuple[int, int]) -> RegionText:
        """InternVL's ``<ref>``/``<box>``/``<quad>`` markup, on its 0-1000 scale."""
        return parse_grounding(text, image_size)
