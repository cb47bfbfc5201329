"""The exceptions raised by mississippi-tools.

Every error the library raises on purpose derives from :class:`MississippiError`. Where callers
already catch a builtin, the error also derives from it (an invalid image is a ``ValueError``, a
refused path a ``PermissionError``, a missing extra an ``ImportError``)::

    MississippiError
    ├── InvalidInputError (ValueError)          the caller passed something unusable
    │   ├── ImageError                          an image could not be read or is out of limits
    │   │   ├── ImageDecodeError                not an image, truncated, unsupported format
    │   │   └── ImageTooLargeError              over the byte or pixel limits (decompression bombs)
    │   ├── ImageNotFoundError (FileNotFoundError)
    │   ├── ImageFetchError                     an allowed image URL could not be downloaded
    │   ├── PDFError                            unreadable PDF or a page outside the document
    │   ├── SchemaError                         a schema we cannot honour (named feature, path)
    │   ├── PromptTooLongError                  prompt + images exceed the model's context
    │   └── UnsupportedTaskError                the loaded model cannot do this task
    ├── AccessDeniedError (PermissionError)     a path outside the allowed roots, URLs disabled
    ├── MissingDependencyError (ImportError)    an optional extra is not installed
    ├── ModelLoadError                          the model cannot be loaded
    │   ├── ModelNotFoundError (FileNotFoundError)   no weights locally and no way to fetch them
    │   ├── ConfigError                         a config.json we do not understand
    │   ├── CheckpointError                     missing, unexpected or mis-shaped tensors
    │   └── ModelTooLargeError (MemoryError)    its estimated footprint exceeds memory_limit
    ├── GenerationError                         one request failed; the engine keeps serving
    │   ├── QueueFullError                      too many requests waiting (retry_after seconds)
    │   ├── DeadlineExceededError (TimeoutError)
    │   └── RequestCancelledError
    ├── ExtractionError                         no valid result from the output, with the raw text
    │   └── RepetitionError                     the answer looped, and looped again on a retry
    ├── PreviewError                            an HTML preview could not be rendered (no Chromium)
    ├── EngineDeadError                         the engine cannot serve any more requests
    └── RemoteError                             talking to a remote service failed
        ├── RemoteConnectionError (ConnectionError)
        └── RemoteStatusError                   an HTTP error status, with its stable error code

Messages state what was wrong, the offending value or numbers, and what to do about it. Where the
fix is an option the caller can set (enable URLs, choose pages, allow a directory), the error
carries a :class:`Remedy` naming that option, and each surface spells it its own way: the Python
API's ``str(error)`` says ``SourcePolicy(allow_urls=True)``, the CLI says ``--allow-urls``, the MCP
server its own flag (:meth:`MississippiError.describe`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PYTHON_SPELLING",
    "AccessDeniedError",
    "CheckpointError",
    "ConfigError",
    "DeadlineExceededError",
    "EngineDeadError",
    "ExtractionError",
    "GenerationError",
    "ImageDecodeError",
    "ImageError",
    "ImageFetchError",
    "ImageNotFoundError",
    "ImageTooLargeError",
    "InvalidInputError",
    "MissingDependencyError",
    "MississippiError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelTooLargeError",
    "PDFError",
    "PreviewError",
    "PromptTooLongError",
    "QueueFullError",
    "Remedy",
    "RemoteConnectionError",
    "RemoteError",
    "RemoteStatusError",
    "RepetitionError",
    "RequestCancelledError",
    "SchemaError",
    "UnsupportedTaskError",
]


@dataclass(frozen=True)
class Remedy:
    """A fix the caller can apply by setting an option; each surface spells the option its way.

    Attributes:
        option: The option's name on the Python API (``allow_urls``, ``pages``,
            ``allowed_roots``, ``max_new_tokens`` ...).
        value: A value to try, as text (``"1-3"``), when there is a sensible one.
    """

    option: str
    value: str | None = None


#: How the Python API spells each remedy (``{value}`` is the suggested value).
PYTHON_SPELLING: Mapping[str, str] = {
    "allow_urls": "SourcePolicy(allow_urls=True)",
    "allowed_roots": "SourcePolicy(allowed_roots=[...]) with the file's directory",
    "follow_symlinks_outside_roots": "SourcePolicy(follow_symlinks_outside_roots=True)",
    "allow_private_urls": "SourcePolicy(allow_private_urls=True)",
    "url_timeout": "SourcePolicy(url_timeout=...)",
    "url_max_bytes": "SourcePolicy(url_max_bytes={value})",
    "pages": "pages='{value}' in the batch forms (run_batch, ocr_batch ...), or page=N for one",
    "max_pages": "max_pages={value}",
    "max_new_tokens": "max_new_tokens={value}",
    "timeout": "timeout={value}",
    "memory_limit": "memory_limit='{value}'",
    "quantization": "quantization='{value}' on MississippiVLM.load",
    "no_quantization": "leave quantization=None on MississippiVLM.load",
    "max_bytes": "ImageLimits(max_bytes={value})",
    "max_pixels": "ImageLimits(max_pixels={value})",
    "max_side": "ImageLimits(max_side={value})",
    "max_document_pages": "ImageLimits(max_pages=...)",
    "max_jpeg_scans": "ImageLimits(max_jpeg_scans=...)",
    "max_pdf_stream_bytes": "ImageLimits(max_pdf_stream_bytes=...)",
}


def spell_remedy(remedy: Remedy, spelling: Mapping[str, str]) -> str | None:
    """``remedy`` in a surface's words, or ``None`` when the surface has no such option."""
    template = spelling.get(remedy.option)
    if template is None:
        return None
    return template.replace("{value}", remedy.value or "...")


class MississippiError(Exception):
    """Base class of every error raised on purpose by mississippi-tools.

    Attributes:
        code: A stable, machine-readable error code (used in HTTP error bodies and MCP results).
        message: What was wrong and what to do, in words that hold on every surface.
        remedy: The option that fixes it, when there is one (see :meth:`describe`).
    """

    code: str = "internal_error"

    def __init__(self, message: str, *, remedy: Remedy | None = None) -> None:
        self.message = message
        self.remedy = remedy
        super().__init__(self.describe(PYTHON_SPELLING))

    def rephrased(self, message: str) -> MississippiError:
        """A copy of this error (same type, code, remedy and attributes) with another message."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.__cause__, clone.__traceback__ = self.__cause__, self.__traceback__
        clone.message = message
        clone.args = (clone.describe(PYTHON_SPELLING),)
        return clone

    def describe(self, spelling: Mapping[str, str] | Callable[[Remedy], str | None]) -> str:
        """The message with the remedy spelled for one surface (``spelling``: option -> words)."""
        if self.remedy is None:
            return self.message
        words = spelling(self.remedy) if callable(spelling) else spell_remedy(self.remedy, spelling)
        return self.message if not words else f"{self.message} ({words})"


class InvalidInputError(MississippiError, ValueError):
    """The caller passed an input that cannot be used (fix the input, then retry)."""

    code = "invalid_input"


class ImageError(InvalidInputError):
    """An image could not be used.

    Attributes:
        source: A short description of where the image came from (path, "bytes", "data URI").
    """

    code = "invalid_image"

    def __init__(
        self, message: str, *, source: str | None = None, remedy: Remedy | None = None
    ) -> None:
        super().__init__(message, remedy=remedy)
        self.source = source


class ImageDecodeError(ImageError):
    """The data is not a readable image (unknown or unsupported format, truncated, corrupt)."""

    code = "image_decode_error"


class ImageTooLargeError(ImageError):
    """The image is over the byte or pixel limits; decompression bombs are refused here."""

    code = "image_too_large"


class ImageNotFoundError(InvalidInputError, FileNotFoundError):
    """No file exists at the given path."""

    code = "image_not_found"

    def __init__(
        self, message: str, *, path: str | None = None, remedy: Remedy | None = None
    ) -> None:
        super().__init__(message, remedy=remedy)
        self.path = path


class ImageFetchError(InvalidInputError):
    """An image URL (allowed by policy) could not be downloaded: timeout, refused, HTTP error.

    Attributes:
        url: The URL.
        status_code: The HTTP status when the server answered with an error, else ``None``.
    """

    code = "image_fetch_failed"

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status_code: int | None = None,
        remedy: Remedy | None = None,
    ) -> None:
        super().__init__(message, remedy=remedy)
        self.url = url
        self.status_code = status_code


class PDFError(InvalidInputError):
    """A PDF could not be read, or the requested pages are not in it."""

    code = "pdf_error"


class SchemaError(InvalidInputError):
    """A schema uses a feature we cannot honour, or is not a schema at all.

    Attributes:
        path: JSON pointer of the offending part of the schema, when known.
    """

    code = "unsupported_schema"

    def __init__(
        self, message: str, *, path: str | None = None, remedy: Remedy | None = None
    ) -> None:
        super().__init__(message, remedy=remedy)
        self.path = path


class PromptTooLongError(InvalidInputError):
    """The prompt with its image tokens does not fit in the model's context window."""

    code = "prompt_too_long"


class UnsupportedTaskError(InvalidInputError):
    """The loaded model cannot do the task asked of it (it is absent from its surfaces).

    Attributes:
        task: The task's name.
        model: The loaded model's id.
        supported_by: Models (hub ids, or families) that can do the task.
    """

    code = "unsupported_task"

    def __init__(
        self, message: str, *, task: str, model: str, supported_by: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.task = task
        self.model = model
        self.supported_by = list(supported_by)


class AccessDeniedError(MississippiError, PermissionError):
    """The input is refused by policy: a path outside the allowed roots, a URL when disabled."""

    code = "access_denied"


class MissingDependencyError(MississippiError, ImportError):
    """An optional extra is not installed. The message names the ``pip install`` to run."""

    code = "missing_dependency"

    def __init__(self, package: str, extra: str, *, purpose: str | None = None) -> None:
        what = f" ({purpose})" if purpose else ""
        message = (
            f"{package} is required{what} but is not installed; "
            f'install it with: pip install "mississippi-tools[{extra}]"'
        )
        super().__init__(message)
        self.package = package
        self.extra = extra


class ModelLoadError(MississippiError):
    """The model could not be loaded."""

    code = "model_load_error"


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The weights are not available locally and could not be fetched."""

    code = "model_not_found"


class ConfigError(ModelLoadError):
    """A model configuration that this library does not support."""

    code = "unsupported_config"


class CheckpointError(ModelLoadError):
    """The checkpoint's tensors do not match the model.

    Attributes:
        missing: Tensor names the model needs that the checkpoint lacks.
        unexpected: Tensor names in the checkpoint that the model does not use.
        mismatched: ``(name, expected_shape, found_shape)`` for tensors of the wrong shape.
    """

    code = "checkpoint_mismatch"

    def __init__(
        self,
        message: str,
        *,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
    ) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


class ModelTooLargeError(ModelLoadError, MemoryError):
    """The model's estimated memory footprint exceeds the configured ceiling (``memory_limit``).

    Attributes:
        estimate: Estimated bytes (weights at the load dtype plus the engine's cache budgets).
        limit: The ceiling, in bytes.
    """

    code = "model_too_large"

    def __init__(
        self, message: str, *, estimate: int, limit: int, remedy: Remedy | None = None
    ) -> None:
        super().__init__(message, remedy=remedy)
        self.estimate = estimate
        self.limit = limit


class GenerationError(MississippiError):
    """A single request failed; the engine itself is still able to serve others.

    Attributes:
        request_id: The engine's id of the failed request, when it had one.
    """

    code = "generation_error"

    def __init__(
        self, message: str, *, request_id: str | None = None, remedy: Remedy | None = None
    ) -> None:
        super().__init__(message, remedy=remedy)
        self.request_id = request_id


class QueueFullError(GenerationError):
    """The engine's queue is full; retry after ``retry_after`` seconds."""

    code = "queue_full"

    def __init__(
        self, message: str, *, retry_after: float = 1.0, request_id: str | None = None
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.retry_after = retry_after


class DeadlineExceededError(GenerationError, TimeoutError):
    """The request did not finish before its deadline; its slot was freed."""

    code = "deadline_exceeded"


class RequestCancelledError(GenerationError):
    """The request was cancelled before it finished; its slot was freed."""

    code = "cancelled"


class ExtractionError(MississippiError):
    """The model's output could not be turned into a valid result.

    JSON valid under the schema, a table or a chart that parses, an answer that does not loop.

    Attributes:
        raw_text: The model's last raw output, so nothing is lost.
        errors: Validation or parse error messages, one per failed attempt.
        attempts: How many generations were tried.
    """

    code = "extraction_failed"

    def __init__(
        self, message: str, *, raw_text: str, errors: Sequence[str] = (), attempts: int = 1
    ) -> None:
        super().__init__(message)
        self.raw_text = raw_text
        self.errors = list(errors)
        self.attempts = attempts


class RepetitionError(ExtractionError):
    """The model's answer fell into a loop, and the retry against loops looped too.

    A loop is a line, phrase or token written again and again. An :class:`ExtractionError`
    because it is the same situation for a caller: the model answered, and the answer is not a
    usable result; :attr:`raw_text` keeps it. Every surface
    maps it like one (HTTP 422 with ``raw_text``; CLI exit code 5), with its own ``code``.

    Attributes:
        finish_reason: Always ``"repetition"``, as in the results' metadata.
    """

    code = "repetition"
    finish_reason = "repetition"


class PreviewError(MississippiError):
    """An HTML preview could not be rendered: no Chromium, or the browser failed or timed out."""

    code = "preview_failed"


class EngineDeadError(MississippiError):
    """The engine stopped and cannot serve requests; create a new one."""

    code = "engine_dead"


class RemoteError(MississippiError):
    """Talking to a remote service failed."""

    code = "remote_error"


class RemoteConnectionError(RemoteError, ConnectionError):
    """The remote service could not be reached (refused, timed out, DNS failure)."""

    code = "remote_unreachable"


class RemoteStatusError(RemoteError):
    """The remote service answered with an error status.

    Attributes:
        status_code: The HTTP status code.
        error_code: The server's stable error code when it sent one (our server always does).
        body: The decoded error body, when JSON.
    """

    code = "remote_status"

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_code: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.body = body
