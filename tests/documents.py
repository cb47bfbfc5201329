"""Hand-written PDFs for the text-layer tests: real text, scans, OCR layers good and bad.

Like ``bad_inputs/make_corpus.py``: objects written by hand (Type1 fonts, content streams, an
image XObject for the "scanned" pages), then the xref table. Each page is one :class:`Page`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PageKind = Literal["text", "scan", "ocr_layer", "glyphless_ocr", "stamp"]
"""``text``: visible Helvetica lines. ``scan``: a picture only. ``ocr_layer``: a picture with the
lines as invisible text (render mode 3) in Helvetica, as a scanner's OCR writes them.
``glyphless_ocr``: the same in ``GlyphLessFont`` (Tesseract's). ``stamp``: a picture and a
visible "Page N" stamp."""

INVOICE_LINES = (
    "ACME Supplies Ltd",
    "Invoice number INV-2024-0042",
    "Date 17 October 2024",
    "Total due 1,200.00 EUR",
)
"""The text of a ``text`` page, line by line (what the text layer must give back exactly)."""

GARBAGE_LINES = ("l I i e | r n c a . i l", "i l ; I e a r | n e c I", "c e i l I a r n e : l i")
"""What a bad OCR layer holds: letters, as an OCR engine reads a picture's texture, not words."""

SYMBOL_LINES = ("~|;, .^' ,:; |!! ~~ ^^ ;", "'' |; ,., ;;; ~ | ^ ,, .", "!|! ;:~ ,' .|. ^' ~~ |")
"""A layer of symbols only."""


@dataclass(frozen=True)
class Page:
    """One page of a test PDF."""

    kind: PageKind
    lines: tuple[str, ...] = INVOICE_LINES


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _text(lines: tuple[str, ...], font: str, *, invisible: bool, top: int = 720) -> str:
    mode = "3 Tr " if invisible else ""
    shown = " T* ".join(f"({_escape(line)}) Tj" for line in lines)
    return f"BT /{font} 14 Tf 18 TL {mode}72 {top} Td {shown} ET\n"


_PICTURE = "q 468 0 0 300 72 400 cm /Im1 Do Q\n"
_PICTURE_SIZE = (48, 32)


def _picture_stream() -> bytes:
    width, height = _PICTURE_SIZE
    pixels = bytes(((x * 5 + y * 11) % 200) + 40 for y in range(height) for x in range(width))
    head = (
        f"<< /Type /XObject /Subtype /Image /Width {width} /Height {height} "
        f"/ColorSpace /DeviceGray /BitsPerComponent 8 /Length {len(pixels)} >>\nstream\n"
    ).encode()
    return head + pixels + b"\nendstream"


def _content(page: Page, number: int) -> str:
    if page.kind == "text":
        return _text(page.lines, "F1", invisible=False)
    if page.kind == "scan":
        return _PICTURE
    if page.kind == "ocr_layer":
        return _PICTURE + _text(page.lines, "F1", invisible=True, top=650)
    if page.kind == "glyphless_ocr":
        return _PICTURE + _text(page.lines, "F2", invisible=True, top=650)
    return _PICTURE + _text((f"Page {number}",), "F1", invisible=False, top=760)


def build_pdf(pages: list[Page]) -> bytes:
    """A PDF with one page per entry of ``pages`` (US Letter)."""
    first_page = 6
    kids = " ".join(f"{first_page + 2 * i} 0 R" for i in range(len(pages)))
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /GlyphLessFont >>",
        _picture_stream(),
    ]
    resources = "<< /Font << /F1 3 0 R /F2 4 0 R >> /XObject << /Im1 5 0 R >> >>"
    for index, page in enumerate(pages):
        number = first_page + 2 * index
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources {resources} "
            f"/Contents {number + 1} 0 R >>".encode()
        )
        content = _content(page, index + 1).encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref_at,
    )
    return bytes(out)
