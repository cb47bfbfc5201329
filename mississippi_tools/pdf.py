"""PDF pages as images, rendered with pypdfium2 (the ``pdf`` extra), and page selections.

pypdfium2 is imported only when a PDF is actually read; without it, reading a PDF raises
:class:`~mississippi_tools.errors.MissingDependencyError` naming ``pip install
"mississippi-tools[pdf]"``. :func:`parse_page_selection` needs no extra and is shared with the CLI's
``--pages`` option.

Pages are rendered at :data:`DEFAULT_PDF_DPI` (``scale = dpi / 72``). A page whose rendering would
exceed the pixel or side limit is rendered at the largest scale that fits, and a log record notes
it, rather than failing: a poster-sized page is still readable at lower resolution.

Before PDFium sees a document, :func:`check_streams` measures how far each of its streams
inflates (in bounded chunks, discarding the output), because PDFium inflates and parses a page's
content stream whole when the page is loaded: 3 MB of deflated zeros become 3 GiB in memory,
and 13 MB of drawing operators take seconds and hundreds of megabytes to parse. A stream other
than an image inflating past ``max_stream_bytes`` (fonts: four times that), or all of them
together past 32 times that, is refused with
:class:`~mississippi_tools.errors.ImageTooLargeError`. Images are left to PDFium, which decodes
them line by line within their declared size. The filters measured are FlateDecode, LZWDecode,
RunLengthDecode, ASCIIHexDecode and ASCII85Decode, also chained; an encrypted stream cannot be
measured and is left to PDFium.

:meth:`PDFDocument.render_with_text` also reads the page's embedded text, character by
character, with what :class:`~mississippi_tools.text_layer.TextLayer` needs to judge it (render
mode, font name, Unicode mapping) and each character's box on the rendered page.

PDFium is not thread-safe, so every call into it holds one module-wide lock; renders from
several threads run one at a time. The stream check runs before and outside that lock, and
image decoding (:mod:`mississippi_tools.images`) never takes it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from mississippi_tools.errors import (
    ImageTooLargeError,
    InvalidInputError,
    MissingDependencyError,
    PDFError,
    Remedy,
)
from mississippi_tools.text_layer import GLYPHLESS, INVISIBLE, UNMAPPED, Box, TextLayer

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DEFAULT_MAX_PDF_STREAM_BYTES",
    "DEFAULT_PDF_DPI",
    "MAX_PDF_DPI",
    "PDFDocument",
    "check_dpi",
    "check_page_selection",
    "check_streams",
    "is_pdf",
    "parse_page_selection",
    "pdf_page_count",
]

DEFAULT_PDF_DPI = 200
"""Resolution PDF pages are rendered at: a US Letter page becomes 1700x2200 pixels."""

MAX_PDF_DPI = 1200
"""Highest ``dpi`` accepted."""

DEFAULT_MAX_PDF_STREAM_BYTES = 16 * 1024 * 1024
"""Largest inflated PDF stream other than an image or a font, by default. PDFium parsed a 13 MB
content stream of drawing operators in 0.7 s and 400 MB; real pages hold far less."""

_FONT_STREAM_FACTOR = 4  # embedded fonts (CJK fonts reach 16-20 MB) may be this much larger
_TOTAL_STREAM_FACTOR = 32  # all measured streams of a document together
_DICT_WINDOW = 4096  # how far before "stream" a stream's dictionary is looked for
_OUT_CHUNK = 1 << 18  # bytes produced per step when measuring
_IN_CHUNK = 1 << 14  # compressed bytes fed per step
_STREAM_START = re.compile(rb">>\s*stream(?:\r\n|\n|\r)")
_FILTER_ENTRY = re.compile(rb"/Filter\s*(\[[^\]]*\]|/[A-Za-z0-9]+)")
_NAME = re.compile(rb"/([A-Za-z0-9]+)")
_IMAGE_STREAM = re.compile(rb"/Subtype\s*/Image\b")
_FONT_STREAM = re.compile(rb"/Length[123]\b|/Subtype\s*/(?:Type1C|CIDFontType0C|OpenType)\b")

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


def check_page_selection(spec: str | Sequence[int], *, what: str = "the document") -> None:
    """Check a page selection's form before the document's length is known.

    Raises:
        InvalidInputError: The selection is malformed, empty, or has a page below 1 or a range
            that ends before it starts.

    Example:
        >>> check_page_selection("1,3,5-")
    """
    _selection_ranges(spec, what=what)


_FORMS = 'use forms like "3", "1-3", "1,3,5-7" or "5-" (pages are 1-based)'


def _selection_ranges(spec: str | Sequence[int], *, what: str) -> list[tuple[int, int | None]]:
    """The selection as ``(first, last)`` ranges, ``last=None`` for "to the end"; form only."""
    ranges: list[tuple[int, int | None]] = []
    if isinstance(spec, str):
        if not spec.strip():
            raise InvalidInputError(f"empty page selection for {what}; {_FORMS}")
        for part in spec.split(","):
            match = _SELECTION_PART.match(part)
            if match is None:
                raise InvalidInputError(
                    f"invalid page selection {spec!r}: cannot read {part.strip()!r}; {_FORMS}"
                )
            first = int(match.group(1))
            if match.group(2) is None:
                last: int | None = first
            else:
                last = int(match.group(3)) if match.group(3) else None
            if last is not None and last < first:
                raise InvalidInputError(
                    f"invalid page range {part.strip()!r} in {spec!r}: it ends before it starts; "
                    f"write it as {last}-{first}"
                )
            _check_page(first, None, what=what, error=InvalidInputError)
            ranges.append((first, last))
        return ranges
    try:
        requested = list(spec)
    except TypeError:
        raise InvalidInputError(
            f"page selection must be a string or a sequence of ints, got "
            f"{type(spec).__name__}; {_FORMS}"
        ) from None
    if not requested:
        raise InvalidInputError(f"empty page selection for {what}; {_FORMS}")
    for page in requested:
        if isinstance(page, bool) or not isinstance(page, int):
            raise InvalidInputError(
                f"page numbers must be ints, got {page!r} ({type(page).__name__}) in the "
                f"selection for {what}"
            )
        _check_page(page, None, what=what, error=InvalidInputError)
        ranges.append((page, page))
    return ranges


def _parse_page_selection(
    spec: str | Sequence[int],
    page_count: int,
    *,
    what: str,
    error: type[InvalidInputError],
) -> list[int]:
    pages: list[int] = []
    for first, last in _selection_ranges(spec, what=what):
        end = max(page_count, first) if last is None else last  # "5-": to the end
        _check_page(first, page_count, what=what, error=error)
        _check_page(end, page_count, what=what, error=error)
        pages.extend(range(first, end + 1))
    return list(dict.fromkeys(pages))


def _check_page(
    page: int, page_count: int | None, *, what: str, error: type[InvalidInputError]
) -> None:
    if page < 1:
        raise InvalidInputError(
            f"page {page} is not a page number; pages are 1-based, so the first page is 1"
        )
    if page_count is not None and page > page_count:
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
        max_stream_bytes: Largest inflated stream; see :func:`check_streams`.

    Raises:
        PDFError: The PDF is corrupt, encrypted, or has no pages.
        ImageTooLargeError: A stream inflates past the limits of :func:`check_streams`.
        MissingDependencyError: pypdfium2 is not installed.

    Example:
        >>> with PDFDocument(data, source="report.pdf") as pdf:  # doctest: +SKIP
        ...     first = pdf.render(1, max_pixels=64_000_000)
    """

    def __init__(
        self,
        data: bytes,
        *,
        source: str = "bytes",
        max_stream_bytes: int = DEFAULT_MAX_PDF_STREAM_BYTES,
    ) -> None:
        pdfium = _pdfium()
        self.source = source
        check_streams(data, max_stream_bytes=max_stream_bytes, source=source)
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

    def page_size(self, page: int) -> tuple[float, float]:
        """The page's width and height in points (1/72 inch), as PDFium renders it.

        Raises:
            PDFError: The page is out of range, or the document is closed.
        """
        if self._document is None:
            raise PDFError(f"PDF {self.source} is closed; open it again to read page sizes")
        _check_page(page, self.page_count, what=f"PDF {self.source}", error=PDFError)
        with _PDFIUM_LOCK:
            handle = self._document[page - 1]
            try:
                width, height = handle.get_size()
            finally:
                handle.close()
        return float(width), float(height)

    def point_scale(self, page: int, rendered: tuple[int, int]) -> tuple[float, float]:
        """Page points per pixel, across and down, of the page rendered at ``rendered`` size.

        Raises:
            PDFError: The page is out of range, or the document is closed.
        """
        width, height = self.page_size(page)
        return width / rendered[0], height / rendered[1]

    def render(
        self,
        page: int,
        *,
        dpi: int = DEFAULT_PDF_DPI,
        max_pixels: int,
        max_side: int | None = None,
    ) -> Image.Image:
        """Render one page (see :meth:`render_with_text` for the arguments and errors)."""
        image, _ = self._render(page, dpi=dpi, max_pixels=max_pixels, max_side=max_side)
        return image

    def render_with_text(
        self,
        page: int,
        *,
        dpi: int = DEFAULT_PDF_DPI,
        max_pixels: int,
        max_side: int | None = None,
    ) -> tuple[Image.Image, TextLayer]:
        """Render one page and read its embedded text (empty when it has none).

        Args:
            page: 1-based page number.
            dpi: Rendering resolution, 1 to :data:`MAX_PDF_DPI`.
            max_pixels: Largest rendered ``width * height``; a bigger page is rendered at the
                largest scale that fits (and a warning is logged).
            max_side: Longest rendered side, likewise; ``None`` for no limit but ``max_pixels``.

        Returns:
            The rendered page as a PIL image (RGB), and its text layer.

        Raises:
            PDFError: The page is out of range or cannot be rendered, or the document is closed.
            InvalidInputError: ``dpi`` is out of range.
        """
        image, layer = self._render(
            page, dpi=dpi, max_pixels=max_pixels, max_side=max_side, text=True
        )
        assert layer is not None
        return image, layer

    def _render(
        self,
        page: int,
        *,
        dpi: int,
        max_pixels: int,
        max_side: int | None,
        text: bool = False,
    ) -> tuple[Image.Image, TextLayer | None]:
        check_dpi(dpi)
        if max_pixels < 1 or (max_side is not None and max_side < 1):
            raise InvalidInputError(
                f"max_pixels and max_side must be at least 1, got {max_pixels} and {max_side}"
            )
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
                scale = _render_scale(width_pt, height_pt, dpi, max_pixels, max_side)
                if scale < dpi / 72:
                    logger.warning(
                        "page %d of PDF %s is %gx%g pt; rendering it at %.1f dpi instead of %d "
                        "to stay within max_pixels=%d and max_side=%s",
                        page,
                        self.source,
                        width_pt,
                        height_pt,
                        scale * 72,
                        dpi,
                        max_pixels,
                        max_side,
                    )
                # to_pil() may share the bitmap's buffer: copy so that the image owns its
                # pixels, and leave the bitmap to pypdfium2 (closing it can free that buffer).
                image: Image.Image = handle.render(scale=scale).to_pil().copy()
                layer = _read_text_layer(pdfium, handle) if text else None
                return image, layer
        except pdfium.PdfiumError as e:
            raise PDFError(
                f"page {page} of PDF {self.source} cannot be rendered ({e}); repair or re-export "
                "the PDF"
            ) from None
        finally:
            if handle is not None:
                with _PDFIUM_LOCK:
                    handle.close()


_INVISIBLE_MODES = (3, 7)  # FPDF_TEXTRENDERMODE_INVISIBLE, FPDF_TEXTRENDERMODE_CLIP
_DEVICE = 1 << 20  # device size the page is mapped to for character boxes (fractions * 2**20)


def _read_text_layer(pdfium: Any, page: Any) -> TextLayer:
    """The text layer of an open page (the caller holds the PDFium lock)."""
    import ctypes

    raw = pdfium.raw
    handle = page.raw
    textpage = raw.FPDFText_LoadPage(handle)
    if not textpage:
        return TextLayer("", (), b"")
    try:
        to_page = _page_transform(raw, handle)
        count = raw.FPDFText_CountChars(textpage)
        chars: list[str] = []
        boxes: list[Box | None] = []
        flags = bytearray()
        objects: dict[int | None, tuple[int, str]] = {}
        left, right, bottom, top = (ctypes.c_double() for _ in range(4))
        pending_high: int | None = None
        for index in range(max(0, count)):
            code = raw.FPDFText_GetUnicode(textpage, index)
            if 0xD800 <= code <= 0xDBFF:  # a surrogate pair: keep the high half for the next
                pending_high = code
                continue
            if 0xDC00 <= code <= 0xDFFF and pending_high is not None:
                code = 0x10000 + ((pending_high - 0xD800) << 10) + (code - 0xDC00)
            elif 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                code = 0xFFFD
            pending_high = None
            generated = raw.FPDFText_IsGenerated(textpage, index) == 1
            flag = 0
            box: Box | None = None
            if not generated:
                if raw.FPDFText_HasUnicodeMapError(textpage, index) == 1:
                    flag |= UNMAPPED
                obj = raw.FPDFText_GetTextObject(textpage, index)
                key = ctypes.cast(obj, ctypes.c_void_p).value
                if key not in objects:
                    objects[key] = _object_style(raw, obj) if key else (0, "")
                mode, font = objects[key]
                if mode in _INVISIBLE_MODES:
                    flag |= INVISIBLE
                if "glyphless" in font.lower():
                    flag |= GLYPHLESS
                if raw.FPDFText_GetCharBox(
                    textpage,
                    index,
                    ctypes.byref(left),
                    ctypes.byref(right),
                    ctypes.byref(bottom),
                    ctypes.byref(top),
                ):
                    box = to_page(left.value, bottom.value, right.value, top.value)
            chars.append(chr(code))
            boxes.append(box)
            flags.append(flag)
        fonts = tuple(sorted({font for _, font in objects.values() if "glyphless" in font.lower()}))
        return TextLayer("".join(chars), tuple(boxes), bytes(flags), fonts)
    finally:
        raw.FPDFText_ClosePage(textpage)


def _object_style(raw: Any, obj: Any) -> tuple[int, str]:
    """A text object's render mode and its font's base name."""
    import ctypes

    mode = int(raw.FPDFTextObj_GetTextRenderMode(obj))
    font = raw.FPDFTextObj_GetFont(obj)
    if not font:
        return mode, ""
    size = raw.FPDFFont_GetBaseFontName(font, None, 0)
    if size <= 0:
        return mode, ""
    buffer = ctypes.create_string_buffer(size)
    raw.FPDFFont_GetBaseFontName(font, buffer, size)
    return mode, buffer.value.decode("utf-8", "replace")


def _page_transform(raw: Any, handle: Any) -> Callable[[float, float, float, float], Box]:
    """Maps a box in page space to fractions of the rendered page (top-left origin).

    The page's rotation and boxes are PDFium's, as when it renders: three points are mapped
    with ``FPDF_PageToDevice`` and the affine map between them is applied to every box.
    """
    import ctypes

    def device(x: float, y: float) -> tuple[float, float]:
        dx, dy = ctypes.c_int(), ctypes.c_int()
        raw.FPDF_PageToDevice(
            handle, 0, 0, _DEVICE, _DEVICE, 0, x, y, ctypes.byref(dx), ctypes.byref(dy)
        )
        return dx.value / _DEVICE, dy.value / _DEVICE

    unit = 1000.0  # points; large enough that the integer device positions are precise
    ox, oy = device(0.0, 0.0)
    xx, xy = device(unit, 0.0)
    yx, yy = device(0.0, unit)
    ax, ay = (xx - ox) / unit, (xy - oy) / unit  # device change per point along page x
    bx, by = (yx - ox) / unit, (yy - oy) / unit  # ... along page y

    def box(x0: float, y0: float, x1: float, y1: float) -> Box:
        corners = [(ox + ax * x + bx * y, oy + ay * x + by * y) for x in (x0, x1) for y in (y0, y1)]
        xs = [c[0] for c in corners]
        ys = [c[1] for c in corners]
        return (min(xs), min(ys), max(xs), max(ys))

    return box


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


def _render_scale(
    width_pt: float, height_pt: float, dpi: int, max_pixels: int, max_side: int | None = None
) -> float:
    """``dpi / 72``, lowered so that the rendered page stays within ``max_pixels``/``max_side``."""
    longest = max_side if max_side is not None else math.inf

    def fits(scale: float) -> bool:
        width, height = math.ceil(width_pt * scale), math.ceil(height_pt * scale)
        return width * height <= max_pixels and max(width, height) <= longest

    scale = dpi / 72
    if fits(scale):
        return scale
    fitted = min(math.sqrt(max_pixels / (width_pt * height_pt)), longest / max(width_pt, height_pt))
    # pdfium rounds sizes up: shave the scale until the rounded size fits.
    while not fits(fitted):
        fitted *= 0.999
    return fitted


# --------------------------------------------------------------------------------------------
# Stream sizes, measured before PDFium parses anything
# --------------------------------------------------------------------------------------------


class _Overflow(Exception):
    """A measured stream went past its limit."""


def check_streams(
    data: bytes, *, max_stream_bytes: int = DEFAULT_MAX_PDF_STREAM_BYTES, source: str = "bytes"
) -> None:
    """Refuse a PDF whose streams would inflate past the limits when PDFium reads them.

    Every stream except images is measured: its filters are applied in chunks of at most
    256 KiB whose output is counted and dropped, and measuring stops as soon as a limit is
    passed, so the check costs at most about ``32 * max_stream_bytes`` bytes of inflation and
    no more memory than one chunk.

    Args:
        data: The PDF file's bytes.
        max_stream_bytes: Largest inflated stream other than an image or a font (fonts: four
            times this); all measured streams together may inflate to 32 times this.
        source: How to name the PDF in errors.

    Raises:
        ImageTooLargeError: A stream, or all of them together, inflate past the limits.
    """
    total_limit = _TOTAL_STREAM_FACTOR * max_stream_bytes
    total = 0
    for match in _STREAM_START.finditer(data):
        head = data[max(0, match.start() - _DICT_WINDOW) : match.start() + 2]
        opened = head.rfind(b"obj")
        dictionary = head[opened:] if opened >= 0 else head
        if _IMAGE_STREAM.search(dictionary):
            continue  # PDFium decodes images line by line, within their declared size
        limit = max_stream_bytes * (_FONT_STREAM_FACTOR if _FONT_STREAM.search(dictionary) else 1)
        limit = min(limit, total_limit - total)
        try:
            total += _inflated_size(data, match.end(), _filter_names(dictionary), limit)
        except _Overflow:
            where = f"the stream at byte {match.end():,}"
            if limit < max_stream_bytes:
                raise ImageTooLargeError(
                    f"PDF {source}: its streams inflate to more than {total_limit:,} bytes in "
                    f"all ({where} passed the total); PDFium would hold them in memory; split "
                    "the document, or raise the limit",
                    source=source,
                    remedy=Remedy("max_pdf_stream_bytes"),
                ) from None
            raise ImageTooLargeError(
                f"PDF {source}: {where} inflates to more than {limit:,} bytes; PDFium would "
                "hold and parse all of it at once (a decompression bomb, or a page far beyond "
                "ordinary content); re-export or rasterize the page, or raise the limit",
                source=source,
                remedy=Remedy("max_pdf_stream_bytes"),
            ) from None


def _filter_names(dictionary: bytes) -> list[bytes]:
    entry = _FILTER_ENTRY.search(dictionary)
    return [] if entry is None else _NAME.findall(entry.group(1))


def _inflated_size(data: bytes, start: int, filters: list[bytes], limit: int) -> int:
    """Bytes the stream starting at ``start`` decodes to; :class:`_Overflow` past ``limit``.

    Decoding stops at the first filter it cannot apply, counting the bytes before it.
    """
    end = data.find(b"endstream", start)
    raw = memoryview(data)[start : end if end >= 0 else len(data)]
    chunks: Iterator[bytes | memoryview] = (
        raw[i : i + _IN_CHUNK] for i in range(0, len(raw), _IN_CHUNK)
    )
    for name in filters:
        decoder = _DECODERS.get(name)
        if decoder is None:
            break
        chunks = _capped(decoder(chunks), limit)
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _Overflow
    return size


def _capped(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """``chunks``, raising :class:`_Overflow` once they add up to more than ``limit``."""
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _Overflow
        yield chunk


def _flate(chunks: Iterator[bytes | memoryview]) -> Iterator[bytes]:
    inflater = zlib.decompressobj()
    try:
        for chunk in chunks:
            pending: bytes | memoryview = chunk
            while pending and not inflater.eof:
                yield inflater.decompress(pending, _OUT_CHUNK)
                pending = inflater.unconsumed_tail
            if inflater.eof:
                return
    except zlib.error:
        return  # PDFium keeps what inflated before the damage; so does the count


def _whole(chunks: Iterator[bytes | memoryview], end: bytes) -> bytes:
    """The chunks joined, up to ``end``, without whitespace (ASCII filters; they shrink data)."""
    text = b"".join(bytes(chunk) for chunk in chunks)
    cut = text.find(end)
    return re.sub(rb"\s+", b"", text if cut < 0 else text[:cut])


def _ascii_hex(chunks: Iterator[bytes | memoryview]) -> Iterator[bytes]:
    digits = _whole(chunks, b">")
    try:
        yield binascii.unhexlify(digits + b"0" * (len(digits) % 2))
    except binascii.Error:
        return


def _ascii_85(chunks: Iterator[bytes | memoryview]) -> Iterator[bytes]:
    try:
        yield base64.a85decode(_whole(chunks, b"~>"))
    except ValueError:
        return


def _run_length(chunks: Iterator[bytes | memoryview]) -> Iterator[bytes]:
    data = b"".join(bytes(chunk) for chunk in chunks)  # at most the file's size
    out = bytearray()
    position = 0
    while position < len(data):
        code = data[position]
        if code == 128:  # end of data
            break
        if code < 128:
            out += data[position + 1 : position + 2 + code]
            position += code + 2
        else:
            out += data[position + 1 : position + 2] * (257 - code)
            position += 2
        if len(out) >= _OUT_CHUNK:
            yield bytes(out)
            out.clear()
    yield bytes(out)


def _lzw(chunks: Iterator[bytes | memoryview]) -> Iterator[bytes]:
    """LZW as PDF writes it (MSB first, early change), yielding what each step decodes."""
    data = b"".join(bytes(chunk) for chunk in chunks)
    table: list[bytes] = [bytes([i]) for i in range(256)] + [b"", b""]
    width, buffer, bits, previous = 9, 0, 0, b""
    out = bytearray()
    for byte in data:
        buffer = (buffer << 8) | byte
        bits += 8
        while bits >= width:
            bits -= width
            code = (buffer >> bits) & ((1 << width) - 1)
            if code == 256:  # clear table
                del table[258:]
                width, previous = 9, b""
                continue
            if code == 257:  # end of data
                yield bytes(out)
                return
            if code < len(table):
                entry = table[code]
            elif code == len(table) and previous:
                entry = previous + previous[:1]
            else:
                yield bytes(out)
                return  # corrupt
            out += entry
            if previous and len(table) < 4096:
                table.append(previous + entry[:1])
            previous = entry
            if len(table) + 1 >= (1 << width) and width < 12:
                width += 1
            if len(out) >= _OUT_CHUNK:
                yield bytes(out)
                out.clear()
        buffer &= (1 << bits) - 1
    yield bytes(out)


_DECODERS: dict[bytes, Callable[[Iterator[bytes | memoryview]], Iterator[bytes]]] = {
    b"FlateDecode": _flate,
    b"Fl": _flate,
    b"LZWDecode": _lzw,
    b"LZW": _lzw,
    b"RunLengthDecode": _run_length,
    b"RL": _run_length,
    b"ASCIIHexDecode": _ascii_hex,
    b"AHx": _ascii_hex,
    b"ASCII85Decode": _ascii_85,
    b"A85": _ascii_85,
}
