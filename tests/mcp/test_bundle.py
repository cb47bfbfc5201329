"""``mississippi-mcp bundle``: a ``.mcpb`` whose manifest is valid under the published MCPB schema.

``mcpb_manifest_0.3.schema.json`` re-states the MCPB manifest specification (version 0.3) as a JSON
Schema; the bundle's manifest is validated against it, and the schema is shown to refuse what the
specification refuses. The bundle's launch command is then expanded the way a client does
(``${user_config.*}``, arrays as separate arguments, ``${__dirname}``) and parsed by the server's
own settings, and its entry point is run.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import mississippi_mcp
from mississippi_mcp.bundle import MANIFEST_VERSION, manifest
from mississippi_mcp.settings import parse_args
from tests.mcp.conftest import REPO

SCHEMA = json.loads(Path(__file__).with_name("mcpb_manifest_0.3.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def build(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Path:
    output = tmp_path / "out" / "m.mcpb"
    code = mississippi_mcp.main(["bundle", "--output", str(output), *args])
    assert code == 0, capsys.readouterr().err
    assert str(output) in capsys.readouterr().out
    return output


def expand(value: str, user: dict[str, Any], dirname: Path) -> list[str]:
    """One ``mcp_config`` string as a client expands it (an array value: several arguments)."""
    for key, setting in user.items():
        token = "${user_config." + key + "}"
        if value == token and isinstance(setting, list):
            return [str(item) for item in setting]
        if token in value:
            text = str(setting).lower() if isinstance(setting, bool) else str(setting)
            value = value.replace(token, text)
    return [value.replace("${__dirname}", str(dirname))]


def test_the_bundle_holds_a_valid_manifest_and_its_entry_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = build(tmp_path, capsys)
    with zipfile.ZipFile(bundle) as archive:
        assert sorted(archive.namelist()) == ["manifest.json", "server/main.py"]
        data = json.loads(archive.read("manifest.json"))
    VALIDATOR.validate(data)
    assert data["manifest_version"] == MANIFEST_VERSION == "0.3"
    assert data["server"]["entry_point"] == "server/main.py"
    names = [tool["name"] for tool in data["tools"]]
    assert names[:6] == ["ocr", "read_chart", "read_table", "extract", "extract_document", "ask"]
    assert {"read_screenshot", "read_clipboard_image"} <= set(names)
    assert "secrets" in data["user_config"]["desktop_tools"]["description"]
    assert data["user_config"]["desktop_tools"]["default"] is False
    config = data["server"]["mcp_config"]
    assert config["command"] == "uvx"
    assert config["args"][:3] == [
        "--from",
        f"mississippi-tools[mcp,local,pdf]=={mississippi_mcp.__version__}",
        "mississippi-mcp",
    ]


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.pop("author"),
        lambda m: m["author"].pop("name"),
        lambda m: m.pop("manifest_version"),
        lambda m: m["server"].pop("entry_point"),
        lambda m: m["server"]["mcp_config"].pop("command"),
        lambda m: m["server"].update(type="ruby"),
        lambda m: m.update(unknown_key=1),
        lambda m: m["user_config"]["model"].update(type="text"),
        lambda m: m["compatibility"].update(platforms=["macos"]),
        lambda m: m.update(homepage="not a url"),
    ],
)
def test_the_schema_refuses_what_the_specification_refuses(change: Any) -> None:
    broken = copy.deepcopy(manifest())
    change(broken)
    assert not VALIDATOR.is_valid(broken)


def test_the_launch_command_is_what_the_server_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs, photos = tmp_path / "docs", tmp_path / "photos"
    docs.mkdir()
    photos.mkdir()
    user = {"allowed_directories": [docs, photos], "model": "my/model", "desktop_tools": True}
    config = manifest()["server"]["mcp_config"]
    args = [part for arg in config["args"] for part in expand(arg, user, tmp_path)]
    server_args = args[args.index("mississippi-mcp") + 1 :]
    for name, value in config["env"].items():
        monkeypatch.setenv(name, expand(value, user, tmp_path)[0])
    settings = parse_args(server_args)
    assert settings.allow_dirs == [docs, photos]
    assert settings.model == "my/model" and settings.desktop is True
    monkeypatch.setenv("MISSISSIPPI_MCP_MODEL", "")  # the default: left empty
    monkeypatch.setenv("MISSISSIPPI_MCP_DESKTOP", "false")
    settings = parse_args(server_args)
    assert settings.model_name == "h2oai/h2ovl-mississippi-800m" and settings.desktop is False


def test_a_python_bundle_runs_its_entry_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = build(tmp_path, capsys, "--launcher", "python", "--python", sys.executable)
    target = tmp_path / "installed"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(target)
        data = json.loads(archive.read("manifest.json"))
    VALIDATOR.validate(data)
    config = data["server"]["mcp_config"]
    assert config["command"] == sys.executable
    args = [part for arg in config["args"] for part in expand(arg, {}, target)]
    assert args[0] == str(target / "server" / "main.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "mcp_server")])}
    done = subprocess.run(
        [config["command"], args[0], "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"mississippi-mcp {mississippi_mcp.__version__}"
