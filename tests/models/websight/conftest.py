from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def websight_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny VLM_WebSight checkpoint in the published on-disk format (built once)."""
    from mississippi_tools.models.websight.testing import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("websight") / "tiny-websight")


@pytest.fixture(scope="session")
def windowed_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with a 24-token sliding window, so 67-token prompts exceed it."""
    from mississippi_tools.models.websight.testing import build_tiny_checkpoint

    return build_tiny_checkpoint(
        tmp_path_factory.mktemp("websight") / "windowed-websight",
        seed=1,
        overrides={"sliding_window": 24},
    )


@pytest.fixture(scope="session")
def websight_backend(websight_checkpoint: Path):  # type: ignore[no-untyped-def]
    """The tiny checkpoint loaded on the CPU in float32, through the registry."""
    from mississippi_tools.models.registry import load_backend

    return load_backend(websight_checkpoint, device="cpu", dtype="float32")
