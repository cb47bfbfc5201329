from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def idefics1_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny idefics-9b-instruct-style checkpoint in the published (4.32) format."""
    from mississippi_tools.models.idefics1.testing import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-idefics-9b-instruct")


@pytest.fixture(scope="session")
def idefics1_base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny idefics-9b-style (pretrained only) checkpoint."""
    from mississippi_tools.models.idefics1.testing import build_tiny_checkpoint

    return build_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny") / "tiny-idefics-9b", variant="base", seed=1
    )


@pytest.fixture(scope="session")
def idefics1_backend(idefics1_checkpoint: Path):  # type: ignore[no-untyped-def]
    from mississippi_tools.models.registry import load_backend

    return load_backend(idefics1_checkpoint, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def idefics1_reference(idefics1_checkpoint: Path):  # type: ignore[no-untyped-def]
    from tests.models.idefics1 import reference

    return reference.model(idefics1_checkpoint), reference.processor(idefics1_checkpoint)


@pytest.fixture(scope="session")
def idefics1_scripted(idefics1_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with weights set so that greedy decoding writes ``SCRIPTED_ANSWER``."""
    from mississippi_tools.models.idefics1.testing import build_scripted_checkpoint
    from tests.support import SCRIPTED_ANSWER

    target = tmp_path_factory.mktemp("scripted") / "scripted-idefics-9b-instruct"
    return build_scripted_checkpoint(idefics1_checkpoint, target, SCRIPTED_ANSWER)
