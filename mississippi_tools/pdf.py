"""PDF pages as images, rendered with pypdfium2 (the ``pdf`` extra), and page selections.

pypdfium2 is imported only when a PDF is actually read; without it, reading a PDF raises
:class:`~mississippi_tools.errors.MissingDependencyError` naming ``pip install
"mississippi-tools[pdf]"``. :func:`parse_page_selection` needs no extra and is shared with the CLI's
``--pages`` option.

Pages are rendered at :data:`DEFAULT_PDF_DPI` (``scale = dpi / 72``). A page whose rendering would
exceed the pixel limit is rendered at the largest scale that fits, and a log record notes it,
rather than failing: a poster-sized page is still readable at lower resolution.

PDFium is not thread-safe, so every call into it holds one module-wide lock; renders from
several threads run one at a time.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mississippi_tools.errors import InvalidInputError, MissingDependencyError, PDFError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DEFAULT_PDF_DPI",
    "MAX_PDF_DPI",
    "PDFDocument",
    "check_dpi",
    "is_pdf",
    "parse_page_selection",
    "pdf_page_count",
]

DEFAULT_PDF_DPI = 200
"""Resolution PDF pages are rendered at: a US Letter page becomes 1700x2200 pixels."""

MAX_PDF_DPI = 1200
"""Highest ``dpi`` accepted."""

_PDF_MAGIC = b"%PDF-"
_SNIFF_WINDOW = 1024  # the PDF header may follow some junk; readers look in the first 1 KiB

logger = logging.getLogger(__name__)
_PDFIUM_LOCK = threading.RLock()

_SELECTION_PART = re.compile(r"^\s*([0-9]+)\s*(?:(-)\s*([0-9]*)\s*)?$")


def is_pdf(data: bytes) -> bool:
    """Whether ``data`` starts like a PDF (``%PDF-`` within the first KiB)."""
    return _PDF_MAGIC in data[:_SNIFF_WINDOW]


def parse_page_selection(
    spec: str | Sequence[int], page_count: int, *, what: str = "the document"
) -> list[int]:
    """Turn a page selection into a list of 1-based page numbers.

    Args:
        spec: ``"3"``, ``"1-3"``, ``"1,3,5-7"``, ``"5-"`` (page 5 to the end), or a sequence of
            ints. Order is kept and repeated pages are dropped.
        page_count: Number of pages in the document.
        what: How to name the document in error messages (a path, ``"bytes"``).

    Returns:
        The selected page numbers, 1-based, each in ``1..page_count``.

    Raises:
        InvalidInputError: The selection is malformed, empty, or names a page outside
            ``1..page_count`` (the message gives the page count).

    Example:
        >>> parse_page_selection("1,3,5-", 6)
        [1, 3, 5, 6]
    """
    return _parse_page_selection(spec, page_count, what=what, error=InvalidInputError)


def _parse_page_selection(
    spec: str | Sequence[int],
    page_count: int,
    *,
    what: str,
    error: type[InvalidInputError],
) -> list[int]:
    forms = 'use forms like "3", "1-3", "1,3,5-7" or "5-" (pages are 1-based)'
    pages: list[int] = []
    if isinstance(spec, str):
        if not spec.strip():
            raise InvalidInputError(f"empty page selection for {what}; {forms}")
        for part in spec.split(","):
            match = _SELECTION_PART.match(part)
            if match is None:
                raise InvalidInputError(
                    f"invalid page selection {spec!r}: cannot read {part.strip()!r}; {forms}"
                )
            first = int(match.group(1))
            if match.group(2) is None:
                last = first
            elif match.group(3):
                last = int(match.group(3))
            else:
                last = max(page_count, first)  # "5-": to the end (range-checked below)
            if last < first:
                raise InvalidInputError(
                    f"invalid page range {part.strip()!r} in {spec!r}: it ends before it starts; "
                    f"write it as {last}-{first}"
                )
            for page in (first, last):
                _check_page(page, page_count, what=what, error=error)
            pages.extend(range(first, last + 1))
    else:
        try:
            requested = list(spec)
        except TypeError:
            raise InvalidInputError(
                f"page selection must be a string or a sequence of ints, got "
                f"{type(spec).__name__}; {forms}"
            ) from None
        if not requested:
            raise InvalidInputError(f"empty page selection for {what}; {forms}")
        for page in requested:
            if isinstance(page, bool) or not isinstance(page, int):
                raise InvalidInputError(
                    f"page numbers must be ints, got {page!r} ({type(page).__name__}) in the "
                    f"selection for {what}"
                )
            _check_page(page, page_count, what=what, error=error)
            pages.append(page)
    return list(dict.fromkeys(pages))


def _check_page(page: int, page_count: int, *, what: str, error: type[InvalidInputError]) -> None:
    if page < 1:
        raise InvalidInputError(
            f"page {page} is not a page number; pages are 1-based, so the first page is 1"
        )
    if page > page_count:
        pages = "1 page" if page_count == 1 else f"{page_count} pages"
        raise error(f"page {page} is out of range: {what} has {pages}; pick pages 1-{page_count}")


def _pdfium() -> Any:
    try:
        import pypdfium2
    except ImportError:
        raise MissingDependencyError("pypdfium2", "pdf", purpose="reading PDF pages") from None
    return pypdfium2


class PDFDocument:
    """An open PDF whose pages are rendered on demand; use it as a context manager.

    Args:
        data: The PDF file's bytes.
        source: How to name the PDF in errors and logs (a path, ``"bytes"``).

    Raises:
        PDFError: The PDF is corrupt, encrypted, or has no pages.
        MissingDependencyError: pypdfium2 is not installed.

    Example:
        >>> with PDFDocument(data, source="report.pdf") as pdf:  # doctest: +SKIP
        ...     first = pdf.render(1, max_pixels=64_000_000)
    """

    def __init__(self, data: bytes, *, source: str = "bytes") -> None:
        pdfium = _pdfium()
        self.source = source
        try:
            with _PDFIUM_LOCK:
                self._document: Any = pdfium.PdfDocument(data)
                self.page_count: int = len(self._document)
        except pdfium.PdfiumError as e:
            raw = pdfium.raw
            if getattr(e, "err_code", None) in (raw.FPDF_ERR_PASSWORD, raw.FPDF_ERR_SECURITY):
                raise PDFError(
                    f"PDF {source} is encrypted (password-protected or an unsupported security "
                    "scheme); decrypt it first, e.g. with `qpdf --decrypt in.pdf out.pdf`"
                ) from None
            raise PDFError(
                f"PDF {source} cannot be read ({e}); the file is corrupt or not a PDF; "
                "re-export or repair it (e.g. `qpdf in.pdf out.pdf`)"
            ) from None
        if self.page_count < 1:
            self.close()
            raise PDFError(f"PDF {source} has no pages; pass a PDF with at least one page")

    def __enter__(self) -> PDFDocument:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the document (idempotent)."""
        document, self._document = self._document, None
        if document is not None:
            with _PDFIUM_LOCK:
                document.close()

    def render(self, page: int, *, dpi: int = DEFAULT_PDF_DPI, max_pixels: int) -> Image.Image:
        """Render one page.

        Args:
            page: 1-based page number.
            dpi: Rendering resolution, 1 to :data:`MAX_PDF_DPI`.
            max_pixels: Largest rendered ``width * height``; a bigger page is rendered at the
                largest scale that fits (and a warning is logged).

        Returns:
            The rendered page as a PIL image (RGB).

        Raises:
            PDFError: The page is out of range or cannot be rendered, or the document is closed.
            InvalidInputError: ``dpi`` is out of range.
        """
        check_dpi(dpi)
        if max_pixels < 1:
            raise InvalidInputError(f"max_pixels must be at least 1, got {max_pixels}")
        if self._document is None:
            raise PDFError(f"PDF {self.source} is closed; open it again to render pages")
        _check_page(page, self.page_count, what=f"PDF {self.source}", error=PDFError)
        pdfium = _pdfium()
        handle = None
        try:
            with _PDFIUM_LOCK:
                handle = self._document[page - 1]
                width_pt, height_pt = handle.get_size()
                if not (width_pt > 0 and height_pt > 0):
                    raise PDFError(
                        f"page {page} of PDF {self.source} has an empty size "
                        f"({width_pt:g}x{height_pt:g} pt); repair or re-export the PDF"
                    )
                scale = _render_scale(width_pt, height_pt, dpi, max_pixels)
                if scale < dpi / 72:
                    logger.warning(
                        "page %d of PDF %s is %gx%g pt; rendering it at %.1f dpi instead of %d "
                        "to stay within max_pixels=%d",
                        page,
                        self.source,
                        width_pt,
                        height_pt,
                        scale * 72,
                        dpi,
                        max_pixels,
                    )
                # to_pil() may share the bitmap's buffer: copy so that the image owns its
                # pixels, and leave the bitmap to pypdfium2 (closing it can free that buffer).
                image: Image.Image = handle.render(scale=scale).to_pil().copy()
                return image
        except pdfium.PdfiumError as e:
            raise PDFError(
                f"page {page} of PDF {self.source} cannot be rendered ({e}); repair or re-export "
                "the PDF"
            ) from None
        finally:
            if handle is not None:
                with _PDFIUM_LOCK:
                    handle.close()


def pdf_page_count(data: bytes, *, source: str = "bytes") -> int:
    """Number of pages in the PDF ``data``.

    Raises:
        PDFError: The PDF is corrupt, encrypted, or has no pages.
        MissingDependencyError: pypdfium2 is not installed.
    """
    with PDFDocument(data, source=source) as document:
        return document.page_count


def check_dpi(dpi: int) -> None:
    """Refuse a rendering resolution outside 1..:data:`MAX_PDF_DPI`.

    Raises:
        InvalidInputError: ``dpi`` is not an int in range.
    """
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 1 <= dpi <= MAX_PDF_DPI:
        raise InvalidInputError(
            f"dpi must be an int from 1 to {MAX_PDF_DPI}, got {dpi!r}; the default is "
            f"{DEFAULT_PDF_DPI}"
        )


def _render_scale(width_pt: float, height_pt: float, dpi: int, max_pixels: int) -> float:
    """``dpi / 72``, lowered so that the rendered page stays within ``max_pixels``."""
    scale = dpi / 72
    if math.ceil(width_pt * scale) * math.ceil(height_pt * scale) <= max_pixels:
        return scale
    fitted = math.sqrt(max_pixels / (width_pt * height_pt))
    # pdfium rounds sizes up: shave the scale until ceil(w*s) * ceil(h*s) fits.
    while math.ceil(width_pt * fitted) * math.ceil(height_pt * fitted) > max_pixels:
        fitted *= 0.999
    return fitted
