r"""Where each desktop MCP client keeps its server list, in which format, and how to edit it safely.

Five clients, each in its own documented format:

============== ============================================== ============ ======================
client         user configuration file                        top key      entry
============== ============================================== ============ ======================
claude-desktop ``Claude/claude_desktop_config.json`` in the   ``mcpServers`` ``command``, ``args``,
               app-data folder (see :func:`config_path`)                   ``env``
cursor         ``~/.cursor/mcp.json`` (project:               ``mcpServers`` as Claude Desktop
               ``.cursor/mcp.json``)
vscode         ``Code/User/mcp.json`` in the app-data folder  ``servers``  ``type: stdio``,
               (workspace: ``.vscode/mcp.json``; JSON with                 ``command``, ``args``,
               comments)                                                   ``env``
lmstudio       ``~/.lmstudio/mcp.json`` (Cursor's notation)   ``mcpServers`` as Claude Desktop
goose          ``goose/config.yaml`` (``~/.config`` on macOS  ``extensions`` ``type: stdio``,
               and Linux, ``%APPDATA%\Block\goose\config``                 ``cmd``, ``args``,
               on Windows)                                                 ``envs`` ...
============== ============================================== ============ ======================

Editing is safe by construction (:func:`install_entry`, :func:`remove_entry`):

- everything else in the file is kept: other servers, other settings;
- an entry of our name that does not start ``mississippi-mcp`` is someone else's and is left alone
  (unless ``force``), on install and on uninstall;
- the previous file is copied next to it first (``<name>.<YYYYmmdd-HHMMSS>.bak``), with its mode;
- the new file is written to a temporary file in the same directory and renamed over the old one,
  so a crash leaves either the old file or the new one;
- a file that cannot be parsed is reported with its location (line and column) only, never its
  contents, and nothing is written.

Comments in a VS Code ``mcp.json`` (JSON with comments) and in goose's YAML are not kept in the
rewritten file; the backup has them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mississippi_tools.errors import MississippiError

__all__ = [
    "CLIENTS",
    "DEFAULT_SERVER_NAME",
    "ClientName",
    "ClientSpec",
    "ConfigFileError",
    "EditOutcome",
    "atomic_write",
    "config_path",
    "install_entry",
    "is_ours",
    "load_config",
    "read_config",
    "remove_entry",
    "render",
]

DEFAULT_SERVER_NAME = "mississippi"
"""The entry's name in the client's server list."""
GOOSE_TIMEOUT = 600
"""Seconds goose lets one tool call run (a first call may wait for the model to load)."""

ClientName = Literal["claude-desktop", "cursor", "vscode", "lmstudio", "goose"]
Format = Literal["json", "jsonc", "yaml"]


class ConfigFileError(MississippiError, ValueError):
    """A client's configuration file cannot be read or merged into; nothing was written.

    Attributes:
        path: The file.
        line: The 1-based line of the problem, when known.
        column: The 1-based column of the problem, when known.
    """

    code = "config_file_error"

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.column = column


@dataclass(frozen=True)
class ClientSpec:
    """One client: its name, its configuration format and where the file lives.

    Attributes:
        name: The ``--client`` value.
        title: The client's name for people.
        format: ``json``, ``jsonc`` (JSON with comments) or ``yaml``.
        servers_key: The top-level key holding the server entries.
        user_path: The user-wide file, from ``(platform, environ, home)``.
        workspace_path: The project file under a workspace folder, when the client has one.
    """

    name: ClientName
    title: str
    format: Format
    servers_key: str
    user_path: Callable[[str, Mapping[str, str], Path], Path]
    workspace_path: str | None = None

    def entry(
        self,
        command: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        name: str = DEFAULT_SERVER_NAME,
    ) -> dict[str, Any]:
        """The client's entry named ``name`` that starts ``command args`` with ``env``.

        Example:
            >>> CLIENTS["vscode"].entry("uvx", ["mississippi-mcp"])
            {'type': 'stdio', 'command': 'uvx', 'args': ['mississippi-mcp']}
        """
        if self.name == "goose":
            return {
                "enabled": True,
                "type": "stdio",
                "name": name,
                "description": "OCR, tables, charts and JSON extraction from images, on a "
                "local vision-language model (mississippi-tools)",
                "cmd": command,
                "args": list(args),
                "envs": dict(env or {}),
                "env_keys": [],
                "timeout": GOOSE_TIMEOUT,
                "bundled": None,
            }
        entry: dict[str, Any] = {"type": "stdio"} if self.name == "vscode" else {}
        entry.update({"command": command, "args": list(args)})
        if env:
            entry["env"] = dict(env)
        return entry


def _app_data(platform: str, environ: Mapping[str, str], home: Path, client: str) -> Path:
    """The per-user application folder: Application Support, %APPDATA%, or XDG_CONFIG_HOME."""
    if platform == "darwin":
        return home / "Library" / "Application Support"
    if platform.startswith(("win32", "cygwin")):
        appdata = environ.get("APPDATA")
        if not appdata:
            raise ConfigFileError(
                f"APPDATA is not set, so the {client} configuration cannot be found; pass "
                "--config-path"
            )
        return Path(appdata)
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config")


def _goose_path(platform: str, environ: Mapping[str, str], home: Path) -> Path:
    if platform.startswith(("win32", "cygwin")):
        return (
            _app_data(platform, environ, home, "goose")
            / "Block"
            / "goose"
            / "config"
            / ("config.yaml")
        )
    if platform == "darwin":  # goose documents ~/.config on macOS too
        return home / ".config" / "goose" / "config.yaml"
    return _app_data(platform, environ, home, "goose") / "goose" / "config.yaml"


#: The supported clients, by ``--client`` value.
CLIENTS: dict[str, ClientSpec] = {
    "claude-desktop": ClientSpec(
        "claude-desktop",
        "Claude Desktop",
        "json",
        "mcpServers",
        lambda p, e, h: (
            _app_data(p, e, h, "Claude Desktop") / "Claude" / ("claude_desktop_config.json")
        ),
    ),
    "cursor": ClientSpec(
        "cursor",
        "Cursor",
        "json",
        "mcpServers",
        lambda p, e, h: h / ".cursor" / "mcp.json",
        workspace_path=".cursor/mcp.json",
    ),
    "vscode": ClientSpec(
        "vscode",
        "VS Code",
        "jsonc",
        "servers",
        lambda p, e, h: _app_data(p, e, h, "VS Code") / "Code" / "User" / "mcp.json",
        workspace_path=".vscode/mcp.json",
    ),
    "lmstudio": ClientSpec(
        "lmstudio", "LM Studio", "json", "mcpServers", lambda p, e, h: h / ".lmstudio" / "mcp.json"
    ),
    "goose": ClientSpec("goose", "goose", "yaml", "extensions", _goose_path),
}


def config_path(
    client: str,
    *,
    workspace: Path | None = None,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Path:
    """The configuration file ``client`` reads on ``platform`` (default: this machine's).

    Args:
        client: A key of :data:`CLIENTS`.
        workspace: A project folder, for the clients with a per-project file (cursor, vscode).
        platform: A ``sys.platform`` value.
        environ: The environment (``APPDATA``, ``XDG_CONFIG_HOME``); default ``os.environ``.
        home: The home directory; default ``Path.home()``.

    Raises:
        ConfigFileError: On Windows without ``APPDATA``, or a workspace for a client without one.

    Example:
        >>> config_path("cursor", home=Path("/home/ada")).as_posix()
        '/home/ada/.cursor/mcp.json'
    """
    spec = CLIENTS[client]
    if workspace is not None:
        if spec.workspace_path is None:
            raise ConfigFileError(
                f"{spec.title} has no per-project configuration; leave out --workspace"
            )
        return workspace / spec.workspace_path
    return spec.user_path(
        platform or sys.platform,
        os.environ if environ is None else environ,
        home or Path.home(),
    )


def render(client: str, name: str, entry: Mapping[str, Any]) -> str:
    """A configuration document holding only our entry, in the client's format (``--print``)."""
    spec = CLIENTS[client]
    document = {spec.servers_key: {name: dict(entry)}}
    if spec.format == "yaml":
        return _dump_yaml(document)
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def is_ours(entry: Any) -> bool:
    """Whether a server entry starts ``mississippi-mcp`` (by its command or arguments)."""
    if not isinstance(entry, Mapping):
        return False
    words = [entry.get("command"), entry.get("cmd")]
    args = entry.get("args")
    if isinstance(args, list):
        words += args
    return any(
        isinstance(word, str) and ("mississippi_mcp" in word or "mississippi-mcp" in word)
        for word in words
    )


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def _strip_jsonc(text: str) -> tuple[str, bool]:
    """JSON with comments and trailing commas made plain JSON, positions kept.

    Comments become spaces (newlines kept), so that a parse error's line and column still point
    into the original file.

    Returns:
        The plain JSON and whether anything was removed.
    """
    out: list[str] = []
    changed = False
    i, n = 0, len(text)
    in_string = False
    while i < n:
        char = text[i]
        if in_string:
            out.append(char)
            if char == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if char == '"':
                in_string = False
            i += 1
        elif char == '"':
            in_string = True
            out.append(char)
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end == -1 else end
            out.append(" " * (end - i))
            changed, i = True, end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end == -1 else end + 2
            out.append("".join(c if c == "\n" else " " for c in text[i:end]))
            changed, i = True, end
        elif char in "]}":
            # A trailing comma: the last non-blank character written is a comma.
            j = len(out) - 1
            while j >= 0 and out[j].isspace():
                j -= 1
            if j >= 0 and out[j] == ",":
                out[j] = " "
                changed = True
            out.append(char)
            i += 1
        else:
            out.append(char)
            i += 1
    return "".join(out), changed


def _parse_json(path: Path, text: str, with_comments: bool) -> tuple[Any, bool]:
    stripped = False
    if with_comments:
        text, stripped = _strip_jsonc(text)
    try:
        return json.loads(text), stripped
    except json.JSONDecodeError as e:
        kind = "JSON with comments" if with_comments else "JSON"
        raise ConfigFileError(
            f"{path} is not valid {kind}: {e.msg} at line {e.lineno}, column {e.colno}; fix "
            "or move the file, then run again (nothing was written)",
            path=path,
            line=e.lineno,
            column=e.colno,
        ) from None


def _parse_yaml(path: Path, text: str) -> Any:
    yaml = _yaml()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        column = None if mark is None else mark.column + 1
        where = "" if mark is None else f" at line {line}, column {column}"
        raise ConfigFileError(
            f"{path} is not valid YAML{where}; fix or move the file, then run again "
            "(nothing was written)",
            path=path,
            line=line,
            column=column,
        ) from None


def _yaml() -> Any:
    from mississippi_tools.extras import require

    require("yaml", "mcp", purpose="editing goose's config.yaml")
    import yaml

    return yaml


def _dump_yaml(document: Mapping[str, Any]) -> str:
    text: str = _yaml().safe_dump(
        dict(document), sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    return text


def read_config(path: Path, client: str) -> tuple[dict[str, Any], bool]:
    """The configuration at ``path`` as ``client`` writes it, or ``{}`` when there is none.

    Returns:
        The document and whether comments were dropped in reading it.

    Raises:
        ConfigFileError: Unreadable, unparseable, or not a mapping.
    """
    spec = CLIENTS[client]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}, False
    except OSError as e:
        raise ConfigFileError(f"cannot read {path}: {e.strerror or e}", path=path) from e
    if not text.strip():
        return {}, False
    if spec.format == "yaml":
        data, dropped = _parse_yaml(path, text), "#" in text
    else:
        data, dropped = _parse_json(path, text, with_comments=spec.format == "jsonc")
    if data is None:
        return {}, False
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise ConfigFileError(
            f"{path} holds {kind}, not an object at the top; fix or move the file "
            "(nothing was written)",
            path=path,
        )
    return data, dropped


def load_config(path: Path, client: str) -> dict[str, Any]:
    """:func:`read_config` without the comment flag."""
    return read_config(path, client)[0]


def _servers(config: Mapping[str, Any], spec: ClientSpec, path: Path) -> dict[str, Any]:
    servers = config.get(spec.servers_key)
    if servers is None:
        return {}
    if not isinstance(servers, dict):
        kind = "a list" if isinstance(servers, list) else f"a {type(servers).__name__}"
        raise ConfigFileError(
            f'"{spec.servers_key}" in {path} is {kind}, not an object; fix the file by hand '
            "(nothing was written)",
            path=path,
        )
    return dict(servers)


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditOutcome:
    """What an install or uninstall did.

    Attributes:
        path: The configuration file.
        action: ``added``, ``replaced``, ``unchanged`` (already up to date), ``removed`` or
            ``absent`` (nothing to remove).
        backup: The copy of the previous file, or ``None`` when nothing was written or there
            was no file.
        comments_dropped: Whether the previous file had comments the new one lacks.
    """

    path: Path
    action: Literal["added", "replaced", "unchanged", "removed", "absent"]
    backup: Path | None = None
    comments_dropped: bool = False

    @property
    def changed(self) -> bool:
        """Whether the file was written."""
        return self.action in ("added", "replaced", "removed")


def _backup(path: Path) -> Path | None:
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.{stamp}.bak")
    counter = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.{stamp}-{counter}.bak")
        counter += 1
    shutil.copy2(path, backup)
    return backup


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it; the mode is kept."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write(path: Path, spec: ClientSpec, config: Mapping[str, Any]) -> Path | None:
    backup = _backup(path)
    if spec.format == "yaml":
        text = _dump_yaml(config)
    else:
        text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, text)
    return backup


def _foreign(path: Path, name: str, spec: ClientSpec) -> ConfigFileError:
    return ConfigFileError(
        f'{path} already has a "{name}" entry under "{spec.servers_key}" that does not start '
        "mississippi-mcp; choose another --name, or pass --force to replace it "
        "(nothing was written)",
        path=path,
    )


def install_entry(
    path: Path, client: str, name: str, entry: Mapping[str, Any], *, force: bool = False
) -> EditOutcome:
    """Merge ``entry`` under ``name`` into ``client``'s configuration at ``path``.

    Raises:
        ConfigFileError: The file cannot be parsed, its server list is not a mapping, or an
            entry of that name belongs to another server (without ``force``).
    """
    spec = CLIENTS[client]
    config, dropped = read_config(path, client)
    servers = _servers(config, spec, path)
    previous = servers.get(name)
    if previous is not None and not force and not is_ours(previous):
        raise _foreign(path, name, spec)
    if previous == dict(entry):
        return EditOutcome(path, "unchanged")
    servers[name] = dict(entry)
    merged = {**config, spec.servers_key: servers}
    backup = _write(path, spec, merged)
    action: Literal["added", "replaced"] = "replaced" if previous is not None else "added"
    return EditOutcome(path, action, backup, comments_dropped=dropped)


def remove_entry(path: Path, client: str, name: str, *, force: bool = False) -> EditOutcome:
    """Remove our entry ``name`` from ``client``'s configuration at ``path``; keep the rest.

    Raises:
        ConfigFileError: The file cannot be parsed, or the entry of that name belongs to
            another server (without ``force``).
    """
    spec = CLIENTS[client]
    config, dropped = read_config(path, client)
    servers = _servers(config, spec, path)
    if name not in servers:
        return EditOutcome(path, "absent")
    if not force and not is_ours(servers[name]):
        raise _foreign(path, name, spec)
    del servers[name]
    backup = _write(path, spec, {**config, spec.servers_key: servers})
    return EditOutcome(path, "removed", backup, comments_dropped=dropped)
