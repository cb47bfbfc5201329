"""The 58 extraction schemas of tests/tasks/test_extract.py, run on any family's tiny backend."""

from __future__ import annotations

import json
from typing import Any

from mississippi_tools.engine.local import LocalEngine, LocalEngineConfig
from mississippi_tools.errors import ExtractionError
from mississippi_tools.tasks.extract import ExtractionResult
from tests.tasks.test_extract import _plans, run_concurrently


def assert_every_schema_holds(backend: Any) -> None:
    """Every random-model answer under the grammar is valid, strict JSON, in one attempt."""
    plans = _plans(constrained=True, confidence=True)
    assert len(plans) >= 58
    engine = LocalEngine(backend, LocalEngineConfig(max_batch_size=16, max_queue_size=128))
    try:
        results = run_concurrently(engine, plans)
        banned = engine._grammar_factory().banned_token_ids
    finally:
        engine.close()
    failures = [(i, r) for i, r in enumerate(results) if isinstance(r, ExtractionError)]
    assert not failures, [(i, e.raw_text, e.errors) for i, e in failures[:3]]
    for plan, result in zip(plans, results, strict=True):
        assert isinstance(result, ExtractionResult)
        assert result.attempts == 1 and result.output.finish_reason == "stop"
        assert not banned & set(result.output.token_ids)
        data = json.loads(result.raw_text)
        if plan.schema.model is not None:
            assert isinstance(result.data, plan.schema.model)
        else:
            assert result.data == data
