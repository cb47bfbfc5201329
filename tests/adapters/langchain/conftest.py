"""Fixtures for the LangChain adapter tests (``scripted_vlm`` comes from tests/conftest.py).

Besides the session's random tiny model (``tiny_vlm``: real model, random words), these tests
need answers that parse: a chart tool whose artifact is a real ``ChartData``, a table tool
whose artifact is a real ``TableData``. ``scripted_vlm`` is the same tiny checkpoint, in the
same on-disk format, loaded and run by the same code, with its weights set so that greedy
decoding writes a known answer: every decoder layer's output projections are zero, so the
next token depends only on the current one (a bigram model), and the embeddings and the LM
head are set so that the prompt's last token leads through ``SCRIPTED_ANSWER`` to ``<|end|>``.
Under a grammar (charts, extraction) the scripted token is often not allowed; the LM head
then prefers ``"`` (close a string) and closing brackets over everything else, so
constrained JSON finishes quickly with empty strings.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from mississippi_tools.sources import UnrestrictedPathsWarning

THREE_PAGES_PDF = Path(__file__).parents[2] / "bad_inputs" / "three_pages.pdf"


def draw_image(path: Path, text: str, size: tuple[int, int] = (320, 200)) -> Path:
    """A small PNG (or any PIL format, by suffix) with ``text`` drawn on it."""
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((20, 20), text, fill="black")
    image.save(path)
    return path


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``a.png``, ``b.jpg``, ``report.pdf`` (3 pages), ``notes.txt``, ``sub/c.png``."""
    folder = tmp_path_factory.mktemp("folder")
    draw_image(folder / "a.png", "Invoice 1")
    draw_image(folder / "b.jpg", "Receipt 2")
    shutil.copyfile(THREE_PAGES_PDF, folder / "report.pdf")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    draw_image(folder / "sub" / "c.png", "Nested 3")
    return folder


def tool_call(name: str, args: dict[str, Any], call_id: str = "call-1") -> dict[str, Any]:
    """A ToolCall dict, as a chat model emits it."""
    return {"type": "tool_call", "id": call_id, "name": name, "args": args}


@pytest.fixture(autouse=True)
def _tools_may_read_the_test_files(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run from ``/``: the files these tests read lie in several temporary directories.

    A tool built without roots reads only under the current directory
    (``mississippi_tools.sources.agent_policy``); from ``/`` it reads any file, as it did by
    default before, and says so with an ``UnrestrictedPathsWarning`` (ignored here; the default
    and the warning are tested in tests/test_input_security.py).
    """
    monkeypatch.chdir("/")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnrestrictedPathsWarning)
        yield
