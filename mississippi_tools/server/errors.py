"""Every failure of the service becomes one JSON shape, mapped here and nowhere else.

The body is OpenAI-like, so OpenAI clients surface it as they do OpenAI's own errors::

    {"error": {"code": "queue_full", "message": "...", "type": "rate_limit_error"}}

``code`` is the stable :attr:`~mississippi_tools.errors.MississippiError.code` of the error (or of
the service's own errors below); ``message`` says what was wrong and what to do. Extraction
failures add ``raw_text``, ``errors`` and ``attempts``. The status codes:

=====  ===========================================================================================
400    invalid input (bad image, unsupported schema, prompt too long, bad parameters)
401    missing or wrong API key (with ``WWW-Authenticate: Bearer``)
403    refused by policy (image URLs disabled)
404    no such route, no such job
409    a job that has already finished cannot be cancelled
413    request body or image too large
422    the request does not match the API's schema; an extraction without a valid result
429    the queue is full, or too many jobs are waiting (with ``Retry-After``)
503    the model is loading, failed to load, or the service is shutting down (``Retry-After``)
504    the request passed its deadline
500    anything unexpected (logged with its traceback; the body says only "internal error")
=====  ===========================================================================================
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mississippi_tools import errors

__all__ = [
    "ERROR_RESPONSES",
    "SERVER_SPELLING",
    "ClientDisconnectedError",
    "ErrorBody",
    "ErrorResponse",
    "JobFinishedError",
    "JobNotFoundError",
    "NotReadyError",
    "RequestTooLargeError",
    "TooManyJobsError",
    "UnauthorizedError",
    "error_body",
    "error_content",
    "error_response",
    "install_error_handlers",
    "status_for",
]

logger = logging.getLogger(__name__)


SERVER_SPELLING: dict[str, str] = {
    "memory_limit": "start the server with --max-memory {value} or more (MISSISSIPPI_MAX_MEMORY), "
    "or with --dtype bfloat16",
    "quantization": "start the server with --quantization {value} (MISSISSIPPI_QUANTIZATION)",
    "no_quantization": "start the server without --quantization (unset MISSISSIPPI_QUANTIZATION)",
}
"""How the options that fix errors are spelled for the service's operator."""


class UnauthorizedError(errors.MississippiError):
    """The request has no valid bearer token."""

    code = "unauthorized"


class NotReadyError(errors.MississippiError):
    """The model is not loaded (yet), or the service is stopping.

    Attributes:
        retry_after: Seconds after which to try again.
    """

    code = "model_loading"

    def __init__(self, message: str, *, code: str = "model_loading", retry_after: float = 5.0):
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class RequestTooLargeError(errors.MississippiError):
    """The request body is over the size limit."""

    code = "request_too_large"


class JobNotFoundError(errors.MississippiError):
    """No job has this id (never submitted, dropped to make room, or the id is mistyped)."""

    code = "job_not_found"


class JobFinishedError(errors.MississippiError):
    """The job has already finished, so it cannot be cancelled."""

    code = "job_finished"


class TooManyJobsError(errors.QueueFullError):
    """Too many jobs are queued or running; retry after ``retry_after`` seconds."""

    code = "too_many_jobs"


class ClientDisconnectedError(Exception):
    """The client went away before its answer was ready (the work was cancelled)."""


class ErrorBody(BaseModel):
    """What went wrong."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    code: str
    """Stable machine-readable code, e.g. ``queue_full``, ``image_too_large``."""
    message: str
    """What was wrong and what to do about it."""
    type: str
    """OpenAI-style category: ``invalid_request_error``, ``rate_limit_error`` ..."""


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorBody
    """The error."""


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Invalid input",
        401: "Missing or wrong API key",
        403: "Refused by policy",
        413: "Request or image too large",
        422: "Request does not match the schema, or no valid result",
        429: "Queue full; retry after Retry-After seconds",
        503: "Model loading or service stopping",
        504: "Deadline exceeded",
    }.items()
}
"""OpenAPI ``responses`` entries for the error statuses."""

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


def status_for(error: errors.MississippiError) -> int:
    """The HTTP status of a library or service error."""
    match error:
        case UnauthorizedError():
            return 401
        case NotReadyError():
            return 503
        case JobNotFoundError():
            return 404
        case JobFinishedError():
            return 409
        case RequestTooLargeError() | errors.ImageTooLargeError():
            return 413
        case errors.ExtractionError():
            return 422
        case errors.AccessDeniedError():
            return 403
        case errors.InvalidInputError():
            return 400
        case errors.QueueFullError():
            return 429
        case errors.DeadlineExceededError():
            return 504
        case errors.RequestCancelledError() | errors.EngineDeadError() | errors.ModelLoadError():
            return 503
        case errors.RemoteError():
            return 502
    return 500


#: How the options that fix errors are spelled for a client of the service (request fields),
#: or for whoever runs it (``serve`` flags and their ``MISSISSIPPI_`` variables).
SERVICE_SPELLING: dict[str, str] = {
    "allow_urls": "or start the server with --allow-urls (MISSISSIPPI_ALLOW_URLS=true)",
    "allowed_roots": "the service reads no paths; upload the file or send it as base64",
    "pages": "send pages='{value}'",
    "max_pages": "ask for fewer pages per request",
    "max_new_tokens": "send max_new_tokens={value} (max_tokens on /v1/chat/completions)",
    "timeout": "the service's --request-timeout (MISSISSIPPI_REQUEST_TIMEOUT) bounds a request",
    "max_bytes": "the service's limit is MISSISSIPPI_MAX_IMAGE_BYTES",
    "url_max_bytes": "the service's limit is MISSISSIPPI_MAX_IMAGE_BYTES",
    "max_pixels": "the service's limit is MISSISSIPPI_MAX_IMAGE_PIXELS",
    "max_side": "crop or downscale the image",
    "max_document_pages": "split the document",
    "max_jpeg_scans": "re-encode the image",
    "max_pdf_stream_bytes": "rasterize the pages and send images",
    "url_timeout": "upload the file instead",
    "allow_private_urls": "upload the file instead",
    "region": "send region='{value}'",
    "quantization": "the service's operator sets --quantization {value} (MISSISSIPPI_QUANTIZATION)",
    "no_quantization": "the service's operator leaves out --quantization",
}


def error_body(status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON error body."""
    return {
        "error": {
            "code": code,
            "message": message,
            "type": _TYPES.get(status, "server_error"),
            **extra,
        }
    }


def error_content(error: errors.MississippiError) -> dict[str, Any]:
    """The JSON error body of a library or service error (also sent as a stream's error event)."""
    status = status_for(error)
    extra: dict[str, Any] = {}
    if isinstance(error, errors.ExtractionError):
        extra = {"raw_text": error.raw_text, "errors": error.errors, "attempts": error.attempts}
    if isinstance(error, errors.SchemaError) and error.path is not None:
        extra = {"param": error.path}
    request_id = getattr(error, "request_id", None)
    if request_id:
        extra["request_id"] = request_id
    described = error.describe(SERVICE_SPELLING)
    message = described if status != 500 else f"internal error: {described}"
    return error_body(status, error.code, message, **extra)


def error_response(error: errors.MississippiError) -> JSONResponse:
    """The response for a library or service error (status, headers, body)."""
    headers: dict[str, str] = {}
    if isinstance(error, errors.QueueFullError | NotReadyError):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    if isinstance(error, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_content(error), status_code=status_for(error), headers=headers)


def _validation_message(errs: list[Any]) -> str:
    parts = []
    for err in errs[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errs) - 5} more)" if len(errs) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more


def validation_response(errs: list[Any]) -> JSONResponse:
    """422 for a body that does not match the request schema."""
    return JSONResponse(error_body(422, "invalid_request", _validation_message(errs)), 422)


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to the JSON error shape (never HTML, never a traceback)."""

    async def on_mississippi(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.MississippiError)
        if status_for(exc) == 500:
            logger.error("request failed: %s", exc, exc_info=exc)
        return error_response(exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError | ValidationError)
        return validation_response(list(exc.errors()))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(exc.status_code, code, str(exc.detail)),
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            error_body(500, "internal_error", "internal error; see the server log"), 500
        )

    app.add_exception_handler(errors.MississippiError, on_mississippi)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(ValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
