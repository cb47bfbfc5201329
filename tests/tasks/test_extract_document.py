"""Document-wide extraction: merge rules, provenance, strategies, and the schema-echo retry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from mississippi_tools import InvalidInputError, MississippiVLM
from mississippi_tools.engine.base import GenerationOutput
from mississippi_tools.errors import DeadlineExceededError, ExtractionError
from mississippi_tools.images import load_image
from mississippi_tools.models.base import ModelInfo
from mississippi_tools.schema import normalize_schema
from mississippi_tools.tasks.base import RequestBatch, RunSettings, TaskContext
from mississippi_tools.tasks.extract import ExtractionPlan, is_schema_echo
from mississippi_tools.tasks.extract_document import (
    DocumentExtractionPlan,
    ExtractDocumentArguments,
    merge_pages,
)
from tests.documents import Page, build_pdf

INVOICE = {
    "number": "",
    "date": "",
    "total": 0.0,
    "paid": False,
    "items": [{"description": "", "amount": 0.0}],
}


# -- merge rules ---------------------------------------------------------------------------------


def test_single_values_come_from_the_first_page_that_has_them() -> None:
    pages = [
        (1, {"number": "INV-7", "date": "", "total": 0.0, "paid": False, "items": []}),
        (2, {"number": "INV-7", "date": "2024-10-17", "total": 0.0, "paid": False, "items": []}),
        (3, {"number": "INV-8", "date": None, "total": 1200.0, "paid": True, "items": []}),
    ]
    merged, provenance, conflicts, _ = merge_pages(pages, normalize_schema(INVOICE))
    assert merged == {
        "number": "INV-7",
        "date": "2024-10-17",
        "total": 1200.0,
        "paid": True,
        "items": [],
    }
    assert {k: v.page for k, v in provenance.items()} == {
        "/number": 1,
        "/date": 2,
        "/total": 3,
        "/paid": 3,
        "/items": None,
    }
    assert [(c.pointer, c.page, c.value) for c in conflicts] == [("/number", 3, "INV-8")]


def test_lists_are_joined_in_page_order_without_template_items() -> None:
    pages = [
        (1, {"items": [{"description": "Bolts", "amount": 10.0}]}),
        (2, {"items": [{"description": "", "amount": 0.0}]}),  # the template's example item
        (
            3,
            {
                "items": [
                    {"description": "Nuts", "amount": 5.0},
                    {"description": "Bolts", "amount": 10.0},
                ]
            },
        ),
    ]
    merged, provenance, _, _ = merge_pages(pages, normalize_schema(INVOICE))
    assert merged["items"] == [
        {"description": "Bolts", "amount": 10.0},
        {"description": "Nuts", "amount": 5.0},
        {"description": "Bolts", "amount": 10.0},
    ]
    assert provenance["/items/0"].page == 1
    assert provenance["/items/1"].page == 3 and provenance["/items/2/amount"].page == 3


def test_a_value_no_page_read_keeps_the_first_answer_without_a_page() -> None:
    merged, provenance, conflicts, _ = merge_pages(
        [(1, {"total": 0.0}), (2, {"total": None})], normalize_schema({"total": 0.0})
    )
    assert merged == {"total": 0.0}
    assert provenance["/total"].page is None and conflicts == []


def test_confidences_and_regions_follow_the_values() -> None:
    pages = [
        (1, {"total": 0.0, "items": [{"description": "A", "amount": 1.0}]}),
        (2, {"total": 9.0, "items": [{"description": "B", "amount": 2.0}]}),
    ]
    confidences = {1: {"/items/0/amount": 0.5}, 2: {"/total": 0.9, "/items/0/amount": 0.7}}
    _, provenance, _, confidence = merge_pages(
        pages,
        normalize_schema({"total": 0.0, "items": [{"description": "", "amount": 0.0}]}),
        regions={1: [0, 0, 10, 10], 2: None},
        confidences=confidences,
    )
    assert confidence == {"/total": 0.9, "/items/0/amount": 0.5, "/items/1/amount": 0.7}
    assert provenance["/items/0"].region == [0, 0, 10, 10]
    assert provenance["/total"].region is None


# -- schema echo ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "template", "echo"),
    [
        ({"name": "", "city": ""}, {"name": "", "city": ""}, True),
        ({"status": "open|closed"}, {"status": "open|closed"}, True),
        ({"name": "John Doe"}, {"name": "John Doe"}, True),  # a caller's sample value
        ({"total": 0}, {"total": 0}, False),  # one zero: the image may say 0
        ({"paid": 0, "n": 0}, {"paid": False, "n": 0}, False),  # 0 is not false
        ({"name": "Ada", "city": ""}, {"name": "", "city": ""}, False),
    ],
)
def test_schema_echo(value: Any, template: Any, echo: bool) -> None:
    assert is_schema_echo(value, template) is echo


def _output(text: str) -> GenerationOutput:
    return GenerationOutput(text=text, token_ids=[1, 2, 3], finish_reason="stop", prompt_tokens=5)


def test_an_echo_is_retried_once_with_a_prompt_naming_it() -> None:
    plan = ExtractionPlan({"name": "", "city": ""}, constrained=True)
    plan.first_request()
    retry = plan.handle(_output('{"name": "", "city": ""}'))
    assert not isinstance(retry, BaseModel)
    assert "repeated the example values of this template" in retry.prompt
    result = plan.handle(_output('{"name": "Ada", "city": "Paris"}'))
    assert result.data == {"name": "Ada", "city": "Paris"} and not result.echo  # type: ignore[union-attr]
    assert result.errors == ["the answer repeated the template's example values"]  # type: ignore[union-attr]


def test_an_echo_twice_is_returned_marked() -> None:
    plan = ExtractionPlan({"name": "", "city": ""}, constrained=True)
    plan.first_request()
    plan.handle(_output('{"name": "", "city": ""}'))
    result = plan.handle(_output('{"name": "", "city": ""}'))
    assert result.echo and result.attempts == 2  # type: ignore[union-attr]


def test_a_real_model_that_echoes_is_retried(
    scripted_vlm: MississippiVLM, sample_png: Path
) -> None:
    """Under the JSON grammar the scripted model closes every string at once: an echo of ``""``."""
    result = scripted_vlm.extract_result(
        sample_png, {"name": "", "city": ""}, max_tiles=1, max_new_tokens=32
    )
    assert result.data == {"name": "", "city": ""}
    assert result.echo and result.attempts == 2


# -- the task ---------------------------------------------------------------------------------


@pytest.fixture
def scripted(scripted_backend) -> Iterator[MississippiVLM]:  # type: ignore[no-untyped-def]
    with MississippiVLM.from_backend(scripted_backend) as vlm:
        yield vlm


@pytest.fixture(scope="module")
def scripted_backend(scripted_checkpoint: Path):  # type: ignore[no-untyped-def]
    from mississippi_tools.models.registry import load_backend

    return load_backend(scripted_checkpoint, device="cpu", dtype="float32")


@pytest.fixture
def three_pages(tmp_path: Path) -> Path:
    path = tmp_path / "invoice.pdf"
    path.write_bytes(build_pdf([Page("text"), Page("scan"), Page("scan")]))
    return path


SCHEMA = {"total": 0, "note": ""}
FAST = {"max_tiles": 1, "max_new_tokens": 32}


def test_pages_are_read_together_and_merged(scripted: MississippiVLM, three_pages: Path) -> None:
    result = scripted.extract_document(three_pages, SCHEMA, **FAST)
    assert result.strategy == "per_page" and result.pages == [1, 2, 3]
    assert set(result.data) == {"total", "note"}
    assert [p.page for p in result.page_results] == [1, 2, 3]
    assert result.provenance["/total"].page == 1  # every page said the same: the first wins
    assert result.conflicts == []
    metrics = scripted.engine.metrics  # type: ignore[attr-defined]
    assert metrics.requests_finished == 3
    assert max(metrics.batch_size_counts) == 3  # the three pages decoded in one batch
    assert result.meta.attempts == 3 and result.meta.page is None
    assert result.meta.source == str(three_pages)


def test_extract_with_pages_is_the_document_form(
    scripted: MississippiVLM, three_pages: Path
) -> None:
    data = scripted.extract(three_pages, SCHEMA, pages="2-3", **FAST)
    assert set(data) == {"total", "note"}  # type: ignore[arg-type]
    assert scripted.engine.metrics.requests_finished == 2  # type: ignore[attr-defined]


def test_auto_uses_one_prompt_when_the_pages_fit(
    scripted: MississippiVLM, three_pages: Path
) -> None:
    result = scripted.extract_document(three_pages, SCHEMA, strategy="auto", **FAST)
    assert result.strategy == "one_prompt"
    assert "the 3 pages fit the context" in result.strategy_reason
    assert all(source.page is None for source in result.provenance.values())
    assert scripted.engine.metrics.requests_finished == 1  # type: ignore[attr-defined]


def test_one_prompt_that_does_not_fit_is_refused_with_the_numbers(
    scripted: MississippiVLM, three_pages: Path
) -> None:
    context = scripted.model_info.max_context
    with pytest.raises(InvalidInputError, match=f"the model's context is {context}") as caught:
        scripted.extract_document(
            three_pages, SCHEMA, strategy="one_prompt", max_tiles=1, max_new_tokens=context - 100
        )
    assert "strategy='per_page'" in str(caught.value)
    result = scripted.extract_document(
        three_pages, SCHEMA, strategy="auto", max_tiles=1, max_new_tokens=context - 100
    )
    assert result.strategy == "per_page" and "so page by page" in result.strategy_reason


def test_the_batch_form_gives_one_result_per_document(
    scripted: MississippiVLM, three_pages: Path, sample_png: Path
) -> None:
    outcomes = list(
        scripted.iter_batch(
            "extract_document", [three_pages, sample_png], json_schema=SCHEMA, **FAST
        )
    )
    assert [(o.source, o.page) for o in outcomes] == [
        (str(three_pages), None),
        (str(sample_png), None),
    ]
    assert [o.result.pages for o in outcomes] == [[1, 2, 3], [1]]  # type: ignore[union-attr]


def test_too_many_pages_are_refused(scripted: MississippiVLM, three_pages: Path) -> None:
    with pytest.raises(InvalidInputError, match="at most 2 are read"):
        scripted.extract_document(three_pages, SCHEMA, max_pages=2, **FAST)


def _plan(pages: int) -> DocumentExtractionPlan:
    info = ModelInfo(model_id="m", family="h2ovl")
    ctx = TaskContext(info=info, supports_grammar=True)
    page_pdf = build_pdf([Page("scan")] * pages)
    from mississippi_tools.images import iter_pages

    images = list(iter_pages(page_pdf, dpi=20))
    args = ExtractDocumentArguments(json_schema={"total": 0.0, "items": [{"name": ""}]})
    return DocumentExtractionPlan(ctx, images, args, RunSettings())


def test_a_failed_page_is_listed_and_the_others_merged() -> None:
    plan = _plan(3)
    batch = plan.first_request()
    assert isinstance(batch, RequestBatch) and len(batch.requests) == 3
    timeout = DeadlineExceededError("request x passed its deadline")
    result = plan.handle_batch(
        [
            _output('{"total": 0.0, "items": [{"name": "bolts"}]}'),
            timeout,
            _output('{"total": 12.5, "items": [{"name": "nuts"}]}'),
        ]
    )
    assert not isinstance(result, RequestBatch)
    assert result.data == {"total": 12.5, "items": [{"name": "bolts"}, {"name": "nuts"}]}
    assert [(p.page, p.error_code) for p in result.page_results] == [
        (1, None),
        (2, "deadline_exceeded"),
        (3, None),
    ]
    assert result.errors == ["page 2: request x passed its deadline"]
    assert "Pages that failed: 2" in plan_render(result)


def plan_render(result: Any) -> str:
    from mississippi_tools.tasks.extract_document import render_document_extraction

    return render_document_extraction(result)


def test_retries_go_out_as_a_batch_of_the_pages_that_need_them() -> None:
    plan = _plan(2)
    plan.first_request()
    step = plan.handle_batch([_output("not json at all"), _output('{"total": 1.0, "items": []}')])
    assert isinstance(step, RequestBatch) and len(step.requests) == 1
    assert "Your previous answer was" in step.requests[0].prompt
    result = plan.handle_batch([_output('{"total": 2.0, "items": []}')])
    assert result.data["total"] == 2.0  # type: ignore[union-attr,index]
    assert result.provenance["/total"].page == 1  # type: ignore[union-attr]


def test_when_every_page_fails_the_first_failure_is_raised() -> None:
    plan = _plan(2)
    plan.first_request()
    with pytest.raises(DeadlineExceededError, match="all 2 pages failed; page 1"):
        plan.handle_batch([DeadlineExceededError("late"), DeadlineExceededError("late too")])


def test_a_merge_that_breaks_the_schema_says_so() -> None:
    info = ModelInfo(model_id="m", family="h2ovl")
    ctx = TaskContext(info=info, supports_grammar=True)
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string"}, "maxItems": 1}},
        "required": ["tags"],
    }
    images = [load_image(build_pdf([Page("scan")]))] * 2
    plan = DocumentExtractionPlan(
        ctx, images, ExtractDocumentArguments(json_schema=schema), RunSettings()
    )
    plan.first_request()
    with pytest.raises(ExtractionError, match="merged they are not"):
        plan.handle_batch([_output('{"tags": ["a"]}'), _output('{"tags": ["b"]}')])


async def test_async_twins(scripted: MississippiVLM, three_pages: Path, sample_png: Path) -> None:
    result = await scripted.aextract_document(three_pages, SCHEMA, pages="1-2", **FAST)
    assert result.pages == [1, 2]
    outcomes = [
        o
        async for o in scripted.aiter_batch(
            "extract_document", [three_pages, sample_png], json_schema=SCHEMA, **FAST
        )
    ]
    assert [o.result.pages for o in outcomes] == [[1, 2, 3], [1]]  # type: ignore[union-attr]
    data = await scripted.aextract(three_pages, SCHEMA, pages=[3], **FAST)
    assert set(data) == {"total", "note"}  # type: ignore[arg-type]
