r"""``mississippi-mcp config claude``: the Claude Desktop entry, printed or installed.

Without ``--write`` the entry is printed as JSON, ready to paste under ``mcpServers``. With
``--write`` it is merged into the platform's ``claude_desktop_config.json``:

- the other servers and every other key are kept; an entry of the same name is replaced;
- the previous file is copied next to it first (``claude_desktop_config.json.<time>.bak``);
- the new file is written to a temporary file in the same directory, flushed, and renamed over
  the old one, so a crash leaves either the old file or the new one, never half of one;
- a file that is not a JSON object (or whose ``mcpServers`` is not one) is left alone and
  reported: nothing is written.

Config file locations: ``~/Library/Application Support/Claude/`` (macOS),
``%APPDATA%\Claude\`` (Windows), ``$XDG_CONFIG_HOME/Claude/`` or ``~/.config/Claude/`` (Linux).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mississippi_mcp.clients import (
    DEFAULT_SERVER_NAME,
    ConfigFileError,
    config_path,
    install_entry,
    load_config,
)

__all__ = [
    "CONFIG_FILE_NAME",
    "DEFAULT_SERVER_NAME",
    "PACKAGE_SPEC",
    "ConfigFileError",
    "WriteOutcome",
    "claude_config_path",
    "main",
    "merge_server",
    "server_entry",
    "write_server",
]

CONFIG_FILE_NAME = "claude_desktop_config.json"
"""Claude Desktop's configuration file."""
PACKAGE_SPEC = "mississippi-tools[mcp,local,pdf]"
"""What ``uvx``/``pipx`` install for the local engine (``[mcp,pdf]`` suffices for a remote one)."""

Launcher = Literal["python", "uvx", "pipx"]


@dataclass(frozen=True)
class WriteOutcome:
    """What :func:`write_server` did.

    Attributes:
        path: The configuration file.
        backup: The copy of the previous file, or ``None`` when there was none (or no change).
        replaced: Whether an entry of the same name was replaced.
        changed: Whether the file was written at all (``False`` when already up to date).
    """

    path: Path
    backup: Path | None
    replaced: bool
    changed: bool


def claude_config_path(
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Path:
    """Where Claude Desktop reads its configuration on ``platform`` (default: this one).

    Args:
        platform: A ``sys.platform`` value: ``darwin``, ``win32``, ``linux`` ...
        environ: The environment (``APPDATA``, ``XDG_CONFIG_HOME``); default ``os.environ``.
        home: The home directory; default ``Path.home()``.

    Raises:
        ConfigFileError: On Windows without ``APPDATA``.

    Example:
        >>> claude_config_path("darwin", {}, Path("/Users/ada")).as_posix()
        '/Users/ada/Library/Application Support/Claude/claude_desktop_config.json'
    """
    return config_path("claude-desktop", platform=platform, environ=environ, home=home)


def server_entry(
    server_args: Sequence[str] = (),
    *,
    launcher: Launcher = "python",
    python: str | None = None,
    package: str = PACKAGE_SPEC,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``mcpServers`` entry that starts ``mississippi-mcp`` with ``server_args``.

    Args:
        server_args: Arguments of the server (``--allow-dir``, ``--model`` ...).
        launcher: ``python`` runs ``<python> -m mississippi_mcp`` with the given interpreter
            (an installed virtual environment); ``uvx`` and ``pipx`` install ``package`` in a
            cached environment of their own.
        python: The interpreter for ``launcher="python"`` (default: this one).
        package: The requirement ``uvx``/``pipx`` install.
        env: Environment variables for the server (secrets belong here, not in ``args``).

    Example:
        >>> server_entry(["--allow-dir", "/data"], launcher="uvx")["args"][:3]
        ['--from', 'mississippi-tools[mcp,local,pdf]', 'mississippi-mcp']
    """
    args = list(server_args)
    if launcher == "uvx":
        entry: dict[str, Any] = {
            "command": "uvx",
            "args": ["--from", package, "mississippi-mcp", *args],
        }
    elif launcher == "pipx":
        entry = {"command": "pipx", "args": ["run", "--spec", package, "mississippi-mcp", *args]}
    else:
        entry = {"command": python or sys.executable, "args": ["-m", "mississippi_mcp", *args]}
    if env:
        entry["env"] = dict(env)
    return entry


def merge_server(
    config: Mapping[str, Any], name: str, entry: Mapping[str, Any]
) -> tuple[dict[str, Any], bool]:
    """``config`` with ``entry`` under ``mcpServers[name]``; everything else kept.

    Returns:
        The new configuration and whether an entry of that name was replaced.

    Raises:
        ConfigFileError: ``mcpServers`` exists but is not a JSON object.
    """
    merged = dict(config)
    servers = merged.get("mcpServers", {})
    if not isinstance(servers, dict):
        raise ConfigFileError(
            f'"mcpServers" is a {type(servers).__name__}, not an object; fix the file by hand '
            "(nothing was written)"
        )
    servers = dict(servers)
    replaced = name in servers
    servers[name] = dict(entry)
    merged["mcpServers"] = servers
    return merged, replaced


def write_server(path: Path, name: str, entry: Mapping[str, Any]) -> WriteOutcome:
    """Merge ``entry`` into the configuration at ``path``: back up, then replace atomically.

    Raises:
        ConfigFileError: The existing file is unreadable or not a JSON object.
    """
    merge_server(load_config(path, "claude-desktop"), name, entry)  # checks the file's shape
    outcome = install_entry(path, "claude-desktop", name, entry, force=True)
    return WriteOutcome(
        path=path,
        backup=outcome.backup,
        replaced=outcome.action == "replaced",
        changed=outcome.changed,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mississippi-mcp config",
        description="Print the MCP client entry for mississippi-mcp, or install it.",
    )
    sub = parser.add_subparsers(dest="client", required=True, metavar="CLIENT")
    claude = sub.add_parser(
        "claude",
        help="Claude Desktop (claude_desktop_config.json).",
        description=(
            "Print the Claude Desktop entry, or merge it into claude_desktop_config.json "
            "with --write (other servers kept, previous file backed up, atomic write)."
        ),
    )
    claude.add_argument("--write", action="store_true", help="Install the entry.")
    claude.add_argument("--name", default=DEFAULT_SERVER_NAME, help="The entry's name.")
    claude.add_argument(
        "--launcher",
        choices=["python", "uvx", "pipx"],
        default="python",
        help="python: this interpreter (-m mississippi_mcp); uvx/pipx: a cached environment.",
    )
    claude.add_argument("--python", help="Interpreter for --launcher python (default: this one).")
    claude.add_argument("--package", help=f"Requirement for uvx/pipx ({PACKAGE_SPEC}).")
    claude.add_argument("--config-path", type=Path, help="The configuration file to use.")
    server = claude.add_argument_group("server options written into the entry")
    server.add_argument("--allow-dir", action="append", default=[], metavar="DIR")
    server.add_argument("--allow-urls", action="store_true")
    server.add_argument("--model")
    server.add_argument("--device")
    server.add_argument("--engine", choices=["local", "remote"])
    server.add_argument("--base-url")
    server.add_argument(
        "--api-key", help="Remote service token; written to the entry's env, not its args."
    )
    return parser


def _server_args(options: argparse.Namespace) -> list[str]:
    args: list[str] = []
    for directory in options.allow_dir:
        args += ["--allow-dir", str(Path(directory).expanduser().resolve())]
    if options.allow_urls:
        args.append("--allow-urls")
    for flag in ("model", "device", "engine", "base_url"):
        value = getattr(options, flag)
        if value:
            args += [f"--{flag.replace('_', '-')}", value]
    return args


def main(argv: Sequence[str]) -> int:
    """Run ``mississippi-mcp config``; returns the exit code (0, 1 on a file problem, 2 usage)."""
    options = _parser().parse_args(list(argv))
    env = {"MISSISSIPPI_MCP_REMOTE_API_KEY": options.api_key} if options.api_key else None
    package = options.package or (
        "mississippi-tools[mcp,pdf]" if options.engine == "remote" else PACKAGE_SPEC
    )
    entry = server_entry(
        _server_args(options),
        launcher=options.launcher,
        python=options.python,
        package=package,
        env=env,
    )
    if not options.write:
        print(json.dumps({"mcpServers": {options.name: entry}}, indent=2, ensure_ascii=False))
        return 0
    try:
        path = options.config_path or claude_config_path()
        outcome = write_server(path, options.name, entry)
    except (ConfigFileError, OSError) as e:
        print(f"mississippi-mcp config: error: {e}", file=sys.stderr)
        return 1
    if not outcome.changed:
        print(f"{outcome.path}: the {options.name!r} entry is already up to date")
        return 0
    action = "replaced" if outcome.replaced else "added"
    print(f"{outcome.path}: {action} the {options.name!r} server")
    if outcome.backup is not None:
        print(f"previous file kept as {outcome.backup}")
    print("Restart Claude Desktop to load it.")
    return 0
