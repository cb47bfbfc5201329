"""A task route's answer as it is written: ``POST /v1/<task>`` with ``"stream": true``.

The task's plan (:meth:`~mississippi_tools.MississippiVLM.plan`) is driven here step by step
instead of by :func:`~mississippi_tools.tasks.base.arun_plan`, so that the text of each
generation reaches the client while the model writes it, and the typed result follows. The
answer is a server-sent event stream (``text/event-stream``) of JSON objects, one per
``data:`` line, each with one key:

- ``{"delta": "..."}``: text the model wrote (with a local engine, as it is written; with a
  remote one, the whole answer at once);
- ``{"retry": {"attempt": 2}}``: the task sends another request (the answer looped, or an
  extraction did not validate); the text written so far is dropped;
- ``{"result": {...}}``: the task's typed result, the body the route answers without ``stream``;
- ``{"error": {...}, "status": 422}``: the failure, with the body and status the route answers
  without ``stream``;

then ``data: [DONE]``. A failure before the first event (an unreadable image, bad arguments, a
full queue) is a plain JSON error with its status, as without ``stream``. Closing the stream
cancels the generation.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

from fastapi.responses import StreamingResponse

from mississippi_tools.engine.base import GenerationOutput, GenerationRequest
from mississippi_tools.errors import MississippiError
from mississippi_tools.images import LoadedImage
from mississippi_tools.server.errors import error_content, status_for
from mississippi_tools.server.state import ServiceState, generate, submit
from mississippi_tools.tasks.base import BatchPlan, RequestBatch, TaskPlan
from mississippi_tools.vlm import MississippiVLM

__all__ = ["stream_task"]

_END = object()
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _event(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class _Streamer:
    """Drives one plan against the served engine, yielding the events of the module docstring."""

    def __init__(self, vlm: MississippiVLM, state: ServiceState) -> None:
        self.engine = vlm.engine
        self.state = state
        self.handle: Any = None  # the local engine's handle of the request being written

    async def start(self, request: GenerationRequest) -> None:
        """Submit a request to a local engine now (a full queue fails before the stream starts)."""
        if hasattr(self.engine, "submit"):
            self.handle = await submit(self.engine, request)

    async def texts(self, request: GenerationRequest) -> AsyncIterator[str | GenerationOutput]:
        """The request's text as it is written, then its output."""
        if self.handle is None and hasattr(self.engine, "submit"):
            await self.start(request)
        if self.handle is None:  # an engine without handles: the whole answer at once
            output = await generate(self.engine, request)
            if output.text:
                yield output.text
            yield output
            return
        handle, loop = self.handle, asyncio.get_running_loop()
        iterator: Iterator[str] = handle.iter_text()
        while True:
            delta = await loop.run_in_executor(self.state.stream_pool, next, iterator, _END)
            if delta is _END:
                break
            assert isinstance(delta, str)
            yield delta
        self.handle = None
        finished: GenerationOutput = await asyncio.wrap_future(handle.future)
        yield finished

    async def batch(self, step: RequestBatch) -> list[GenerationOutput | MississippiError]:
        """The outputs of a batch step (not streamed: its requests are written side by side)."""

        async def one(request: GenerationRequest) -> GenerationOutput | MississippiError:
            try:
                return await generate(self.engine, request)
            except MississippiError as e:
                return e

        return list(await asyncio.gather(*(one(request) for request in step.requests)))

    async def events(self, plan: TaskPlan[Any], first: Any) -> AsyncIterator[str]:
        """The events of the plan, from its first step (already submitted when it is a request)."""
        step, attempt = first, 1
        try:
            while True:
                if isinstance(step, GenerationRequest):
                    output: GenerationOutput | None = None
                    async for item in self.texts(step):
                        if isinstance(item, str):
                            yield _event({"delta": item})
                        else:
                            output = item
                    assert output is not None
                    step = plan.handle(output)
                elif isinstance(step, RequestBatch):
                    outputs = await self.batch(step)
                    step = cast("BatchPlan[Any]", plan).handle_batch(outputs)
                else:
                    yield _event({"result": step.model_dump(mode="json")})
                    break
                if isinstance(step, GenerationRequest | RequestBatch):
                    attempt += 1
                    yield _event({"retry": {"attempt": attempt}})
        except MississippiError as e:
            yield _event({**error_content(e), "status": status_for(e)})
        finally:
            if self.handle is not None:
                self.handle.cancel()  # the client left: stop writing for nobody
                self.handle = None
        yield "data: [DONE]\n\n"


async def stream_task(
    vlm: MississippiVLM,
    task: str,
    target: LoadedImage | list[LoadedImage] | None,
    state: ServiceState,
    **kwargs: Any,
) -> StreamingResponse:
    """The streamed answer of ``task`` on ``target`` (see the module docstring).

    Args:
        vlm: The served model.
        task: The task's name.
        target: The request's image(s), already decoded.
        state: The service's state (its worker pool reads the engine's text).
        kwargs: The task's arguments and run settings, as for
            :meth:`~mississippi_tools.MississippiVLM.arun`.

    Raises:
        MississippiError: What fails before the stream starts (bad arguments, a full queue).
    """
    plan = await asyncio.to_thread(vlm.plan, task, target, **kwargs)
    streamer = _Streamer(vlm, state)
    first = plan.first_request()
    if isinstance(first, GenerationRequest):
        await streamer.start(first)
    return StreamingResponse(
        streamer.events(plan, first), media_type="text/event-stream", headers=_SSE_HEADERS
    )
