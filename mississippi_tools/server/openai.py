r"""The OpenAI-compatible API: ``POST /v1/chat/completions`` and ``GET /v1/models``.

What a chat request may hold, and how it reaches the model:

- **Messages.** ``system``/``developer`` text is put before the first user turn (the model has no
  system role). Then user and assistant turns alternate (consecutive messages of one role are
  joined with a newline) and the last one is the user's: earlier pairs become the engine's
  history. Content is a string or a list of ``text`` and ``image_url`` parts; ``tool`` messages
  and tools are refused.
- **Images.** ``image_url.url`` is a ``data:`` URI, or an http(s) URL when the server runs with
  ``allow_urls`` (403 otherwise). Images at the start of a message are introduced the way the
  model was trained: ``<image>\n`` for one, ``Image-1: <image>\nImage-2: <image>\n`` for
  several; an image between text parts stands where it is.
- **Sampling.** ``max_tokens``/``max_completion_tokens``, ``temperature`` (default 0: the
  model's published greedy decoding), ``top_p``, ``seed``, ``stop``; vLLM's extensions ``top_k``,
  ``repetition_penalty`` and ``ignore_eos``.
- **Structured output.** ``response_format`` ``{"type": "json_schema", "json_schema": {"schema":
  ...}}`` constrains decoding to the schema (the answer always parses);
  ``{"type": "json_object"}`` to any JSON object.
- **Log-probabilities.** ``logprobs: true`` gives each generated token's log-probability
  (``top_logprobs`` alternatives are not computed).
- **Extensions** (vLLM's names where vLLM has them, so one client speaks to both):
  ``mm_processor_kwargs: {"max_dynamic_patch": N, "use_msac": bool}`` (tiling of this request),
  ``ocr_mode`` (the model's OCR decoding), ``timeout`` (seconds, capped by the server's),
  ``request_id``.

A completion carries, besides the OpenAI fields, a ``mississippi`` object: the request id, tiles
per image, whether the vision features came from the cache, per-stage timings and the token ids.
Streaming (``stream: true``) sends ``chat.completion.chunk`` events, the last one with the
``finish_reason``, ``logprobs`` and the ``mississippi`` object, then ``data: [DONE]``. A failure
during a stream is sent as an ``{"error": {...}}`` event before ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from mississippi_tools.engine.base import GenerationOutput, GenerationRequest, SamplingParams
from mississippi_tools.errors import InvalidInputError, MississippiError
from mississippi_tools.server.auth import require_api_key, require_vlm, service_state
from mississippi_tools.server.errors import ERROR_RESPONSES, error_body, status_for
from mississippi_tools.server.inputs import ImageSource, load_request_images
from mississippi_tools.server.state import ServiceState, generate, run_cancellable, submit
from mississippi_tools.serving import describe_compute
from mississippi_tools.tasks.ask import IMAGE_PLACEHOLDER
from mississippi_tools.vlm import MississippiVLM

__all__ = [
    "OWNED_BY",
    "ChatCompletionRequest",
    "Conversation",
    "build_conversation",
    "image_prefix",
    "router",
]

logger = logging.getLogger(__name__)

OWNED_BY = "mississippi-tools"
"""``owned_by`` of our models in ``/v1/models``; how clients recognise this server."""

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_END = object()


# -- request models -------------------------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class TextPart(_Lenient):
    """A text part of a message."""

    type: Literal["text"]
    text: str


class ImageURL(_Lenient):
    """Where an image is: a ``data:`` URI, or an http(s) URL when the server allows URLs."""

    url: str
    detail: str | None = None


class ImagePart(_Lenient):
    """An image part of a message."""

    type: Literal["image_url"]
    image_url: ImageURL | str


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Lenient):
    """One message of the conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class JSONSchemaSpec(_Lenient):
    """The ``json_schema`` of a ``response_format``."""

    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(_Lenient):
    """``{"type": "json_schema", "json_schema": {...}}``, ``{"type": "json_object"}`` or text."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaSpec | None = None


class StreamOptions(_Lenient):
    """Options of a streamed completion."""

    include_usage: bool = False


class MMProcessorKwargs(BaseModel):
    """Per-request tiling, with vLLM's names for the H2OVL processor."""

    model_config = ConfigDict(extra="forbid")

    max_dynamic_patch: int | None = Field(default=None, ge=1, le=40)
    """Most 448-px tiles per image (the model's default is 6)."""
    use_msac: bool | None = None
    """Multi-scale adaptive cropping (single image)."""


class ChatCompletionRequest(_Lenient):
    """An OpenAI chat completion request, with vLLM's and our extensions.

    Unknown fields are ignored, as OpenAI-compatible servers do.
    """

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    tools: list[dict[str, Any]] | None = None
    # vLLM's sampling extensions
    top_k: int | None = Field(default=None, ge=-1)
    repetition_penalty: float | None = Field(default=None, gt=0)
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    """``false`` keeps special tokens in the answer (region markup such as ``<ref>``/``<box>``)."""
    mm_processor_kwargs: MMProcessorKwargs | None = None
    # ours
    options: dict[str, Any] | None = None
    """Model options (``GET /v1/models`` lists the served model's, e.g. ``max_tiles``)."""
    ocr_mode: bool = False
    """Same as ``options: {"ocr_mode": true}`` (H2OVL models)."""
    timeout: float | None = Field(default=None, gt=0)
    request_id: str | None = None


# -- messages -> the engine's conversation --------------------------------------------------------


@dataclass
class Conversation:
    """A chat as the engine takes it.

    Attributes:
        prompt: The last user turn, with ``<image>`` placeholders.
        history: Earlier (question, answer) turns.
        images: The image sources in placeholder order.
    """

    prompt: str
    history: list[tuple[str, str]] = field(default_factory=list)
    images: list[ImageSource] = field(default_factory=list)


def image_prefix(count: int) -> str:
    r"""How ``count`` images at the start of a message are introduced (the model's convention).

    ``"<image>\n"`` for one, ``"Image-1: <image>\nImage-2: <image>\n"`` for several: what the
    engine writes itself for images without placeholders.
    """
    if count == 0:
        return ""
    if count == 1:
        return IMAGE_PLACEHOLDER + "\n"
    return "".join(f"Image-{i}: {IMAGE_PLACEHOLDER}\n" for i in range(1, count + 1))


_Part = tuple[Literal["text"], str] | tuple[Literal["image"], ImageSource]


def _parts(message: ChatMessage) -> list[_Part]:
    content = message.content
    if content is None:
        return []
    if isinstance(content, str):
        return [("text", content)]
    parts: list[_Part] = []
    for part in content:
        if isinstance(part, TextPart):
            parts.append(("text", part.text))
        else:
            url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
            parts.append(("image", url))
    return parts


def _render(parts: Sequence[_Part]) -> tuple[str, list[ImageSource]]:
    leading: list[ImageSource] = []
    index = 0
    while index < len(parts) and parts[index][0] == "image":
        leading.append(parts[index][1])
        index += 1
    text = image_prefix(len(leading))
    inline: list[ImageSource] = []
    previous = "image"
    for kind, value in parts[index:]:
        if kind == "image":
            text += IMAGE_PLACEHOLDER
            inline.append(value)
        else:
            assert isinstance(value, str)
            text += ("\n" if previous == "text" else "") + value
        previous = kind
    return text, leading + inline


def _text_only(parts: Sequence[_Part], role: str) -> str:
    if any(kind == "image" for kind, _ in parts):
        raise InvalidInputError(f"{role} messages cannot hold images; put them in a user message")
    return "\n".join(str(value) for _, value in parts)


def build_conversation(messages: Sequence[ChatMessage]) -> Conversation:
    """Turn OpenAI messages into the engine's prompt, history and images.

    Raises:
        InvalidInputError: Tool messages, images outside user messages, no user message, or a
            conversation that does not end with the user.
    """
    system: list[str] = []
    turns: list[tuple[str, list[_Part]]] = []
    for message in messages:
        role = message.role
        if role in ("tool", "function"):
            raise InvalidInputError(
                f"{role} messages are not supported: this model does not call tools"
            )
        parts = _parts(message)
        if role in ("system", "developer"):
            text = _text_only(parts, role)
            if text.strip():
                system.append(text)
            continue
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(parts)  # adjacent text parts are joined with a newline
        else:
            turns.append((role, list(parts)))
    if not turns or turns[-1][0] != "user":
        raise InvalidInputError(
            "the conversation must end with a user message (the question to answer)"
        )
    if turns[0][0] != "user":
        raise InvalidInputError("the conversation must start with a user message")
    images: list[ImageSource] = []
    rendered: list[str] = []
    for turn_role, parts in turns:
        if turn_role == "user":
            turn_text, turn_images = _render(parts)
            images.extend(turn_images)
        else:
            turn_text = _text_only(parts, turn_role)
        rendered.append(turn_text)
    if system:
        rendered[0] = "\n\n".join(system) + "\n\n" + rendered[0]
    history = [(rendered[i], rendered[i + 1]) for i in range(0, len(rendered) - 1, 2)]
    return Conversation(prompt=rendered[-1], history=history, images=images)


# -- request -> GenerationRequest --------------------------------------------------------------


def _json_schema(body: ChatCompletionRequest) -> dict[str, Any] | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object", "additionalProperties": True}
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise InvalidInputError(
            "response_format of type json_schema needs json_schema.schema: "
            '{"type": "json_schema", "json_schema": {"name": "...", "schema": {...}}}'
        )
    return fmt.json_schema.schema_


def _check_supported(body: ChatCompletionRequest) -> None:
    if body.n != 1:
        raise InvalidInputError(f"n={body.n} is not supported; ask for one choice (n=1)")
    if body.tools:
        raise InvalidInputError("tools are not supported: this model does not call tools")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(body, name)
        if value:
            raise InvalidInputError(
                f"{name}={value} is not supported; use repetition_penalty (vLLM's extension)"
            )
    if body.logit_bias:
        raise InvalidInputError("logit_bias is not supported")
    if body.top_logprobs:
        raise InvalidInputError(
            "top_logprobs is not supported; logprobs=true gives each chosen token's log-probability"
        )


def _request_id(body: ChatCompletionRequest) -> str:
    if body.request_id and _REQUEST_ID.fullmatch(body.request_id):
        return body.request_id
    return uuid.uuid4().hex[:16]


def _timeout(body: ChatCompletionRequest, state: ServiceState) -> float | None:
    limits = [t for t in (body.timeout, state.request_timeout) if t is not None]
    return min(limits) if limits else None


def _stop(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    if len(stops) > 16:
        raise InvalidInputError(f"at most 16 stop strings, got {len(stops)}")
    return stops


async def build_generation_request(
    body: ChatCompletionRequest, state: ServiceState
) -> GenerationRequest:
    """The engine request for a chat completion (images decoded in a worker thread)."""
    _check_supported(body)
    conversation = build_conversation(body.messages)
    images = await load_request_images(conversation.images, state)
    mm = body.mm_processor_kwargs or MMProcessorKwargs()
    max_tokens = body.max_completion_tokens or body.max_tokens or state.settings.default_max_tokens
    sampling = SamplingParams(
        max_new_tokens=max_tokens,
        temperature=0.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=max(0, body.top_k or 0),
        repetition_penalty=body.repetition_penalty or 1.0,
        seed=body.seed,
        stop=_stop(body.stop),
        ignore_eos=body.ignore_eos,
        skip_special_tokens=body.skip_special_tokens,
    )
    # vLLM's processor names for H2OVL, and our ocr_mode flag, are spellings of model options.
    spelled = {
        "max_tiles": mm.max_dynamic_patch,
        "use_msac": mm.use_msac,
        "ocr_mode": body.ocr_mode or None,
    }
    options = {k: v for k, v in spelled.items() if v is not None} | (body.options or {})
    return GenerationRequest(
        prompt=conversation.prompt,
        images=images,
        history=conversation.history,
        sampling=sampling,
        options=options,
        json_schema=_json_schema(body),
        logprobs=body.logprobs,
        timeout=_timeout(body, state),
        request_id=_request_id(body),
    )


# -- responses ----------------------------------------------------------------------------------


def _finish_reason(output: GenerationOutput) -> str:
    return "length" if output.finish_reason == "length" else "stop"


def _logprobs(output: GenerationOutput) -> dict[str, Any] | None:
    if output.token_logprobs is None:
        return None
    texts = output.token_texts or [""] * len(output.token_logprobs)
    return {
        "content": [
            {"token": text, "logprob": logprob, "bytes": list(text.encode()), "top_logprobs": []}
            for text, logprob in zip(texts, output.token_logprobs, strict=False)
        ]
    }


def _extension(output: GenerationOutput) -> dict[str, Any]:
    return {
        "request_id": output.request_id,
        "engine": output.engine,
        "tiles_per_image": output.tiles_per_image,
        "cache_hit": output.cache_hit,
        "timings": output.timings,
        "token_ids": output.token_ids,
        "finish_reason": output.finish_reason,
    }


def _usage(output: GenerationOutput) -> dict[str, int]:
    completion = len(output.token_ids)
    return {
        "prompt_tokens": output.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": output.prompt_tokens + completion,
    }


def completion_body(output: GenerationOutput, model: str, request_id: str) -> dict[str, Any]:
    """The ``chat.completion`` object of an output."""
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": output.text},
                "logprobs": _logprobs(output),
                "finish_reason": _finish_reason(output),
            }
        ],
        "usage": _usage(output),
        "mississippi": _extension(output),
    }


def _chunk(request_id: str, model: str, created: int, **choice: Any) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "logprobs": None, "finish_reason": None, **choice}],
    }


def _event(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _stream_events(
    handle: Any,
    state: ServiceState,
    *,
    request_id: str,
    model: str,
    include_usage: bool,
) -> AsyncIterator[str]:
    """SSE events of a submitted local-engine request; closing early cancels it."""
    loop = asyncio.get_running_loop()
    created = int(time.time())
    iterator: Iterator[str] = handle.iter_text()
    finished = False
    try:
        yield _event(_chunk(request_id, model, created, delta={"role": "assistant", "content": ""}))
        while True:
            delta = await loop.run_in_executor(state.stream_pool, next, iterator, _END)
            if delta is _END:
                break
            yield _event(_chunk(request_id, model, created, delta={"content": delta}))
        output: GenerationOutput = handle.future.result()
        finished = True
        final = _chunk(
            request_id,
            model,
            created,
            delta={},
            finish_reason=_finish_reason(output),
            logprobs=_logprobs(output),
        )
        final["mississippi"] = _extension(output)
        yield _event(final)
        if include_usage:
            usage = _chunk(request_id, model, created)
            usage["choices"] = []
            usage["usage"] = _usage(output)
            yield _event(usage)
        yield "data: [DONE]\n\n"
    except MississippiError as e:
        finished = True
        status = status_for(e)
        yield _event(error_body(status, e.code, e.message))
        yield "data: [DONE]\n\n"
    finally:
        if not finished:
            handle.cancel()


async def _generic_stream_events(
    first: str | None,
    deltas: AsyncIterator[str],
    *,
    request_id: str,
    model: str,
) -> AsyncIterator[str]:
    """SSE events for an engine without :meth:`submit` (no usage or token details)."""
    created = int(time.time())
    try:
        yield _event(_chunk(request_id, model, created, delta={"role": "assistant", "content": ""}))
        if first is not None:
            yield _event(_chunk(request_id, model, created, delta={"content": first}))
            async for delta in deltas:
                yield _event(_chunk(request_id, model, created, delta={"content": delta}))
        yield _event(_chunk(request_id, model, created, delta={}, finish_reason="stop"))
        yield "data: [DONE]\n\n"
    except MississippiError as e:
        yield _event(error_body(status_for(e), e.code, e.message))
        yield "data: [DONE]\n\n"
    finally:
        aclose = getattr(deltas, "aclose", None)
        if aclose is not None:
            await aclose()


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _stream_response(
    vlm: MississippiVLM,
    request: GenerationRequest,
    state: ServiceState,
    *,
    include_usage: bool,
) -> StreamingResponse:
    model = state.model_name
    headers = {**_SSE_HEADERS, "X-Request-ID": request.request_id}
    if hasattr(vlm.engine, "submit"):
        # Submitting first: a full queue or a bad request is a plain JSON error with its status.
        handle = await submit(vlm.engine, request)
        events = _stream_events(
            handle, state, request_id=request.request_id, model=model, include_usage=include_usage
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    deltas = vlm.engine.astream(request)
    try:
        first: str | None = await deltas.__anext__()
    except StopAsyncIteration:
        first = None
    events = _generic_stream_events(first, deltas, request_id=request.request_id, model=model)
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


# -- routes -------------------------------------------------------------------------------------

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["OpenAI-compatible"])


@router.get("/v1/models", summary="The served model")
async def list_models(
    request: Request, vlm: Annotated[MississippiVLM, Depends(require_vlm)]
) -> dict[str, Any]:
    """The one model this server runs, OpenAI style (``owned_by`` is ``mississippi-tools``)."""
    state = service_state(request)
    info = vlm.engine.model_info
    card: dict[str, Any] = {
        "id": state.model_name,
        "object": "model",
        "created": int(state.started),
        "owned_by": OWNED_BY,
        "root": vlm.model_id,
        "max_model_len": info.max_context,
        "mississippi": {
            "engine": vlm.engine.name,
            **describe_compute(vlm),
            "supports_grammar": vlm.engine.supports_grammar,
            "family": info.family,
            "max_context": info.max_context,
            "instruction_tuned": info.instruction_tuned,
            "max_images": info.max_images,
            "regions": info.regions,
            "options": [
                {
                    "name": o.name,
                    "type": o.kind.__name__,
                    "description": o.description,
                    "minimum": o.minimum,
                    "maximum": o.maximum,
                    "choices": list(o.choices),
                }
                for o in info.options
            ],
        },
    }
    return {"object": "list", "data": [card]}


@router.post(
    "/v1/chat/completions",
    summary="Chat completion with images (OpenAI-compatible)",
    responses={
        200: {"description": "A chat.completion object, or an SSE stream of chunks"},
        **ERROR_RESPONSES,
    },
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    vlm: Annotated[MississippiVLM, Depends(require_vlm)],
) -> Response:
    """Answer a conversation with images, like OpenAI's endpoint (see the module docs)."""
    state = service_state(request)
    generation = await build_generation_request(body, state)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await _stream_response(vlm, generation, state, include_usage=include_usage)
    output = await run_cancellable(request, generate(vlm.engine, generation))
    return JSONResponse(
        completion_body(output, state.model_name, generation.request_id),
        headers={"X-Request-ID": generation.request_id},
    )
