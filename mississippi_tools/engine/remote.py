"""The remote engine: the task API over HTTP, against our server, vLLM or any OpenAI-compatible one.

:class:`RemoteEngine` sends each :class:`~mississippi_tools.engine.base.GenerationRequest` to
``POST {base_url}/v1/chat/completions``: images as PNG ``data:`` URIs (lossless, so the server sees
the same pixels and its vision-feature cache hits), history as alternating user and assistant
messages, sampling as the OpenAI fields.

What the server is decides what else is sent. ``GET /v1/models`` tells (its ``owned_by``):

==================  =============================================================================
``mississippi-tools``  our server: everything below, plus ``ocr_mode``, ``timeout`` and
                       ``request_id``; its completions carry tiles, cache hits, timings and token
                       ids in a ``mississippi`` object
``vllm``               ``response_format`` json_schema (structured outputs), ``mm_processor_kwargs``
                       (``max_dynamic_patch``, ``use_msac``: vLLM's H2OVL processor honours both;
                       ``size.longest_edge`` for Idefics3),
                       ``top_k``, ``repetition_penalty``, ``ignore_eos``, ``return_token_ids``
anything else          only standard OpenAI fields; no grammar, so JSON extraction falls back to
                       parse, repair and retry with the validation errors
==================  =============================================================================

``structured_outputs`` overrides the detection of grammar support: ``True`` for a server known to
honour ``response_format`` json_schema (SGLang, a proxy in front of vLLM), ``False`` to never send
it.

Failures are mapped once, at the boundary (:func:`_error_for_status`, :func:`_error_for_transport`):

- connection failures and timeouts: :class:`~mississippi_tools.errors.RemoteConnectionError`
  (a timeout within the request's own ``timeout``:
  :class:`~mississippi_tools.errors.DeadlineExceededError`);
- 429 after the retries: :class:`~mississippi_tools.errors.QueueFullError` with the server's
  ``Retry-After``, the same error the local engine raises when its queue is full, so callers
  handle "busy" one way;
- 504, or the ``deadline_exceeded`` code: :class:`~mississippi_tools.errors.DeadlineExceededError`;
- any other error status: :class:`~mississippi_tools.errors.RemoteStatusError` with the status,
  the server's stable error code (our server always sends one) and the decoded body.

429, 502 and 503 and failed connections are retried ``max_retries`` times with exponential
backoff and jitter, honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import random
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx

from mississippi_tools.engine.base import (
    Engine,
    FinishReason,
    GenerationOutput,
    GenerationRequest,
)
from mississippi_tools.errors import (
    DeadlineExceededError,
    InvalidInputError,
    MississippiError,
    QueueFullError,
    RemoteConnectionError,
    RemoteStatusError,
)
from mississippi_tools.models.base import ModelInfo, ModelOption, validate_options
from mississippi_tools.models.registry import GENERIC_FAMILY, family_for_model_name

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "RemoteEngine",
    "ServerInfo",
    "ServerKind",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300.0
"""Seconds to wait for one answer."""
DEFAULT_MAX_RETRIES = 3
"""Retries on 429, 502, 503 and failed connections."""
DEFAULT_BACKOFF = 0.5
"""Seconds before the first retry (doubled each time, with jitter)."""
DEFAULT_MAX_BACKOFF = 30.0
"""Longest wait between two attempts (also caps ``Retry-After``)."""

ServerKind = Literal["mississippi", "vllm", "unknown"]
"""What answers at the base URL."""

_IMAGE = "<image>"
_RETRY_STATUSES = frozenset({429, 502, 503})
_OWNERS: dict[str, ServerKind] = {"mississippi-tools": "mississippi", "vllm": "vllm"}
_CONNECT_TIMEOUT = 10.0
_DEADLINE_SLACK = 5.0
_ENCODED_CACHE_SIZE = 16


@dataclass(frozen=True)
class ServerInfo:
    """What ``GET /v1/models`` told about the server.

    Attributes:
        kind: ``mississippi`` (our server), ``vllm`` or ``unknown``.
        model: The model name to send.
        models: Every model the server lists.
        model_info: The served model's family, options and limits.
    """

    kind: ServerKind
    model: str
    models: tuple[str, ...] = ()
    model_info: ModelInfo | None = None


#: How vLLM's multimodal processors take our model options, per family (``mm_processor_kwargs``).
_VLLM_PROCESSOR_OPTIONS: dict[str, dict[str, ModelOption]] = {
    "h2ovl": {
        "max_dynamic_patch": ModelOption(
            "max_tiles", int, "most 448-px tiles per image", minimum=1, maximum=40
        ),
        "use_msac": ModelOption("use_msac", bool, "multi-scale adaptive cropping (one image)"),
    },
    # -- Idefics3 -------------------------------------------------------------------------------
    # vLLM's Idefics3 processor takes ``size={"longest_edge": N}`` (N a multiple of the 364-px
    # tile; vllm/model_executor/models/idefics3.py, Idefics3ProcessingInfo.get_hf_processor and
    # _get_image_feature_grid_size). It counts image tokens with splitting on, so
    # do_image_splitting is not offered. A dotted key is a nested kwarg.
    "idefics3": {
        "size.longest_edge": ModelOption(
            "longest_edge",
            int,
            "longest image side before tiling, a multiple of 364 (vLLM's default: the "
            "checkpoint's 1456)",
            minimum=364,
            maximum=4004,
        ),
    },
}


def remote_model_info(
    kind: ServerKind, model: str, entry: Mapping[str, Any], family: str | None
) -> ModelInfo:
    """The :class:`ModelInfo` of a served model, from its ``/v1/models`` entry.

    Our server describes its model in the entry's ``mississippi`` object; for others the family
    comes from ``family`` or the model's name, and the options from what the server is known to
    accept (vLLM: its processors' ``mm_processor_kwargs``).
    """
    described = entry.get("mississippi")
    if kind == "mississippi" and isinstance(described, Mapping):
        options = tuple(
            ModelOption(
                str(o["name"]),
                _OPTION_KINDS.get(str(o.get("type")), str),
                str(o.get("description", "")),
                minimum=o.get("minimum"),
                maximum=o.get("maximum"),
                choices=tuple(o.get("choices") or ()),
            )
            for o in described.get("options", [])
            if isinstance(o, Mapping) and "name" in o
        )
        return ModelInfo(
            model_id=model,
            family=family or str(described.get("family") or GENERIC_FAMILY),
            kind="remote",
            max_context=int(described.get("max_context") or 8192),
            instruction_tuned=bool(described.get("instruction_tuned", True)),
            max_images=described.get("max_images"),
            options=options,
            regions=bool(described.get("regions", False)),
        )
    family = family or family_for_model_name(model)
    vllm_options = _VLLM_PROCESSOR_OPTIONS.get(family, {}) if kind == "vllm" else {}
    context = entry.get("max_model_len")
    return ModelInfo(
        model_id=model,
        family=family,
        kind="remote",
        max_context=int(context) if isinstance(context, int) and context > 0 else 8192,
        options=tuple(vllm_options.values()),
    )


_OPTION_KINDS: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}


# -- the boundary: httpx failures and error statuses -> our errors -------------------------------


def _error_for_transport(
    error: httpx.TransportError, url: str, *, timeout: float, deadline: float | None
) -> MississippiError:
    """The error for a failed connection or a timeout."""
    if isinstance(error, httpx.TimeoutException):
        if deadline is not None and not isinstance(error, httpx.ConnectTimeout):
            return DeadlineExceededError(
                f"{url} did not answer within the request's timeout of {deadline:g} s; raise "
                "the timeout or lower max_new_tokens"
            )
        return RemoteConnectionError(
            f"{url} did not answer within {timeout:g} s ({type(error).__name__}); the server "
            "may be overloaded: raise timeout= or lower max_new_tokens"
        )
    return RemoteConnectionError(
        f"cannot reach {url}: {error or type(error).__name__}; is the server running, and is "
        "base_url right?"
    )


def _decode_error_body(response: httpx.Response) -> tuple[Any, str | None, str]:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return None, None, text[:300] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):  # OpenAI shape (ours, vLLM >= 0.10)
        code = error.get("code")
        message = str(error.get("message") or response.reason_phrase)
        return body, None if code is None else str(code), message
    if isinstance(body, dict) and "message" in body:  # older vLLM: {"object": "error", ...}
        code = body.get("code")
        return body, None if code is None else str(code), str(body["message"])
    if isinstance(body, dict) and "detail" in body:  # plain FastAPI
        return body, None, str(body["detail"])
    return body, None, response.text[:300]


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_for_status(response: httpx.Response, url: str) -> MississippiError:
    """The error for an error status."""
    body, code, message = _decode_error_body(response)
    status = response.status_code
    where = f"{url} answered {status}" + (f" ({code})" if code else "")
    if status == 429:
        retry_after = _retry_after(response) or 1.0
        return QueueFullError(
            f"{where}: {message}; the server is busy, retry in {retry_after:g} s",
            retry_after=retry_after,
        )
    if status == 504 or code == "deadline_exceeded":
        return DeadlineExceededError(f"{where}: {message}")
    hint = ""
    if status == 401:
        hint = "; pass the server's key as api_key="
    elif status == 404 and "/models" not in url:
        hint = "; check base_url, and model= against GET /v1/models"
    return RemoteStatusError(
        f"{where}: {message}{hint}", status_code=status, error_code=code, body=body
    )


# -- pure request/response translation ---------------------------------------------------------


def _png_data_uri(image: LoadedImage) -> str:
    buffer = io.BytesIO()
    image.image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_prefix(count: int) -> str:
    if count == 1:
        return _IMAGE + "\n"
    return "".join(f"Image-{i}: {_IMAGE}\n" for i in range(1, count + 1))


def _image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def _content(
    text: str, urls: Iterator[str], placeholders: int, leading: Sequence[str] = ()
) -> str | list[dict[str, Any]]:
    r"""One user message: leading images, then the text with its placeholders as image parts.

    Image parts at the start of a message stand for the model's introduction of images
    (``<image>\n``, or ``Image-1: <image>\n...``), so a prompt that starts with that block sends
    its images first; an empty text part in front of an image marks a placeholder that really
    is at the start, without the introduction.
    """
    if not leading and not placeholders:
        return text
    parts = [_image_part(url) for url in leading]
    for count in sorted({placeholders, 1}, reverse=True):
        if 0 < count <= placeholders and text.startswith(_image_prefix(count)):
            parts.extend(_image_part(next(urls)) for _ in range(count))
            text = text[len(_image_prefix(count)) :]
            break
    pieces = text.split(_IMAGE)
    for i, piece in enumerate(pieces):
        if piece or (i == 0 and len(pieces) > 1):
            parts.append({"type": "text", "text": piece})
        if i < len(pieces) - 1:
            parts.append(_image_part(next(urls)))
    return parts


def build_messages(
    prompt: str, history: Sequence[tuple[str, str]], image_urls: Sequence[str]
) -> list[dict[str, Any]]:
    r"""OpenAI messages for a prompt, its history and its images (as URLs).

    ``<image>`` placeholders in the history and prompt become image parts where they stand
    (a leading ``<image>\n`` or ``Image-1: <image>\n...`` block becomes leading image parts,
    which our server and vLLM turn back into the same text). Without placeholders the images go
    first in the last message, as the local engine puts them.

    Raises:
        InvalidInputError: The placeholders do not match the images.
    """
    counts = [question.count(_IMAGE) for question, _ in history] + [prompt.count(_IMAGE)]
    total = sum(counts)
    if total and total != len(image_urls):
        raise InvalidInputError(
            f"the prompt has {total} {_IMAGE} placeholder(s) for {len(image_urls)} image(s); put "
            f"one {_IMAGE} where each image belongs, or none to let the images go first"
        )
    urls = iter(image_urls)
    messages: list[dict[str, Any]] = []
    for (question, answer), count in zip(history, counts, strict=False):
        messages.append({"role": "user", "content": _content(question, urls, count)})
        messages.append({"role": "assistant", "content": answer})
    leading = list(image_urls) if not total else []
    messages.append({"role": "user", "content": _content(prompt, urls, counts[-1], leading)})
    return messages


def _finish_reason(value: Any) -> FinishReason:
    if value == "length":
        return "length"
    if value in ("abort", "cancelled"):
        return "cancelled"
    if value == "repetition":  # our server's extension: the answer looped
        return "repetition"
    return "stop"


def _parse_completion(
    data: Mapping[str, Any], request: GenerationRequest, elapsed: float
) -> GenerationOutput:
    """A completion object as a :class:`GenerationOutput`."""
    try:
        choice = data["choices"][0]
        content = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise RemoteStatusError(
            f"the server's answer is not a chat completion (no choices[0].message): {e!r}",
            status_code=200,
            body=data,
        ) from None
    usage = data.get("usage") or {}
    extension = data.get("mississippi") or {}
    completion_tokens = int(usage.get("completion_tokens") or 0)
    token_ids = extension.get("token_ids") or choice.get("token_ids")
    if token_ids is None:  # the server does not say: their count, unknown ids
        token_ids = [-1] * completion_tokens
    token_texts: list[str] | None = None
    token_logprobs: list[float] | None = None
    logprobs = (choice.get("logprobs") or {}).get("content")
    if request.logprobs and logprobs:
        token_texts = [str(entry.get("token", "")) for entry in logprobs]
        token_logprobs = [float(entry.get("logprob", 0.0)) for entry in logprobs]
    timings = {k: float(v) for k, v in (extension.get("timings") or {}).items()}
    timings["remote"] = elapsed
    timings.setdefault("total", elapsed)
    return GenerationOutput(
        text=content.strip(),
        token_ids=[int(t) for t in token_ids],
        finish_reason=_finish_reason(extension.get("finish_reason") or choice.get("finish_reason")),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        tiles_per_image=[int(t) for t in extension.get("tiles_per_image") or []],
        token_logprobs=token_logprobs,
        token_texts=token_texts,
        raw_text="".join(token_texts) if token_texts is not None else content,
        timings=timings,
        cache_hit=bool(extension.get("cache_hit", False)),
        model=str(data.get("model") or ""),
        engine="remote",
        request_id=str(extension.get("request_id") or request.request_id),
    )


def _sse_data(line: str) -> str | None:
    """The payload of an SSE ``data:`` line (``None`` for other lines)."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def _stream_error(data: Any, url: str) -> MississippiError | None:
    """The error an SSE error event reports, if this is one."""
    if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
        return None
    error = data["error"]
    code = error.get("code")
    message = str(error.get("message", "the server reported an error"))
    if code == "queue_full":
        return QueueFullError(f"{url}: {message}")
    if code == "deadline_exceeded":
        return DeadlineExceededError(f"{url}: {message}")
    return RemoteStatusError(
        f"{url} failed during the stream ({code}): {message}",
        status_code=200,
        error_code=None if code is None else str(code),
        body=data,
    )


def _stream_delta(payload: str, url: str) -> str | None:
    """The text of one stream chunk; raises the error of an error event."""
    try:
        data = json.loads(payload)
    except ValueError as e:
        raise RemoteStatusError(
            f"{url} sent a stream event that is not JSON: {e}", status_code=200
        ) from None
    error = _stream_error(data, url)
    if error is not None:
        raise error
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices:
        return None
    delta = choices[0].get("delta") or {}
    text = delta.get("content")
    return str(text) if text else None


# -- the engine ---------------------------------------------------------------------------------


class RemoteEngine(Engine):
    """Runs requests on an OpenAI-compatible server: ``mississippi-tools serve``, vLLM, others.

    Setup:
        .. code-block:: bash

            pip install mississippi-tools        # httpx is all the remote engine needs

    Instantiate:
        .. code-block:: python

            from mississippi_tools import MississippiVLM

            vlm = MississippiVLM.connect("http://127.0.0.1:8090", api_key="...")
            # or the engine itself:
            engine = RemoteEngine("http://gpu-box:8000", model="h2oai/h2ovl-mississippi-800m")

    Invoke:
        .. code-block:: python

            vlm.ocr("scan.png").text          # every task works as with a local model
            engine.generate(GenerationRequest("Describe it.", images=[image]))

    Async:
        .. code-block:: python

            await vlm.aocr("scan.png")

    Args:
        base_url: The server, e.g. ``http://127.0.0.1:8090`` (a trailing ``/v1`` is accepted).
        api_key: Bearer token, when the server requires one.
        model: The served model name (default: the first one ``GET /v1/models`` lists).
        timeout: Seconds to wait for one answer.
        max_retries: Retries on 429, 502, 503 and failed connections.
        structured_outputs: Whether the server honours ``response_format`` json_schema;
            ``None`` detects it (our server and vLLM do; others are assumed not to).
        backoff: Seconds before the first retry; doubled each time, with jitter.
        max_backoff: Longest wait between attempts (also caps ``Retry-After``).
        headers: Extra headers sent with every request.
        transport: httpx transport for the blocking client (tests, proxies).
        async_transport: httpx transport for the async clients.
        family: The served model's family (``h2ovl``, ``idefics3`` ...), which decides how tasks
            are prompted; default: what our server reports, else guessed from the model's name
            (``generic`` when unknown: plain chat prompts).
    """

    name = "remote"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        structured_outputs: bool | None = None,
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        family: str | None = None,
    ) -> None:
        if timeout <= 0:
            raise InvalidInputError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise InvalidInputError(f"max_retries must be >= 0, got {max_retries}")
        root = base_url.strip().rstrip("/")
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        if not root.startswith(("http://", "https://")):
            raise InvalidInputError(
                f"base_url must be an http(s) URL such as http://127.0.0.1:8090, got {base_url!r}"
            )
        self.base_url = root
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._model = model
        self._family = family
        self._structured_outputs = structured_outputs
        self._headers = {"User-Agent": "mississippi-tools", **dict(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._async_transport = async_transport
        self._client = httpx.Client(
            headers=self._headers, timeout=self._timeout(None), transport=transport
        )
        self._shared_async_client: httpx.AsyncClient | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._info: ServerInfo | None = None
        self._info_lock = threading.Lock()
        self._encoded: OrderedDict[str, str] = OrderedDict()
        self._encoded_lock = threading.Lock()

    # -- what the server is -------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        """The model name sent with each request (asks the server when not given)."""
        return self._model if self._model is not None else self.server_info().model

    @property
    def model_info(self) -> ModelInfo:
        """The served model's family, options and limits (asks the server when needed)."""
        info = self.server_info().model_info
        assert info is not None
        return info

    @property
    def supports_grammar(self) -> bool:
        """Whether ``json_schema`` requests are sent as ``response_format`` (see the rules)."""
        if self._structured_outputs is not None:
            return self._structured_outputs
        return self.server_info().kind in ("mississippi", "vllm")

    @supports_grammar.setter
    def supports_grammar(self, value: bool) -> None:
        self._structured_outputs = value

    def server_info(self) -> ServerInfo:
        """What ``GET /v1/models`` says (asked once, then cached)."""
        with self._info_lock:
            if self._info is None:
                url = self._url("/v1/models")
                response = self._send(lambda: self._client.get(url), url, deadline=None)
                self._info = self._read_models(response, url)
            return self._info

    async def aserver_info(self) -> ServerInfo:
        """Async twin of :meth:`server_info`."""
        if self._info is None:
            url = self._url("/v1/models")
            async with self._async_session() as client:
                response = await self._asend(lambda: client.get(url), url, deadline=None)
            self._info = self._read_models(response, url)
        return self._info

    def _read_models(self, response: httpx.Response, url: str) -> ServerInfo:
        if response.status_code == 404:
            if self._model is None:
                raise _error_for_status(response, url)
            info = remote_model_info("unknown", self._model, {}, self._family)
            return ServerInfo(kind="unknown", model=self._model, model_info=info)
        if response.status_code >= 400:
            raise _error_for_status(response, url)
        try:
            entries = [e for e in response.json().get("data", []) if isinstance(e, dict)]
        except (ValueError, AttributeError):
            entries = []
        names = tuple(str(e.get("id")) for e in entries if e.get("id"))
        model = self._model or (names[0] if names else None)
        if model is None:
            raise RemoteStatusError(
                f"{url} lists no model; pass model= to name the served model",
                status_code=response.status_code,
                error_code="no_model",
            )
        entry = next((e for e in entries if e.get("id") == model), entries[0] if entries else {})
        kind = _OWNERS.get(str(entry.get("owned_by", "")).lower(), "unknown")
        logger.debug("remote server %s is %s, serving %s", self.base_url, kind, names)
        info = remote_model_info(kind, model, entry, self._family)
        return ServerInfo(kind=kind, model=model, models=names, model_info=info)

    # -- generation -------------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        """Run ``request`` on the server and wait for the answer."""
        payload = self._payload(request, self.server_info(), stream=False)
        url = self._url("/v1/chat/completions")
        started = time.perf_counter()
        timeout = self._timeout(request.timeout)
        response = self._send(
            lambda: self._client.post(url, json=payload, timeout=timeout),
            url,
            deadline=request.timeout,
        )
        if response.status_code >= 400:
            raise _error_for_status(response, url)
        return _parse_completion(self._json(response, url), request, time.perf_counter() - started)

    async def agenerate(self, request: GenerationRequest) -> GenerationOutput:
        """Run ``request`` without blocking the event loop; cancelling the task drops the call."""
        info = await self.aserver_info()
        payload = await asyncio.to_thread(self._payload, request, info, stream=False)
        url = self._url("/v1/chat/completions")
        started = time.perf_counter()
        timeout = self._timeout(request.timeout)
        async with self._async_session() as client:
            response = await self._asend(
                lambda: client.post(url, json=payload, timeout=timeout),
                url,
                deadline=request.timeout,
            )
        if response.status_code >= 400:
            raise _error_for_status(response, url)
        return _parse_completion(self._json(response, url), request, time.perf_counter() - started)

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Yield the answer's text as the server streams it."""
        payload = self._payload(request, self.server_info(), stream=True)
        url = self._url("/v1/chat/completions")
        timeout = self._timeout(request.timeout)
        for attempt in range(self.max_retries + 1):
            try:
                with self._client.stream("POST", url, json=payload, timeout=timeout) as response:
                    if response.status_code in _RETRY_STATUSES and attempt < self.max_retries:
                        response.read()
                        time.sleep(self._delay(attempt, response))
                        continue
                    if response.status_code >= 400:
                        response.read()
                        raise _error_for_status(response, url)
                    for line in response.iter_lines():
                        data = _sse_data(line)
                        if data is None:
                            continue
                        if data == "[DONE]":
                            return
                        delta = _stream_delta(data, url)
                        if delta:
                            yield delta
                    return
            except httpx.TransportError as e:
                if attempt < self.max_retries and _retryable(e):
                    time.sleep(self._delay(attempt, None))
                    continue
                raise _error_for_transport(
                    e, url, timeout=self.timeout, deadline=request.timeout
                ) from e

    async def astream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """Async twin of :meth:`stream`."""
        info = await self.aserver_info()
        payload = await asyncio.to_thread(self._payload, request, info, stream=True)
        url = self._url("/v1/chat/completions")
        timeout = self._timeout(request.timeout)
        for attempt in range(self.max_retries + 1):
            try:
                async with (
                    self._async_session() as client,
                    client.stream("POST", url, json=payload, timeout=timeout) as response,
                ):
                    if response.status_code in _RETRY_STATUSES and attempt < self.max_retries:
                        await response.aread()
                        await asyncio.sleep(self._delay(attempt, response))
                        continue
                    if response.status_code >= 400:
                        await response.aread()
                        raise _error_for_status(response, url)
                    async for line in response.aiter_lines():
                        data = _sse_data(line)
                        if data is None:
                            continue
                        if data == "[DONE]":
                            return
                        delta = _stream_delta(data, url)
                        if delta:
                            yield delta
                    return
            except httpx.TransportError as e:
                if attempt < self.max_retries and _retryable(e):
                    await asyncio.sleep(self._delay(attempt, None))
                    continue
                raise _error_for_transport(
                    e, url, timeout=self.timeout, deadline=request.timeout
                ) from e

    # -- clean-up ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    async def aclose(self) -> None:
        """Close the connections from async code."""
        self._client.close()
        if self._shared_async_client is not None:
            await self._shared_async_client.aclose()
            self._shared_async_client = None

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _timeout(self, deadline: float | None) -> httpx.Timeout:
        read = self.timeout if deadline is None else min(self.timeout, deadline + _DEADLINE_SLACK)
        return httpx.Timeout(read, connect=min(_CONNECT_TIMEOUT, self.timeout))

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = _retry_after(response)
        if retry_after is not None:
            return min(retry_after, self.max_backoff) + random.uniform(0, 0.1)
        step = min(self.max_backoff, self.backoff * 2.0**attempt)
        return step / 2 + random.uniform(0, step / 2)

    def _send(self, call: Any, url: str, *, deadline: float | None) -> httpx.Response:
        """One call with the retry policy; error statuses are returned, not raised."""
        for attempt in range(self.max_retries + 1):
            try:
                response: httpx.Response = call()
            except httpx.TransportError as e:
                if attempt < self.max_retries and _retryable(e):
                    time.sleep(self._delay(attempt, None))
                    continue
                raise _error_for_transport(e, url, timeout=self.timeout, deadline=deadline) from e
            if response.status_code in _RETRY_STATUSES and attempt < self.max_retries:
                logger.debug("%s answered %s; retrying", url, response.status_code)
                time.sleep(self._delay(attempt, response))
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def _asend(self, call: Any, url: str, *, deadline: float | None) -> httpx.Response:
        """Async twin of :meth:`_send`."""
        for attempt in range(self.max_retries + 1):
            try:
                response: httpx.Response = await call()
            except httpx.TransportError as e:
                if attempt < self.max_retries and _retryable(e):
                    await asyncio.sleep(self._delay(attempt, None))
                    continue
                raise _error_for_transport(e, url, timeout=self.timeout, deadline=deadline) from e
            if response.status_code in _RETRY_STATUSES and attempt < self.max_retries:
                logger.debug("%s answered %s; retrying", url, response.status_code)
                await asyncio.sleep(self._delay(attempt, response))
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _json(response: httpx.Response, url: str) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as e:
            raise RemoteStatusError(
                f"{url} answered {response.status_code} with a body that is not JSON: {e}",
                status_code=response.status_code,
            ) from None
        if not isinstance(data, dict):
            raise RemoteStatusError(
                f"{url} answered with JSON that is not an object",
                status_code=response.status_code,
                body=data,
            )
        return data

    def _data_uri(self, image: LoadedImage) -> str:
        key = image.content_hash
        with self._encoded_lock:
            cached = self._encoded.get(key)
            if cached is not None:
                self._encoded.move_to_end(key)
                return cached
        uri = _png_data_uri(image)
        with self._encoded_lock:
            self._encoded[key] = uri
            while len(self._encoded) > _ENCODED_CACHE_SIZE:
                self._encoded.popitem(last=False)
        return uri

    def _payload(
        self, request: GenerationRequest, info: ServerInfo, *, stream: bool
    ) -> dict[str, Any]:
        """The JSON body of a chat completion for ``request`` (images encoded here)."""
        sampling = request.sampling
        urls = [self._data_uri(image) for image in request.images]
        body: dict[str, Any] = {
            "model": self._model or info.model,
            "messages": build_messages(request.prompt, request.history, urls),
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if request.logprobs:
            body["logprobs"] = True
        extended = info.kind in ("mississippi", "vllm")
        if extended:
            if sampling.top_k:
                body["top_k"] = sampling.top_k
            if sampling.repetition_penalty != 1.0:
                body["repetition_penalty"] = sampling.repetition_penalty
            if sampling.ignore_eos:
                body["ignore_eos"] = True
        elif sampling.top_k or sampling.repetition_penalty != 1.0:
            logger.debug("top_k and repetition_penalty are not sent to this server")
        assert info.model_info is not None
        options = validate_options(request.options, info.model_info)
        if info.kind == "vllm":
            body["return_token_ids"] = True
            names = _VLLM_PROCESSOR_OPTIONS.get(info.model_info.family, {})
            processor: dict[str, Any] = {}
            for key, option in names.items():
                if option.name in options:
                    *parents, leaf = key.split(".")
                    target = processor
                    for parent in parents:
                        target = target.setdefault(parent, {})
                    target[leaf] = options[option.name]
            if processor:
                body["mm_processor_kwargs"] = processor
        if info.kind == "mississippi":
            body["request_id"] = request.request_id
            if options:
                body["options"] = options
            if request.timeout is not None:
                body["timeout"] = request.timeout
        if request.json_schema is not None and self.supports_grammar:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": dict(request.json_schema)},
            }
        if stream:
            body["stream"] = True
        return body

    @asynccontextmanager
    async def _async_session(self) -> AsyncIterator[httpx.AsyncClient]:
        """An async client for one call.

        A client per call, closed when the call ends: an ``httpx.AsyncClient`` belongs to the
        event loop it first ran in, and one kept across calls leaks its connections when that
        loop closes first (each ``asyncio.run`` has its own loop). The TLS context is built once.
        A caller-provided transport is shared instead (its owner closes it).
        """
        if self._async_transport is not None:
            if self._shared_async_client is None:
                self._shared_async_client = httpx.AsyncClient(
                    headers=self._headers,
                    timeout=self._timeout(None),
                    transport=self._async_transport,
                )
            yield self._shared_async_client
            return
        if self._ssl_context is None and self.base_url.startswith("https://"):
            self._ssl_context = httpx.create_ssl_context()
        async with httpx.AsyncClient(
            headers=self._headers,
            timeout=self._timeout(None),
            verify=self._ssl_context or True,
        ) as client:
            yield client


def _retryable(error: httpx.TransportError) -> bool:
    """Failures where the request cannot have run: worth retrying."""
    return isinstance(
        error,
        httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.RemoteProtocolError,
    )
