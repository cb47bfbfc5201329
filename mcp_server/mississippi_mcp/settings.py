"""Settings of the MCP server: environment variables (``MISSISSIPPI_…``) and command-line flags.

Every setting can come from an environment variable, and most from a flag; a flag wins over the
environment. Shared with the rest of mississippi-tools: ``MISSISSIPPI_MODEL``,
``MISSISSIPPI_DEVICE``, ``MISSISSIPPI_DTYPE``, ``MISSISSIPPI_API_KEY``. Settings of the MCP
transport itself carry an ``MCP_`` infix (``MISSISSIPPI_MCP_TRANSPORT``, ``MISSISSIPPI_MCP_HOST``,
``MISSISSIPPI_MCP_PORT``, ``MISSISSIPPI_MCP_HTTP_TOKEN``) so that they never collide with the HTTP
service's own host and port, nor pick up a generic ``PORT``.

Which files the tools may read:

- ``--allow-dir DIR`` (repeatable) or ``MISSISSIPPI_ALLOW_DIRS`` (directories separated by
  ``os.pathsep``, or a JSON list), plus the client's MCP roots when it declares them
  (``--no-client-roots`` ignores them).
- With no directory at all, **no path is read**: images must be passed inline (data URI or base64)
  or, when enabled, as URLs. The working directory is not a safe default: desktop clients start
  servers from ``/`` or the home directory, which would expose the whole disk.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mississippi_tools.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from mississippi_tools.sources import DEFAULT_URL_TIMEOUT

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_LOAD_TIMEOUT",
    "DEFAULT_MAX_PAGES",
    "DEFAULT_MODEL",
    "DEFAULT_PORT",
    "ENV_PREFIX",
    "MCPSettings",
    "build_parser",
    "is_loopback",
    "parse_args",
]

ENV_PREFIX = "MISSISSIPPI_"
"""Prefix of every environment variable read by :class:`MCPSettings`."""
DEFAULT_MODEL = "h2oai/h2ovl-mississippi-800m"
"""The model loaded when ``--model`` is not given (local engine)."""
DEFAULT_HOST = "127.0.0.1"
"""Address the streamable HTTP transport binds by default (this machine only)."""
DEFAULT_PORT = 8765
"""Port of the streamable HTTP transport."""
DEFAULT_MAX_PAGES = 20
"""Most document pages one ``ocr`` call reads; larger selections are refused with a hint."""
DEFAULT_LOAD_TIMEOUT = 600.0
"""Seconds a tool call waits for the model to finish loading before giving up."""

Transport = Literal["stdio", "streamable-http"]
EngineKind = Literal["local", "remote"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, ``127.x.x.x``, ``::1``).

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0")
        (True, False)
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class MCPSettings(BaseSettings):
    """Everything ``mississippi-mcp`` can be told, from flags or ``MISSISSIPPI_…`` variables.

    Example:
        >>> settings = MCPSettings(allow_dirs=["/tmp"], transport="stdio")
        >>> settings.allow_dirs
        [PosixPath('/tmp')]
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        populate_by_name=True,
        use_attribute_docstrings=True,
        validate_default=True,
    )

    # -- the model ---------------------------------------------------------------------------------
    model: str | None = None
    """Hub id or local checkpoint directory (local engine; default
    ``h2oai/h2ovl-mississippi-800m``), or the served model name (remote engine; default: the
    first model the service lists)."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` ... (local engine)."""
    dtype: str = "auto"
    """``auto``, ``float32``, ``bfloat16`` or ``float16`` (local engine)."""
    engine: EngineKind = "local"
    """``local`` loads the model in this process; ``remote`` uses a running service."""
    base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MISSISSIPPI_BASE_URL", "MISSISSIPPI_REMOTE_URL"),
    )
    """Address of the service for ``engine=remote``: ``mississippi-tools serve`` or vLLM
    (``MISSISSIPPI_BASE_URL``, or ``MISSISSIPPI_REMOTE_URL`` as for ``mississippi-tools``)."""
    api_key: SecretStr | None = None
    """Bearer token the remote service requires, if any."""
    load_timeout: float = Field(default=DEFAULT_LOAD_TIMEOUT, gt=0)
    """Seconds a tool call waits for the model to load before failing (the load goes on)."""

    # -- what the tools may read -------------------------------------------------------------------
    allow_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Directories whose files the tools may read (with their subdirectories)."""
    client_roots: bool = True
    """Also allow the directories the client declares as MCP roots."""
    allow_urls: bool = False
    """Let the tools download http(s) image URLs (public addresses only)."""
    allow_private_urls: bool = False
    """Also allow URLs on private, loopback and link-local addresses (trusted intranets)."""
    url_timeout: float = Field(default=DEFAULT_URL_TIMEOUT, gt=0)
    """Seconds allowed for a whole URL download."""
    max_image_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=1)
    """Largest input accepted, in bytes (files, URL bodies, decoded base64)."""
    max_image_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    """Largest image accepted, in pixels (checked before decoding)."""
    max_pages: int = Field(default=DEFAULT_MAX_PAGES, ge=1)
    """Most document pages one ``ocr`` call reads."""

    # -- generation --------------------------------------------------------------------------------
    max_tiles: int | None = Field(default=None, ge=1, le=40)
    """Most 448-px tiles per image (default: the model's own, 6 for the 800M)."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    """Cap on tokens generated per answer (default: each task's own)."""
    request_timeout: float | None = Field(default=None, gt=0)
    """Seconds before one generation fails (default: no limit)."""

    # -- transport ---------------------------------------------------------------------------------
    transport: Transport = Field(default="stdio", validation_alias="MISSISSIPPI_MCP_TRANSPORT")
    """``stdio`` (desktop clients start the server) or ``streamable-http``."""
    host: str = Field(default=DEFAULT_HOST, validation_alias="MISSISSIPPI_MCP_HOST")
    """Address to bind for ``streamable-http``; any non-loopback address needs ``http_token``."""
    port: int = Field(
        default=DEFAULT_PORT,
        ge=0,
        le=65535,
        validation_alias="MISSISSIPPI_MCP_PORT",
    )
    """Port for ``streamable-http``."""
    http_token: SecretStr | None = Field(
        default=None, validation_alias="MISSISSIPPI_MCP_HTTP_TOKEN"
    )
    """Bearer token every HTTP request must carry (``Authorization: Bearer …``)."""
    log_level: LogLevel = "INFO"
    """Level of the log written to stderr."""

    @field_validator("allow_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.split(os.pathsep) if part.strip()]
        return value

    @field_validator("allow_dirs")
    @classmethod
    def _check_dirs(cls, value: list[Path]) -> list[Path]:
        checked: list[Path] = []
        for raw in value:
            path = raw.expanduser()
            if not path.is_absolute():
                path = Path.cwd() / path
            path = path.resolve()
            if not path.is_dir():
                raise ValueError(
                    f"allowed directory {str(raw)!r} is not an existing directory; create it or "
                    "fix --allow-dir / MISSISSIPPI_ALLOW_DIRS"
                )
            if path not in checked:
                checked.append(path)
        return checked

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(
                f"base URL {value!r} must start with http:// or https://, e.g. "
                "http://127.0.0.1:8090"
            )
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> MCPSettings:
        if self.engine == "remote" and not self.base_url:
            raise ValueError(
                "engine 'remote' needs the service's address: pass --base-url "
                "http://HOST:PORT (or set MISSISSIPPI_BASE_URL)"
            )
        if (
            self.transport == "streamable-http"
            and not is_loopback(self.host)
            and not self.token_value
        ):
            raise ValueError(
                f"binding {self.host!r} exposes the server beyond this machine, so a bearer "
                "token is required: set MISSISSIPPI_MCP_HTTP_TOKEN (or --http-token), or bind "
                f"{DEFAULT_HOST}"
            )
        return self

    @property
    def token_value(self) -> str | None:
        """The HTTP bearer token, or ``None`` when none is set (an empty value counts as none)."""
        if self.http_token is None:
            return None
        return self.http_token.get_secret_value() or None

    @property
    def model_name(self) -> str:
        """The model to load or ask for, as shown in logs and errors."""
        if self.model:
            return self.model
        return DEFAULT_MODEL if self.engine == "local" else "(the service's default model)"


def build_parser() -> argparse.ArgumentParser:
    """The ``mississippi-mcp`` argument parser (flags override ``MISSISSIPPI_…`` variables)."""
    parser = argparse.ArgumentParser(
        prog="mississippi-mcp",
        description=(
            "MCP server for H2OVL-Mississippi: OCR, chart and table reading, JSON extraction "
            "and questions about images, for desktop assistants and coding agents. "
            "Subcommand: 'mississippi-mcp config claude [--write]' prints (or installs) the "
            "Claude Desktop entry."
        ),
        argument_default=argparse.SUPPRESS,
    )
    from mississippi_mcp import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    model = parser.add_argument_group("model")
    model.add_argument("--model", "-m", help=f"Hub id or checkpoint directory ({DEFAULT_MODEL}).")
    model.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (local engine).")
    model.add_argument("--dtype", help="auto, float32, bfloat16 or float16 (local engine).")
    model.add_argument("--engine", choices=["local", "remote"], help="Where the model runs.")
    model.add_argument(
        "--base-url", help="Service address for --engine remote (mississippi-tools serve, vLLM)."
    )
    model.add_argument(
        "--api-key", help="Bearer token of the remote service (prefer MISSISSIPPI_API_KEY)."
    )
    model.add_argument("--load-timeout", type=float, help="Seconds a call waits for loading.")
    access = parser.add_argument_group("what the tools may read")
    access.add_argument(
        "--allow-dir",
        dest="allow_dirs",
        action="append",
        metavar="DIR",
        help="A directory whose files the tools may read (repeatable).",
    )
    access.add_argument(
        "--client-roots",
        action=argparse.BooleanOptionalAction,
        help="Also allow the client's MCP roots (default: yes).",
    )
    access.add_argument(
        "--allow-urls", action=argparse.BooleanOptionalAction, help="Allow http(s) image URLs."
    )
    access.add_argument(
        "--allow-private-urls",
        action=argparse.BooleanOptionalAction,
        help="Also allow private, loopback and link-local URL addresses.",
    )
    access.add_argument("--url-timeout", type=float, help="Seconds for one URL download.")
    access.add_argument("--max-image-bytes", type=int, help="Largest input, in bytes.")
    access.add_argument("--max-image-pixels", type=int, help="Largest image, in pixels.")
    access.add_argument("--max-pages", type=int, help="Most pages one ocr call reads.")
    generation = parser.add_argument_group("generation")
    generation.add_argument("--max-tiles", type=int, help="Most 448-px tiles per image.")
    generation.add_argument("--max-new-tokens", type=int, help="Cap on tokens per answer.")
    generation.add_argument("--request-timeout", type=float, help="Seconds per generation.")
    transport = parser.add_argument_group("transport")
    transport.add_argument("--transport", choices=["stdio", "streamable-http"])
    transport.add_argument("--host", help=f"Address for streamable-http ({DEFAULT_HOST}).")
    transport.add_argument("--port", type=int, help=f"Port for streamable-http ({DEFAULT_PORT}).")
    transport.add_argument(
        "--http-token",
        help="Bearer token HTTP clients must send (prefer MISSISSIPPI_MCP_HTTP_TOKEN).",
    )
    transport.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
    return parser


def parse_args(argv: Sequence[str]) -> MCPSettings:
    """Build the settings from flags, falling back on the environment, then on defaults.

    Raises:
        SystemExit: On a usage error (code 2; argparse prints the message on stderr).
        pydantic.ValidationError: A value or combination is invalid.
    """
    values: dict[str, Any] = vars(build_parser().parse_args(list(argv)))
    return MCPSettings(**values)
