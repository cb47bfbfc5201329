"""Text regions in LangChain: the loader's Documents carry boxes in metadata; the tool offers them.

Runs the grounding checkpoint (a tiny H2OVL model whose answers carry InternVL region tokens).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from langchain_mississippi import MississippiImageLoader, MississippiOCRTool
from mississippi_tools import MississippiVLM
from mississippi_tools.images import load_image
from mississippi_tools.tasks.ocr import OCRResult
from tests.documents import Page, build_pdf
from tests.support import GROUNDING_BOX, grounding_pixels


def test_the_loader_puts_each_pages_boxes_in_metadata(
    grounding_vlm: MississippiVLM, tmp_path: Path
) -> None:
    Image.new("RGB", (400, 300), "white").save(tmp_path / "a.png")
    (tmp_path / "b.pdf").write_bytes(build_pdf([Page("scan"), Page("text")]))
    loader = MississippiImageLoader(
        tmp_path, vlm=grounding_vlm, arguments={"boxes": True}, max_tiles=1
    )

    image, scan, text_page = loader.load()

    assert image.page_content == "Receipt\nTotal due"  # the boxes stay out of the text
    assert image.metadata["boxes"] == [
        {"text": "Total due", "pixels": grounding_pixels((400, 300))}
    ]
    (boxed,) = scan.metadata["boxes"]
    x0, y0, x1, y1 = GROUNDING_BOX
    assert boxed["pixels"] == grounding_pixels(load_image(tmp_path / "b.pdf", page=1).size)
    assert boxed["points"] == pytest.approx([x0 * 612, y0 * 792, x1 * 612, y1 * 792], abs=0.05)
    assert scan.metadata["page"] == 1
    assert text_page.metadata["result"]["lines"][0]["box"]["points"][0] == pytest.approx(72, abs=2)
    assert len(text_page.metadata["boxes"]) == 4  # the text layer's four lines
    restored = OCRResult.model_validate(
        {**image.metadata["result"], "meta": {"model": "m", "engine": "local"}}
    )
    assert restored.lines[1].box is not None


def test_without_boxes_the_metadata_has_none(grounding_vlm: MississippiVLM, tmp_path: Path) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    (document,) = MississippiImageLoader(tmp_path / "a.png", vlm=grounding_vlm, max_tiles=1).load()
    assert "boxes" not in document.metadata


def test_the_ocr_tool_takes_boxes_and_returns_them_in_its_artifact(
    grounding_vlm: MississippiVLM, tmp_path: Path
) -> None:
    path = tmp_path / "scan.png"
    Image.new("RGB", (300, 100)).save(path)
    tool = MississippiOCRTool(vlm=grounding_vlm, allowed_roots=[tmp_path], max_tiles=1)
    assert "boxes" in tool.args
    message = tool.invoke(
        {
            "type": "tool_call",
            "id": "call-1",
            "name": tool.name,
            "args": {"image": str(path), "boxes": True},
        }
    )
    assert message.artifact.lines[1].box.pixels == grounding_pixels((300, 100))
    assert "Total due [" in message.content
