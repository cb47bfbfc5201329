from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE_DIR = (
    Path(__file__).resolve().parents[3] / "shared" / "reference" / "h2ovl-mississippi-800m"
)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The published 800M config and tokenizer files (../shared/reference)."""
    if not REFERENCE_DIR.is_dir():
        pytest.fail(
            f"the reference files are expected at {REFERENCE_DIR} (../shared beside the repo)"
        )
    return REFERENCE_DIR
