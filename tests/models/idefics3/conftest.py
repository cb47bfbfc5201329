from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def idefics3_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Idefics3 checkpoint in the published format (2 tiles across by default)."""
    from mississippi_tools.models.idefics3.testing import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-idefics3-8b")


@pytest.fixture(scope="session")
def idefics3_backend(idefics3_checkpoint: Path):  # type: ignore[no-untyped-def]
    from mississippi_tools.models.registry import load_backend

    return load_backend(idefics3_checkpoint, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def idefics3_reference(idefics3_checkpoint: Path):  # type: ignore[no-untyped-def]
    from transformers import Idefics3ForConditionalGeneration

    return Idefics3ForConditionalGeneration.from_pretrained(
        idefics3_checkpoint, dtype="float32", attn_implementation="sdpa"
    ).eval()


@pytest.fixture(scope="session")
def idefics3_scripted(idefics3_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mississippi_tools.models.idefics2.testing import build_scripted_checkpoint
    from tests.support import SCRIPTED_ANSWER

    target = tmp_path_factory.mktemp("scripted") / "scripted-idefics3"
    return build_scripted_checkpoint(idefics3_checkpoint, target, SCRIPTED_ANSWER)
