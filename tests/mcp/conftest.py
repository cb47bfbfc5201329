"""Fixtures of the MCP server tests: servers over the tiny model, and spawn settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mississippi_mcp import MCPSettings, ModelHolder, build_server
from mississippi_tools.vlm import MississippiVLM
from tests.mcp.support import FAST_SETTINGS

REPO = Path(__file__).resolve().parents[2]
SERVE_FOR_TESTS = Path(__file__).with_name("serve_for_tests.py")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MISSISSIPPI_* variable of the developer's shell leaks into the settings."""
    for name in list(os.environ):
        if name.startswith("MISSISSIPPI_"):
            monkeypatch.delenv(name)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """An allowed directory holding ``page.png`` (a small white image with dark strokes)."""
    directory = tmp_path / "allowed"
    directory.mkdir()
    image = Image.new("RGB", (160, 120), "white")
    for x in range(20, 140):
        image.putpixel((x, 60), (0, 0, 0))
    image.save(directory / "page.png")
    return directory


def make_server(vlm: MississippiVLM, **settings: Any) -> Any:
    """A server over an already loaded model, with the fast generation settings."""
    return build_server(
        MCPSettings(**{**FAST_SETTINGS, **settings}), holder=ModelHolder.loaded(vlm)
    )


def spawn_env(checkpoint: Path, allowed: Path, **extra: str) -> dict[str, str]:
    """Environment for ``python tests/mcp/serve_for_tests.py`` over the tiny checkpoint."""
    env = {
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "mcp_server")]),
        "HOME": os.environ.get("HOME", str(allowed)),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MISSISSIPPI_MCP_MODEL": str(checkpoint),
        "MISSISSIPPI_MCP_DEVICE": "cpu",
        "MISSISSIPPI_MCP_DTYPE": "float32",
        "MISSISSIPPI_MCP_ALLOW_DIRS": str(allowed),
        "MISSISSIPPI_MCP_MAX_NEW_TOKENS": str(FAST_SETTINGS["max_new_tokens"]),
        "MISSISSIPPI_MCP_MAX_TILES": str(FAST_SETTINGS["max_tiles"]),
    }
    env.update(extra)
    return env


def server_command() -> list[str]:
    """The command that starts the server with its test hooks."""
    return [sys.executable, str(SERVE_FOR_TESTS)]


@pytest.fixture
def stderr_file(tmp_path: Path) -> Iterator[Any]:
    """A file to receive a spawned server's stderr."""
    with (tmp_path / "stderr.log").open("w+", encoding="utf-8") as handle:
        yield handle
