"""Text regions over HTTP: the task route's ``boxes`` field, and the OpenAI route for clients.

The service runs the grounding checkpoint (region tokens in its answers). ``POST /v1/ocr``
takes ``boxes`` like any task argument; a remote :class:`MississippiVLM` asks the chat route
with ``skip_special_tokens: false`` so the region tokens reach the client's parser.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mississippi_tools import MississippiVLM
from mississippi_tools.images import load_image
from mississippi_tools.tasks.ocr import OCRResult
from tests.documents import Page, build_pdf
from tests.server.live import LiveServer, data_uri, png_bytes, quiet_settings, run_server
from tests.support import GROUNDING_BOX, grounding_pixels

IMAGE = png_bytes((250, 250, 250))


@pytest.fixture(scope="module")
def grounding_live(grounding_vlm: MississippiVLM) -> Iterator[LiveServer]:
    """The service over the grounding checkpoint."""
    with run_server(quiet_settings(), grounding_vlm) as server:
        yield server


def _ocr(live: LiveServer, **kwargs: object) -> OCRResult:
    response = httpx.post(f"{live.url}/v1/ocr", timeout=120, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return OCRResult.model_validate(response.json())


def test_the_ocr_route_returns_boxes_when_asked(grounding_live: LiveServer) -> None:
    size = load_image(IMAGE).size
    result = _ocr(grounding_live, json={"image": data_uri(IMAGE), "boxes": True, "max_tiles": 1})
    assert [line.text for line in result.lines] == ["Receipt", "Total due"]
    assert result.lines[1].box is not None
    assert result.lines[1].box.pixels == grounding_pixels(size)
    plain = _ocr(grounding_live, json={"image": data_uri(IMAGE), "max_tiles": 1})
    assert all(line.box is None for line in plain.lines)


def test_a_pdf_upload_gives_page_points(grounding_live: LiveServer, tmp_path: Path) -> None:
    pdf = build_pdf([Page("scan"), Page("scan")])
    path = tmp_path / "two.pdf"
    path.write_bytes(pdf)
    size = load_image(path, page=2).size
    result = _ocr(
        grounding_live,
        files={"image": ("two.pdf", pdf, "application/pdf")},
        data={"page": "2", "boxes": "true", "max_tiles": "1"},
    )
    assert result.meta.page == 2
    box = result.lines[1].box
    assert box is not None and box.pixels == grounding_pixels(size)
    x0, y0, x1, y1 = GROUNDING_BOX
    assert box.points == pytest.approx([x0 * 612, y0 * 792, x1 * 612, y1 * 792], abs=0.05)


def test_the_openapi_document_describes_the_field(grounding_live: LiveServer) -> None:
    schema = httpx.get(f"{grounding_live.url}/openapi.json", timeout=30).json()
    text = str(schema)
    assert "boxes" in text and "page points" in text


def test_a_remote_client_gets_the_boxes_through_the_chat_route(
    grounding_live: LiveServer,
) -> None:
    with MississippiVLM.connect(grounding_live.url) as remote:
        result = remote.ocr(IMAGE, boxes=True, max_tiles=1)
    assert result.meta.engine == "remote"
    assert result.lines[1].box is not None
    assert result.lines[1].box.pixels == grounding_pixels(load_image(IMAGE).size)


def test_the_chat_route_keeps_special_tokens_only_when_told(grounding_live: LiveServer) -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_uri(IMAGE)}},
                    {"type": "text", "text": "Read the text in the image."},
                ],
            }
        ],
        "max_tokens": 64,
    }
    url = f"{grounding_live.url}/v1/chat/completions"
    plain = httpx.post(url, json=body, timeout=120).json()["choices"][0]["message"]["content"]
    kept = httpx.post(url, json={**body, "skip_special_tokens": False}, timeout=120).json()
    content = kept["choices"][0]["message"]["content"]
    assert "<ref>" not in plain and "[[" in plain
    assert "<ref>" in content and "</box>" in content
