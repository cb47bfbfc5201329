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

Failures are mapped once, at the boundary (:func:`error_for_status`, :func:`error_for_transport`):

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
import logging
import random
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx

from mississippi_tools.engine.base import (
    Engine,
    GenerationOutput,
    GenerationRequest,
)
from mississippi_tools.engine.openai_wire import (
    build_messages,
    error_for_status,
    error_for_transport,
    parse_completion,
    png_data_uri,
    retry_after_seconds,
    sse_data,
    stream_delta,
)
from mississippi_tools.errors import (
    InvalidInputError,
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
                raise error_for_status(response, url)
            info = remote_model_info("unknown", self._model, {}, self._family)
            return ServerInfo(kind="unknown", model=self._model, model_info=info)
        if response.status_code >= 400:
            raise error_for_status(response, url)
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
            raise error_for_status(response, url)
        return parse_completion(self._json(response, url), request, time.perf_counter() - started)

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
            raise error_for_status(response, url)
        return parse_completion(self._json(response, url), request, time.perf_counter() - started)

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
                        raise error_for_status(response, url)
                    for line in response.iter_lines():
                        data = sse_data(line)
                        if data is None:
                            continue
                        if data == "[DONE]":
                            return
                        delta = stream_delta(data, url)
                        if delta:
                            yield delta
                    return
            except httpx.TransportError as e:
                if attempt < self.max_retries and _retryable(e):
                    time.sleep(self._delay(attempt, None))
                    continue
                raise error_for_transport(
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
                        raise error_for_status(response, url)
                    async for line in response.aiter_lines():
                        data = sse_data(line)
                        if data is None:
                            continue
                        if data == "[DONE]":
                            return
                        delta = stream_delta(data, url)
                        if delta:
                            yield delta
                    return
            except httpx.TransportError as e:
                if attempt < self.max_retries and _retryable(e):
                    await asyncio.sleep(self._delay(attempt, None))
                    continue
                raise error_for_transport(
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
        retry_after = retry_after_seconds(response)
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
                raise error_for_transport(e, url, timeout=self.timeout, deadline=deadline) from e
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
                raise error_for_transport(e, url, timeout=self.timeout, deadline=deadline) from e
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
        uri = png_data_uri(image)
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
            if not sampling.skip_special_tokens:
                body["skip_special_tokens"] = False
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
