"""Fixtures for the LlamaIndex adapter tests.

The model is the session's tiny random checkpoint (``tiny_vlm`` in tests/conftest.py): real
weights, real engine, random words. Answers are kept short (``FAST``) so that the suite stays
quick on a CPU; a random model writes random tokens whatever the budget.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document, SimpleDirectoryReader
from PIL import Image, ImageDraw

from llama_index.readers.mississippi import MississippiImageReader
from mississippi_tools import MississippiVLM

BAD_INPUTS = Path(__file__).parents[2] / "bad_inputs"

FAST: dict[str, Any] = {"max_new_tokens": 8, "max_tiles": 1}
"""Reader and tool options that keep each request short."""

CLOSED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"paid": {"type": "boolean"}, "kind": {"enum": ["invoice", "receipt"]}},
    "required": ["paid", "kind"],
    "additionalProperties": False,
}
"""A schema whose every answer is short: even a random model completes it in ~30 tokens."""

NOTES_TEXT = "Minutes of the quarterly budget meeting: the harbour lighthouse repairs are approved."
"""The text of ``notes.txt``, read by SimpleDirectoryReader's own text reader."""


def draw_image(path: Path, text: str, size: tuple[int, int] = (320, 200)) -> Path:
    """A small image (format from the suffix) with ``text`` drawn on it."""
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((20, 20), text, fill="black")
    image.save(path)
    return path


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``a.png``, ``b.jpg``, ``broken.png`` (truncated), ``notes.txt``, ``report.pdf`` (3 pages)."""
    folder = tmp_path_factory.mktemp("llamaindex-folder")
    draw_image(folder / "a.png", "Invoice 1\nTotal: 120")
    draw_image(folder / "b.jpg", "Receipt 2")
    shutil.copyfile(BAD_INPUTS / "truncated.png", folder / "broken.png")
    (folder / "notes.txt").write_text(NOTES_TEXT)
    shutil.copyfile(BAD_INPUTS / "three_pages.pdf", folder / "report.pdf")
    return folder


@pytest.fixture(scope="session")
def corrupt_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only unreadable files: a truncated PNG and a text file named ``.png``."""
    folder = tmp_path_factory.mktemp("llamaindex-corrupt")
    shutil.copyfile(BAD_INPUTS / "truncated.png", folder / "broken.png")
    shutil.copyfile(BAD_INPUTS / "text_renamed.png", folder / "text.png")
    return folder


@pytest.fixture(scope="session")
def sdr_documents(tiny_vlm: MississippiVLM, image_folder: Path) -> list[Document]:
    """``image_folder`` through SimpleDirectoryReader: images and the PDF through our reader."""
    reader = MississippiImageReader(tiny_vlm, on_error="record", **FAST)
    return SimpleDirectoryReader(image_folder, file_extractor=reader.file_extractor()).load_data()


def pages_of(documents: list[Document]) -> list[tuple[str, str | None]]:
    """``(file_name, page_label)`` of each Document, in order."""
    return [(d.metadata["file_name"], d.metadata.get("page_label")) for d in documents]
