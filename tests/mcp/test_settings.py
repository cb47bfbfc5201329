"""Settings from flags and MISSISSIPPI_MCP_* variables, and the command's exit codes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

import mississippi_mcp
from mississippi_mcp import MCPSettings
from mississippi_mcp.settings import DEFAULT_MODEL, is_loopback, parse_args


def test_defaults_are_safe() -> None:
    settings = MCPSettings()
    assert settings.allow_dirs == [] and settings.client_roots is True
    assert settings.allow_urls is False and settings.allow_private_urls is False
    assert settings.transport == "stdio" and settings.host == "127.0.0.1"
    assert settings.engine == "local" and settings.model_name == DEFAULT_MODEL


def test_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    dirs = f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}"
    monkeypatch.setenv("MISSISSIPPI_MCP_ALLOW_DIRS", dirs)
    monkeypatch.setenv("MISSISSIPPI_MCP_MODEL", "some/model")
    monkeypatch.setenv("MISSISSIPPI_MCP_ALLOW_URLS", "true")
    monkeypatch.setenv("MISSISSIPPI_MCP_TRANSPORT", "streamable-http")
    monkeypatch.setenv("MISSISSIPPI_MCP_PORT", "9911")
    monkeypatch.setenv("MISSISSIPPI_MCP_HTTP_TOKEN", "s3cret")
    monkeypatch.setenv("MISSISSIPPI_PORT", "1")  # the HTTP service's port is not the server's
    monkeypatch.setenv("PORT", "1")  # nor is a generic PORT
    settings = MCPSettings()
    assert settings.allow_dirs == [tmp_path / "a", tmp_path / "b"]
    assert settings.model == "some/model" and settings.allow_urls is True
    assert settings.transport == "streamable-http" and settings.port == 9911
    assert settings.token_value == "s3cret"
    assert "s3cret" not in repr(settings)


def test_previous_names_are_read_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MISSISSIPPI_MODEL", "old/model")
    monkeypatch.setenv("MISSISSIPPI_ALLOW_DIRS", str(tmp_path))
    monkeypatch.setenv("MISSISSIPPI_API_KEY", "old-k3y")
    monkeypatch.setenv("MISSISSIPPI_MCP_MAX_PAGES", "7")
    monkeypatch.setenv("MISSISSIPPI_MAX_PAGES", "99")  # the new name wins, silently
    with caplog.at_level("WARNING", logger="mississippi_mcp"):
        settings = MCPSettings()
    assert settings.model == "old/model" and settings.allow_dirs == [tmp_path]
    assert settings.remote_api_key is not None
    assert settings.remote_api_key.get_secret_value() == "old-k3y"
    assert settings.max_pages == 7
    warned = caplog.text
    assert "MISSISSIPPI_MODEL is deprecated" in warned and "MISSISSIPPI_MCP_MODEL" in warned
    assert "MISSISSIPPI_API_KEY is deprecated" in warned and "old-k3y" not in warned
    assert "MISSISSIPPI_MAX_PAGES" not in warned


def test_allow_dirs_as_a_json_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSISSIPPI_MCP_ALLOW_DIRS", f'["{tmp_path}"]')
    assert MCPSettings().allow_dirs == [tmp_path]


def test_flags_win_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSISSIPPI_MCP_MODEL", "from/env")
    monkeypatch.setenv("MISSISSIPPI_MCP_DEVICE", "cuda")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    settings = parse_args(
        ["--model", "from/flag", "--allow-dir", "docs", "--allow-dir", str(tmp_path),
         "--no-client-roots", "--max-pages", "5"]
    )  # fmt: skip
    assert settings.model == "from/flag" and settings.device == "cuda"
    assert settings.allow_dirs == [tmp_path / "docs", tmp_path]
    assert settings.client_roots is False and settings.max_pages == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"allow_dirs": ["/no/such/dir"]}, "not an existing directory"),
        ({"engine": "remote"}, "--base-url"),
        ({"engine": "remote", "base_url": "127.0.0.1:8090"}, "http://"),
        ({"transport": "streamable-http", "host": "0.0.0.0"}, "token is required"),
        ({"transport": "streamable-http", "host": "0.0.0.0", "http_token": ""}, "token"),
        ({"max_tiles": 0}, "max_tiles"),
    ],
)
def test_invalid_settings_say_what_to_do(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MCPSettings(**kwargs)  # type: ignore[arg-type]


def test_token_allows_other_addresses_and_remote_engine_needs_no_model() -> None:
    settings = MCPSettings(transport="streamable-http", host="0.0.0.0", http_token="t")  # type: ignore[arg-type]
    assert settings.token_value == "t"
    remote = MCPSettings(engine="remote", base_url="http://127.0.0.1:8090")
    assert remote.model is None and "service" in remote.model_name


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("192.168.1.5", False), ("example.com", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_main_reports_bad_settings_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code = mississippi_mcp.main(["--transport", "streamable-http", "--host", "0.0.0.0"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert "MISSISSIPPI_MCP_HTTP_TOKEN" in captured.err


def test_main_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        mississippi_mcp.main(["--transport", "carrier-pigeon"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_main_without_the_mcp_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object, **kwargs: object) -> object:
        return None if name == "mcp" else real_find_spec(name)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert mississippi_mcp.main([]) == 7
    assert 'pip install "mississippi-tools[mcp]"' in capsys.readouterr().err


def test_public_api() -> None:
    assert mississippi_mcp.__all__ == sorted(mississippi_mcp.__all__)
    assert set(mississippi_mcp.__all__) == {
        "MCPSettings", "ModelHolder", "__version__", "build_server", "main",
    }  # fmt: skip
    for name in mississippi_mcp.__all__:
        assert getattr(mississippi_mcp, name) is not None
    with pytest.raises(AttributeError):
        _ = mississippi_mcp.nothing  # type: ignore[attr-defined]
