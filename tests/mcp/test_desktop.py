"""``read_screenshot`` and ``read_clipboard_image`` for real: Xvfb, xclip, the official MCP client.

A known image is put on a virtual X screen of exactly its size (a borderless Tk window,
``show_image.py``) and on the clipboard (``xclip -t image/png``); the tools capture it and run a
task on the scripted tiny model. The capture's size and pixel digest in the structured result
prove that the tool read exactly the known image. Needs Debian's ``xvfb``, ``xclip`` and
``x11-utils`` and Tk (``python3-tk``); ``.ci/run`` installs them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from PIL import Image, ImageDraw

from mississippi_mcp.capture import CaptureUnavailableError, grab_clipboard, grab_screen
from mississippi_tools.vlm import MississippiVLM
from tests.mcp.conftest import make_server
from tests.mcp.support import check_error, check_structured, text_of

WIDTH, HEIGHT = 320, 200
TITLE = "mississippi desktop test"
SHOW_IMAGE = Path(__file__).with_name("show_image.py")
DEADLINE = 20.0


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is missing: apt-get install -y xvfb xclip x11-utils (.ci/run does)")
    return path


def _read_line(stream: Any, deadline: float, what: str) -> str:
    """One line from a pipe, waiting at most until ``deadline`` (``time.monotonic``)."""
    data = b""
    fd = stream if isinstance(stream, int) else stream.fileno()
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            pytest.fail(f"{what} did not answer within {DEADLINE:g} s")
        chunk = os.read(fd, 64)
        if not chunk:
            pytest.fail(f"{what} exited before answering")
        data += chunk
    return data.decode().strip()


def _stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _digest(image: Image.Image) -> str:
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


@pytest.fixture(scope="module")
def known_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 320×200 PNG with text and coloured blocks: every region of it is distinct."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    draw.text((12, 12), "Invoice 4711\nTotal: 99.50", fill="black")
    draw.rectangle((100, 100, 200, 150), fill=(200, 30, 60))
    draw.rectangle((220, 20, 300, 180), fill=(20, 120, 220))
    path = tmp_path_factory.mktemp("desktop") / "known.png"
    image.save(path)
    return path


@pytest.fixture(scope="module")
def x_display(known_image: Path) -> Iterator[str]:
    """An Xvfb display the size of the known image, showing it; yields ``DISPLAY``."""
    xvfb = _require("Xvfb")
    if importlib.util.find_spec("tkinter") is None:
        pytest.fail("tkinter is missing: apt-get install -y python3-tk (.ci/run does)")
    read, write = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write), "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten",
         "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write)
    try:
        display = ":" + _read_line(read, time.monotonic() + DEADLINE, "Xvfb")
        os.close(read)
        env = {**os.environ, "DISPLAY": display}
        env.pop("WAYLAND_DISPLAY", None)
        window = subprocess.Popen(
            [sys.executable, str(SHOW_IMAGE), str(known_image), TITLE],
            env=env,
            stdout=subprocess.PIPE,
        )
        try:
            assert _read_line(window.stdout, time.monotonic() + DEADLINE, "show_image") == "ready"
            # Drawn? Wait (with a deadline) until the screen shows the image, so that the tests
            # below never race the window's first paint.
            expected, deadline = _digest(_load(known_image)), time.monotonic() + DEADLINE
            while grab_screen(environ={"DISPLAY": display}).rgb_sha256 != expected:
                if time.monotonic() > deadline:
                    pytest.fail("the known image did not appear on the Xvfb screen in time")
                time.sleep(0.05)
            yield display
        finally:
            _stop(window)
            assert window.stdout is not None
            window.stdout.close()
    finally:
        _stop(server)


@pytest.fixture
def on_display(x_display: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The server's environment points at the Xvfb display (and no Wayland)."""
    monkeypatch.setenv("DISPLAY", x_display)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return x_display


@pytest.fixture
def clipboard(on_display: str, known_image: Path) -> Iterator[None]:
    """The known image on the display's clipboard (as image/png) while the test runs."""
    xclip = _require("xclip")
    owner = subprocess.Popen(
        [xclip, "-quiet", "-selection", "clipboard", "-t", "image/png", "-i", str(known_image)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            targets = subprocess.run(
                [xclip, "-selection", "clipboard", "-o", "-t", "TARGETS"],
                capture_output=True,
                timeout=DEADLINE,
                check=False,
            )
            if b"image/png" in targets.stdout:
                break
            if time.monotonic() > deadline:
                pytest.fail("xclip did not take the clipboard in time")
            time.sleep(0.05)
        yield
    finally:
        _stop(owner)


async def _call(vlm: MississippiVLM, name: str, arguments: dict[str, Any]) -> Any:
    server = make_server(vlm, desktop=True)
    with anyio.fail_after(240):
        async with Client(server) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            result = await client.call_tool(name, arguments)
    return result, tools[name]


async def test_the_tools_are_listed_only_with_desktop(scripted_vlm: MississippiVLM) -> None:
    async with Client(make_server(scripted_vlm)) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert not names & {"read_screenshot", "read_clipboard_image"}
    server = make_server(scripted_vlm, desktop=True)
    async with Client(server) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    instructions = server.instructions
    for name in ("read_screenshot", "read_clipboard_image"):
        tool = listed[name]
        assert tool.description is not None and "secrets" in tool.description
        assert "--desktop" in tool.description
        properties = tool.input_schema["properties"]
        assert properties["task"]["enum"] == [
            "ocr", "read_chart", "read_table", "extract", "extract_document", "ask"
        ]  # fmt: skip
        assert "arguments" in properties and "ctx" not in properties
        assert tool.output_schema is not None
        assert set(tool.output_schema["required"]) == {"task", "result", "capture"}
    assert {"window", "region"} <= set(listed["read_screenshot"].input_schema["properties"])
    assert instructions is not None and "read_screenshot" in instructions


async def test_read_screenshot_runs_ocr_on_the_whole_screen(
    scripted_vlm: MississippiVLM, on_display: str, known_image: Path
) -> None:
    result, tool = await _call(scripted_vlm, "read_screenshot", {})
    structured = check_structured(result, tool)
    assert structured["task"] == "ocr"
    assert structured["result"]["text"] == '{"total": 5}'  # the scripted model's answer
    assert structured["result"]["meta"]["source"] == "data URI"
    capture = structured["capture"]
    assert (capture["width"], capture["height"]) == (WIDTH, HEIGHT)
    assert capture["source"] == "screen" and capture["backend"] == "xcb"
    assert capture["rgb_sha256"] == _digest(_load(known_image))
    assert text_of(result).startswith(f"[ocr on the whole screen, {WIDTH}×{HEIGHT} px]")


async def test_read_screenshot_of_a_window_and_a_region_with_a_task(
    scripted_vlm: MississippiVLM, on_display: str, known_image: Path
) -> None:
    known = _load(known_image)
    window, tool = await _call(scripted_vlm, "read_screenshot", {"window": TITLE})
    capture = check_structured(window, tool)["capture"]
    assert capture["source"] == "window" and capture["box"] == [0, 0, WIDTH, HEIGHT]
    assert capture["rgb_sha256"] == _digest(known)

    region = [100, 100, 200, 150]
    asked, tool = await _call(
        scripted_vlm,
        "read_screenshot",
        {"region": region, "task": "ask", "arguments": {"question": "What colour is it?"}},
    )
    structured = check_structured(asked, tool)
    assert structured["task"] == "ask" and structured["result"]["text"] == '{"total": 5}'
    capture = structured["capture"]
    assert (capture["width"], capture["height"], capture["box"]) == (100, 50, region)
    assert capture["rgb_sha256"] == _digest(known.crop(tuple(region)))


async def test_read_clipboard_image(
    scripted_vlm: MississippiVLM, clipboard: None, known_image: Path
) -> None:
    result, tool = await _call(
        scripted_vlm, "read_clipboard_image", {"arguments": {"format": "markdown"}}
    )
    structured = check_structured(result, tool)
    assert structured["result"]["format"] == "markdown"
    capture = structured["capture"]
    assert capture["source"] == "clipboard" and capture["backend"] == "xclip"
    assert (capture["width"], capture["height"]) == (WIDTH, HEIGHT)
    assert capture["rgb_sha256"] == _digest(_load(known_image))


@pytest.mark.parametrize(
    ("name", "arguments", "fragments"),
    [
        ("read_clipboard_image", {}, ("no_clipboard_image", "copy an image")),
        ("read_screenshot", {"window": "no such window"}, ("window_not_found", "exact title")),
        ("read_screenshot", {"region": [500, 500, 600, 600]}, ("outside the screen", "320×200")),
        ("read_screenshot", {"region": [10, 10, 5, 50]}, ("empty",)),
        ("read_screenshot", {"task": "translate"}, ("unknown task", "ocr, read_chart")),
        ("read_screenshot", {"task": "ask"}, ("question",)),
        ("read_screenshot", {"arguments": {"image": "x.png"}}, ("may not set image",)),
        ("read_screenshot", {"arguments": {"colour": 1}}, ("colour",)),
        ("read_screenshot", {"page": 2}, ("takes no argument 'page'",)),
    ],
)
async def test_errors_say_what_to_do(
    scripted_vlm: MississippiVLM,
    on_display: str,
    name: str,
    arguments: dict[str, Any],
    fragments: tuple[str, ...],
) -> None:
    server = make_server(scripted_vlm, desktop=True)
    with anyio.fail_after(60):
        async with Client(server) as client:
            result: types.CallToolResult = await client.call_tool(name, arguments)
    check_error(result, *fragments)


async def test_no_display_names_what_is_missing(
    scripted_vlm: MississippiVLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    async with Client(make_server(scripted_vlm, desktop=True)) as client:
        for name in ("read_screenshot", "read_clipboard_image"):
            result = await client.call_tool(name, {})
            check_error(result, "capture_unavailable", "DISPLAY", "WAYLAND_DISPLAY")


def test_missing_tools_are_named(x_display: str, tmp_path: Path) -> None:
    """Without xclip, xwininfo or grim on PATH, the error names the package to install."""
    empty = tmp_path / "bin"
    empty.mkdir()
    environ = {"DISPLAY": x_display}
    path = os.environ["PATH"]
    try:
        os.environ["PATH"] = str(empty)
        with pytest.raises(CaptureUnavailableError, match=r"apt install xclip"):
            grab_clipboard(environ=environ)
        with pytest.raises(CaptureUnavailableError, match=r"x11-utils"):
            grab_screen(window=TITLE, environ=environ)
        with pytest.raises(CaptureUnavailableError, match=r"apt install grim"):
            grab_screen(environ={"WAYLAND_DISPLAY": "wayland-0"})
        with pytest.raises(CaptureUnavailableError, match=r"wl-clipboard"):
            grab_clipboard(environ={"WAYLAND_DISPLAY": "wayland-0"})
    finally:
        os.environ["PATH"] = path
