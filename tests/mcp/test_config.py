"""``mississippi-mcp config claude``: the printed entry and the safe install."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

import mississippi_mcp
from mississippi_mcp.config import (
    ConfigFileError,
    claude_config_path,
    merge_server,
    server_entry,
    write_server,
)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = mississippi_mcp.main(["config", "claude", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary home: HOME, XDG_CONFIG_HOME unset, APPDATA under it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("APPDATA", str(home / "AppData" / "Roaming"))
    return home


def test_paths_per_platform(home: Path) -> None:
    assert claude_config_path("darwin") == (
        home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    )
    assert claude_config_path("win32") == (
        home / "AppData" / "Roaming" / "Claude" / "claude_desktop_config.json"
    )
    assert claude_config_path("linux") == home / ".config" / "Claude" / "claude_desktop_config.json"
    assert claude_config_path("linux", {"XDG_CONFIG_HOME": "/x"}) == Path(
        "/x/Claude/claude_desktop_config.json"
    )
    with pytest.raises(ConfigFileError, match="APPDATA"):
        claude_config_path("win32", {})


def test_print_shows_the_entry(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    code, out, _ = run(["--allow-dir", str(docs), "--model", "h2oai/h2ovl-mississippi-2b"], capsys)
    assert code == 0
    entry = json.loads(out)["mcpServers"]["mississippi"]
    assert entry == {
        "command": sys.executable,
        "args": ["-m", "mississippi_mcp", "--allow-dir", str(docs.resolve()),
                 "--model", "h2oai/h2ovl-mississippi-2b"],
    }  # fmt: skip
    assert not (home / ".config").exists()  # printing writes nothing


def test_launchers_and_secrets() -> None:
    uvx = server_entry(["--allow-dir", "/data"], launcher="uvx")
    assert uvx == {
        "command": "uvx",
        "args": ["--from", "mississippi-tools[mcp,local,pdf]", "mississippi-mcp",
                 "--allow-dir", "/data"],
    }  # fmt: skip
    pipx = server_entry([], launcher="pipx", env={"MISSISSIPPI_MCP_REMOTE_API_KEY": "k"})
    assert pipx["command"] == "pipx" and pipx["args"][:3] == [
        "run",
        "--spec",
        "mississippi-tools[mcp,local,pdf]",
    ]
    assert pipx["env"] == {"MISSISSIPPI_MCP_REMOTE_API_KEY": "k"}


def test_remote_entry_keeps_the_key_out_of_args(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        ["--launcher", "uvx", "--engine", "remote", "--base-url", "http://gpu:8090",
         "--api-key", "k3y"],
        capsys,
    )  # fmt: skip
    entry = json.loads(out)["mcpServers"]["mississippi"]
    assert code == 0
    assert entry["args"][1] == "mississippi-tools[mcp,pdf]"  # no torch for a remote engine
    assert entry["args"][-4:] == ["--engine", "remote", "--base-url", "http://gpu:8090"]
    assert "k3y" not in json.dumps(entry["args"]) and entry["env"] == {
        "MISSISSIPPI_MCP_REMOTE_API_KEY": "k3y"
    }


def test_write_creates_the_file(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--write"], capsys)
    path = home / ".config" / "Claude" / "claude_desktop_config.json"
    assert code == 0 and str(path) in out and "added" in out
    assert set(json.loads(path.read_text())["mcpServers"]) == {"mississippi"}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no backup, no temp file


@pytest.mark.parametrize("platform", ["darwin", "win32", "linux"])
def test_write_merges_keeps_others_and_backs_up(
    home: Path, platform: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    path = claude_config_path()
    path.parent.mkdir(parents=True)
    existing: dict[str, Any] = {
        "globalShortcut": "Ctrl+Space",
        "mcpServers": {"git": {"command": "uvx", "args": ["mcp-server-git"]}},
    }
    path.write_text(json.dumps(existing), encoding="utf-8")
    os.chmod(path, 0o600)
    code, out, _ = run(["--write", "--launcher", "uvx"], capsys)
    assert code == 0, out
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["globalShortcut"] == "Ctrl+Space"
    assert written["mcpServers"]["git"] == existing["mcpServers"]["git"]
    assert written["mcpServers"]["mississippi"]["command"] == "uvx"
    backups = sorted(path.parent.glob("claude_desktop_config.json.*.bak"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == existing
    assert path.stat().st_mode & 0o777 == 0o600
    assert f"previous file kept as {backups[0]}" in out
    # Again: nothing to change, nothing written.
    code, out, _ = run(["--write", "--launcher", "uvx"], capsys)
    assert code == 0 and "already up to date" in out
    assert len(list(path.parent.glob("*.bak"))) == 1
    # A different entry of the same name is replaced, with a second backup.
    code, out, _ = run(["--write", "--launcher", "pipx"], capsys)
    assert code == 0 and "replaced" in out
    assert json.loads(path.read_text())["mcpServers"]["mississippi"]["command"] == "pipx"
    assert len(list(path.parent.glob("*.bak"))) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not an object"),
        ('{"mcpServers": []}', "mcpServers"),
    ],
)
def test_write_refuses_files_it_cannot_merge(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text(content)
    code, _, err = run(["--write", "--config-path", str(path)], capsys)
    assert code == 1 and message in err and "nothing was written" in err
    assert path.read_text() == content
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text('{"mcpServers": {}}')

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_server(path, "mississippi", {"command": "x"})
    assert path.read_text() == '{"mcpServers": {}}'
    assert not list(tmp_path.glob(".claude_desktop_config.json.*"))  # temp file removed


def test_merge_server_is_pure() -> None:
    config = {"mcpServers": {"a": {"command": "a"}}}
    merged, replaced = merge_server(config, "b", {"command": "b"})
    assert not replaced and set(merged["mcpServers"]) == {"a", "b"}
    assert config == {"mcpServers": {"a": {"command": "a"}}}
