from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def idefics2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Idefics2 checkpoint in the published format (image splitting on, as idefics2-8b)."""
    from mississippi_tools.models.idefics2.testing import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-idefics2-8b")


@pytest.fixture(scope="session")
def idefics2_backend(idefics2_checkpoint: Path):  # type: ignore[no-untyped-def]
    from mississippi_tools.models.registry import load_backend

    return load_backend(idefics2_checkpoint, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def idefics2_reference(idefics2_checkpoint: Path):  # type: ignore[no-untyped-def]
    from tests.models.idefics2 import reference

    return reference.model(idefics2_checkpoint)


@pytest.fixture
def idefics2_engine(idefics2_backend):  # type: ignore[no-untyped-def]
    from mississippi_tools.engine.local import LocalEngine

    engine = LocalEngine(idefics2_backend)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def idefics2_scripted(idefics2_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with weights set so that greedy decoding writes ``SCRIPTED_ANSWER``."""
    from mississippi_tools.models.idefics2.testing import build_scripted_checkpoint
    from tests.support import SCRIPTED_ANSWER

    target = tmp_path_factory.mktemp("scripted") / "scripted-idefics2"
    return build_scripted_checkpoint(idefics2_checkpoint, target, SCRIPTED_ANSWER)
