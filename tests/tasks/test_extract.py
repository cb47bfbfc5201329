"""JSON extraction: prompts, the retry protocol, and schema-valid output from a random model.

The model tests run the tiny random-weight checkpoint: whatever it wants to write, the grammar
must make the answer valid, for each of the 58 schemas of ``tests/extraction_schemas.py``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Sequence
from typing import Any, Literal

import pytest
from pydantic import BaseModel, field_validator

from mississippi_tools.engine.base import GenerationOutput, GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine, LocalEngineConfig
from mississippi_tools.errors import ExtractionError, SchemaError
from mississippi_tools.parsing import JSONRepairError, parse_json_lenient
from mississippi_tools.schema import normalize_schema, validate
from mississippi_tools.tasks.extract import (
    EXTRACT_PROMPT,
    ExtractionPlan,
    ExtractionResult,
    arun_extraction,
    build_extract_prompt,
    build_retry_prompt,
    run_extraction,
)
from tests.extraction_schemas import (
    PYDANTIC_MODELS,
    Invoice,
    Person,
    all_schemas,
    generated_schemas,
)

MAX_NEW_TOKENS = 400

# --------------------------------------------------------------------------------------------------
# Driving many plans at once through the engine's batching
# --------------------------------------------------------------------------------------------------


def run_concurrently(
    engine: LocalEngine, plans: Sequence[ExtractionPlan]
) -> list[ExtractionResult | ExtractionError]:
    """Run every plan to its end, all requests in flight together (the engine batches them)."""
    results: list[ExtractionResult | ExtractionError | None] = [None] * len(plans)
    pending = {i: engine.submit(plan.first_request()) for i, plan in enumerate(plans)}
    while pending:
        for i, handle in list(pending.items()):
            output = handle.result(300)
            del pending[i]
            try:
                step = plans[i].handle(output)
            except ExtractionError as e:
                results[i] = e
                continue
            if isinstance(step, GenerationRequest):
                pending[i] = engine.submit(step)
            else:
                results[i] = step
    return [r for r in results if r is not None]


@pytest.fixture(scope="module")
def batch_engine(tiny_backend):  # type: ignore[no-untyped-def]
    engine = LocalEngine(tiny_backend, LocalEngineConfig(max_batch_size=16, max_queue_size=128))
    yield engine
    engine.close()


def _plans(
    constrained: bool, budgets: Sequence[int] | None = None, **kwargs: Any
) -> list[ExtractionPlan]:
    """One plan per schema; sampled (temperature 1) so the random model wanders freely."""
    return [
        ExtractionPlan(
            schema,
            constrained=constrained,
            sampling=SamplingParams(
                max_new_tokens=budgets[i] if budgets else MAX_NEW_TOKENS, temperature=1.0, seed=i
            ),
            **kwargs,
        )
        for i, schema in enumerate(all_schemas())
    ]


@pytest.fixture(scope="module")
def constrained_run(
    batch_engine: LocalEngine,
) -> tuple[list[ExtractionPlan], list[ExtractionResult | ExtractionError]]:
    plans = _plans(constrained=True, confidence=True)
    return plans, run_concurrently(batch_engine, plans)


def test_the_schema_generator_is_deterministic_and_varied() -> None:
    schemas = generated_schemas()
    assert schemas == generated_schemas()
    text = json.dumps(schemas)
    for feature in (
        '"minItems"',
        '"enum"',
        '"exclusiveMinimum"',
        '"multipleOf"',
        '"format": "date"',
        '"format": "date-time"',
        '"minLength"',
        '"anyOf"',
        '"null"',
        '"pattern"',
        '"type": "boolean"',
        '"type": "number"',
    ):
        assert feature in text, feature
    assert any(len(s["required"]) < len(s["properties"]) for s in schemas)  # optional keys
    assert sum("$defs" in m.model_json_schema() for m in PYDANTIC_MODELS) >= 6


def test_grammar_makes_every_random_model_answer_valid(
    constrained_run: tuple[list[ExtractionPlan], list[ExtractionResult | ExtractionError]],
    batch_engine: LocalEngine,
) -> None:
    plans, results = constrained_run
    assert len(plans) >= 58
    failures = [(i, r) for i, r in enumerate(results) if isinstance(r, ExtractionError)]
    assert not failures, [(i, e.raw_text, e.errors) for i, e in failures[:3]]
    banned = batch_engine._grammar_factory().banned_token_ids
    for plan, result in zip(plans, results, strict=True):
        assert isinstance(result, ExtractionResult)
        assert result.attempts == 1
        assert result.output.finish_reason == "stop"
        assert not banned & set(result.output.token_ids)  # no <img>, <unk>, control bytes...
        data = json.loads(result.raw_text)  # strict JSON, exactly as generated
        if plan.schema.model is not None:
            assert isinstance(result.data, plan.schema.model)
        else:
            assert result.data == data
        assert result.confidence is not None
        assert all(0.0 < p <= 1.0 for p in result.confidence.values())


def test_without_the_grammar_the_same_answers_fail(
    constrained_run: tuple[list[ExtractionPlan], list[ExtractionResult | ExtractionError]],
    batch_engine: LocalEngine,
) -> None:
    # Same prompts, same sampling, and as many tokens as the constrained answer used (+ the stop).
    _, constrained = constrained_run
    budgets = [
        len(r.output.token_ids) + 1 if isinstance(r, ExtractionResult) else MAX_NEW_TOKENS
        for r in constrained
    ]
    plans = _plans(constrained=False, budgets=budgets, max_retries=0)
    handles = [batch_engine.submit(plan.first_request()) for plan in plans]
    valid = 0
    for plan, handle in zip(plans, handles, strict=True):
        text = handle.result(300).text
        try:
            validate(parse_json_lenient(text), plan.schema)
        except (JSONRepairError, ExtractionError):
            continue
        valid += 1
    assert valid <= 0.1 * len(plans)


async def test_async_driver_gives_the_same_result(batch_engine: LocalEngine) -> None:
    schema = generated_schemas()[0]

    def plan() -> ExtractionPlan:
        sampling = SamplingParams(max_new_tokens=MAX_NEW_TOKENS)
        return ExtractionPlan.for_engine(batch_engine, schema, sampling=sampling)

    sync = await asyncio.to_thread(run_extraction, batch_engine, plan())
    async_ = await arun_extraction(batch_engine, plan())
    assert async_.data == sync.data
    assert async_.raw_text == sync.raw_text


def test_answer_cut_by_max_new_tokens_is_a_clear_error(batch_engine: LocalEngine) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    plan = ExtractionPlan.for_engine(batch_engine, schema, max_new_tokens=4)
    with pytest.raises(ExtractionError, match="max_new_tokens=4") as caught:
        run_extraction(batch_engine, plan)
    assert caught.value.attempts == 1
    assert caught.value.raw_text.startswith('{"a')


# --------------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------------


def test_extract_prompt_follows_the_card() -> None:
    prompt = build_extract_prompt({"name": "", "date_of_birth": "", "address": ""})
    assert prompt == (
        "Extract the details from the image and format the output as JSON:\n"
        "{\n"
        '  "name": "",\n'
        '  "date_of_birth": "",\n'
        '  "address": ""\n'
        "}"
    )
    assert prompt.startswith(EXTRACT_PROMPT)


def test_extract_prompt_with_instructions_and_field_notes() -> None:
    prompt = build_extract_prompt(Invoice, "Amounts are in euros.")
    assert prompt == (
        "Extract the details from the image and format the output as JSON:\n"
        "{\n"
        '  "number": "",\n'
        '  "issued": "",\n'
        '  "status": "paid|due",\n'
        '  "items": [\n'
        "    {\n"
        '      "description": "",\n'
        '      "quantity": 0,\n'
        '      "unit_price": 0.0\n'
        "    }\n"
        "  ],\n"
        '  "note": ""\n'
        "}\n"
        "Field notes:\n"
        "- issued: a date, YYYY-MM-DD\n"
        "- items[].description: What was bought\n"
        "Amounts are in euros."
    )


def test_retry_prompt_quotes_the_answer_and_the_errors() -> None:
    prompt = build_retry_prompt({"age": 0}, '{"age": "ten"}', ["/age: 'ten' is not of type"])
    assert prompt == (
        "Extract the details from the image and format the output as JSON:\n"
        "{\n"
        '  "age": 0\n'
        "}\n"
        "Your previous answer was:\n"
        '{"age": "ten"}\n'
        "It is not valid:\n"
        "- /age: 'ten' is not of type\n"
        "Answer again with only the corrected JSON."
    )
    long = build_retry_prompt({"a": ""}, "x" * 1000, ["bad"])
    assert "x" * 600 + " ..." in long and "x" * 601 not in long


# --------------------------------------------------------------------------------------------------
# The retry protocol, scripted (no model)
# --------------------------------------------------------------------------------------------------


def _output(text: str, finish: Literal["stop", "length", "cancelled"] = "stop") -> GenerationOutput:
    ids = list(range(max(1, len(text) // 3)))
    return GenerationOutput(
        text=text, token_ids=ids, finish_reason=finish, prompt_tokens=10, model="tiny"
    )


def test_unconstrained_plan_retries_with_the_errors_then_succeeds() -> None:
    plan = ExtractionPlan({"name": "", "age": 0}, constrained=False)
    first = plan.first_request()
    assert first.json_schema is None
    assert first.prompt == build_extract_prompt({"name": "", "age": 0})
    second = plan.handle(_output("Sure! Here it is: {'name': 'Ann', 'age': 'ten'}"))
    assert isinstance(second, GenerationRequest)
    assert "/age: 'ten' is not of type 'integer', 'null'" in second.prompt
    assert "{'name': 'Ann', 'age': 'ten'}" in second.prompt
    third = plan.handle(_output("no JSON here"))
    assert isinstance(third, GenerationRequest)
    assert "the answer is not JSON" in third.prompt
    result = plan.handle(_output('```json\n{"name": "Ann", "age": 10}\n```'))
    assert isinstance(result, ExtractionResult)
    assert result.data == {"name": "Ann", "age": 10}
    assert result.attempts == 3 and result.meta.attempts == 3
    assert len(result.errors) == 2
    assert result.meta.timings["parse"] >= 0
    assert result.output.text.startswith("```json")


def test_retries_are_bounded_and_the_error_keeps_everything() -> None:
    plan = ExtractionPlan({"age": 0}, constrained=False, max_retries=1)
    plan.first_request()
    assert isinstance(plan.handle(_output('{"age": "x"}')), GenerationRequest)
    with pytest.raises(ExtractionError) as caught:
        plan.handle(_output('{"age": "y"}'))
    error = caught.value
    assert error.attempts == 2
    assert error.raw_text == '{"age": "y"}'
    assert len(error.errors) == 2 and all("/age" in e for e in error.errors)
    assert "after 2 attempt(s)" in error.message


def test_constrained_plan_sends_the_schema_and_needs_one_attempt() -> None:
    plan = ExtractionPlan(Person, constrained=True, confidence=True)
    request = plan.first_request()
    assert request.json_schema == Person.model_json_schema()
    assert request.logprobs
    result = plan.handle(_output('{"name": "Ann", "born": "1990-01-02", "role": "editor"}'))
    assert isinstance(result, ExtractionResult)
    assert result.data == Person(name="Ann", born=datetime.date(1990, 1, 2), role="editor")
    assert result.confidence is None  # the scripted output has no log-probabilities
    assert result.model_dump(mode="json")["data"]["born"] == "1990-01-02"
    assert "output" not in result.model_dump()
    assert "output" not in ExtractionResult.model_json_schema()["properties"]


def test_cut_answers_fail_at_once_and_say_why() -> None:
    plan = ExtractionPlan({"items": [""]}, constrained=True, max_new_tokens=50)
    plan.first_request()
    with pytest.raises(ExtractionError, match=r"max_new_tokens=50") as caught:
        plan.handle(_output('{"items": ["a", "b', finish="length"))
    assert caught.value.attempts == 1
    assert caught.value.raw_text == '{"items": ["a", "b'
    unconstrained = ExtractionPlan({"a": ""}, constrained=False)
    unconstrained.first_request()
    with pytest.raises(ExtractionError, match="cancelled"):
        unconstrained.handle(_output("", finish="cancelled"))


def test_pydantic_validation_beyond_the_schema_is_retried_under_the_grammar() -> None:
    class Strict(BaseModel):
        code: str

        @field_validator("code")
        @classmethod
        def upper(cls, value: str) -> str:
            if not value.isupper():
                raise ValueError("code must be upper case")
            return value

    plan = ExtractionPlan(Strict, constrained=True, max_retries=1)
    plan.first_request()
    retry = plan.handle(_output('{"code": "ab"}'))
    assert isinstance(retry, GenerationRequest)
    assert retry.json_schema is not None and "upper case" in retry.prompt
    result = plan.handle(_output('{"code": "AB"}'))
    assert isinstance(result, ExtractionResult) and result.data.code == "AB"


def test_confidences_come_from_the_token_texts() -> None:
    output = GenerationOutput(
        text='{"a": 1, "b": "xy"}',
        token_ids=[10, 11, 12, 13, 14, 15],
        finish_reason="stop",
        prompt_tokens=3,
        token_logprobs=[0.0, -0.1, -0.7, -0.2, -1.5, -0.05],
        token_texts=['{"', 'a": ', "1", ', "b": "', "xy", '"}'],
    )
    plan = ExtractionPlan({"a": 0, "b": ""}, constrained=True, confidence=True)
    plan.first_request()
    result = plan.handle(output)
    assert isinstance(result, ExtractionResult)
    assert result.confidence == pytest.approx({"/a": 0.4965853, "/b": 0.2231302})


def test_plan_arguments_are_checked() -> None:
    with pytest.raises(SchemaError):
        ExtractionPlan({"type": "object", "not": {}}, constrained=True)
    with pytest.raises(ValueError, match="max_retries"):
        ExtractionPlan({"a": ""}, constrained=True, max_retries=-1)
    plan = ExtractionPlan(
        normalize_schema({"a": ""}),
        constrained=False,
        sampling=SamplingParams(temperature=0.5, max_new_tokens=10),
        max_new_tokens=99,
    )
    request = plan.first_request()
    assert request.sampling.max_new_tokens == 99 and request.sampling.temperature == 0.5
