"""PDF text layers: reading them with PDFium, and the test of whether one can stand for its page."""

from __future__ import annotations

import pytest

from mississippi_tools.images import iter_pages, load_image
from mississippi_tools.text_layer import GLYPHLESS, INVISIBLE, UNMAPPED, TextLayer
from tests.documents import GARBAGE_LINES, INVOICE_LINES, SYMBOL_LINES, Page, build_pdf

INVOICE_TEXT = "\n".join(INVOICE_LINES)


def _layer(kind: str, lines: tuple[str, ...] = INVOICE_LINES) -> TextLayer:
    page = load_image(build_pdf([Page(kind, lines)]))  # type: ignore[arg-type]
    assert page.text_layer is not None
    return page.text_layer


def test_a_text_page_gives_its_exact_text_and_passes() -> None:
    layer = _layer("text")
    assert layer.clean_text == INVOICE_TEXT
    assert layer.problem() is None
    assert set(layer.flags) == {0}


def test_character_boxes_are_where_the_page_draws_them() -> None:
    layer = _layer("text")
    first = layer.boxes[0]  # "A" of the first line, drawn at x = 72 pt, baseline y = 720 pt
    assert first is not None
    x0, y0, x1, y1 = first
    assert abs(x0 - 72 / 612) < 0.01
    assert abs(y1 - (792 - 720) / 792) < 0.01  # the baseline, from the top of the page
    assert 0 < y0 < y1 and x0 < x1


@pytest.mark.parametrize(
    ("kind", "lines", "reason"),
    [
        ("scan", INVOICE_LINES, "the page has no text layer"),
        ("stamp", INVOICE_LINES, "only 5 characters of text"),  # "Page 1"
        ("glyphless_ocr", INVOICE_LINES, "glyph-less font (GlyphLessFont)"),
        ("ocr_layer", GARBAGE_LINES, "invisible OCR layer and only 0 of"),
        ("text", SYMBOL_LINES, "are letters or digits"),
    ],
)
def test_unusable_layers_say_why(kind: str, lines: tuple[str, ...], reason: str) -> None:
    problem = _layer(kind, lines).problem()
    assert problem is not None and reason in problem


def test_an_invisible_ocr_layer_of_real_words_passes() -> None:
    layer = _layer("ocr_layer")
    assert set(layer.flags) == {0, INVISIBLE}  # the inserted line breaks are not drawn
    assert layer.clean_text == INVOICE_TEXT
    assert layer.problem() is None


def test_glyphless_characters_are_flagged() -> None:
    layer = _layer("glyphless_ocr")
    assert layer.fonts == ("GlyphLessFont",)
    assert all(
        flag & GLYPHLESS for char, flag in zip(layer.text, layer.flags, strict=True) if char.strip()
    )


def test_unmapped_characters_fail_the_test() -> None:
    text = "Invoice 12345 total due 1,200 EUR"
    flags = bytes(UNMAPPED if i < 5 else 0 for i in range(len(text)))
    layer = TextLayer(text, (None,) * len(text), flags)
    problem = layer.problem()
    assert problem is not None and "no Unicode mapping" in problem
    assert TextLayer(text, (None,) * len(text), bytes(len(text))).problem() is None


def test_private_use_characters_count_as_unmapped() -> None:
    text = "\ue001\ue002\ue003 " + "readable words here and more"
    layer = TextLayer(text, (None,) * len(text), bytes(len(text)))
    problem = layer.problem()
    assert problem is not None and "3 of" in problem


def test_the_minimum_is_configurable() -> None:
    layer = _layer("stamp")
    assert layer.problem(min_chars=5) is None


def test_within_keeps_the_lines_inside_the_box_in_order() -> None:
    layer = _layer("text")
    # The first two lines are drawn at 720 and 702 pt: the top 15% of the page holds them.
    top = layer.within((0.0, 0.0, 1.0, 0.115))
    assert top.clean_text == "\n".join(INVOICE_LINES[:2])
    # The crop's boxes are fractions of the crop.
    kept = [box for box in top.boxes if box is not None]
    assert all(min(box) >= 0 and box[2] <= 1 and box[3] <= 1.01 for box in kept)


def test_a_mixed_pdf_carries_a_layer_per_page() -> None:
    pdf = build_pdf([Page("text"), Page("scan"), Page("text", ("Second text page of words",))])
    layers = [page.text_layer for page in iter_pages(pdf)]
    assert [layer.clean_text if layer else None for layer in layers] == [
        INVOICE_TEXT,
        "",
        "Second text page of words",
    ]


def test_images_have_no_text_layer(sample_png) -> None:  # type: ignore[no-untyped-def]
    assert load_image(sample_png).text_layer is None


def test_a_layer_needs_one_box_and_flag_per_character() -> None:
    with pytest.raises(ValueError, match="one box and one flag per character"):
        TextLayer("abc", (None,), b"\x00\x00\x00")
