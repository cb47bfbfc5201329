"""Florence-2's ``<OCR_WITH_REGION>`` answers parsed into text and quadrilaterals in pixels."""

from __future__ import annotations

import pytest

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.models.florence2.regions import TextRegion, dequantize, parse_ocr_regions


def _locs(*bins: int) -> str:
    return "".join(f"<loc_{b}>" for b in bins)


def test_two_lines_with_their_quads_in_pixels() -> None:
    answer = (
        "</s><s>Invoice 12345"
        + _locs(100, 50, 600, 50, 600, 90, 100, 90)
        + "Total: $1,200"
        + _locs(0, 999, 999, 999, 999, 999, 0, 999)
        + "</s>"
    )
    regions = parse_ocr_regions(answer, (2000, 1000))
    assert [r.text for r in regions] == ["Invoice 12345", "Total: $1,200"]
    first = regions[0]
    assert first.quad == ((201.0, 50.5), (1201.0, 50.5), (1201.0, 90.5), (201.0, 90.5))
    assert first.box == (201.0, 50.5, 1201.0, 90.5)
    assert regions[1].quad[0] == (1.0, 999.5) and regions[1].quad[1] == (1999.0, 999.5)


def test_bins_are_the_centres_of_a_thousand_cells() -> None:
    assert dequantize(0, 1000) == 0.5
    assert dequantize(999, 1000) == 999.5
    assert dequantize(500, 768) == pytest.approx(384.384)
    assert dequantize(1500, 1000) == 999.5  # out-of-range bins are clamped to the image


def test_a_cut_answer_keeps_complete_quads_only() -> None:
    answer = "<s>first" + _locs(1, 2, 3, 4, 5, 6, 7, 8) + "second" + _locs(1, 2, 3)
    regions = parse_ocr_regions(answer, (1000, 1000))
    assert regions == [TextRegion("first", ((1.5, 2.5), (3.5, 4.5), (5.5, 6.5), (7.5, 8.5)))]


def test_text_without_regions_gives_none_and_bad_sizes_are_refused() -> None:
    assert parse_ocr_regions("</s><s>just text</s>", (10, 10)) == []
    with pytest.raises(InvalidInputError, match="positive"):
        parse_ocr_regions("x", (0, 10))


def test_a_region_of_the_tiny_model_parses(florence2_backend) -> None:  # type: ignore[no-untyped-def]
    """The backend's raw answer (special tokens kept) goes straight into the parser."""
    from PIL import Image

    from tests.support import loaded_image

    tokenizer = florence2_backend.tokenizer
    image = loaded_image(Image.new("RGB", (300, 200), "white"))
    prepared = florence2_backend.prepare("<OCR_WITH_REGION>", [image])
    logits, state = florence2_backend.start(prepared)
    ids = []
    for _ in range(12):
        ids.append(int(logits.argmax()))
        logits = florence2_backend.step(state, ids[-1])
    raw = tokenizer.decode(ids, skip_special_tokens=False)
    scripted = raw + "a line" + _locs(10, 20, 30, 20, 30, 40, 10, 40)
    regions = parse_ocr_regions(scripted, image.size)
    assert regions[-1].quad[0] == (10.5 * 300 / 1000, 20.5 * 200 / 1000)
    assert regions[-1].text.endswith("a line")
