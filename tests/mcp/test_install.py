"""``mississippi-mcp install|uninstall``: each client's documented format, merge, backup, removal.

The schemas below re-state each client's documented entry format (Claude Desktop's
``claude_desktop_config.json``, Cursor's and LM Studio's ``mcp.json`` with ``mcpServers``, VS Code's
``mcp.json`` with ``servers`` and ``type: stdio``, goose's ``config.yaml`` ``extensions`` with
``cmd``/``args``/``envs``), so that a printed or written entry is checked against the format, not
against our own code.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import mississippi_mcp
from mississippi_mcp.clients import (
    CLIENTS,
    ConfigFileError,
    config_path,
    install_entry,
    is_ours,
    read_config,
)
from mississippi_mcp.settings import parse_args

_STRINGS = {"type": "array", "items": {"type": "string"}}
_ENV = {"type": "object", "additionalProperties": {"type": "string"}}
_MCP_SERVERS_ENTRY = {
    "type": "object",
    "required": ["command"],
    "properties": {"command": {"type": "string", "minLength": 1}, "args": _STRINGS, "env": _ENV},
    "additionalProperties": False,
}
_VSCODE_ENTRY = {
    "type": "object",
    "required": ["type", "command"],
    "properties": {
        "type": {"const": "stdio"},
        "command": {"type": "string", "minLength": 1},
        "args": _STRINGS,
        "env": _ENV,
        "envFile": {"type": "string"},
    },
    "additionalProperties": False,
}
_GOOSE_ENTRY = {
    "type": "object",
    "required": ["enabled", "type", "name", "cmd", "args"],
    "properties": {
        "enabled": {"type": "boolean"},
        "type": {"const": "stdio"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "cmd": {"type": "string", "minLength": 1},
        "args": _STRINGS,
        "envs": _ENV,
        "env_keys": _STRINGS,
        "timeout": {"type": "integer", "minimum": 1},
        "bundled": {"type": ["boolean", "null"]},
    },
    "additionalProperties": False,
}


def _document(key: str, entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key],
        "properties": {key: {"type": "object", "additionalProperties": entry}},
    }


#: Each client's documented configuration document.
FORMATS: dict[str, dict[str, Any]] = {
    "claude-desktop": _document("mcpServers", _MCP_SERVERS_ENTRY),
    "cursor": _document("mcpServers", _MCP_SERVERS_ENTRY),
    "lmstudio": _document("mcpServers", _MCP_SERVERS_ENTRY),
    "vscode": _document("servers", _VSCODE_ENTRY),
    "goose": _document("extensions", _GOOSE_ENTRY),
}

SERVERS_KEY = {"claude-desktop": "mcpServers", "cursor": "mcpServers", "lmstudio": "mcpServers",
               "vscode": "servers", "goose": "extensions"}  # fmt: skip


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary home (HOME, no XDG_CONFIG_HOME, APPDATA under it)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("APPDATA", str(home / "AppData" / "Roaming"))
    return home


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = mississippi_mcp.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def parse(client: str, text: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(text) if client == "goose" else json.loads(text)
    return data


@pytest.mark.parametrize("client", sorted(FORMATS))
def test_print_gives_the_documented_format(
    client: str, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    code, out, err = run(
        ["install", "--client", client, "--print", "--allow-dir", str(docs), "--desktop",
         "--launcher", "uvx", "--engine", "remote", "--base-url", "http://gpu:8090",
         "--api-key", "k3y"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    document = parse(client, out)
    jsonschema.validate(document, FORMATS[client])
    entry = document[SERVERS_KEY[client]]["mississippi"]
    command = entry.get("command", entry.get("cmd"))
    args = entry["args"]
    assert command == "uvx"
    assert args[:3] == ["--from", "mississippi-tools[mcp,pdf]", "mississippi-mcp"]
    assert args[3:] == ["--allow-dir", str(docs.resolve()), "--desktop", "--engine", "remote",
                        "--base-url", "http://gpu:8090"]  # fmt: skip
    settings = parse_args(args[3:])  # the arguments are what the server accepts
    assert settings.allow_dirs == [docs.resolve()] and settings.desktop is True
    assert settings.base_url == "http://gpu:8090"
    assert "k3y" not in json.dumps(args)  # the secret goes to the environment
    assert entry.get("env", entry.get("envs")) == {"MISSISSIPPI_MCP_REMOTE_API_KEY": "k3y"}
    assert str(config_path(client)) in err  # says where it goes
    assert not any(home.rglob("*.json")) and not any(home.rglob("*.yaml"))  # wrote nothing


def test_paths_per_platform(home: Path) -> None:
    env = {"APPDATA": r"C:\Users\ada\AppData\Roaming"}
    appdata = Path(env["APPDATA"])
    assert config_path("claude-desktop", platform="darwin") == (
        home / "Library/Application Support/Claude/claude_desktop_config.json"
    )
    assert config_path("vscode", platform="darwin") == (
        home / "Library/Application Support/Code/User/mcp.json"
    )
    assert config_path("vscode", platform="win32", environ=env) == appdata / "Code/User/mcp.json"
    assert config_path("vscode", platform="linux", environ={"XDG_CONFIG_HOME": "/x"}) == Path(
        "/x/Code/User/mcp.json"
    )
    assert config_path("cursor", platform="win32", environ=env) == home / ".cursor/mcp.json"
    assert config_path("lmstudio", platform="darwin") == home / ".lmstudio/mcp.json"
    assert config_path("goose", platform="darwin") == home / ".config/goose/config.yaml"
    assert config_path("goose", platform="linux", environ={}) == home / ".config/goose/config.yaml"
    assert config_path("goose", platform="win32", environ=env) == (
        appdata / "Block/goose/config/config.yaml"
    )
    assert config_path("vscode", workspace=Path("/p")) == Path("/p/.vscode/mcp.json")
    assert config_path("cursor", workspace=Path("/p")) == Path("/p/.cursor/mcp.json")
    with pytest.raises(ConfigFileError, match="no per-project configuration"):
        config_path("goose", workspace=Path("/p"))
    with pytest.raises(ConfigFileError, match="APPDATA"):
        config_path("claude-desktop", platform="win32", environ={})


#: An existing configuration of each client, with another server and other settings.
EXISTING: dict[str, str] = {
    "claude-desktop": json.dumps(
        {"globalShortcut": "Ctrl+Space",
         "mcpServers": {"git": {"command": "uvx", "args": ["mcp-server-git"]}}}
    ),
    "cursor": json.dumps({"mcpServers": {"git": {"command": "uvx", "args": ["mcp-server-git"]}}}),
    "lmstudio": json.dumps({"mcpServers": {"hf": {"url": "https://huggingface.co/mcp"}}}),
    "vscode": """{
  // my servers
  "servers": {
    "git": {"type": "stdio", "command": "uvx", "args": ["mcp-server-git"]}, /* trailing */
  },
  "inputs": [],
}
""",
    "goose": """# goose settings
GOOSE_PROVIDER: openai
extensions:
  developer:
    bundled: true
    enabled: true
    name: developer
    timeout: 300
    type: builtin
""",
}  # fmt: skip


@pytest.mark.parametrize("client", sorted(FORMATS))
def test_install_merges_backs_up_and_uninstall_removes_only_ours(
    client: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_path(client)
    path.parent.mkdir(parents=True)
    path.write_text(EXISTING[client], encoding="utf-8")
    os.chmod(path, 0o600)
    before = parse(client, EXISTING[client]) if client != "vscode" else None
    key = SERVERS_KEY[client]

    code, out, err = run(["install", "--client", client, "--launcher", "uvx"], capsys)
    assert code == 0, err
    written = parse(client, path.read_text(encoding="utf-8"))
    jsonschema.validate({key: {"mississippi": written[key]["mississippi"]}}, FORMATS[client])
    others = {name: value for name, value in written[key].items() if name != "mississippi"}
    if before is not None:
        assert others == before[key]
        assert {k: v for k, v in written.items() if k != key} == {
            k: v for k, v in before.items() if k != key
        }
    else:  # JSON with comments: the same servers and inputs, the comments only in the backup
        assert others == {"git": {"type": "stdio", "command": "uvx", "args": ["mcp-server-git"]}}
        assert written["inputs"] == []
        assert "comments are only in the backup" in out
    backups = sorted(path.parent.glob(f"{path.name}.*.bak"))
    assert len(backups) == 1 and backups[0].read_text(encoding="utf-8") == EXISTING[client]
    assert f"previous file kept as {backups[0]}" in out and "added" in out
    assert path.stat().st_mode & 0o777 == 0o600

    code, out, _ = run(["install", "--client", client, "--launcher", "uvx"], capsys)
    assert code == 0 and "already up to date" in out
    assert len(list(path.parent.glob("*.bak"))) == 1  # nothing written, no new backup

    code, out, _ = run(["uninstall", "--client", client], capsys)
    assert code == 0 and "removed" in out
    after = parse(client, path.read_text(encoding="utf-8"))
    assert "mississippi" not in after[key]
    assert after[key] == others
    assert len(list(path.parent.glob("*.bak"))) == 2

    code, out, _ = run(["uninstall", "--client", client], capsys)
    assert code == 0 and "nothing to remove" in out


def test_install_creates_a_missing_file(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["install", "--client", "cursor"], capsys)
    path = home / ".cursor" / "mcp.json"
    assert code == 0 and "added" in out and "previous file" not in out
    entry = json.loads(path.read_text())["mcpServers"]["mississippi"]
    assert entry == {"command": sys.executable, "args": ["-m", "mississippi_mcp"]}
    assert [p.name for p in path.parent.iterdir()] == ["mcp.json"]  # no backup, no temp file


def test_workspace_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["install", "--client", "vscode", "--workspace", str(tmp_path)], capsys)
    assert code == 0, err
    servers = json.loads((tmp_path / ".vscode" / "mcp.json").read_text())["servers"]
    jsonschema.validate({"servers": servers}, FORMATS["vscode"])


@pytest.mark.parametrize("command", ["install", "uninstall"])
def test_an_entry_of_our_name_from_another_program_is_left_alone(
    command: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = home / ".cursor" / "mcp.json"
    path.parent.mkdir()
    content = json.dumps({"mcpServers": {"mississippi": {"command": "node", "args": ["x.js"]}}})
    path.write_text(content)
    code, _, err = run([command, "--client", "cursor"], capsys)
    assert code == 1 and "--force" in err and "nothing was written" in err
    assert path.read_text() == content and len(list(path.parent.iterdir())) == 1
    code, _, err = run([command, "--client", "cursor", "--force"], capsys)
    assert code == 0, err
    assert path.read_text() != content


SECRET = "sk-live-DO-NOT-PRINT"


@pytest.mark.parametrize(
    ("client", "content", "message", "line"),
    [
        ("cursor", '{\n  "mcpServers": {\n    "a": "' + SECRET + '" "b"\n  }\n}', "not valid JSON",
         3),
        ("claude-desktop", f'["{SECRET}"]', "holds a list, not an object", None),
        ("lmstudio", f'{{"mcpServers": ["{SECRET}"]}}', '"mcpServers"', None),
        ("vscode", '{\n  // c\n  "servers": {"a": 1,, "k": "' + SECRET + '"}\n}',
         "JSON with comments", 3),
        ("goose", f"extensions:\n  a: [{SECRET}\n  b: 1\n", "not valid YAML", 3),
    ],
)  # fmt: skip
def test_a_malformed_file_is_reported_by_location_only(
    client: str,
    content: str,
    message: str,
    line: int | None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "config"
    path.write_text(content)
    code, out, err = run(["install", "--client", client, "--config-path", str(path)], capsys)
    assert code == 1 and message in err and "nothing was written" in err, err
    assert SECRET not in err + out  # never quotes the file
    if line is not None:
        assert f"line {line}" in err
        with pytest.raises(ConfigFileError) as caught:
            read_config(path, client)
        assert caught.value.line == line and caught.value.path == path
    assert path.read_text() == content
    assert [p.name for p in tmp_path.iterdir()] == ["config"]
    code, _, err = run(["uninstall", "--client", client, "--config-path", str(path)], capsys)
    assert code == 1 and SECRET not in err


def test_is_ours_and_force_replace(tmp_path: Path) -> None:
    assert is_ours({"command": "uvx", "args": ["--from", "x", "mississippi-mcp"]})
    assert is_ours({"cmd": "/venv/bin/python", "args": ["-m", "mississippi_mcp"]})
    assert not is_ours({"command": "node", "args": ["server.js"]})
    assert not is_ours(["mississippi-mcp"])
    path = tmp_path / "mcp.json"
    entry = CLIENTS["cursor"].entry("mississippi-mcp", [])
    assert install_entry(path, "cursor", "m", entry).action == "added"
    assert install_entry(path, "cursor", "m", entry).action == "unchanged"
    assert install_entry(path, "cursor", "m", {**entry, "args": ["--desktop"]}).action == "replaced"
