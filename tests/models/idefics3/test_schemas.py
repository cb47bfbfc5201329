"""The schema tests on the Idefics3 tiny checkpoint (Llama 3 byte-level vocabulary)."""

from __future__ import annotations

import pytest

from tests.models.schema_run import assert_every_schema_holds

# 58 schemas sampled at temperature 1 on a random model: 60 s (Idefics2) and 280 s (Idefics3,
# 128k-token grammar masks) of wall time on the shared 2-core machine; run with -m slow.
pytestmark = pytest.mark.slow


def test_every_extraction_schema_holds_on_idefics3(idefics3_backend) -> None:  # type: ignore[no-untyped-def]
    assert idefics3_backend.tokenizer.vocab_type == "byte_level"
    assert_every_schema_holds(idefics3_backend)
