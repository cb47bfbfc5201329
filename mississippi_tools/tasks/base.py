"""How a task talks to an engine, written once for sync and async callers.

A task is a *plan*: it proposes a :class:`~mississippi_tools.engine.base.GenerationRequest`, reads
the :class:`~mississippi_tools.engine.base.GenerationOutput`, and either returns its result or
proposes the next request (a retry with the validation error, for JSON extraction). The plan does
no I/O; :func:`run_plan` and :func:`arun_plan` drive it against an engine, so the sync and async
task methods share every line of task logic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from mississippi_tools.engine.base import (
    Engine,
    GenerationOutput,
    GenerationRequest,
    SamplingParams,
)
from mississippi_tools.tasks.dialects import Dialect, dialect_for
from mississippi_tools.tasks.results import ResultMetadata

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mississippi_tools.images import LoadedImage
    from mississippi_tools.models.base import ModelInfo, TokenizerLike

__all__ = [
    "OneShotPlan",
    "RunSettings",
    "TaskContext",
    "TaskPlan",
    "arun_plan",
    "confidence_of_span",
    "line_confidences",
    "metadata_for",
    "run_plan",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class RunSettings:
    """How one task call runs, apart from the task's own arguments (common to every task).

    Attributes:
        max_new_tokens: Most tokens to generate (``None``: the task's default).
        timeout: Seconds before each request fails with ``DeadlineExceededError``.
        options: Model-specific options (``max_tiles`` ...), checked by the model; they win over
            the options a family's dialect asks for.
    """

    max_new_tokens: int | None = None
    timeout: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskContext:
    """What a task's plan may know about the model it runs on.

    Attributes:
        info: The model's family, options and limits.
        supports_grammar: Whether the engine constrains answers to a JSON schema.
        tokenizer: The model's tokenizer, when it runs in this process.
    """

    info: ModelInfo
    supports_grammar: bool
    tokenizer: TokenizerLike | None = None

    @classmethod
    def for_engine(cls, engine: Engine) -> TaskContext:
        """The context of a task run on ``engine``."""
        backend = getattr(engine, "backend", None)
        return cls(
            info=engine.model_info,
            supports_grammar=engine.supports_grammar,
            tokenizer=getattr(backend, "tokenizer", None),
        )

    @property
    def dialect(self) -> Dialect:
        """How the model's family is asked each task."""
        return dialect_for(self.info.family)

    def request(
        self,
        task: str,
        instruction: str,
        arguments: BaseModel,
        images: Sequence[LoadedImage],
        settings: RunSettings,
        *,
        default_max_new_tokens: int,
        **fields: Any,
    ) -> GenerationRequest:
        """The engine request for ``task``: the family's prompt and options, the settings' budget.

        Args:
            task: The task's name.
            instruction: The task's plain instruction; the family's dialect may reword it.
            arguments: The task's arguments (dialects may read them).
            images: The images, in prompt order.
            settings: The call's run settings.
            default_max_new_tokens: New tokens when the settings do not say.
            fields: Further :class:`GenerationRequest` fields (``history``, ``json_schema``,
                ``logprobs`` ...).
        """
        dialect = self.dialect
        options = {**dialect.options(task, arguments, self.info), **settings.options}
        return GenerationRequest(
            prompt=dialect.prompt(task, instruction, arguments),
            images=images,
            sampling=SamplingParams(
                max_new_tokens=settings.max_new_tokens or default_max_new_tokens
            ),
            options=options,
            timeout=settings.timeout,
            **fields,
        )


class TaskPlan(Protocol[T_co]):
    """A task's conversation with the engine, free of I/O."""

    def first_request(self) -> GenerationRequest:
        """The first request to send."""
        ...

    def handle(self, output: GenerationOutput) -> T_co | GenerationRequest:
        """The result, or the next request to send."""
        ...


def run_plan(engine: Engine, plan: TaskPlan[T]) -> T:
    """Drive ``plan`` with blocking calls."""
    step: T | GenerationRequest = plan.first_request()
    while isinstance(step, GenerationRequest):
        step = plan.handle(engine.generate(step))
    return step


async def arun_plan(engine: Engine, plan: TaskPlan[T]) -> T:
    """Drive ``plan`` without blocking the event loop."""
    step: T | GenerationRequest = plan.first_request()
    while isinstance(step, GenerationRequest):
        step = plan.handle(await engine.agenerate(step))
    return step


def metadata_for(
    output: GenerationOutput,
    images: Sequence[LoadedImage],
    *,
    attempts: int = 1,
    extra_timings: dict[str, float] | None = None,
) -> ResultMetadata:
    """The result metadata of ``output`` (source and page from the first image)."""
    first = images[0] if images else None
    timings = {k: max(0.0, v) for k, v in output.timings.items()}
    timings.update(extra_timings or {})
    return ResultMetadata(
        model=output.model,
        engine=output.engine,
        source=first.source if first else None,
        page=first.page if first else None,
        tiles=output.tiles,
        prompt_tokens=output.prompt_tokens,
        new_tokens=len(output.token_ids),
        timings=timings,
        cache_hit=output.cache_hit,
        finish_reason=output.finish_reason,
        attempts=attempts,
    )


@dataclass
class OneShotPlan(Generic[T]):
    """One request, one parse: OCR, charts, tables, questions.

    Attributes:
        request: The request to send.
        images: The request's images (for the metadata's source and page).
        parse: Turns the output and its metadata into the result.
    """

    request: GenerationRequest
    images: Sequence[LoadedImage]
    parse: Callable[[GenerationOutput, ResultMetadata], T]
    _meta: ResultMetadata | None = field(default=None, init=False)

    def first_request(self) -> GenerationRequest:
        """The task's single request."""
        return self.request

    def handle(self, output: GenerationOutput) -> T:
        """Parse the output; the parse time is added to the metadata."""
        started = time.perf_counter()
        meta = metadata_for(output, self.images)
        result = self.parse(output, meta)
        meta.timings["parse"] = time.perf_counter() - started
        return result


def confidence_of_span(
    token_texts: Sequence[str], token_logprobs: Sequence[float], start: int, end: int
) -> float | None:
    """Probability the model gave the weakest token overlapping ``raw_text[start:end]``.

    Offsets are in the raw answer text (the concatenation of ``token_texts``). The weakest
    link, not an average, because one unsure character is enough to make a value wrong. This is
    the model's own token probability, not a calibrated accuracy; ``None`` when no token overlaps.
    """
    position = 0
    weakest: float | None = None
    for text, logprob in zip(token_texts, token_logprobs, strict=False):
        token_start, position = position, position + len(text)
        if position <= start or token_start >= end or not text.strip():
            continue
        weakest = logprob if weakest is None else min(weakest, logprob)
    return None if weakest is None else math.exp(weakest)


def line_confidences(output: GenerationOutput, raw: str) -> list[float] | None:
    """One confidence per line of ``raw``, from the output's token probabilities (when recorded)."""
    if output.token_logprobs is None or output.token_texts is None:
        return None
    confidences = []
    position = 0
    for line in raw.split("\n"):
        start, end = position, position + len(line)
        position = end + 1
        value = confidence_of_span(output.token_texts, output.token_logprobs, start, end)
        confidences.append(1.0 if value is None else min(1.0, value))
    return confidences
