"""The OpenAI chat-completions wire format, as the remote engine speaks it: pure translation.

Requests become ``messages`` (images as PNG ``data:`` URIs), responses and server-sent events
become :class:`~mississippi_tools.engine.base.GenerationOutput` pieces, and httpx failures and
error statuses become this library's errors, mapped once here (see
:mod:`mississippi_tools.engine.remote` for the policy). Nothing here does I/O.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from mississippi_tools.engine.base import FinishReason, GenerationOutput, GenerationRequest
from mississippi_tools.errors import (
    DeadlineExceededError,
    InvalidInputError,
    MississippiError,
    QueueFullError,
    RemoteConnectionError,
    RemoteStatusError,
)

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage

__all__ = [
    "IMAGE_TAG",
    "build_messages",
    "error_for_status",
    "error_for_transport",
    "parse_completion",
    "png_data_uri",
    "retry_after_seconds",
    "sse_data",
    "stream_delta",
]

IMAGE_TAG = "<image>"
"""Where an image goes in a prompt sent as text with separate image parts."""


# -- the boundary: httpx failures and error statuses -> our errors -------------------------------


def error_for_transport(
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


def retry_after_seconds(response: httpx.Response | None) -> float | None:
    """The seconds a response's ``Retry-After`` header asks to wait, if it says."""
    if response is None:
        return None
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_for_status(response: httpx.Response, url: str) -> MississippiError:
    """The error for an error status."""
    body, code, message = _decode_error_body(response)
    status = response.status_code
    where = f"{url} answered {status}" + (f" ({code})" if code else "")
    if status == 429:
        retry_after = retry_after_seconds(response) or 1.0
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


def png_data_uri(image: LoadedImage) -> str:
    """The image as a lossless PNG ``data:`` URI (the server sees the same pixels)."""
    buffer = io.BytesIO()
    image.image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_prefix(count: int) -> str:
    if count == 1:
        return IMAGE_TAG + "\n"
    return "".join(f"Image-{i}: {IMAGE_TAG}\n" for i in range(1, count + 1))


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
    pieces = text.split(IMAGE_TAG)
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
    counts = [question.count(IMAGE_TAG) for question, _ in history] + [prompt.count(IMAGE_TAG)]
    total = sum(counts)
    if total and total != len(image_urls):
        raise InvalidInputError(
            f"the prompt has {total} {IMAGE_TAG} placeholder(s) for {len(image_urls)} image(s); "
            f"put one {IMAGE_TAG} where each image belongs, or none to let the images go first"
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


def parse_completion(
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


def sse_data(line: str) -> str | None:
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


def stream_delta(payload: str, url: str) -> str | None:
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
