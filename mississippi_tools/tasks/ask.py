"""Free questions about images: the prompt, the :class:`Answer` result, and its parser."""

from __future__ import annotations

from typing import Final

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.tasks.results import ResultMetadata, TaskResult

__all__ = ["IMAGE_PLACEHOLDER", "Answer", "build_ask_prompt", "parse_ask_output"]

IMAGE_PLACEHOLDER: Final = "<image>"
"""Where the engine puts an image's tokens in a prompt."""


class Answer(TaskResult):
    """The model's answer to a question about one or more images; ``str(answer)`` is the text.

    Example:
        >>> answer = vlm.ask("chart.png", "Which month had the highest sales?")  # doctest: +SKIP
        >>> print(answer)
        March
    """

    text: str
    """The answer, with surrounding whitespace removed."""

    def __str__(self) -> str:
        return self.text


def build_ask_prompt(question: str, n_images: int) -> str:
    r"""Return the prompt for a question about ``n_images`` images.

    With one image the question is used as it is; the engine puts ``"<image>\n"`` before it, as
    the original model's ``chat`` does. With several, each image is introduced on its own line,
    InternVL's multi-image convention: ``"Image-1: <image>\nImage-2: <image>\n" + question``.

    Args:
        question: The question, in any language.
        n_images: How many images come with it (0 for a text-only question).

    Returns:
        The prompt.

    Raises:
        InvalidInputError: The question is empty or contains ``<image>`` itself, or
            ``n_images`` is negative.
    """
    if not question.strip():
        raise InvalidInputError("the question is empty; ask something about the image")
    if IMAGE_PLACEHOLDER in question:
        raise InvalidInputError(
            f"the question contains {IMAGE_PLACEHOLDER!r}, which marks where images go; "
            "remove it (images are placed by the engine)"
        )
    if n_images < 0:
        raise InvalidInputError(f"n_images must be 0 or more, got {n_images}")
    if n_images <= 1:
        return question
    images = "".join(f"Image-{i}: {IMAGE_PLACEHOLDER}\n" for i in range(1, n_images + 1))
    return images + question


def parse_ask_output(raw: str, meta: ResultMetadata) -> Answer:
    """Wrap the model's answer to a question in an :class:`Answer`.

    Args:
        raw: The model's answer, as generated.
        meta: The engine's metadata for this generation.

    Returns:
        The answer with surrounding whitespace removed; otherwise as generated.
    """
    return Answer(text=raw.strip(), meta=meta)
