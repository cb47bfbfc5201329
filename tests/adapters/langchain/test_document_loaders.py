"""MississippiImageLoader over folders of images and PDFs, on the scripted tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document

from langchain_mississippi import MississippiImageLoader
from mississippi_tools import (
    ChartData,
    ImageDecodeError,
    InvalidInputError,
    MississippiVLM,
    TableData,
)
from mississippi_tools.tasks.chart import render_chart
from tests.support import SCRIPTED_ANSWER

from .conftest import THREE_PAGES_PDF, draw_image

FAST: dict[str, Any] = {"max_tiles": 1, "max_new_tokens": 16}
META = {"model": "m", "engine": "local"}
BAD_INPUTS = THREE_PAGES_PDF.parent


def pages_of(documents: list[Document]) -> list[tuple[str, int | None]]:
    return [(Path(d.metadata["source"]).name, d.metadata["page"]) for d in documents]


def test_folder_gives_one_document_per_page_in_order(
    scripted_vlm: MississippiVLM, image_folder: Path
) -> None:
    loader = MississippiImageLoader(image_folder, vlm=scripted_vlm, **FAST)

    documents = loader.load()

    assert pages_of(documents) == [
        ("a.png", 1),
        ("b.jpg", 1),
        ("report.pdf", 1),
        ("report.pdf", 2),
        ("report.pdf", 3),
    ]
    first = documents[0]
    assert first.page_content == SCRIPTED_ANSWER
    assert first.metadata == {
        "source": str(image_folder / "a.png"),
        "page": 1,
        "task": "ocr",
        "model": scripted_vlm.model_id,
        "tiles": first.metadata["tiles"],
        "result": first.metadata["result"],
    }
    assert first.metadata["tiles"] >= 1
    assert first.metadata["result"]["text"] == SCRIPTED_ANSWER
    assert all(d.metadata["task"] == "ocr" for d in documents)


def test_recursive_glob_and_page_selection(
    scripted_vlm: MississippiVLM, image_folder: Path
) -> None:
    loader = MississippiImageLoader(
        image_folder, vlm=scripted_vlm, recursive=True, pages="2-3", **FAST
    )

    assert [p.relative_to(image_folder).as_posix() for p in loader.files()] == [
        "a.png",
        "b.jpg",
        "report.pdf",
        "sub/c.png",
    ]
    assert pages_of(loader.load()) == [
        ("a.png", 1),
        ("b.jpg", 1),
        ("report.pdf", 2),
        ("report.pdf", 3),
        ("c.png", 1),
    ]
    only_png = MississippiImageLoader(image_folder, vlm=scripted_vlm, glob="*.png", **FAST)
    assert [p.name for p in only_png.files()] == ["a.png"]


def test_multi_page_tiff_gives_one_document_per_page(scripted_vlm: MississippiVLM) -> None:
    loader = MississippiImageLoader(BAD_INPUTS / "multipage.tiff", vlm=scripted_vlm, **FAST)

    assert pages_of(loader.load()) == [("multipage.tiff", n) for n in (1, 2, 3)]


def test_chart_mode_puts_the_table_in_the_text_and_the_data_in_metadata(
    scripted_vlm: MississippiVLM, image_folder: Path
) -> None:
    loader = MississippiImageLoader(
        image_folder / "a.png", vlm=scripted_vlm, mode="chart", max_tiles=1, max_new_tokens=256
    )

    [document] = loader.load()

    chart = ChartData.model_validate({**document.metadata["result"], "meta": META})
    assert document.page_content == render_chart(chart)
    assert chart.to_markdown().rstrip() in document.page_content
    assert document.metadata["task"] == "read_chart"


def test_table_and_extract_modes(scripted_vlm: MississippiVLM, image_folder: Path) -> None:
    [table_doc] = MississippiImageLoader(
        image_folder / "a.png", vlm=scripted_vlm, mode="table", **FAST
    ).load()
    table = TableData.model_validate({**table_doc.metadata["result"], "meta": META})
    assert table.records() == [{"total": 5}]
    assert table_doc.page_content == "| total |\n| --- |\n| 5 |"

    loader = MississippiImageLoader(
        [image_folder / "b.jpg", image_folder / "report.pdf"],
        vlm=scripted_vlm,
        mode="extract",
        schema={"total": 0, "page": 0},
        pages=[1],
        max_tiles=1,
        max_new_tokens=32,
    )
    documents = loader.load()
    assert pages_of(documents) == [("b.jpg", 1), ("report.pdf", 1)]
    for document in documents:
        data = json.loads(document.page_content)
        assert set(data) == {"total", "page"}
        assert document.metadata["result"]["data"] == data
        assert document.metadata["total"] == data["total"]
        assert document.metadata["page"] == 1  # a field named like our keys stays in "data"


@pytest.fixture
def broken_folder(tmp_path: Path) -> Path:
    """Good and broken files, in sorted order: a good image, a truncated PNG, a corrupt PDF,
    a good PDF."""
    draw_image(tmp_path / "1-good.png", "fine")
    shutil.copyfile(BAD_INPUTS / "truncated.png", tmp_path / "2-truncated.png")
    shutil.copyfile(BAD_INPUTS / "corrupt.pdf", tmp_path / "3-corrupt.pdf")
    shutil.copyfile(THREE_PAGES_PDF, tmp_path / "4-good.pdf")
    return tmp_path


def test_corrupt_files_raise_by_default(scripted_vlm: MississippiVLM, broken_folder: Path) -> None:
    documents = MississippiImageLoader(broken_folder, vlm=scripted_vlm, **FAST).lazy_load()

    assert next(documents).metadata["source"].endswith("1-good.png")
    with pytest.raises(ImageDecodeError, match=r"2-truncated\.png"):
        next(documents)


def test_corrupt_files_become_error_documents_when_continuing(
    scripted_vlm: MississippiVLM, broken_folder: Path
) -> None:
    loader = MississippiImageLoader(broken_folder, vlm=scripted_vlm, on_error="continue", **FAST)

    documents = loader.load()

    assert pages_of(documents) == [
        ("1-good.png", 1),
        ("2-truncated.png", None),
        ("3-corrupt.pdf", None),
        ("4-good.pdf", 1),
        ("4-good.pdf", 2),
        ("4-good.pdf", 3),
    ]
    errors = [d for d in documents if "error" in d.metadata]
    assert [d.metadata["error_type"] for d in errors] == ["ImageDecodeError", "PDFError"]
    assert [d.metadata["error_code"] for d in errors] == ["image_decode_error", "pdf_error"]
    assert all(d.page_content == "" for d in errors)
    assert "3-corrupt.pdf" in errors[1].metadata["error"]
    good = [d for d in documents if "error" not in d.metadata]
    assert [d.page_content for d in good] == [SCRIPTED_ANSWER] * 4


def test_pages_the_model_cannot_answer_follow_the_policy(
    tiny_vlm: MississippiVLM, image_folder: Path
) -> None:
    """Random words are no table: each page's ExtractionError is raised or recorded."""
    pdf = image_folder / "report.pdf"
    options = {"mode": "table", "pages": "1-2", "max_tiles": 1, "max_new_tokens": 4}

    with pytest.raises(Exception, match="no table found") as raised:
        MississippiImageLoader(pdf, vlm=tiny_vlm, **options).load()  # type: ignore[arg-type]
    assert type(raised.value).__name__ == "ExtractionError"

    recorded = MississippiImageLoader(
        pdf,
        vlm=tiny_vlm,
        on_error="continue",
        **options,  # type: ignore[arg-type]
    ).load()
    assert pages_of(recorded) == [("report.pdf", 1), ("report.pdf", 2)]
    assert [d.metadata["error_code"] for d in recorded] == ["extraction_failed"] * 2


def test_lazy_load_streams(scripted_vlm: MississippiVLM, tmp_path: Path) -> None:
    """With concurrency=1 a file is read only when its turn comes: one deleted after the first
    Document has been yielded is reported missing, not read earlier."""
    for name in ("a.png", "b.png", "c.png"):
        draw_image(tmp_path / name, name)
    documents = MississippiImageLoader(
        tmp_path, vlm=scripted_vlm, concurrency=1, on_error="continue", **FAST
    ).lazy_load()

    assert "error" not in next(documents).metadata
    (tmp_path / "b.png").unlink()
    rest = list(documents)

    assert [d.metadata.get("error_code") for d in rest] == ["image_not_found", None]


async def test_alazy_load_matches_lazy_load(
    scripted_vlm: MississippiVLM, image_folder: Path
) -> None:
    loader = MississippiImageLoader(image_folder, vlm=scripted_vlm, concurrency=2, **FAST)

    documents = [d async for d in loader.alazy_load()]

    assert documents == loader.load()


def test_progress_bar(
    scripted_vlm: MississippiVLM, image_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loader = MississippiImageLoader(image_folder, vlm=scripted_vlm, progress=True, **FAST)

    assert len(loader.load()) == 5

    assert "5/5" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "pdf"}, "unknown mode 'pdf'"),
        ({"mode": "extract"}, 'the extract task needs arguments={"json_schema": ...}'),
        ({"task": "extract"}, 'the extract task needs arguments={"json_schema": ...}'),
        ({"mode": "ocr", "schema": {"a": ""}}, "json_schema: Extra inputs are not permitted"),
        ({"task": "ocr", "arguments": {"format": "pdf"}}, "format: Input should be"),
        ({"task": "summarise"}, "no task called 'summarise'"),
        ({"on_error": "ignore"}, "unknown on_error 'ignore'"),
    ],
)
def test_invalid_options(
    scripted_vlm: MississippiVLM, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        MississippiImageLoader(".", vlm=scripted_vlm, **options)  # type: ignore[arg-type]
