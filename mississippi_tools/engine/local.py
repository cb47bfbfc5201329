"""The in-process engine: one loaded model shared by every caller, with dynamic batching.

Callers submit requests from any thread (or coroutine). Preparation (tiling, tokenizing) runs in
the caller's thread; one engine thread owns the model and repeats:

1. **schedule** — at the step boundary, drop expired or cancelled requests and admit waiting ones
   into free batch slots (:mod:`~mississippi_tools.engine.scheduler`);
2. **execute** — encode the newcomers' uncached images together, prefill each newcomer and join
   it to the running batch, then decode one token for every running request
   (:mod:`~mississippi_tools.engine.runner`);
3. **update** — append tokens, stream text, finish requests that hit a stop condition.

So a new request joins the batch at the next step instead of waiting for the batch to end, and a
cancelled or expired request frees its slot at the next step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from mississippi_tools.engine.base import (
    Engine,
    FinishReason,
    GenerationOutput,
    GenerationRequest,
)
from mississippi_tools.engine.cache import CacheStats, TensorCache
from mississippi_tools.engine.config import LocalEngineConfig
from mississippi_tools.engine.detokenize import StreamingText
from mississippi_tools.engine.repetition import RepetitionGuard
from mississippi_tools.engine.runner import GenerateRunner, ModelRunner, Runner
from mississippi_tools.engine.sampling import apply_repetition_penalty, sample_token
from mississippi_tools.engine.scheduler import FCFSScheduler, Scheduler
from mississippi_tools.errors import (
    DeadlineExceededError,
    EngineDeadError,
    GenerationError,
    InvalidInputError,
    MississippiError,
    PromptTooLongError,
    RequestCancelledError,
)
from mississippi_tools.models.base import (
    Backend,
    DecoderBackend,
    GenerateBackend,
    LogitsProcessor,
    ModelInfo,
    PreparedPrompt,
)

__all__ = ["EngineMetrics", "LocalEngine", "LocalEngineConfig", "RequestHandle"]

logger = logging.getLogger(__name__)

_IDLE_WAIT = 0.5


@dataclass
class EngineMetrics:
    """Counters of the engine since it started (read by the server's /metrics)."""

    requests_finished: int = 0
    requests_failed: int = 0
    requests_cancelled: int = 0
    requests_expired: int = 0
    requests_repetition: int = 0
    """Requests ended because their answer looped (``finish_reason="repetition"``)."""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    decode_steps: int = 0
    batch_size_counts: dict[int, int] = field(default_factory=dict)
    running: int = 0
    queue_depth: int = 0
    cache: CacheStats | None = None
    prefix_cache: CacheStats | None = None


class RequestHandle:
    """A submitted request: its result, its text stream, and a way to cancel it."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.future: concurrent.futures.Future[GenerationOutput] = concurrent.futures.Future()
        self._stream: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._on_cancel: list[Any] = []

    def result(self, timeout: float | None = None) -> GenerationOutput:
        """Wait for the output (raises the request's error)."""
        return self.future.result(timeout)

    def cancel(self) -> None:
        """Ask the engine to stop this request; its slot is freed at the next step."""
        self._cancel.set()
        for callback in self._on_cancel:
            callback()

    @property
    def cancelled(self) -> bool:
        """Whether cancellation was requested."""
        return self._cancel.is_set()

    def iter_text(self) -> Iterator[str]:
        """Text deltas until the request ends; then raises its error, if any."""
        while True:
            delta = self._stream.get()
            if delta is None:
                break
            yield delta
        self.future.result()

    def _push(self, delta: str | None) -> None:
        self._stream.put(delta)


class _Sequence:
    """Engine-side state of one request."""

    def __init__(
        self,
        request: GenerationRequest,
        prepared: PreparedPrompt,
        processors: list[LogitsProcessor],
        handle: RequestHandle,
        stream: StreamingText,
        *,
        created: float,
        submitted: float,
        deadline: float | None,
        preprocess_seconds: float,
    ) -> None:
        self.request = request
        self.request_id = request.request_id
        self.prepared = prepared
        self.processors = processors
        self.handle = handle
        self.stream = stream
        self.deadline = deadline
        self.num_tiles = prepared.num_tiles
        self.generated: list[int] = []
        self.logprobs: list[float] = []
        self.next_position = len(prepared.input_ids)
        self.generator: torch.Generator | None = None
        if request.sampling.seed is not None:
            self.generator = torch.Generator().manual_seed(request.sampling.seed)
        self.created = created
        self.submitted = submitted
        self.admitted = 0.0
        self.decode_started = 0.0
        self.timings: dict[str, float] = {"preprocess": preprocess_seconds}
        self.cache_hit = False
        check = request.repetition
        # A fixed number of tokens (ignore_eos, benchmarks) is generated whatever it holds.
        self.guard = (
            RepetitionGuard(check)
            if check is not None and not request.sampling.ignore_eos
            else None
        )

    @property
    def cancelled(self) -> bool:
        return self.handle.cancelled


class LocalEngine(Engine):
    """Runs a :class:`~mississippi_tools.models.base.Backend` in this process.

    Decoder backends are batched (up to ``config.max_batch_size`` requests decode together);
    generate backends run one request at a time through the same queue, with the same deadlines,
    cancellation, streaming and logits processors.

    Every submitted request ends exactly once: with its output, or with a typed error
    (:class:`~mississippi_tools.errors.RequestCancelledError`,
    :class:`~mississippi_tools.errors.DeadlineExceededError`, a
    :class:`~mississippi_tools.errors.GenerationError`, or
    :class:`~mississippi_tools.errors.EngineDeadError` when the engine stops), whatever the timing.

    Args:
        backend: The loaded model.
        config: Batching, queue and cache settings.
        scheduler: A custom scheduler (default: first come, first served).
    """

    name = "local"
    supports_grammar = True

    def __init__(
        self,
        backend: Backend,
        config: LocalEngineConfig | None = None,
        *,
        scheduler: Scheduler[_Sequence] | None = None,
    ) -> None:
        self.backend = backend
        self.config = config or LocalEngineConfig()
        one_at_a_time = backend.kind == "generate"
        self.scheduler: Scheduler[_Sequence] = scheduler or FCFSScheduler(
            max_batch_size=1 if one_at_a_time else self.config.max_batch_size,
            max_queue_size=self.config.max_queue_size,
            max_admit_tiles=self.config.max_admit_tiles,
            retry_after=self.config.retry_after,
        )
        self.feature_cache = TensorCache(int(self.config.feature_cache_mb * 1024 * 1024))
        self.prefix_cache = TensorCache(int(self.config.prefix_cache_mb * 1024 * 1024))
        self.runner: Runner
        if isinstance(backend, GenerateBackend):
            self.runner = GenerateRunner(backend)
        elif isinstance(backend, DecoderBackend):
            self.runner = ModelRunner(
                backend,
                self.feature_cache,
                prefix_cache=self.prefix_cache,
                max_vision_batch=self.config.max_vision_batch,
            )
        else:
            raise TypeError(f"{type(backend).__name__} is neither a decoder nor a generate backend")
        self.metrics = EngineMetrics()
        self._running: list[_Sequence] = []
        self._unfinished = 0  # submitted and not yet answered (guarded by _queue_lock)
        self._admitting: list[_Sequence] = []
        self._stopping = threading.Event()
        self._dead: BaseException | None = None
        # Held while a request is queued and while the loop drains at shutdown, so that no request
        # can be queued after the last drain (it would never be answered).
        self._queue_lock = threading.Lock()
        self._closed = False
        self._grammar: Any = None
        self._grammar_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="mississippi-engine", daemon=True)
        self._thread.start()

    # -- public API ---------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        """The backend's model id."""
        return self.backend.model_id

    @property
    def model_info(self) -> ModelInfo:
        """The backend's family, options and limits."""
        return self.backend.info

    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Prepare ``request`` in this thread and queue it; returns at once.

        Raises:
            EngineDeadError: The engine has stopped.
            QueueFullError: Too many requests are waiting.
            InvalidInputError: The request cannot run (prompt too long, bad placeholders ...).
        """
        self._check_alive()
        created = time.monotonic()
        started = time.perf_counter()
        context = self.backend.max_context
        if request.sampling.max_new_tokens > context:
            raise InvalidInputError(
                f"max_new_tokens={request.sampling.max_new_tokens} is more than this model's "
                f"whole context of {context} tokens (prompt and answer together); ask for at "
                f"most {context} (an answer also stops where the context ends)"
            )
        prepared = self.backend.prepare(
            request.prompt, request.images, history=request.history, options=request.options
        )
        if len(prepared.input_ids) >= context:
            images = (
                f"{prepared.num_image_tokens} of them image tokens for {len(prepared.images)} "
                f"image(s) in {prepared.num_tiles} tiles"
                if prepared.images
                else "no images"
            )
            fewer_tiles = ", or a lower max_tiles" if self.backend.info.option("max_tiles") else ""
            raise PromptTooLongError(
                f"the prompt is {len(prepared.input_ids)} tokens ({images}); the model's context "
                f"is {context}. Send fewer images or a shorter question or history{fewer_tiles}"
            )
        if len(prepared.input_ids) + request.sampling.max_new_tokens > context:
            logger.debug("request %s will stop at the context limit", request.request_id)
        processors = self._processors_for(request, prepared)
        handle = RequestHandle(request.request_id)
        tokenizer = self.backend.tokenizer
        sequence = _Sequence(
            request,
            prepared,
            processors,
            handle,
            StreamingText(
                tokenizer,
                stop=request.sampling.stop,
                record_pieces=request.logprobs,
                skip_special_tokens=request.sampling.skip_special_tokens,
            ),
            created=created,
            submitted=time.monotonic(),
            deadline=self._deadline(request),
            preprocess_seconds=time.perf_counter() - started,
        )
        handle._on_cancel.append(self.scheduler.wake)
        with self._queue_lock:
            if self._closed:
                self._check_alive()
                raise EngineDeadError("the engine is shut down; create a new one")
            self.scheduler.add(sequence)
            self._unfinished += 1
        handle.future.add_done_callback(self._on_request_done)
        return handle

    def _on_request_done(self, _future: concurrent.futures.Future[GenerationOutput]) -> None:
        with self._queue_lock:
            self._unfinished -= 1

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Tokens ``request``'s prompt takes, image tokens included, without running it.

        Raises:
            InvalidInputError: The request cannot be prepared (bad options, placeholders ...).
        """
        prepared = self.backend.prepare(
            request.prompt, request.images, history=request.history, options=request.options
        )
        return len(prepared.input_ids)

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        """Run ``request`` and wait for its output."""
        handle = self.submit(request)
        try:
            return handle.result()
        except KeyboardInterrupt:
            handle.cancel()
            raise

    async def asubmit(self, request: GenerationRequest) -> RequestHandle:
        """:meth:`submit` from a coroutine (preparation runs in a worker thread).

        If the calling task is cancelled while the request is being prepared, the request is
        cancelled as soon as it is queued, so it never runs with nobody waiting for it.
        """
        submitting = asyncio.ensure_future(asyncio.to_thread(self.submit, request))
        try:
            return await asyncio.shield(submitting)
        except asyncio.CancelledError:
            submitting.add_done_callback(_cancel_submitted)
            raise

    async def agenerate(self, request: GenerationRequest) -> GenerationOutput:
        """Run ``request`` without blocking the event loop; cancelling the task cancels it."""
        handle = await self.asubmit(request)
        try:
            return await asyncio.shield(asyncio.wrap_future(handle.future))
        except asyncio.CancelledError:
            handle.cancel()  # the engine drops it at the next step and counts it
            raise

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Yield text deltas; closing the iterator early cancels the request."""
        handle = self.submit(request)
        finished = False
        try:
            yield from handle.iter_text()
            finished = True
        finally:
            if not finished:
                handle.cancel()

    async def astream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """Yield text deltas asynchronously; closing the iterator early cancels the request."""
        handle = await self.asubmit(request)
        iterator = handle.iter_text()
        sentinel = object()
        finished = False
        try:
            while True:
                delta = await asyncio.to_thread(next, iterator, sentinel)
                if delta is sentinel:
                    finished = True
                    return
                assert isinstance(delta, str)
                yield delta
        finally:
            if not finished:
                handle.cancel()

    def metrics_snapshot(self) -> EngineMetrics:
        """Counters, queue depth and cache statistics now."""
        with self._queue_lock:
            unfinished, waiting = self._unfinished, self.scheduler.queue_depth
        self.metrics.queue_depth = waiting
        # Everything submitted and not yet answered that is not waiting: decoding, or being
        # admitted (taken from the queue, its prompt not yet prefilled).
        self.metrics.running = max(0, unfinished - waiting)
        self.metrics.cache = self.feature_cache.stats()
        self.metrics.prefix_cache = self.prefix_cache.stats()
        return self.metrics

    @property
    def alive(self) -> bool:
        """Whether the engine can take requests."""
        return self._dead is None and not self._stopping.is_set()

    def close(self, *, cancel_running: bool = True, timeout: float = 30.0) -> None:
        """Stop the engine.

        Waiting requests are cancelled; running ones are cancelled too, or finish first when
        ``cancel_running`` is false (up to ``timeout`` seconds).
        """
        if not cancel_running:
            deadline = time.monotonic() + timeout
            while (self._running or self.scheduler.queue_depth) and time.monotonic() < deadline:
                time.sleep(0.01)
        self._stopping.set()
        self.scheduler.wake()
        self._thread.join(timeout)

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- request set-up ---------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._dead is not None:
            raise EngineDeadError(f"the engine stopped after an internal error: {self._dead}")
        if self._stopping.is_set():
            raise EngineDeadError("the engine is shut down; create a new one")

    def _deadline(self, request: GenerationRequest) -> float | None:
        timeout = request.timeout if request.timeout is not None else self.config.default_timeout
        return None if timeout is None else time.monotonic() + timeout

    def _processors_for(
        self, request: GenerationRequest, prepared: PreparedPrompt
    ) -> list[LogitsProcessor]:
        processors: list[LogitsProcessor] = list(prepared.logits_processors)
        if request.json_schema is not None:
            processors.append(self._grammar_factory().processor(request.json_schema))
        processors.extend(request.logits_processors)
        return processors

    def _grammar_factory(self) -> Any:
        with self._grammar_lock:
            if self._grammar is None:
                from mississippi_tools.engine.grammar import JSONGrammar

                self._grammar = JSONGrammar(
                    self.backend.tokenizer,
                    vocab_size=self.backend.vocab_size,
                    stop_token_ids=sorted(self.backend.stop_token_ids),
                )
            return self._grammar

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            torch.set_grad_enabled(False)
            while not self._stopping.is_set():
                if not self._running and not self.scheduler.queue_depth:
                    self.scheduler.wait_for_work(_IDLE_WAIT)
                    if self._stopping.is_set():
                        break
                self._step()
        except BaseException as e:  # the engine cannot go on: fail everyone, loudly
            logger.exception("engine loop died")
            self._dead = e
        finally:
            self._shutdown()

    def _step(self) -> None:
        now = time.monotonic()
        decision = self.scheduler.schedule(self._running, now)
        gone = {id(s) for s in decision.expired + decision.cancelled}
        for sequence in decision.expired:
            self._expire(sequence, now)
        for sequence in decision.cancelled:
            self._cancel(sequence)
        if gone:
            self._drop_running(lambda s: id(s) in gone)
        if decision.admit:
            self._admit(decision.admit)
        if self._running:
            self._decode()

    def _admit(self, sequences: list[_Sequence]) -> None:
        """Encode, prefill and join newcomers; every one of them ends up running or answered.

        The sequences are held in ``_admitting`` meanwhile, so that even an error escaping this
        method (which stops the engine) fails them instead of losing them.
        """
        self._admitting = list(sequences)
        try:
            self._admit_held(sequences)
        finally:
            self._admitting = []
        self._drop_running(lambda s: s.handle.future.done())

    def _admit_held(self, sequences: list[_Sequence]) -> None:
        now = time.monotonic()
        for sequence in sequences:
            sequence.admitted = now
            sequence.timings["queue"] = now - sequence.submitted
        # A cached image prefix makes both the vision encoder and the prefix prefill unneeded.
        prefixes = [self.runner.cached_prefix(s.prepared) for s in sequences]
        needing = [s.prepared for s, p in zip(sequences, prefixes, strict=True) if p is None]
        try:
            encoded = iter(self.runner.encode(needing))
        except Exception as e:
            for sequence in sequences:
                self._fail(sequence, _as_generation_error(e, sequence))
            return
        for sequence, prefix in zip(sequences, prefixes, strict=True):
            images = None if prefix is not None else next(encoded)
            sequence.cache_hit = prefix is not None or bool(images and images.cache_hit)
            sequence.timings["preprocess"] += images.render_seconds if images else 0.0
            sequence.timings["vision"] = images.vision_seconds if images else 0.0
            if self._end_if_gone(sequence, time.monotonic()):
                continue
            started = time.perf_counter()
            try:
                features = images.features if images else []
                logits, cache = self.runner.prefill(sequence.prepared, features, prefix)
                self.metrics.prompt_tokens += len(sequence.prepared.input_ids)
                token = self._choose(sequence, logits)
            except Exception as e:
                self._fail(sequence, _as_generation_error(e, sequence))
                continue
            sequence.timings["prefill"] = time.perf_counter() - started
            sequence.decode_started = time.perf_counter()
            self.runner.join(cache)
            self._running.append(sequence)
            self._accept(sequence, token)

    def _decode(self) -> None:
        live = [s for s in self._running if not s.cancelled]
        if len(live) != len(self._running):
            return  # cancelled rows leave at the next step boundary first
        tokens = [s.generated[-1] for s in self._running]
        positions = [s.next_position for s in self._running]
        try:
            logits = self.runner.decode(tokens, positions)
        except Exception as e:
            logger.exception("decode step failed; failing the running batch")
            for sequence in self._running:
                self._fail(sequence, _as_generation_error(e, sequence))
            self._running = []
            self.runner.reset()
            return
        self.metrics.decode_steps += 1
        size = len(self._running)
        self.metrics.batch_size_counts[size] = self.metrics.batch_size_counts.get(size, 0) + 1
        for row, sequence in enumerate(self._running):
            sequence.next_position += 1
            try:
                token = self._choose(sequence, logits[row])
            except Exception as e:
                self._fail(sequence, _as_generation_error(e, sequence))
                continue
            self._accept(sequence, token)
        self._drop_running(lambda s: s.handle.future.done())

    def _end_if_gone(self, sequence: _Sequence, now: float) -> bool:
        """End a cancelled or expired sequence now; whether it was."""
        if sequence.cancelled:
            self._cancel(sequence)
            return True
        if sequence.deadline is not None and now >= sequence.deadline:
            self._expire(sequence, now)
            return True
        return False

    def _expire(self, sequence: _Sequence, now: float) -> None:
        self.metrics.requests_expired += 1
        self._fail(
            sequence,
            DeadlineExceededError(
                f"request {sequence.request_id} passed its deadline after "
                f"{now - sequence.submitted:.1f} s ({len(sequence.generated)} tokens "
                "generated); raise the timeout or lower max_new_tokens",
                request_id=sequence.request_id,
            ),
        )

    def _cancel(self, sequence: _Sequence) -> None:
        self.metrics.requests_cancelled += 1
        self._fail(
            sequence,
            RequestCancelledError(
                f"request {sequence.request_id} was cancelled", request_id=sequence.request_id
            ),
        )

    def _choose(self, sequence: _Sequence, logits: torch.Tensor) -> int:
        params = sequence.request.sampling
        logits = logits.clone()
        for processor in sequence.processors:
            logits = processor(sequence.generated, logits)
        apply_repetition_penalty(logits, sequence.generated, params.repetition_penalty)
        if sequence.guard is not None:
            sequence.guard.ban(logits)
        token = sample_token(logits, params, sequence.generator)
        if sequence.request.logprobs:
            sequence.logprobs.append(float(torch.log_softmax(logits, dim=-1)[token]))
        return token

    def _accept(self, sequence: _Sequence, token: int) -> None:
        params = sequence.request.sampling
        self.metrics.generated_tokens += 1
        is_stop = token in self.backend.stop_token_ids and not params.ignore_eos
        if is_stop:
            if sequence.request.logprobs:
                sequence.logprobs.pop()
            self._finish(sequence, "stop")
            return
        sequence.generated.append(token)
        delta, hit_stop_string = sequence.stream.push(token)
        if delta:
            sequence.handle._push(delta)
        finished_grammar = any(
            getattr(p, "is_terminated", lambda: False)() for p in sequence.processors
        )
        if hit_stop_string or (finished_grammar and not params.ignore_eos):
            self._finish(sequence, "stop")
        elif sequence.guard is not None and sequence.guard.observe(token):
            self.metrics.requests_repetition += 1
            self._finish(sequence, "repetition")
        elif (
            len(sequence.generated) >= params.max_new_tokens
            or sequence.next_position + 1 >= self.backend.max_context
        ):
            self._finish(sequence, "length")

    def _finish(self, sequence: _Sequence, reason: FinishReason) -> None:
        text, tail = sequence.stream.finish()
        if tail:
            sequence.handle._push(tail)
        sequence.handle._push(None)
        timings = sequence.timings
        timings["decode"] = time.perf_counter() - sequence.decode_started
        timings["total"] = time.monotonic() - sequence.created
        output = GenerationOutput(
            text=text,
            token_ids=list(sequence.generated),
            finish_reason=reason,
            prompt_tokens=len(sequence.prepared.input_ids),
            tiles_per_image=[image.num_tiles for image in sequence.prepared.images],
            token_logprobs=list(sequence.logprobs) if sequence.request.logprobs else None,
            token_texts=list(sequence.stream.pieces)
            if sequence.stream.pieces is not None
            else None,
            raw_text=sequence.stream.raw_text,
            timings=dict(timings),
            cache_hit=sequence.cache_hit,
            model=self.backend.model_id,
            engine="local",
            request_id=sequence.request_id,
            repetition=sequence.guard.reason if reason == "repetition" and sequence.guard else None,
        )
        self.metrics.requests_finished += 1
        if not sequence.handle.future.done():
            sequence.handle.future.set_result(output)

    def _fail(self, sequence: _Sequence, error: BaseException) -> None:
        if isinstance(error, GenerationError) and not isinstance(
            error, RequestCancelledError | DeadlineExceededError
        ):
            self.metrics.requests_failed += 1
        sequence.handle._push(None)
        if not sequence.handle.future.done():
            sequence.handle.future.set_exception(error)

    def _drop_running(self, leave: Any) -> None:
        keep = [row for row, s in enumerate(self._running) if not leave(s)]
        if len(keep) == len(self._running):
            return
        self._running = [self._running[row] for row in keep]
        self.runner.keep(keep)

    def _shutdown(self) -> None:
        reason: MississippiError
        if self._dead is not None:
            reason = EngineDeadError(f"the engine stopped after an internal error: {self._dead}")
        else:
            reason = RequestCancelledError("the engine was shut down before this request finished")
        with self._queue_lock:
            self._closed = True
            waiting = self.scheduler.drain()
        for sequence in [*self._running, *self._admitting, *waiting]:
            self._fail(sequence, reason)
        self._running = []
        self._admitting = []
        self.runner.reset()


def _cancel_submitted(submitting: asyncio.Future[RequestHandle]) -> None:
    if not submitting.cancelled() and submitting.exception() is None:
        submitting.result().cancel()


def _as_generation_error(error: Exception, sequence: _Sequence) -> MississippiError:
    if isinstance(error, MississippiError):
        return error
    return GenerationError(
        f"request {sequence.request_id} failed: {type(error).__name__}: {error}",
        request_id=sequence.request_id,
    )
