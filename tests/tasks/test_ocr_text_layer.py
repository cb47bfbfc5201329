"""OCR answered from PDF text layers, with a random-weight model that could never write the text.

The tiny model's weights are random: when a result holds the page's exact text, the text layer
answered, not the model; the engine's request counter shows which pages reached the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mississippi_tools import InvalidInputError, MississippiVLM
from tests.documents import GARBAGE_LINES, INVOICE_LINES, Page, build_pdf

INVOICE_TEXT = "\n".join(INVOICE_LINES)
FAST = {"max_tiles": 1, "max_new_tokens": 6}
MIXED = [
    Page("text"),
    Page("scan"),
    Page("glyphless_ocr"),
    Page("text", ("Second text page, written by a word processor",)),
    Page("stamp"),
    Page("ocr_layer", GARBAGE_LINES),
    Page("ocr_layer"),
]
"""Pages 1, 4 and 7 have usable text layers; 2, 3, 5 and 6 must go to the model."""


@pytest.fixture
def vlm(tiny_backend) -> Iterator[MississippiVLM]:  # type: ignore[no-untyped-def]
    """A fresh engine over the tiny random model, so that its request counter starts at 0."""
    with MississippiVLM.from_backend(tiny_backend) as fresh:
        yield fresh


@pytest.fixture
def mixed_pdf(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.pdf"
    path.write_bytes(build_pdf(MIXED))
    return path


def _requests(vlm: MississippiVLM) -> int:
    metrics = vlm.engine.metrics  # type: ignore[attr-defined]
    return int(metrics.requests_finished + metrics.requests_failed)


def test_a_text_page_is_answered_by_its_layer_without_the_model(
    vlm: MississippiVLM, mixed_pdf: Path
) -> None:
    result = vlm.ocr(mixed_pdf, page=1, **FAST)
    assert result.text == INVOICE_TEXT
    assert [line.text for line in result.lines] == list(INVOICE_LINES)
    assert result.meta.origin == "text_layer"
    assert (result.meta.page, result.meta.tiles, result.meta.new_tokens) == (1, 0, 0)
    assert _requests(vlm) == 0


def test_a_mixed_pdf_sends_only_the_pages_without_usable_text_to_the_model(
    vlm: MississippiVLM, mixed_pdf: Path
) -> None:
    results = vlm.ocr_batch([mixed_pdf], **FAST)
    origins = [(r.meta.page, r.meta.origin) for r in results]
    assert origins == [
        (1, "text_layer"),
        (2, "model"),
        (3, "model"),
        (4, "text_layer"),
        (5, "model"),
        (6, "model"),
        (7, "text_layer"),
    ]
    assert _requests(vlm) == 4
    assert results[0].text == INVOICE_TEXT
    assert results[3].text == "Second text page, written by a word processor"
    assert results[6].text == INVOICE_TEXT  # a good invisible OCR layer is used too


def test_never_reads_every_page_with_the_model(vlm: MississippiVLM, mixed_pdf: Path) -> None:
    result = vlm.ocr(mixed_pdf, page=1, text_layer="never", **FAST)
    assert result.meta.origin == "model" and result.text != INVOICE_TEXT
    assert _requests(vlm) == 1


def test_only_never_runs_the_model_and_names_what_is_wrong(
    vlm: MississippiVLM, mixed_pdf: Path
) -> None:
    outcomes = list(vlm.iter_batch("ocr", [mixed_pdf], pages="1-3", text_layer="only", **FAST))
    assert outcomes[0].result is not None and outcomes[0].result.text == INVOICE_TEXT
    assert isinstance(outcomes[1].error, InvalidInputError)
    assert "page 2 has no usable text layer: the page has no text layer" in str(outcomes[1].error)
    assert "glyph-less font" in str(outcomes[2].error)
    assert _requests(vlm) == 0


def test_only_on_an_image_says_it_is_not_a_pdf_page(vlm: MississippiVLM, sample_png: Path) -> None:
    with pytest.raises(InvalidInputError, match="it is not a PDF page"):
        vlm.ocr(sample_png, text_layer="only")


def test_markdown_keeps_the_layer_reading_order(vlm: MississippiVLM, mixed_pdf: Path) -> None:
    result = vlm.ocr(mixed_pdf, page=1, format="markdown", **FAST)
    assert result.markdown == INVOICE_TEXT and result.meta.origin == "text_layer"


def test_a_region_of_a_text_page_gives_the_text_inside_it(
    vlm: MississippiVLM, mixed_pdf: Path
) -> None:
    result = vlm.ocr(mixed_pdf, page=1, region=(0, 0, 1, 0.115), **FAST)
    assert result.text == "\n".join(INVOICE_LINES[:2])
    assert result.meta.origin == "text_layer"
    assert result.meta.region == [0, 0, 1700, 253]  # pixels of the page rendered at 200 dpi
    assert _requests(vlm) == 0


async def test_async_twin_uses_the_layer_too(vlm: MississippiVLM, mixed_pdf: Path) -> None:
    result = await vlm.aocr(mixed_pdf, page=4, **FAST)
    assert result.meta.origin == "text_layer"
    assert _requests(vlm) == 0
