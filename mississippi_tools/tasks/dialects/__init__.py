"""Prompt dialects: how each model family is asked each task, so that tasks stay model-neutral.

A task (:mod:`mississippi_tools.tasks`) says *what* it wants in plain instructions ("Read the text
in the image."). A family's :class:`Dialect` says how that family is asked: the instruction as it
is (H2OVL, the Idefics chat models), a task token (Florence-2's ``<OCR>``), the model options a task
wants (H2OVL's OCR decoding), or that the family cannot do the task at all. The chat template
itself (roles, image tokens) belongs to the model's backend, not here.

Adding a family is one module here with a :class:`Dialect` subclass, plus one entry in
:data:`DIALECTS`.

Text regions (``boxes=True``): a family that can say where text is overrides
:meth:`Dialect.region_prompt` (how to ask for regions; ``None``, the default, means it cannot)
and :meth:`Dialect.parse_regions` (its markup -> :class:`~mississippi_tools.tasks.text_regions.
RegionText`). H2OVL reads InternVL's ``<ref>``/``<box>`` grounding tokens
(:mod:`~mississippi_tools.tasks.dialects.grounding`); Florence-2's dialect reads the
``<loc_N>`` quads of ``<OCR_WITH_REGION>`` the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mississippi_tools.models.base import ModelInfo
    from mississippi_tools.tasks.text_regions import RegionText

__all__ = ["DIALECTS", "Dialect", "dialect_for", "register_dialect"]


BUILT_ON: dict[str, str] = {"extract_document": "extract"}
"""Tasks that send another task's requests, and that task: a family that does one does both."""


class Dialect:
    """How one family is asked each task (the default: the task's instruction, as it is).

    Subclasses set :attr:`family` and override what differs.
    """

    #: The family this dialect speaks for.
    family: ClassVar[str] = "generic"
    #: The tasks the family can do; ``None`` for every instruction task.
    tasks: ClassVar[frozenset[str] | None] = None
    #: Published instruction-tuned checkpoints to suggest when a base checkpoint is loaded.
    instruction_tuned_models: ClassVar[tuple[str, ...]] = ()

    def supports(self, task: str, info: ModelInfo) -> str | None:
        """``None`` when ``info``'s model can do ``task``, else a sentence saying why not.

        A task made of another's requests (``extract_document`` of ``extract``'s) is supported
        where that one is.
        """
        if (
            self.tasks is not None
            and task not in self.tasks
            and BUILT_ON.get(task) not in self.tasks
        ):
            return f"{info.family} models do not do {task}"
        return self.instruction_reason(task, info)

    def instruction_reason(self, task: str, info: ModelInfo) -> str | None:
        """``None`` when ``info``'s checkpoint follows instructions, else why not ``task``."""
        if not info.instruction_tuned:
            better = ", ".join(self.instruction_tuned_models) or "an instruction-tuned checkpoint"
            return (
                f"{info.model_id} is a pretrained-only checkpoint that continues text but does not "
                f"follow instructions; load {better} for {task}"
            )
        return None

    def prompt(self, task: str, instruction: str, arguments: BaseModel) -> str:
        """The text sent for ``task`` (default: the task's own instruction)."""
        return instruction

    def options(self, task: str, arguments: BaseModel, info: ModelInfo) -> dict[str, Any]:
        """Model options the family wants for ``task`` (default: none)."""
        return {}

    def region_prompt(self, task: str, instruction: str) -> str | None:
        """The instruction for ``task`` asking where each piece of text is, too.

        ``None`` (the default) when the family cannot give text regions for ``task``; the task
        then refuses ``boxes=True`` with an error naming the families that can.
        """
        return None

    def keeps_region_tokens(self) -> bool:
        """Whether the answer must be decoded with its special tokens to keep region markup.

        ``True`` for InternVL's ``<ref>``/``<box>`` tokens; ``False`` (the default) when the
        markup is plain text.
        """
        return False

    def parse_regions(self, text: str, image_size: tuple[int, int]) -> RegionText:
        """The answer without its region markup, and the regions it gives.

        Args:
            text: The answer (decoded with special tokens kept when
                :meth:`keeps_region_tokens`).
            image_size: ``(width, height)`` of the image the model saw, in pixels.

        Returns:
            The text, and the boxes in pixels of that image (default: no regions).
        """
        from mississippi_tools.tasks.text_regions import RegionText

        return RegionText(text)


#: Family -> ``"module:Class"`` of its dialect (imported on first use).
DIALECTS: dict[str, str] = {
    "generic": "mississippi_tools.tasks.dialects:Dialect",
    "h2ovl": "mississippi_tools.tasks.dialects.h2ovl:H2OVLDialect",
    "websight": "mississippi_tools.tasks.dialects.websight:WebSightDialect",
    # -- Idefics2 / Idefics3 --
    "idefics2": "mississippi_tools.tasks.dialects.idefics:Idefics2Dialect",
    "idefics3": "mississippi_tools.tasks.dialects.idefics:Idefics3Dialect",
    # -- Florence-2 --
    "florence2": "mississippi_tools.tasks.dialects.florence2:Florence2Dialect",
    # -- IDEFICS 1 --
    "idefics1": "mississippi_tools.tasks.dialects.idefics1:Idefics1Dialect",
}

_loaded: dict[str, Dialect] = {}


def register_dialect(family: str, target: str) -> None:
    """Speak to ``family`` with the dialect class at ``"module:Class"``."""
    DIALECTS[family] = target
    _loaded.pop(family, None)


def dialect_for(family: str) -> Dialect:
    """The family's dialect; a family without one is spoken to like a generic chat model."""
    if family not in _loaded:
        module, _, name = DIALECTS.get(family, DIALECTS["generic"]).partition(":")
        _loaded[family] = getattr(importlib.import_module(module), name)()
    return _loaded[family]


def region_families() -> list[str]:
    """Families whose dialect can give text regions for OCR (for error messages)."""
    return sorted(
        family
        for family, dialect in known_dialects().items()
        if dialect.region_prompt("ocr", "") is not None
    )


def known_dialects() -> Mapping[str, Dialect]:
    """Every registered family's dialect (for "which models can do this task")."""
    return {family: dialect_for(family) for family in DIALECTS}
