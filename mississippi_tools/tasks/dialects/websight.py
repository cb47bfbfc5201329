"""VLM_WebSight_finetuned: one task, asked with the screenshot alone.

The model card's only use is ``<s><fake_token_around_image><image>...<fake_token_around_image>``
followed by generation: no instruction text, no chat. So ``to_html`` sends an empty prompt, and
every other task is refused (the model writes HTML whatever it is asked). It is not an
instruction-following model, but ``to_html`` is exactly what it was fine-tuned for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from mississippi_tools.tasks.dialects import Dialect

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mississippi_tools.models.base import ModelInfo

__all__ = ["WebSightDialect"]


class WebSightDialect(Dialect):
    """How VLM_WebSight_finetuned is asked: ``to_html`` only, with the image alone."""

    family: ClassVar[str] = "websight"
    tasks: ClassVar[frozenset[str] | None] = frozenset({"to_html"})

    def supports(self, task: str, info: ModelInfo) -> str | None:
        """``to_html`` is its fine-tuned task; anything else it cannot do."""
        if task not in (self.tasks or ()):
            return (
                f"{info.family} models only turn screenshots into HTML (to_html); they do not "
                f"follow instructions such as {task}"
            )
        return None

    def prompt(self, task: str, instruction: str, arguments: BaseModel) -> str:
        """The screenshot alone: no text after the image block."""
        return ""
