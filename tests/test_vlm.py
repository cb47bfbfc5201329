"""The public MississippiVLM API on the tiny model: tasks, twins, batches, metadata, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mississippi_tools import (
    AccessDeniedError,
    Answer,
    ExtractionError,
    ImageNotFoundError,
    InvalidInputError,
    MississippiVLM,
    OCRResult,
    SourcePolicy,
)
from mississippi_tools.tasks.ocr import OCR_TEXT_PROMPT

PDF = Path(__file__).parent / "bad_inputs" / "three_pages.pdf"


def test_ocr_returns_text_lines_and_metadata(tiny_vlm: MississippiVLM, sample_png: Path) -> None:
    result = tiny_vlm.ocr(sample_png, max_new_tokens=12)
    assert isinstance(result, OCRResult)
    assert str(result) == result.text
    assert [line.text for line in result.lines] == [
        t.strip() for t in result.text.split("\n") if t.strip()
    ]
    meta = result.meta
    assert meta.engine == "local" and meta.model == tiny_vlm.model_id
    assert meta.source == str(sample_png) and meta.page is None
    assert meta.tiles == 7 and meta.new_tokens == 12 and meta.finish_reason == "length"
    assert meta.prompt_tokens > 7 * 256
    assert {"vision", "prefill", "decode", "parse", "total"} <= set(meta.timings)


def test_ocr_uses_the_pinned_prompt_and_ocr_mode(
    tiny_vlm: MississippiVLM, sample_png: Path
) -> None:
    plan = tiny_vlm._plan("ocr", sample_png)
    request = plan.first_request()
    assert request.prompt == OCR_TEXT_PROMPT and request.json_schema is None
    assert request.options == {"ocr_mode": True}


def test_ocr_confidence_per_line(tiny_vlm: MississippiVLM, sample_png: Path) -> None:
    result = tiny_vlm.ocr(sample_png, confidence=True, max_new_tokens=16)
    assert result.lines
    assert all(line.confidence is not None and 0 < line.confidence <= 1 for line in result.lines)
    plain = tiny_vlm.ocr(sample_png, max_new_tokens=16)
    assert all(line.confidence is None for line in plain.lines)


def test_second_question_on_an_image_hits_the_feature_cache(
    tiny_vlm: MississippiVLM, sample_png: Path
) -> None:
    tiny_vlm.ask(sample_png, "What is the total?", max_new_tokens=3)
    again = tiny_vlm.ask(sample_png, "Who issued it?", max_new_tokens=3)
    assert isinstance(again, Answer) and again.meta.cache_hit


def test_ask_several_images(tiny_vlm: MississippiVLM, sample_png: Path) -> None:
    answer = tiny_vlm.ask(
        [sample_png, PDF.parent / "1x1.png"], "Which is larger?", max_new_tokens=4
    )
    assert answer.meta.tiles == 8


def test_table_on_random_output_is_a_typed_error_with_raw_text(
    tiny_vlm: MississippiVLM, sample_png: Path
) -> None:
    with pytest.raises(ExtractionError) as caught:
        tiny_vlm.read_table(sample_png, max_new_tokens=8)
    assert caught.value.raw_text


def test_pdf_needs_a_page_for_single_image_tasks(tiny_vlm: MississippiVLM) -> None:
    with pytest.raises(InvalidInputError, match="3 pages"):
        tiny_vlm.ocr(PDF)
    result = tiny_vlm.ocr(PDF, page=2, max_new_tokens=2)
    assert result.meta.page == 2


def test_batch_over_pdf_pages_keeps_order_and_page_numbers(
    tiny_vlm: MississippiVLM, sample_png: Path
) -> None:
    results = tiny_vlm.ocr_batch([PDF, sample_png], pages="2-3", max_new_tokens=2)
    assert [(Path(r.meta.source or "").name, r.meta.page) for r in results] == [
        ("three_pages.pdf", 2),
        ("three_pages.pdf", 3),
        ("sample.png", None),
    ]


def test_batch_can_return_errors_in_place(tiny_vlm: MississippiVLM, sample_png: Path) -> None:
    results = tiny_vlm.read_table_batch([sample_png], max_new_tokens=4, return_exceptions=True)
    assert isinstance(results[0], ExtractionError)
    with pytest.raises(ImageNotFoundError):
        tiny_vlm.ocr_batch([sample_png.parent / "missing.png"])


async def test_async_twins(tiny_vlm: MississippiVLM, sample_png: Path) -> None:
    ocr, answer = await asyncio.gather(
        tiny_vlm.aocr(sample_png, max_new_tokens=4),
        tiny_vlm.aask(sample_png, "Why?", max_new_tokens=4),
    )
    assert ocr.meta.new_tokens == 4 and answer.meta.new_tokens == 4
    results = await tiny_vlm.aocr_batch([PDF], pages=[1], max_new_tokens=2)
    assert results[0].meta.page == 1


def test_generate_and_stream(tiny_vlm: MississippiVLM, sample_png: Path) -> None:
    generation = tiny_vlm.generate(sample_png, "Describe <image> briefly.", max_new_tokens=6)
    assert (
        len(generation.token_ids) == 6
        and generation.tiles == 7
        and str(generation) == generation.text
    )
    streamed = "".join(tiny_vlm.stream(sample_png, "Describe <image> briefly.", max_new_tokens=6))
    assert streamed == generation.text
    with pytest.raises(TypeError, match="unexpected keyword"):
        list(tiny_vlm.stream(None, "x", max_tokens=3))


def test_policy_confines_paths(tiny_backend, sample_png: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    vlm = MississippiVLM.from_backend(tiny_backend, policy=SourcePolicy(allowed_roots=(tmp_path,)))
    try:
        with pytest.raises(AccessDeniedError):
            vlm.ocr(sample_png)
        with pytest.raises(AccessDeniedError, match="URL"):
            vlm.ocr("https://example.com/a.png")
    finally:
        vlm.close()


def test_batch_keeps_an_unreadable_source_in_its_place(
    tiny_vlm: MississippiVLM, sample_png: Path
) -> None:
    corrupt = PDF.parent / "truncated.png"
    results = tiny_vlm.ocr_batch(
        [sample_png, corrupt, PDF], pages="1", max_new_tokens=2, return_exceptions=True
    )
    assert [type(r).__name__ for r in results] == ["OCRResult", "ImageDecodeError", "OCRResult"]
    from mississippi_tools import ImageDecodeError

    with pytest.raises(ImageDecodeError):
        tiny_vlm.ocr_batch([sample_png, corrupt], max_new_tokens=2)


async def test_async_batch_keeps_an_unreadable_source_in_its_place(
    tiny_vlm: MississippiVLM,
) -> None:
    results = await tiny_vlm.aocr_batch(
        [PDF.parent / "missing.png", PDF.parent / "1x1.png"],
        max_new_tokens=2,
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["ImageNotFoundError", "OCRResult"]
