"""Settings of the MCP server: environment variables (``MISSISSIPPI_MCP_…``) and flags.

Every setting can come from an environment variable named ``MISSISSIPPI_MCP_`` + its name in
capitals (``MISSISSIPPI_MCP_MODEL``, ``MISSISSIPPI_MCP_ALLOW_DIRS``, ``MISSISSIPPI_MCP_PORT``), and
most from a flag; a flag wins over the environment. The prefix is the MCP server's own, so that it
never reads the HTTP service's settings (``MISSISSIPPI_PORT`` is the service's port,
``MISSISSIPPI_API_KEY`` the key the service requires). The names of the previous release
(``MISSISSIPPI_MODEL``, ``MISSISSIPPI_ALLOW_DIRS``, ``MISSISSIPPI_API_KEY`` for the remote service's
token ...) are still read when the new one is not set, with a warning on stderr, for one release.

Which files the tools may read:

- ``--allow-dir DIR`` (repeatable) or ``MISSISSIPPI_MCP_ALLOW_DIRS`` (directories separated by
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
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from mississippi_tools.serving import ModelSettings
from mississippi_tools.sources import DEFAULT_URL_TIMEOUT

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_LOAD_TIMEOUT",
    "DEFAULT_MAX_PAGES",
    "DEFAULT_MODEL",
    "DEFAULT_PORT",
    "DEFAULT_RESULT_BUDGET",
    "ENV_PREFIX",
    "MCPSettings",
    "build_parser",
    "is_loopback",
    "parse_args",
]

ENV_PREFIX = "MISSISSIPPI_MCP_"
"""Prefix of every environment variable read by :class:`MCPSettings`."""
LEGACY_PREFIX = "MISSISSIPPI_"
"""Prefix of the previous release's names, still read for one release (with a warning)."""
DEFAULT_MODEL = "h2oai/h2ovl-mississippi-800m"
"""The model loaded when ``--model`` is not given (local engine)."""
DEFAULT_HOST = "127.0.0.1"
"""Address the streamable HTTP transport binds by default (this machine only)."""
DEFAULT_PORT = 8765
"""Port of the streamable HTTP transport."""
DEFAULT_MAX_PAGES = 20
"""Most document pages one call reads; larger selections are refused with a hint."""
DEFAULT_RESULT_BUDGET = 60_000
"""Characters of one tool result (about 15,000 tokens: under the common 25,000-token cap)."""
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


class MCPSettings(ModelSettings):
    """Everything ``mississippi-mcp`` can be told, from flags or ``MISSISSIPPI_MCP_…`` variables.

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
    engine: EngineKind = "local"
    """``local`` loads the model in this process; ``remote`` uses a running service."""
    base_url: str | None = None
    """Address of the service for ``engine=remote``: ``mississippi-tools serve`` or vLLM."""
    remote_api_key: SecretStr | None = None
    """Bearer token the remote service requires, if any."""
    family: str | None = None
    """With ``engine=remote``: the served model's family (``h2ovl``, ``idefics3`` ...), when
    neither the service nor the model's name tells."""
    load_timeout: float = Field(default=DEFAULT_LOAD_TIMEOUT, gt=0)
    """Seconds a tool call waits for the model to load before failing (the load goes on)."""

    # -- what the tools may read -------------------------------------------------------------------
    allow_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Directories whose files the tools may read (with their subdirectories)."""
    client_roots: bool = True
    """Also allow the directories the client declares as MCP roots."""
    url_timeout: float = Field(default=DEFAULT_URL_TIMEOUT, gt=0)
    """Seconds allowed for a whole URL download."""
    desktop: bool = False
    """Also list ``read_screenshot`` and ``read_clipboard_image``. Off by default: a screenshot
    or the clipboard can hold secrets (passwords, messages, keys) that would reach the client."""

    # -- generation --------------------------------------------------------------------------------
    max_tiles: int | None = Field(default=None, ge=1)
    """H2OVL models: most 448-px tiles per image (default: the model's own, 6 for the 800M)."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    """Cap on tokens generated per answer (default: each task's own)."""
    result_budget: int = Field(default=DEFAULT_RESULT_BUDGET, ge=1000)
    """Characters of one tool result (text and structured content); longer results are cut
    between pages and continued with ``read_more`` (the default stays under the common
    25,000-token client cap)."""
    request_timeout: float | None = Field(default=None, gt=0)
    """Seconds before one generation fails (default: no limit)."""

    # -- transport ---------------------------------------------------------------------------------
    transport: Transport = "stdio"
    """``stdio`` (desktop clients start the server) or ``streamable-http``."""
    host: str = DEFAULT_HOST
    """Address to bind for ``streamable-http``; any non-loopback address needs ``http_token``."""
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    """Port for ``streamable-http``."""
    http_token: SecretStr | None = None
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
                    "fix --allow-dir / MISSISSIPPI_MCP_ALLOW_DIRS"
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
                "http://HOST:PORT (or set MISSISSIPPI_MCP_BASE_URL)"
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags, then ``MISSISSIPPI_MCP_…``, then the previous release's names."""
        legacy = _LegacyEnvSource(settings_cls)
        return init_settings, env_settings, legacy, dotenv_settings, file_secret_settings

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


#: Settings the previous release read without the ``MCP_`` infix (the transport's already had
#: it), and the former name of those renamed since.
_LEGACY_NAMES: dict[str, tuple[str, ...]] = {
    **{
        name: (f"{LEGACY_PREFIX}{name.upper()}",)
        for name in (
            "model",
            "device",
            "dtype",
            "engine",
            "load_timeout",
            "allow_dirs",
            "client_roots",
            "allow_urls",
            "allow_private_urls",
            "url_timeout",
            "max_image_bytes",
            "max_image_pixels",
            "max_pages",
            "max_tiles",
            "max_new_tokens",
            "request_timeout",
            "log_level",
        )
    },
    "base_url": ("MISSISSIPPI_BASE_URL", "MISSISSIPPI_REMOTE_URL"),
    "remote_api_key": ("MISSISSIPPI_API_KEY",),
}

logger = logging.getLogger("mississippi_mcp")


class _LegacyEnvSource(EnvSettingsSource):
    """The previous release's environment names, for settings whose new name is not set."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        for name in _LEGACY_NAMES.get(field_name, ()):
            value = self.env_vars.get(name.lower())
            if value is not None:
                new = f"{ENV_PREFIX}{field_name.upper()}"
                if new.lower() not in self.env_vars:
                    logger.warning(
                        "%s is deprecated for mississippi-mcp; set %s instead", name, new
                    )
                    return value, field_name, self.field_is_complex(field)
        return None, field_name, False


def build_parser() -> argparse.ArgumentParser:
    """The ``mississippi-mcp`` argument parser (flags override ``MISSISSIPPI_MCP_…`` variables)."""
    parser = argparse.ArgumentParser(
        prog="mississippi-mcp",
        description=(
            "MCP server of mississippi-tools: OCR, chart and table reading, JSON extraction "
            "and questions about images on a local vision-language model (H2OVL-Mississippi "
            "by default), for desktop assistants and coding agents. "
            "Subcommands: 'mississippi-mcp install --client CLIENT [--print]' adds the server to "
            "Claude Desktop, Cursor, VS Code, LM Studio or goose ('uninstall' removes it); "
            "'mississippi-mcp bundle' builds a .mcpb desktop bundle."
        ),
        argument_default=argparse.SUPPRESS,
    )
    from mississippi_mcp import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    model = parser.add_argument_group("model")
    model.add_argument("--model", "-m", help=f"Hub id or checkpoint directory ({DEFAULT_MODEL}).")
    model.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (local engine).")
    model.add_argument("--dtype", help="auto, float32, bfloat16 or float16 (local engine).")
    model.add_argument(
        "--quantization",
        choices=["int8"],
        help="int8 linear layers on the CPU, the rest bfloat16 or float32 (local engine; H2OVL).",
    )
    model.add_argument("--engine", choices=["local", "remote"], help="Where the model runs.")
    model.add_argument(
        "--base-url", help="Service address for --engine remote (mississippi-tools serve, vLLM)."
    )
    model.add_argument(
        "--remote-api-key",
        "--api-key",
        dest="remote_api_key",
        help="Bearer token of the remote service (prefer MISSISSIPPI_MCP_REMOTE_API_KEY).",
    )
    model.add_argument(
        "--family", help="The remote model's family (h2ovl, idefics3 ...) for --engine remote."
    )
    model.add_argument("--load-timeout", type=float, help="Seconds a call waits for loading.")
    model.add_argument(
        "--idle-unload",
        type=float,
        metavar="SECONDS",
        help="Unload the model after this long without a call; the next call reloads it.",
    )
    model.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="Refuse to load a model estimated above this (8GB, 512MiB, bytes).",
    )
    access = parser.add_argument_group("what the tools may read")
    access.add_argument(
        "--allow-dir",
        dest="allow_dirs",
        action="extend",
        nargs="+",
        metavar="DIR",
        help="Directories whose files the tools may read (repeatable; several may follow one "
        "flag, as MCP bundles pass them).",
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
    access.add_argument(
        "--desktop",
        action=argparse.BooleanOptionalAction,
        help="Add the read_screenshot and read_clipboard_image tools (off by default: a "
        "screenshot can hold secrets).",
    )
    access.add_argument("--max-image-bytes", type=int, help="Largest input, in bytes.")
    access.add_argument("--max-image-pixels", type=int, help="Largest image, in pixels.")
    access.add_argument("--max-pages", type=int, help="Most pages one call reads (0: no limit).")
    generation = parser.add_argument_group("generation")
    generation.add_argument("--max-tiles", type=int, help="Most 448-px tiles per image.")
    generation.add_argument("--max-new-tokens", type=int, help="Cap on tokens per answer.")
    generation.add_argument("--request-timeout", type=float, help="Seconds per generation.")
    generation.add_argument(
        "--result-budget",
        type=int,
        help="Characters per tool result; longer ones continue with read_more (60000).",
    )
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
