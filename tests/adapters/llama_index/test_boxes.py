"""Text regions in LlamaIndex: the reader's Documents carry boxes as flat JSON metadata.

Runs the grounding checkpoint (a tiny H2OVL model whose answers carry InternVL region tokens).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llama_index.core import SimpleDirectoryReader
from llama_index.core.schema import MetadataMode
from llama_index.core.vector_stores.utils import node_to_metadata_dict
from PIL import Image

from llama_index.readers.mississippi import MississippiImageReader
from mississippi_tools import MississippiVLM
from mississippi_tools.images import load_image
from tests.documents import Page, build_pdf
from tests.support import GROUNDING_BOX, grounding_pixels


def test_the_reader_puts_boxes_in_metadata_kept_out_of_embeddings(
    grounding_vlm: MississippiVLM, tmp_path: Path
) -> None:
    Image.new("RGB", (400, 300), "white").save(tmp_path / "a.png")
    (tmp_path / "b.pdf").write_bytes(build_pdf([Page("scan")]))
    reader = MississippiImageReader(grounding_vlm, arguments={"boxes": True}, max_tiles=1)
    sdr = SimpleDirectoryReader(tmp_path, file_extractor=reader.file_extractor())

    image, scan = sdr.load_data()

    assert image.text == "Receipt\nTotal due"
    assert json.loads(image.metadata["boxes_json"]) == [
        {"text": "Total due", "pixels": grounding_pixels((400, 300))}
    ]
    (boxed,) = json.loads(scan.metadata["boxes_json"])
    x0, y0, x1, y1 = GROUNDING_BOX
    assert boxed["pixels"] == grounding_pixels(load_image(tmp_path / "b.pdf").size)
    assert boxed["points"] == pytest.approx([x0 * 612, y0 * 792, x1 * 612, y1 * 792], abs=0.05)
    for document in (image, scan):
        node_to_metadata_dict(document, flat_metadata=True)  # vector stores accept it
        assert "boxes_json" in document.excluded_embed_metadata_keys
        assert "boxes_json" in document.excluded_llm_metadata_keys
        assert "pixels" not in document.get_content(metadata_mode=MetadataMode.EMBED)
        assert "pixels" not in document.get_content(metadata_mode=MetadataMode.LLM)


def test_without_boxes_there_is_no_boxes_metadata(
    grounding_vlm: MississippiVLM, tmp_path: Path
) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    (document,) = MississippiImageReader(grounding_vlm, max_tiles=1).load_data(tmp_path / "a.png")
    assert "boxes_json" not in document.metadata
