"""Settings of the HTTP service: typed, from keyword arguments or ``MISSISSIPPI_*`` variables.

Every field can be set in the environment with the ``MISSISSIPPI_`` prefix
(``MISSISSIPPI_PORT=9000``, ``MISSISSIPPI_API_KEY=...``); keyword arguments (and the CLI's flags)
take precedence. :meth:`ServerSettings.check_bind` refuses a non-loopback address without an API
key (the service reads arbitrary images for whoever can reach it), and
:meth:`ServerSettings.check_api_key` a key no client could send: blank, padded with whitespace, or
with characters an HTTP header cannot carry.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from mississippi_tools.errors import MississippiError
from mississippi_tools.serving import ModelSettings

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_JOB_CONCURRENCY",
    "DEFAULT_JOB_MAX_PAGES",
    "DEFAULT_MAX_ACTIVE_JOBS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_IMAGES_PER_REQUEST",
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_JOBS",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MODEL",
    "DEFAULT_PORT",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_SHUTDOWN_GRACE",
    "InsecureBindError",
    "InvalidAPIKeyError",
    "ServerSettings",
    "default_jobs_dir",
    "is_loopback",
]

DEFAULT_HOST = "127.0.0.1"
"""Address bound by default: this machine only."""
DEFAULT_PORT = 8090
"""Port bound by default."""
DEFAULT_MODEL = "h2oai/h2ovl-mississippi-800m"
"""Model served by default."""
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
"""Largest request body (a 20 MiB image is about 27 MiB as base64)."""
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""Largest encoded image, in bytes."""
DEFAULT_MAX_IMAGES_PER_REQUEST = 8
"""Most images in one request."""
DEFAULT_REQUEST_TIMEOUT = 300.0
"""Seconds a generation may take before it fails with 504."""
DEFAULT_SHUTDOWN_GRACE = 30.0
"""Seconds in-flight requests get to finish after SIGTERM before they are cancelled."""
DEFAULT_MAX_TOKENS = 1024
"""New tokens for a chat completion that does not set ``max_tokens``."""
DEFAULT_MAX_JOBS = 100
"""Jobs kept on disk; the oldest finished ones are dropped to make room for new ones."""
DEFAULT_MAX_ACTIVE_JOBS = 8
"""Jobs queued or running at once; more get 429 with ``Retry-After``."""
DEFAULT_JOB_CONCURRENCY = 2
"""Pages of a job read at once (the batch's other slots stay free for interactive requests)."""
DEFAULT_JOB_MAX_PAGES = 1000
"""Most pages one job reads (jobs are for long documents; 0: no limit)."""


def default_jobs_dir() -> Path:
    """Where jobs are kept by default: ``mississippi-tools/jobs`` in the user's cache directory.

    ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows, else ``$XDG_CACHE_HOME``
    (``~/.cache``).
    """
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mississippi-tools" / "jobs"


class InsecureBindError(MississippiError, ValueError):
    """The service would listen beyond this machine without an API key."""

    code = "insecure_bind"


class InvalidAPIKeyError(MississippiError, ValueError):
    """The API key is blank, padded with whitespace, or not sendable in an HTTP header."""

    code = "invalid_api_key"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine.

    ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``) are; an empty host, ``0.0.0.0``,
    ``::`` and every other name or address are not (a name could resolve to anything).
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class ServerSettings(ModelSettings):
    """How ``mississippi-tools serve`` runs.

    Example:
        >>> ServerSettings(port=9000, max_batch_size=4).port
        9000
    """

    model_config = SettingsConfigDict(
        env_prefix="MISSISSIPPI_", extra="forbid", use_attribute_docstrings=True
    )

    host: str = DEFAULT_HOST
    """Address to bind. Anything but loopback requires ``api_key``."""
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    """Port to bind (0: any free port)."""
    model: str = DEFAULT_MODEL
    """Hub id or local checkpoint directory of the model."""
    served_model_name: str | None = None
    """Name reported by ``/v1/models`` and in completions (default: the model's id)."""
    attention: str = "auto"
    """``auto``, ``sdpa`` or ``eager``."""
    revision: str | None = None
    """Hub revision of the model."""
    local_files_only: bool | None = None
    """Never download the model."""
    api_key: SecretStr | None = None
    """Bearer token every ``/v1`` request must send (``Authorization: Bearer <key>``)."""
    max_batch_size: int = Field(default=8, ge=1)
    """Requests decoding together."""
    max_queue_size: int = Field(default=64, ge=0)
    """Requests waiting beyond the batch; more get 429 with ``Retry-After``."""
    feature_cache_mb: float = Field(default=512.0, ge=0)
    """Vision-feature cache budget in MiB (0 disables it)."""
    prefix_cache_mb: float = Field(default=1024.0, ge=0)
    """Budget in MiB for the decoder keys/values of image prefixes (0 disables it)."""
    retry_after: float = Field(default=1.0, gt=0)
    """Seconds suggested in ``Retry-After`` when the queue is full."""
    request_timeout: float | None = Field(default=DEFAULT_REQUEST_TIMEOUT, gt=0)
    """Seconds a generation may take before it fails with 504 (``None``: no limit)."""
    shutdown_grace: float = Field(default=DEFAULT_SHUTDOWN_GRACE, ge=0)
    """Seconds in-flight requests get to finish on shutdown before they are cancelled."""
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024)
    """Largest request body; larger ones get 413."""
    max_image_bytes: int = Field(default=DEFAULT_MAX_IMAGE_BYTES, ge=1)
    """Largest encoded image; larger ones get 413."""
    max_images_per_request: int = Field(default=DEFAULT_MAX_IMAGES_PER_REQUEST, ge=1)
    """Most images in one request."""
    default_max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1)
    """New tokens for a chat completion without ``max_tokens``."""
    metrics_require_auth: bool = False
    """Require the API key for ``/metrics`` too (``/health`` is always open)."""
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    """uvicorn's log level."""
    access_log: bool = True
    """Log one line per request."""
    jobs_dir: Path | None = None
    """Directory where jobs (``/v1/jobs``) keep their input, status and finished pages, so that a
    restart loses nothing that finished (default: :func:`default_jobs_dir`)."""
    max_jobs: int = Field(default=DEFAULT_MAX_JOBS, ge=1)
    """Jobs kept; the oldest finished ones are dropped to make room."""
    max_active_jobs: int = Field(default=DEFAULT_MAX_ACTIVE_JOBS, ge=1)
    """Jobs queued or running at once; more get 429 with ``Retry-After``."""
    job_max_pages: int = Field(default=DEFAULT_JOB_MAX_PAGES, ge=0)
    """Most pages one job reads (0: no limit)."""
    job_concurrency: int = Field(default=DEFAULT_JOB_CONCURRENCY, ge=1)
    """Pages of a job read at once; the rest of the batch stays free for interactive requests."""

    @property
    def jobs_directory(self) -> Path:
        """``jobs_dir``, or the default under the user's cache directory."""
        return (self.jobs_dir or default_jobs_dir()).expanduser()

    def check_api_key(self) -> None:
        """Refuse an API key that no client could send.

        A blank key (``MISSISSIPPI_API_KEY=``, ``--api-key ' '``) would pass for "a key is set"
        while no request can match it; surrounding whitespace is lost from clients'
        ``Authorization`` headers; a header carries printable ASCII only.

        Raises:
            InvalidAPIKeyError: The key is blank, padded with whitespace, or has a character
                outside printable ASCII.
        """
        if self.api_key is None:
            return
        key = self.api_key.get_secret_value()
        where = "the API key (--api-key or MISSISSIPPI_API_KEY)"
        if not key.strip():
            raise InvalidAPIKeyError(
                f'{where} is blank; set a real one, e.g. --api-key "$(openssl rand -hex 32)", '
                f"or set none and serve on {DEFAULT_HOST} only"
            )
        if key != key.strip():
            raise InvalidAPIKeyError(
                f"{where} starts or ends with whitespace, which clients' Authorization headers "
                "drop; remove it"
            )
        if any(not " " <= c <= "~" for c in key):
            raise InvalidAPIKeyError(
                f"{where} has a character outside printable ASCII, which an HTTP header cannot "
                "carry; use letters, digits and punctuation, e.g. $(openssl rand -hex 32)"
            )

    def check_bind(self) -> None:
        """Refuse an unusable API key, and to listen beyond this machine without one.

        Raises:
            InvalidAPIKeyError: See :meth:`check_api_key`.
            InsecureBindError: ``host`` is not a loopback address and ``api_key`` is not set.
        """
        self.check_api_key()
        if not is_loopback(self.host) and self.api_key is None:
            raise InsecureBindError(
                f"refusing to bind {self.host!r} without an API key: anyone who can reach this "
                "address could use the model and make it read images. Set one with --api-key or "
                "MISSISSIPPI_API_KEY (clients send 'Authorization: Bearer <key>'), or bind "
                f"{DEFAULT_HOST}"
            )
