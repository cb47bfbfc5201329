from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def florence2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Florence-2 checkpoint in Microsoft's published layout (built once)."""
    from mississippi_tools.models.florence2.testing import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("florence2") / "tiny-Florence-2-DocVQA")


@pytest.fixture(scope="session")
def florence2_backend(florence2_checkpoint: Path):  # type: ignore[no-untyped-def]
    """The tiny checkpoint loaded on the CPU in float32, through the registry."""
    from mississippi_tools.models.registry import load_backend

    return load_backend(florence2_checkpoint, device="cpu", dtype="float32")
