"""Text regions: InternVL grounding markup parsed into boxes, through the API on a real model.

The grounding checkpoint is the tiny H2OVL model with weights set so that greedy decoding writes
``GROUNDING_ANSWER``, region tokens (``<ref>``, ``<box>`` ids 32005..32008) included: the boxes
come from tokens the model generated, decoded with their special tokens kept.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from PIL import Image

from mississippi_tools import MississippiVLM
from mississippi_tools.errors import InvalidInputError, UnsupportedTaskError
from mississippi_tools.images import load_image
from mississippi_tools.models.base import ModelInfo
from mississippi_tools.tasks.base import RunSettings, TaskContext
from mississippi_tools.tasks.dialects import dialect_for, region_families
from mississippi_tools.tasks.dialects.grounding import parse_grounding, strip_grounding
from mississippi_tools.tasks.ocr import SPEC, OCRArguments, parse_ocr_output
from mississippi_tools.tasks.results import ResultMetadata, TextBox
from mississippi_tools.tasks.text_regions import RegionText, TextRegion, line_boxes, text_box
from tests.documents import INVOICE_LINES, Page, build_pdf
from tests.support import GROUNDING_BOX, grounding_pixels

FAST = {"max_tiles": 1}
LETTER = (612.0, 792.0)  # the test PDFs' page size in points


# -- the grounding parser ---------------------------------------------------------------------


def test_internvl_markup_gives_the_text_and_boxes_scaled_from_0_1000() -> None:
    found = parse_grounding(
        "<ref>Invoice</ref><box>[[100, 200, 500, 250]]</box>\nplain line", (800, 600)
    )
    assert found.text == "Invoice\nplain line"
    assert found.regions == (TextRegion("Invoice", 0, (80.0, 120.0, 400.0, 150.0)),)


def test_the_slow_tokenizers_spaces_around_added_tokens_are_tolerated() -> None:
    found = parse_grounding(" <ref> Total due </ref> <box> [[0, 0, 1000, 500]] </box>", (10, 10))
    assert found.text == "Total due"
    assert found.regions[0].box == (0.0, 0.0, 10.0, 5.0)


def test_several_boxes_decimals_and_space_separated_numbers() -> None:
    found = parse_grounding(
        "<ref>a</ref><box>[[0 0 250.5 100], [500,500,1000,1000]]</box>", (1000, 100)
    )
    assert [r.box for r in found.regions] == [(0.0, 0.0, 250.5, 10.0), (500.0, 50.0, 1000.0, 100.0)]
    assert {r.text for r in found.regions} == {"a"}


def test_a_quad_keeps_its_corners_and_its_box_is_the_rectangle_around_them() -> None:
    found = parse_grounding(
        "<ref>tilted</ref><quad>[[100, 0, 300, 100, 200, 300, 0, 200]]</quad>", (1000, 1000)
    )
    region = found.regions[0]
    assert region.quad == (100.0, 0.0, 300.0, 100.0, 200.0, 300.0, 0.0, 200.0)
    assert region.box == (0.0, 0.0, 300.0, 300.0)


def test_a_box_without_ref_belongs_to_the_text_before_it_on_its_line() -> None:
    found = parse_grounding("Total 12.00<box>[[0, 0, 1000, 1000]]</box>\nnext", (4, 4))
    assert found.text == "Total 12.00\nnext"
    assert found.regions == (TextRegion("Total 12.00", 0, (0.0, 0.0, 4.0, 4.0)),)


def test_out_of_range_coordinates_are_clamped_and_malformed_boxes_dropped() -> None:
    found = parse_grounding(
        "<ref>a</ref><box>[[-5, 0, 1200, 1000]]</box> <ref>b</ref><box>[[1, 2, 3]]</box>"
        " <ref>c</ref><box>[[5, 5, 5, 9]]</box> </ref>",
        (100, 100),
    )
    assert found.text == "a b c"
    assert [(r.text, r.box) for r in found.regions] == [("a", (0.0, 0.0, 100.0, 100.0))]


def test_lines_without_markup_are_left_exactly_as_written() -> None:
    text = "  indented   markdown  \n| a  | b |"
    assert parse_grounding(text, (10, 10)) == RegionText(text)
    assert strip_grounding("<ref>x</ref><box>[[1,1,2,2]]</box>  y") == "x y"


# -- placing boxes on the image and the page ---------------------------------------------------


def test_a_crop_is_shifted_back_and_a_pdf_page_gets_points() -> None:
    image = load_image(Image.new("RGB", (200, 100)))
    plain = text_box((10, 20, 30, 40), image)
    assert plain == TextBox(pixels=[10, 20, 30, 40])
    page = image.__class__(
        image=image.image,
        source="x.pdf",
        content_hash=image.content_hash,
        format="PDF",
        page=1,
        region=(50, 60, 250, 160),
        point_scale=(0.5, 0.25),
    )
    shifted = text_box((10, 20, 30, 40), page, quad=(10, 20, 30, 20, 30, 40, 10, 40))
    assert shifted.pixels == [60, 80, 80, 100]
    assert shifted.points == [30, 20, 40, 25]
    assert shifted.quad == [60, 80, 80, 80, 80, 100, 60, 100]
    assert shifted.quad_points == [30, 20, 40, 20, 40, 25, 30, 25]


def test_boxes_on_one_line_are_merged_and_a_lone_quad_is_kept() -> None:
    image = load_image(Image.new("RGB", (100, 100)))
    found = RegionText(
        "a b\nc\nd",
        (
            TextRegion("a", 0, (0, 0, 10, 10)),
            TextRegion("b", 0, (20, 5, 30, 20)),
            TextRegion("d", 2, (1, 1, 3, 3), quad=(1, 1, 3, 1, 3, 3, 1, 3)),
        ),
    )
    boxes = line_boxes(found, image)
    assert boxes[0] == TextBox(pixels=[0, 0, 30, 20])
    assert boxes[1] is None
    assert boxes[2] is not None and boxes[2].quad == [1, 1, 3, 1, 3, 3, 1, 3]


def test_parse_ocr_output_checks_one_box_per_line() -> None:
    meta = ResultMetadata(model="m", engine="local")
    with pytest.raises(InvalidInputError, match="2 lines of output"):
        parse_ocr_output("a\nb", "text", None, meta, [None])
    result = parse_ocr_output(
        "a\n\nb", "text", None, meta, [TextBox(pixels=[0, 0, 1, 1]), None, None]
    )
    assert [line.box for line in result.lines] == [TextBox(pixels=[0, 0, 1, 1]), None]
    assert result.boxes() == [{"text": "a", "pixels": [0.0, 0.0, 1.0, 1.0]}]


# -- which families can say where text is -------------------------------------------------------


def test_h2ovl_asks_for_grounding_and_keeps_its_region_tokens() -> None:
    dialect = dialect_for("h2ovl")
    prompt = dialect.region_prompt("ocr", "Read the text in the image.")
    assert prompt is not None and "<ref>" in prompt and "<box>" in prompt and "1000" in prompt
    assert dialect.keeps_region_tokens()
    assert dialect.region_prompt("read_chart", "x") is None
    assert "h2ovl" in region_families()


def test_boxes_on_a_family_without_regions_is_refused_naming_those_that_can(tmp_path: Path) -> None:
    context = TaskContext(
        info=ModelInfo(model_id="HuggingFaceM4/idefics2-8b", family="idefics2"),
        supports_grammar=False,
    )
    image = load_image(Image.new("RGB", (64, 64)))
    with pytest.raises(UnsupportedTaskError, match=r"cannot say where text is.*h2ovl") as caught:
        SPEC.plan(context, [image], OCRArguments(boxes=True), RunSettings())
    assert "h2ovl" in caught.value.supported_by


# -- through the API, on the grounding checkpoint ----------------------------------------------


def test_ocr_with_boxes_on_an_image(grounding_vlm: MississippiVLM) -> None:
    image = Image.new("RGB", (500, 200), "white")
    result = grounding_vlm.ocr(image, boxes=True, **FAST)
    assert result.text == "Receipt\nTotal due"
    assert [line.text for line in result.lines] == ["Receipt", "Total due"]
    assert result.lines[0].box is None
    box = result.lines[1].box
    assert box is not None and box.pixels == grounding_pixels((500, 200))
    assert box.points is None and box.quad is None
    assert result.boxes() == [{"text": "Total due", "pixels": grounding_pixels((500, 200))}]


def test_without_boxes_the_region_tokens_are_not_asked_for_nor_kept(
    grounding_vlm: MississippiVLM,
) -> None:
    result = grounding_vlm.ocr(Image.new("RGB", (500, 200)), **FAST)
    assert "<ref>" not in result.text and "<box>" not in result.text
    assert all(line.box is None for line in result.lines)


def test_a_region_gives_boxes_in_pixels_of_the_whole_image(grounding_vlm: MississippiVLM) -> None:
    result = grounding_vlm.ocr(
        Image.new("RGB", (500, 200)), boxes=True, region=(100, 50, 300, 150), **FAST
    )
    assert result.lines[1].box is not None
    assert result.lines[1].box.pixels == grounding_pixels((200, 100), offset=(100, 50))


def test_a_pdf_page_read_by_the_model_gives_pixels_and_page_points(
    grounding_vlm: MississippiVLM, tmp_path: Path
) -> None:
    pdf = tmp_path / "scan.pdf"
    pdf.write_bytes(build_pdf([Page("scan")]))
    page = load_image(pdf)
    result = grounding_vlm.ocr(pdf, boxes=True, **FAST)
    assert result.meta.origin == "model"
    box = result.lines[1].box
    assert box is not None and box.pixels == grounding_pixels(page.size)
    assert box.points is not None
    expected = (
        [v * LETTER[0] for v in GROUNDING_BOX[0::2]],
        [v * LETTER[1] for v in GROUNDING_BOX[1::2]],
    )
    assert box.points == pytest.approx(
        [expected[0][0], expected[1][0], expected[0][1], expected[1][1]], abs=0.05
    )


def test_a_text_page_answered_by_its_layer_takes_the_layers_line_boxes(
    grounding_vlm: MississippiVLM, tmp_path: Path
) -> None:
    pdf = tmp_path / "text.pdf"
    pdf.write_bytes(build_pdf([Page("text")]))
    result = grounding_vlm.ocr(pdf, boxes=True, **FAST)
    assert result.meta.origin == "text_layer"
    assert [line.text for line in result.lines] == list(INVOICE_LINES)
    boxes = [line.box for line in result.lines]
    assert all(box is not None and box.points is not None for box in boxes)
    tops = [box.points[1] for box in boxes if box and box.points]
    # Helvetica 14 pt lines, 18 pt apart, starting at x = 72 pt, baseline 720 pt from the bottom.
    assert all(box.points[0] == pytest.approx(72, abs=2) for box in boxes if box and box.points)
    assert [b - a for a, b in itertools.pairwise(tops)] == pytest.approx([18, 18, 18], abs=1)
    assert tops[0] == pytest.approx(792 - 720 - 14, abs=4)


async def test_the_async_twin_gives_the_same_boxes(grounding_vlm: MississippiVLM) -> None:
    image = Image.new("RGB", (320, 240))
    result = await grounding_vlm.aocr(image, boxes=True, **FAST)
    assert result.lines[1].box is not None
    assert result.lines[1].box.pixels == grounding_pixels((320, 240))


def test_markdown_with_boxes(grounding_vlm: MississippiVLM) -> None:
    result = grounding_vlm.ocr(Image.new("RGB", (100, 100)), format="markdown", boxes=True, **FAST)
    assert result.markdown == "Receipt\nTotal due"
    assert result.lines[1].box == TextBox(pixels=grounding_pixels((100, 100)))
