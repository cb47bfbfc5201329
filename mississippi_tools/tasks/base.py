"""How a task talks to an engine, written once for sync and async callers.

A task is a *plan*: it proposes a :class:`~mississippi_tools.engine.base.GenerationRequest`, reads
the :class:`~mississippi_tools.engine.base.GenerationOutput`, and either returns its result or
proposes the next request (a retry with the validation error, for JSON extraction). The plan does
no I/O; :func:`run_plan` and :func:`arun_plan` drive it against an engine, so the sync and async
task methods share every line of task logic.

A step of a plan is one of three things:

- a :class:`GenerationRequest`: the driver sends it and hands the output to ``handle``;
- a :class:`RequestBatch`: several requests sent at once (they batch on the engine), whose outputs
  (or, for a request that failed, its :class:`~mississippi_tools.errors.MississippiError`) go to
  ``handle_batch`` in the same order (a document's pages, read together);
- anything else is the result: the driver returns it. ``first_request`` may return the result at
  once when no model is needed (a PDF page whose text layer answers OCR).

Loops: tasks send their requests with a
:class:`~mississippi_tools.engine.repetition.RepetitionCheck` (:attr:`RunSettings.repetition`),
so the engine ends an answer that repeats itself with ``finish_reason="repetition"``.
:func:`retry_against_repetition` is the policy every plan applies: one retry with
``repetition_penalty`` :data:`REPETITION_RETRY_PENALTY` and no repeated
:data:`REPETITION_RETRY_NGRAM`-token passages; when the retry loops too,
:class:`~mississippi_tools.errors.RepetitionError`.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, Protocol, TypeVar, cast

from mississippi_tools.engine.base import (
    Engine,
    GenerationOutput,
    GenerationRequest,
    SamplingParams,
)
from mississippi_tools.engine.repetition import DEFAULT_REPETITION_CHECK, RepetitionCheck
from mississippi_tools.errors import MississippiError, RepetitionError
from mississippi_tools.tasks.dialects import Dialect, dialect_for
from mississippi_tools.tasks.results import ResultMetadata

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mississippi_tools.images import LoadedImage
    from mississippi_tools.models.base import ModelInfo, TokenizerLike

__all__ = [
    "REPETITION_RETRY_NGRAM",
    "REPETITION_RETRY_PENALTY",
    "BatchOutputs",
    "BatchPlan",
    "OneShotPlan",
    "RequestBatch",
    "ResultPlan",
    "RunSettings",
    "TaskContext",
    "TaskPlan",
    "arun_plan",
    "confidence_of_span",
    "line_confidences",
    "metadata_for",
    "retry_against_repetition",
    "run_plan",
]

REPETITION_RETRY_PENALTY: Final = 1.05
"""The repetition penalty of the retry after a loop: a nudge (a larger one also penalizes the
spaces, digits and words every page repeats); the n-gram ban does the real work."""

REPETITION_RETRY_NGRAM: Final = 30
"""The retry after a loop bans writing again any passage of this many tokens written before (the
n-gram size DeepSeek-OCR uses against loops)."""

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
        repetition: How the engine catches an answer that loops (``None``: it does not; the
            answer then runs to ``max_new_tokens``).
    """

    max_new_tokens: int | None = None
    timeout: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    repetition: RepetitionCheck | None = DEFAULT_REPETITION_CHECK


@dataclass(frozen=True)
class TaskContext:
    """What a task's plan may know about the model it runs on.

    Attributes:
        info: The model's family, options and limits.
        supports_grammar: Whether the engine constrains answers to a JSON schema.
        tokenizer: The model's tokenizer, when it runs in this process.
        prompt_tokens: Counts the prompt tokens of a request (images included) without running
            it, when the engine can (the model runs in this process); ``None`` otherwise.
        engine: Which engine runs the model (for results no model produced).
    """

    info: ModelInfo
    supports_grammar: bool
    tokenizer: TokenizerLike | None = None
    prompt_tokens: Callable[[GenerationRequest], int] | None = None
    engine: Literal["local", "remote"] = "local"

    @classmethod
    def for_engine(cls, engine: Engine) -> TaskContext:
        """The context of a task run on ``engine``."""
        backend = getattr(engine, "backend", None)
        return cls(
            info=engine.model_info,
            supports_grammar=engine.supports_grammar,
            tokenizer=getattr(backend, "tokenizer", None),
            prompt_tokens=getattr(engine, "count_prompt_tokens", None),
            engine=engine.name,
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
        skip_special_tokens: bool = True,
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
            skip_special_tokens: ``False`` keeps special tokens in the answer (region markup).
            fields: Further :class:`GenerationRequest` fields (``history``, ``json_schema``,
                ``logprobs`` ...).
        """
        dialect = self.dialect
        options = {**dialect.options(task, arguments, self.info), **settings.options}
        return GenerationRequest(
            prompt=dialect.prompt(task, instruction, arguments),
            images=images,
            sampling=SamplingParams(
                max_new_tokens=settings.max_new_tokens or default_max_new_tokens,
                skip_special_tokens=skip_special_tokens,
            ),
            options=options,
            timeout=settings.timeout,
            repetition=settings.repetition,
            **fields,
        )


@dataclass(frozen=True)
class RequestBatch:
    """Several requests a plan sends at once; their outputs come back together, in order.

    Attributes:
        requests: The requests (the engine batches them).
    """

    requests: tuple[GenerationRequest, ...]


BatchOutputs = list[GenerationOutput | MississippiError]
"""The outputs of a :class:`RequestBatch`, in order; a request that failed gives its error."""

Step = GenerationRequest | RequestBatch


class TaskPlan(Protocol[T_co]):
    """A task's conversation with the engine, free of I/O (see the module docstring)."""

    def first_request(self) -> T_co | GenerationRequest | RequestBatch:
        """The first request to send, several at once, or the result when no model is needed."""
        ...

    def handle(self, output: GenerationOutput) -> T_co | GenerationRequest | RequestBatch:
        """The result, or the next request(s) to send."""
        ...


class BatchPlan(TaskPlan[T_co], Protocol[T_co]):
    """A plan that sends :class:`RequestBatch` steps."""

    def handle_batch(self, outputs: BatchOutputs) -> T_co | GenerationRequest | RequestBatch:
        """The result, or the next request(s), from the outputs of a batch."""
        ...


def run_plan(engine: Engine, plan: TaskPlan[T]) -> T:
    """Drive ``plan`` with blocking calls (the requests of a batch from worker threads)."""
    step: T | Step = plan.first_request()
    while True:
        if isinstance(step, GenerationRequest):
            step = plan.handle(engine.generate(step))
        elif isinstance(step, RequestBatch):
            step = cast("BatchPlan[T]", plan).handle_batch(_generate_all(engine, step))
        else:
            return step


async def arun_plan(engine: Engine, plan: TaskPlan[T]) -> T:
    """Drive ``plan`` without blocking the event loop."""
    step: T | Step = plan.first_request()
    while True:
        if isinstance(step, GenerationRequest):
            step = plan.handle(await engine.agenerate(step))
        elif isinstance(step, RequestBatch):
            step = cast("BatchPlan[T]", plan).handle_batch(await _agenerate_all(engine, step))
        else:
            return step


_BATCH_THREADS = 8  # requests of one batch submitted at once from the blocking driver


def _generate_one(
    engine: Engine, request: GenerationRequest
) -> GenerationOutput | MississippiError:
    try:
        return engine.generate(request)
    except MississippiError as e:
        return e


def _generate_all(engine: Engine, batch: RequestBatch) -> BatchOutputs:
    if len(batch.requests) == 1:
        return [_generate_one(engine, batch.requests[0])]
    workers = min(_BATCH_THREADS, len(batch.requests))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mississippi-plan") as pool:
        return list(pool.map(lambda request: _generate_one(engine, request), batch.requests))


async def _agenerate_all(engine: Engine, batch: RequestBatch) -> BatchOutputs:
    import asyncio

    async def one(request: GenerationRequest) -> GenerationOutput | MississippiError:
        try:
            return await engine.agenerate(request)
        except MississippiError as e:
            return e

    return list(await asyncio.gather(*(one(request) for request in batch.requests)))


def retry_against_repetition(
    request: GenerationRequest,
    output: GenerationOutput,
    *,
    attempts: int = 2,
    errors: Sequence[str] = (),
) -> GenerationRequest:
    """The retry of ``request``, whose answer looped; or the error when it already was the retry.

    The retry is the same request with ``repetition_penalty`` at least
    :data:`REPETITION_RETRY_PENALTY` and the engine banning any repeat of a
    :data:`REPETITION_RETRY_NGRAM`-token passage (a model that keeps trying to loop is stopped
    again).

    Args:
        request: The request whose answer looped.
        output: Its output.
        attempts: Generations tried so far, for the error (this one included).
        errors: Why the earlier attempts failed, for the error (default: two loops).

    Raises:
        RepetitionError: ``request`` was the retry: the model looped twice.
    """
    check = request.repetition or DEFAULT_REPETITION_CHECK
    tokens = len(output.token_ids)
    if check.no_repeat_ngram:
        how = f" ({output.repetition})" if output.repetition else ""
        raise RepetitionError(
            f"the model's answer fell into a loop{how} after {tokens} tokens, again on the retry "
            f"with repetition_penalty={request.sampling.repetition_penalty:g} and no repeated "
            f"{check.no_repeat_ngram}-token passages; read a smaller region of the image "
            "(region=...), use more tiles (max_tiles), or turn the check off (repetition=None) "
            "to get the looping text",
            raw_text=output.raw_text or output.text,
            errors=list(errors) or [f"the answer looped after {tokens} tokens"] * 2,
            attempts=attempts,
        )
    sampling = dataclasses.replace(
        request.sampling,
        repetition_penalty=max(request.sampling.repetition_penalty, REPETITION_RETRY_PENALTY),
    )
    return dataclasses.replace(
        request,
        sampling=sampling,
        repetition=dataclasses.replace(check, no_repeat_ngram=REPETITION_RETRY_NGRAM),
        request_id=uuid.uuid4().hex[:16],
    )


def metadata_for(
    output: GenerationOutput,
    images: Sequence[LoadedImage],
    *,
    attempts: int = 1,
    extra_timings: dict[str, float] | None = None,
) -> ResultMetadata:
    """The result metadata of ``output`` (source, page and region from the first image)."""
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
        region=list(first.region) if first and first.region else None,
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
    _attempts: int = field(default=0, init=False)

    def first_request(self) -> GenerationRequest:
        """The task's request."""
        return self.request

    def handle(self, output: GenerationOutput) -> T | GenerationRequest:
        """Parse the output (the parse time is added to the metadata), or retry a loop once.

        Raises:
            RepetitionError: The answer looped, and looped again on the retry.
        """
        self._attempts += 1
        if output.finish_reason == "repetition":
            self.request = retry_against_repetition(self.request, output)
            return self.request
        started = time.perf_counter()
        meta = metadata_for(output, self.images, attempts=self._attempts)
        result = self.parse(output, meta)
        meta.timings["parse"] = time.perf_counter() - started
        return result


@dataclass(frozen=True)
class ResultPlan(Generic[T]):
    """A plan whose result is known without the model (a PDF page's text layer for OCR).

    Attributes:
        result: The result; :meth:`first_request` returns it, so no request is sent.
    """

    result: T

    def first_request(self) -> T:
        """The result itself."""
        return self.result

    def handle(self, output: GenerationOutput) -> T:
        """Never called: no request was sent."""
        raise RuntimeError("a ResultPlan sends no request, so it has no output to handle")


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
