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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from mississippi_tools.engine.base import Engine, GenerationOutput, GenerationRequest
from mississippi_tools.tasks.results import ResultMetadata

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage

__all__ = [
    "OneShotPlan",
    "TaskPlan",
    "arun_plan",
    "confidence_of_span",
    "metadata_for",
    "run_plan",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


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
