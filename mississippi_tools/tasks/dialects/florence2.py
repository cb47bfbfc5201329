"""Florence-2-DocVQA: questions with the ``<DocVQA>`` task token, page text with ``<OCR>``.

Florence-2 does not follow free instructions: each task is a task token. HuggingFaceM4's
Florence-2-DocVQA was fine-tuned from Florence-2 on DocVQA with prompts ``<DocVQA>`` + the
question, so ``ask`` sends exactly that. Its model card (the Florence-2 family card) lists OCR
among the model's tasks, asked with ``<OCR>``; the fine-tune kept Florence-2's tokenizer and task
prompts, so ``ocr`` sends ``<OCR>`` (plain text only: there is no Markdown task). Everything else
(charts, tables, JSON extraction) has no task token; rather than send an instruction the model
was never trained to follow, and return unconstrained text, those tasks are refused with
:class:`~mississippi_tools.errors.UnsupportedTaskError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.tasks.dialects import Dialect

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mississippi_tools.models.base import ModelInfo
    from mississippi_tools.tasks.text_regions import RegionText

__all__ = [
    "DOCVQA_TASK_TOKEN",
    "OCR_TASK_TOKEN",
    "OCR_WITH_REGION_TASK_TOKEN",
    "Florence2Dialect",
]

#: The DocVQA fine-tune's prompt prefix.
DOCVQA_TASK_TOKEN = "<DocVQA>"
#: Florence-2's OCR task token.
OCR_TASK_TOKEN = "<OCR>"
#: Florence-2's OCR task token that also gives each line's quadrilateral (location tokens).
OCR_WITH_REGION_TASK_TOKEN = "<OCR_WITH_REGION>"


class Florence2Dialect(Dialect):
    """How Florence-2 (Florence-2-DocVQA) is asked: task tokens, ``ask`` and ``ocr`` only."""

    family: ClassVar[str] = "florence2"
    tasks: ClassVar[frozenset[str] | None] = frozenset({"ask", "ocr"})

    def supports(self, task: str, info: ModelInfo) -> str | None:
        """``ask`` and ``ocr`` have task tokens; nothing else does."""
        if task not in (self.tasks or ()):
            return (
                f"{info.family} models are asked with task tokens and have one only for ask "
                f"(<DocVQA>) and ocr (<OCR>), none for {task}"
            )
        return None

    def prompt(self, task: str, instruction: str, arguments: BaseModel) -> str:
        """``<DocVQA>`` + the question, or ``<OCR>``.

        Raises:
            InvalidInputError: OCR in a format other than plain text (``text``/``lines``).
        """
        if task == "ocr":
            form = getattr(arguments, "format", "text")
            if form not in ("text", "lines"):
                raise InvalidInputError(
                    f"florence2 models read plain text only (<OCR>); format={form!r} is not "
                    "available, use format='text' or 'lines'"
                )
            if instruction == OCR_WITH_REGION_TASK_TOKEN:
                return OCR_WITH_REGION_TASK_TOKEN
            return OCR_TASK_TOKEN
        return DOCVQA_TASK_TOKEN + instruction.strip()

    def region_prompt(self, task: str, instruction: str) -> str | None:
        """``<OCR_WITH_REGION>`` for OCR: each line followed by its quadrilateral."""
        return OCR_WITH_REGION_TASK_TOKEN if task == "ocr" else None

    def keeps_region_tokens(self) -> bool:
        """The ``<loc_N>`` location tokens are special tokens: decode with them kept."""
        return True

    def parse_regions(self, text: str, image_size: tuple[int, int]) -> RegionText:
        """Each line's text, and its quadrilateral in pixels of the image (0-999 bins)."""
        from mississippi_tools.models.florence2.regions import parse_ocr_regions
        from mississippi_tools.tasks.text_regions import RegionText, TextRegion

        found = parse_ocr_regions(text, image_size)
        regions = tuple(
            TextRegion(
                text=region.text,
                line=line,
                box=region.box,
                quad=tuple(c for point in region.quad for c in point),
            )
            for line, region in enumerate(found)
        )
        return RegionText("\n".join(region.text for region in found), regions)
