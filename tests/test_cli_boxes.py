"""``mississippi-tools ocr --boxes``: boxes in --json and the text output, and the --overlay PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageChops
from typer.testing import CliRunner

from mississippi_tools.cli import ExitCode, app
from mississippi_tools.images import load_image
from tests.documents import Page, build_pdf
from tests.support import GROUNDING_BOX, grounding_pixels

runner = CliRunner()


def ocr(model: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["ocr", *args, "--model", str(model), "--max-tiles", "1"])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def page(tmp_path: Path) -> Path:
    path = tmp_path / "page.png"
    Image.new("RGB", (400, 200), "white").save(path)
    return path


def test_json_output_has_each_lines_box(grounding_checkpoint: Path, page: Path) -> None:
    code, out, err = ocr(grounding_checkpoint, str(page), "--boxes", "--json")
    assert code == ExitCode.OK, err
    result = json.loads(out)["result"]
    assert result["lines"][0]["box"] is None
    assert result["lines"][1]["box"]["pixels"] == grounding_pixels((400, 200))


def test_text_output_prints_the_box_before_each_line(
    grounding_checkpoint: Path, page: Path
) -> None:
    code, out, err = ocr(grounding_checkpoint, str(page), "--boxes")
    assert code == ExitCode.OK, err
    edges = ",".join(f"{v:g}" for v in grounding_pixels((400, 200)))
    assert out.splitlines() == ["-\tReceipt", f"{edges}\tTotal due"]


def test_overlay_draws_the_boxes_on_the_page(
    grounding_checkpoint: Path, page: Path, tmp_path: Path
) -> None:
    overlay = tmp_path / "out.png"
    code, _, err = ocr(grounding_checkpoint, str(page), "--boxes", "--overlay", str(overlay))
    assert code == ExitCode.OK, err
    assert f"1 box(es) of {page} drawn in {overlay}" in err
    drawn = Image.open(overlay).convert("RGB")
    assert drawn.size == (400, 200)
    changed = ImageChops.difference(drawn, Image.open(page).convert("RGB")).getbbox()
    assert changed is not None
    x0, y0, x1, y1 = grounding_pixels((400, 200))
    # Only the box (its outline, light fill and number tag just above it) was drawn.
    assert changed[0] >= int(x0) - 3 and changed[2] <= x1 + 3
    assert changed[1] >= int(y0) - 20 and changed[3] <= y1 + 3
    inside = drawn.getpixel((int((x0 + x1) / 2), int((y0 + y1) / 2)))
    assert inside != (255, 255, 255)  # filled
    assert drawn.getpixel((10, 10)) == (255, 255, 255)  # outside untouched


def test_overlay_of_pdf_pages_writes_one_png_per_page(
    grounding_checkpoint: Path, tmp_path: Path
) -> None:
    pdf = tmp_path / "scans.pdf"
    pdf.write_bytes(build_pdf([Page("scan"), Page("scan")]))
    overlay = tmp_path / "pages.png"
    code, out, err = ocr(
        grounding_checkpoint, str(pdf), "--boxes", "--json", "--overlay", str(overlay)
    )
    assert code == ExitCode.OK, err
    results = [json.loads(line)["result"] for line in out.splitlines()]
    x0, y0, x1, y1 = GROUNDING_BOX
    for result in results:
        box = result["lines"][1]["box"]
        assert box["points"] == pytest.approx([x0 * 612, y0 * 792, x1 * 612, y1 * 792], abs=0.05)
    size = load_image(pdf, page=1).size
    for path in (overlay, tmp_path / "pages-2.png"):
        drawn = Image.open(path).convert("RGB")
        assert drawn.size == size
        px = grounding_pixels(size)
        assert drawn.getpixel((int((px[0] + px[2]) / 2), int((px[1] + px[3]) / 2))) != (
            load_image(pdf, page=1).image.getpixel(
                (int((px[0] + px[2]) / 2), int((px[1] + px[3]) / 2))
            )
        )


def test_overlay_without_boxes_says_to_add_them(grounding_checkpoint: Path, page: Path) -> None:
    code, _, err = ocr(grounding_checkpoint, str(page), "--overlay", "x.png")
    assert code == ExitCode.BAD_INPUT
    assert "add --boxes" in err


def test_boxes_on_a_model_that_cannot_give_them_is_refused(tmp_path: Path, page: Path) -> None:
    from mississippi_tools.testing import build_tiny_checkpoint

    idefics = build_tiny_checkpoint(tmp_path / "idefics2", family="idefics2")
    code, _, err = ocr(idefics, str(page), "--boxes")
    assert code != ExitCode.OK
    assert "cannot say where text is" in err and "h2ovl" in err
