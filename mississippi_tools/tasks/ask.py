"""Free questions about images: the prompt, the :class:`Answer` result, and its parser."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, ConfigDict, Field

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.tasks.base import OneShotPlan, RunSettings, TaskContext, TaskPlan
from mississippi_tools.tasks.catalogue import TaskSpec
from mississippi_tools.tasks.results import ResultMetadata, TaskResult, cut_note

if TYPE_CHECKING:
    from mississippi_tools.engine.base import GenerationOutput
    from mississippi_tools.images import LoadedImage

__all__ = [
    "IMAGE_PLACEHOLDER",
    "SPEC",
    "Answer",
    "AskArguments",
    "build_ask_prompt",
    "parse_ask_output",
    "render_answer",
]

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


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


class AskArguments(BaseModel):
    """Arguments of the ``ask`` task."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(
        min_length=1,
        description=(
            "The question about the image, in plain language, e.g. 'What is the total amount "
            "due?' or 'Is the form signed?'."
        ),
    )
    history: list[tuple[str, str]] = Field(
        default_factory=list,
        description="Earlier (question, answer) turns of this conversation, oldest first.",
    )


def plan_ask(
    ctx: TaskContext, images: list[LoadedImage], args: AskArguments, settings: RunSettings
) -> TaskPlan[Answer]:
    """One request: the question (with InternVL's image prefixes for several images)."""
    request = ctx.request(
        "ask",
        build_ask_prompt(args.question, len(images)),
        args,
        images,
        settings,
        default_max_new_tokens=SPEC.default_max_new_tokens,
        history=list(args.history),
    )

    def parse(output: GenerationOutput, meta: ResultMetadata) -> Answer:
        return parse_ask_output(output.text, meta)

    return OneShotPlan(request, images, parse)


def render_answer(answer: Answer) -> str:
    """The answer's text, for an LLM."""
    return (answer.text or "(no answer)") + cut_note(answer.meta)


SPEC: TaskSpec[AskArguments, Answer] = TaskSpec(
    name="ask",
    title="Ask about images",
    description=(
        "Ask a question about an image or a PDF page and get a short answer from a local "
        "vision model: what is shown, what a sign or label says, whether a form is signed, "
        "which bar is highest. For the full text use ocr; for exact numbers from a chart or "
        "table use read_chart or read_table."
    ),
    arguments=AskArguments,
    result=Answer,
    plan=plan_ask,
    render=render_answer,
    images="many",
    default_max_new_tokens=512,
    aliases=("ask_image",),
)
