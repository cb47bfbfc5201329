from __future__ import annotations

import base64
import logging
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mississippi_tools import pdf
from mississippi_tools.errors import (
    InvalidInputError,
    MissingDependencyError,
    PDFError,
)
from mississippi_tools.images import (
    ImageLimits,
    count_pages,
    is_document,
    iter_pages,
    load_image,
)
from mississippi_tools.pdf import DEFAULT_PDF_DPI, PDFDocument, parse_page_selection

BLACK = (0, 0, 0)
WHITE = (255, 255, 255)


def marker_pixel(corpus: ModuleType, page: int, dpi: int) -> tuple[int, int]:
    """Centre of the black square drawn on ``page``, in pixels at ``dpi`` (origin top-left)."""
    scale = dpi / 72
    x = corpus.page_marker_x(page) + 18
    y = 792 - (600 + 18)
    return round(x * scale), round(y * scale)


# --------------------------------------------------------------------------------------------
# parse_page_selection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("3", [3]),
        ("1-3", [1, 2, 3]),
        ("1,3,5-7", [1, 3, 5, 6, 7]),
        ("5-", [5, 6, 7, 8, 9, 10]),
        (" 2 - 4 , 9 ", [2, 3, 4, 9]),
        ("3,1", [3, 1]),  # order kept
        ("1,1-2,2", [1, 2]),  # repeats dropped
        ("10-", [10]),
        ([4, 2], [4, 2]),
        ((1, 1, 10), [1, 10]),
    ],
)
def test_page_selection(spec: str | list[int], expected: list[int]) -> None:
    assert parse_page_selection(spec, 10) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty page selection"),
        ("  ", "empty page selection"),
        ([], "empty page selection"),
        ("0", "1-based"),
        ("a", "cannot read 'a'"),
        ("1;2", "cannot read"),
        ("-3", "cannot read '-3'"),
        ("1,,2", "cannot read ''"),
        ("3-1", "ends before it starts; write it as 1-3"),
        ("11", "page 11 is out of range: the document has 10 pages"),
        ("8-12", "page 12 is out of range"),
        ("11-", "page 11 is out of range"),
        ("١", "cannot read"),  # Arabic-Indic digit: not a page number here
        ([0], "1-based"),
        ([True], "must be ints"),
        (["1"], "must be ints"),
        ([11], "out of range"),
    ],
)
def test_bad_page_selections(spec: str | list[object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        parse_page_selection(spec, 10)  # type: ignore[arg-type]
    assert type(info.value) is InvalidInputError


def test_page_selection_names_the_document() -> None:
    with pytest.raises(InvalidInputError, match=r"report.pdf has 1 page;"):
        parse_page_selection("2", 1, what="report.pdf")


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def test_multi_page_pdf_needs_a_page(bad_inputs: Path) -> None:
    with pytest.raises(InvalidInputError, match="PDF with 3 pages; choose one page"):
        load_image(bad_inputs / "three_pages.pdf")


def test_pdf_page_renders_at_200_dpi(bad_inputs: Path, corpus: ModuleType) -> None:
    loaded = load_image(bad_inputs / "three_pages.pdf", page=2)
    assert (loaded.page, loaded.format, loaded.image.mode) == (2, "PDF", "RGB")
    assert loaded.size == (1700, 2200)  # 612x792 pt at 200 dpi
    assert loaded.image.getpixel(marker_pixel(corpus, 2, DEFAULT_PDF_DPI)) == BLACK
    assert loaded.image.getpixel(marker_pixel(corpus, 1, DEFAULT_PDF_DPI)) == WHITE
    assert loaded.image.getpixel(marker_pixel(corpus, 3, DEFAULT_PDF_DPI)) == WHITE


def test_pdf_out_of_range_page_is_a_pdf_error(bad_inputs: Path) -> None:
    with pytest.raises(PDFError, match=r"page 4 is out of range.*has 3 pages"):
        load_image(bad_inputs / "three_pages.pdf", page=4)
    with pytest.raises(PDFError, match="has 3 pages"):
        iter_pages(bad_inputs / "three_pages.pdf", pages="2-4")


def test_iter_pages_renders_selected_pages_lazily(
    bad_inputs: Path, corpus: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered: list[int] = []
    original = PDFDocument.render_with_text

    def counting(self: PDFDocument, page: int, **options: int) -> object:
        rendered.append(page)
        return original(self, page, **options)

    monkeypatch.setattr(PDFDocument, "render_with_text", counting)
    pages = iter_pages(bad_inputs / "three_pages.pdf", pages="3,1", dpi=72)
    assert rendered == []
    first = next(pages)
    assert rendered == [3]
    assert first.page == 3
    assert first.size == (612, 792)
    assert first.image.getpixel(marker_pixel(corpus, 3, 72)) == BLACK
    second = next(pages)
    assert (second.page, rendered) == (1, [3, 1])
    assert list(pages) == []
    assert first.content_hash != second.content_hash


def test_all_pages_by_default(bad_inputs: Path) -> None:
    pages = list(iter_pages(bad_inputs / "three_pages.pdf", dpi=30))
    assert [p.page for p in pages] == [1, 2, 3]
    assert all(p.source == str(bad_inputs / "three_pages.pdf") for p in pages)


def test_one_page_pdf_needs_no_page(corpus: ModuleType) -> None:
    loaded = load_image(corpus.pdf_bytes(1), dpi=36)
    assert (loaded.page, loaded.size) == (1, (306, 396))


def test_pdf_from_a_data_uri(corpus: ModuleType) -> None:
    uri = "data:application/pdf;base64," + base64.b64encode(corpus.pdf_bytes(2)).decode()
    assert load_image(uri, page=2, dpi=36).page == 2
    assert count_pages(uri) == 2


def test_counting_and_document_detection(bad_inputs: Path) -> None:
    data = (bad_inputs / "three_pages.pdf").read_bytes()
    assert count_pages(data) == 3
    assert pdf.pdf_page_count(data) == 3
    assert is_document(data)


@pytest.mark.parametrize(
    ("name", "message"),
    [("corrupt.pdf", "corrupt or not a PDF"), ("encrypted.pdf", "is encrypted.*decrypt it first")],
)
def test_unreadable_pdfs(bad_inputs: Path, name: str, message: str) -> None:
    with pytest.raises(PDFError, match=message):
        load_image(bad_inputs / name, page=1)
    with pytest.raises(PDFError, match=message):
        iter_pages(bad_inputs / name)
    with pytest.raises(PDFError, match=message):
        count_pages(bad_inputs / name)


def test_encrypted_corpus_pdf_is_really_encrypted(bad_inputs: Path) -> None:
    import pypdfium2

    document = pypdfium2.PdfDocument((bad_inputs / "encrypted.pdf").read_bytes(), password="secret")
    try:
        assert len(document) == 1
    finally:
        document.close()


def test_huge_page_is_rendered_smaller_not_refused(
    corpus: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    poster = corpus.pdf_bytes(1, media_box=(14400, 14400))  # 200 x 200 inches
    limits = ImageLimits(max_pixels=1_000_000)
    with caplog.at_level(logging.WARNING, logger="mississippi_tools.pdf"):
        loaded = load_image(poster, limits=limits)
    width, height = loaded.size
    assert width * height <= 1_000_000
    assert width > 900  # as large as the limit allows
    assert "instead of 200" in caplog.text


def test_dpi_is_validated(bad_inputs: Path) -> None:
    for dpi in (0, -5, 5000, 2.5, True):
        with pytest.raises(InvalidInputError, match="dpi must be an int"):
            load_image(bad_inputs / "three_pages.pdf", page=1, dpi=dpi)  # type: ignore[arg-type]


def test_document_render_checks(bad_inputs: Path) -> None:
    with PDFDocument((bad_inputs / "three_pages.pdf").read_bytes(), source="x.pdf") as document:
        assert document.page_count == 3
        with pytest.raises(PDFError, match=r"PDF x.pdf has 3 pages"):
            document.render(0 + 4, max_pixels=10**6)
    with pytest.raises(PDFError, match="closed"):
        document.render(1, max_pixels=10**6)


def test_missing_pypdfium2_names_the_extra(
    bad_inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # import now raises ImportError
    with pytest.raises(
        MissingDependencyError, match=r'pip install "mississippi-tools\[pdf\]"'
    ) as info:
        load_image(bad_inputs / "three_pages.pdf", page=1)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert "reading PDF pages" in str(info.value)
    # Page selections need no extra.
    assert parse_page_selection("1-2", 2) == [1, 2]
