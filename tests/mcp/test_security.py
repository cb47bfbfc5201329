"""What the tools may read: allowed directories, client roots, URLs, and every refusal."""

from __future__ import annotations

import base64
import functools
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from PIL import Image

from mississippi_mcp.server import root_paths
from mississippi_tools.vlm import MississippiVLM
from tests.mcp.conftest import make_server
from tests.mcp.support import check_error, probe, text_of

BAD_INPUTS = Path(__file__).parents[1] / "bad_inputs"


async def call(server: Any, image: str, roots: list[Path] | None = None) -> types.CallToolResult:
    """``ocr`` on ``image`` (it reads the input before any generation), within 10 s."""

    async def list_roots(_context: Any) -> types.ListRootsResult:
        assert roots is not None
        return types.ListRootsResult(
            roots=[types.Root(uri=root.as_uri(), name=root.name) for root in roots]
        )

    with anyio.fail_after(10):
        async with Client(server, list_roots_callback=list_roots if roots else None) as client:
            return await client.call_tool("ocr", {"image": image})


@pytest.fixture
def outside(tmp_path: Path, images: Path) -> Path:
    """An image next to the allowed directory, not inside it."""
    path = tmp_path / "secret.png"
    shutil.copy(images / "page.png", path)
    return path


def noisy_png(path: Path, size: int = 64) -> Path:
    Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)).save(path)
    return path


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("dotdot", ["access_denied", "outside the allowed roots", "--allow-dir"]),
        ("absolute", ["access_denied", "outside the allowed roots"]),
        ("symlink", ["access_denied", "symlink"]),
        ("directory", ["access_denied", "a directory"]),
        ("fifo", ["access_denied", "FIFO"]),
        ("dev_zero", ["access_denied", "/dev"]),
        ("proc", ["access_denied", "/proc"]),
        ("missing", ["image_not_found"]),
    ],
)
async def test_paths_outside_the_rules_are_refused(
    scripted_vlm: MississippiVLM, images: Path, outside: Path, name: str, fragments: list[str]
) -> None:
    if name == "symlink":
        (images / "link.png").symlink_to(outside)
    if name == "fifo":
        os.mkfifo(images / "pipe.png")
    (images / "sub").mkdir()
    image = {
        "dotdot": "../secret.png",
        "absolute": str(outside),
        "symlink": "link.png",
        "directory": "sub",
        "fifo": "pipe.png",
        "dev_zero": "/dev/zero",
        "proc": "/proc/self/environ",
        "missing": "nothing-here.png",
    }[name]
    server = make_server(scripted_vlm, allow_dirs=[images])
    check_error(await call(server, image), *fragments)
    # The server goes on serving allowed files after a refusal.
    assert await probe(server, "page.png") == "allowed"


async def test_without_any_directory_paths_are_refused_and_inline_images_read(
    scripted_vlm: MississippiVLM, images: Path
) -> None:
    server = make_server(scripted_vlm)
    refused = await call(server, str(images / "page.png"))
    text = check_error(
        refused, "access_denied", "allowed roots ((none))", "data URI", "--allow-dir"
    )
    assert "SourcePolicy" not in text  # the remedy is spelled in this server's words
    data = base64.b64encode((images / "page.png").read_bytes()).decode()
    assert not (await call(server, f"data:image/png;base64,{data}")).is_error


@pytest.mark.parametrize("kind", ["file", "base64", "bomb", "pixels"])
async def test_oversized_inputs_are_refused(
    scripted_vlm: MississippiVLM, images: Path, kind: str
) -> None:
    big = noisy_png(images / "big.png")
    shutil.copy(BAD_INPUTS / "decompression_bomb.png", images / "bomb.png")
    limit = big.stat().st_size // 2
    if kind == "pixels":
        server = make_server(scripted_vlm, allow_dirs=[images], max_image_pixels=1000)
        result = await call(server, "page.png")
    elif kind == "bomb":
        result = await call(make_server(scripted_vlm, allow_dirs=[images]), "bomb.png")
    else:
        server = make_server(scripted_vlm, allow_dirs=[images], max_image_bytes=limit)
        image = "big.png" if kind == "file" else base64.b64encode(big.read_bytes()).decode()
        result = await call(server, image)
    flag = "--max-image-pixels" if kind in ("bomb", "pixels") else "--max-image-bytes"
    check_error(result, "image_too_large", flag)


async def test_urls_are_refused_unless_enabled(scripted_vlm: MississippiVLM) -> None:
    disabled = await call(make_server(scripted_vlm), "https://example.com/chart.png")
    check_error(disabled, "access_denied", "--allow-urls")
    private = await call(make_server(scripted_vlm, allow_urls=True), "http://127.0.0.1:9/chart.png")
    check_error(private, "access_denied", "loopback", "--allow-private-urls")
    metadata = await call(
        make_server(scripted_vlm, allow_urls=True), "http://169.254.169.254/latest/meta-data"
    )
    check_error(metadata, "access_denied", "link-local")


@pytest.fixture
def http_images(images: Path) -> Iterator[str]:
    """The allowed directory served over HTTP on 127.0.0.1."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(images))

    class Quiet(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass

    server = Quiet(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_enabled_urls_are_read_and_their_size_capped(
    scripted_vlm: MississippiVLM, images: Path, http_images: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SimpleHTTPRequestHandler, "log_message", lambda *args: None)
    big = noisy_png(images / "big.png")
    server = make_server(
        scripted_vlm,
        allow_urls=True,
        allow_private_urls=True,
        max_image_bytes=big.stat().st_size // 2,
    )
    async with Client(server) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        result = await client.call_tool("ocr", {"image": f"{http_images}/page.png"})
        too_big = await client.call_tool("ocr", {"image": f"{http_images}/big.png"})
    assert not result.is_error, text_of(result)
    assert tools["ocr"].annotations is not None
    assert tools["ocr"].annotations.open_world_hint is True  # it can reach other hosts now
    check_error(too_big, "image_too_large")


async def test_client_roots_allow_their_files(
    scripted_vlm: MississippiVLM, images: Path, outside: Path
) -> None:
    server = make_server(scripted_vlm)
    relative = await call(server, "page.png", roots=[images])
    assert not relative.is_error, text_of(relative)
    assert await probe(server, str(images / "page.png"), roots=[images]) == "allowed"
    assert await probe(server, (images / "page.png").as_uri(), roots=[images]) == "allowed"
    check_error(await call(server, str(outside), roots=[images]), "access_denied", str(images))
    assert "access_denied" in await probe(server, "page.png")  # no roots this time


async def test_client_roots_are_ignored_when_not_trusted(
    scripted_vlm: MississippiVLM, images: Path
) -> None:
    server = make_server(scripted_vlm, client_roots=False)
    result = await call(server, str(images / "page.png"), roots=[images])
    check_error(result, "access_denied", "(none)")


async def test_configured_and_client_roots_combine(
    scripted_vlm: MississippiVLM, images: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(images / "page.png", other / "second.png")
    server = make_server(scripted_vlm, allow_dirs=[images])
    # Relative paths start at the client's first root; configured directories stay allowed.
    assert await probe(server, "second.png", roots=[other]) == "allowed"
    assert await probe(server, str(images / "page.png"), roots=[other]) == "allowed"
    assert await probe(server, "page.png") == "allowed"  # without client roots


def test_root_paths_keep_local_file_uris_only(tmp_path: Path) -> None:
    result = types.ListRootsResult(
        roots=[
            types.Root(uri=tmp_path.as_uri()),
            types.Root(uri=(tmp_path / "with space").as_uri()),
            types.Root(uri="file://otherhost/share"),
            types.Root.model_construct(uri="https://example.com/repo"),  # a non-conformant client
            types.Root(uri=tmp_path.as_uri()),
        ]
    )
    assert root_paths(result) == [tmp_path, tmp_path / "with space"]
    assert root_paths(None) == []
