"""Each surface names the option that fixes an error in its own words (flags, fields, policies)."""

from __future__ import annotations

import io
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client
from PIL import Image

from langchain_mississippi import MississippiOCRTool
from mississippi_tools.errors import AccessDeniedError, ImageTooLargeError
from mississippi_tools.images import ImageLimits
from mississippi_tools.models.base import Backend
from mississippi_tools.sources import SourcePolicy
from mississippi_tools.vlm import MississippiVLM
from tests.mcp.conftest import make_server
from tests.mcp.support import text_of
from tests.server.live import quiet_settings, run_server


@pytest.fixture
def outside(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed directory and a PNG outside it."""
    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir()
    elsewhere.mkdir()
    Image.new("RGB", (32, 32), "white").save(elsewhere / "page.png")
    return allowed, elsewhere / "page.png"


def test_python_names_the_source_policy(tiny_backend: Backend, outside: tuple[Path, Path]) -> None:
    allowed, image = outside
    vlm = MississippiVLM.from_backend(tiny_backend, policy=SourcePolicy(allowed_roots=(allowed,)))
    with pytest.raises(AccessDeniedError) as info:
        vlm.ocr(image, max_new_tokens=2)
    assert "SourcePolicy(allowed_roots=[...])" in str(info.value)
    assert info.value.remedy is not None and info.value.remedy.option == "allowed_roots"


def test_langchain_names_the_toolkit_roots(
    tiny_vlm: MississippiVLM, outside: tuple[Path, Path]
) -> None:
    allowed, image = outside
    tool = MississippiOCRTool(vlm=tiny_vlm, allowed_roots=[allowed], max_new_tokens=2)
    message = tool.invoke(
        {"type": "tool_call", "id": "1", "name": tool.name, "args": {"image": str(image)}}
    )
    assert message.status == "error"
    assert "allowed_roots do not include it" in str(message.content)
    assert "SourcePolicy" not in str(message.content)


async def test_mcp_names_its_flag_for_the_calling_model(
    tiny_vlm: MississippiVLM, outside: tuple[Path, Path]
) -> None:
    allowed, image = outside
    with anyio.fail_after(60):
        async with Client(make_server(tiny_vlm, allow_dirs=[allowed])) as client:
            result = await client.call_tool("ocr", {"image": str(image)})
    assert result.is_error
    text = text_of(result)
    assert "--allow-dir" in text and "data URI" in text
    assert "SourcePolicy" not in text


def test_the_limit_is_offered_with_the_size_that_would_pass(tiny_backend: Backend) -> None:
    big = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(big, format="PNG")
    vlm = MississippiVLM.from_backend(tiny_backend, limits=ImageLimits(max_bytes=10))
    with pytest.raises(ImageTooLargeError) as info:
        vlm.ocr(big.getvalue(), max_new_tokens=2)
    assert f"ImageLimits(max_bytes={len(big.getvalue())})" in str(info.value)


def test_http_names_the_servers_flag(tiny_vlm: MississippiVLM) -> None:
    with run_server(quiet_settings(), tiny_vlm) as live:
        response = httpx.post(
            f"{live.url}/v1/ocr",
            json={"image": "https://example.com/page.png", "max_new_tokens": 2},
            timeout=60,
        )
    assert response.status_code == 403, response.text
    message = response.json()["error"]["message"]
    assert "start the server with --allow-urls (MISSISSIPPI_ALLOW_URLS=true)" in message
    assert "SourcePolicy" not in message
