"""How much decoding an input may cost: :class:`ImageLimits` and the checks made before decoding.

Every check reads headers only (image sizes, JPEG markers, a TIFF's directory chain, a PDF's
page count), so that a small file that would cost far more to decode than its size suggests (a
decode bomb) is refused for next to nothing. :mod:`mississippi_tools.images` applies them.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from mississippi_tools.errors import ImageTooLargeError, InvalidInputError, Remedy
from mississippi_tools.pdf import DEFAULT_MAX_PDF_STREAM_BYTES
from mississippi_tools.sources import DEFAULT_MAX_BYTES

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_JPEG_SCANS",
    "DEFAULT_MAX_PAGES",
    "DEFAULT_MAX_PDF_STREAM_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "ImageLimits",
    "check_jpeg_scans",
    "check_page_count",
    "check_pixels",
    "shown_label",
    "tiff_page_count",
]

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest ``width * height`` decoded by default (an 8000x8000 image)."""

DEFAULT_MAX_SIDE = 32_768
"""Longest side accepted by default, in pixels. A 64,000,000 x 1 image is within the pixel limit
but makes every later resize allocate gigabytes; no camera or scanner makes such a side."""

DEFAULT_MAX_JPEG_SCANS = 40
"""Most full-size JPEG scans decoded by default (see :attr:`ImageLimits.max_jpeg_scans`).
Encoders write 1 scan (baseline) or about 10 (progressive: 14 when each colour component of a
scan counts); each scan walks every block of the image again, so a file repeating a tiny scan
thousands of times takes minutes to decode."""

DEFAULT_MAX_PAGES = 10_000
"""Most pages a document (PDF or multi-page TIFF) may have by default."""


# Any JPEG marker but the ones inside entropy-coded data (stuffed 0xFF00, restarts 0xFFD0-D7);
# leading 0xFF fill bytes are allowed.
_JPEG_MARKER = re.compile(rb"\xff+([\xc0-\xcf\xd9-\xfe])")


_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC


@dataclass(frozen=True)
class ImageLimits:
    """Size limits applied to every input before it is decoded.

    Example:
        >>> ImageLimits(max_pixels=4096 * 4096).max_bytes == DEFAULT_MAX_BYTES
        True
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    """Largest encoded input, in bytes (file, URL body, decoded base64)."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Largest ``width * height``, read from the header before decoding; also caps rendered PDF
    pages (rendered at a lower resolution rather than refused)."""
    max_side: int = DEFAULT_MAX_SIDE
    """Longest width or height, read from the header before decoding; also caps rendered PDF
    pages (rendered at a lower resolution rather than refused)."""
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS
    """Most scans in a JPEG of ``max_pixels`` pixels, counted from its markers before decoding;
    a scan counts once per colour component it holds, and a smaller image may have
    proportionally more (the work, scans times pixels, is what is bounded)."""
    max_pages: int = DEFAULT_MAX_PAGES
    """Most pages in a PDF or a multi-page TIFF (counted lazily: stops past the limit)."""
    max_pdf_stream_bytes: int = DEFAULT_MAX_PDF_STREAM_BYTES
    """Largest inflated size of a PDF stream other than an image (page contents, forms; fonts
    may be four times larger), checked before PDFium parses the document."""

    def __post_init__(self) -> None:
        for name in (
            "max_bytes",
            "max_pixels",
            "max_side",
            "max_jpeg_scans",
            "max_pages",
            "max_pdf_stream_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(
                    f"ImageLimits.{name} must be a positive int, got {value!r}; "
                    f"the default is {getattr(ImageLimits, name)}"
                )


def shown_label(label: str, limit: int = 120) -> str:
    """How to name an input in a message: ``the bytes input``, or its (shortened) path or URL."""
    if label in ("bytes", "data URI", "base64", "PIL image"):
        return f"the {label} input"
    if len(label) > limit:
        return f"{label[: limit - 20]!r}… ({len(label)} characters)"
    return repr(label)


def check_pixels(size: tuple[int, int], label: str, limits: ImageLimits) -> None:
    """Refuse an image whose declared size is over ``limits`` (max_pixels, max_side)."""
    width, height = size
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"{shown_label(label)} is {width}x{height} = {width * height:,} pixels; the limit is "
            f"{limits.max_pixels:,} pixels (checked before decoding, against decompression "
            "bombs); downscale the image or raise the limit",
            source=label,
            remedy=Remedy("max_pixels", str(width * height)),
        )
    if max(width, height) > limits.max_side:
        raise ImageTooLargeError(
            f"{shown_label(label)} is {width}x{height} pixels; the longest side may be "
            f"{limits.max_side:,} pixels (checked before decoding: such a strip would take "
            "gigabytes to resize); crop or downscale the image, or raise the limit",
            source=label,
            remedy=Remedy("max_side", str(max(width, height))),
        )


def check_page_count(count: int, label: str, fmt: str, limits: ImageLimits) -> None:
    """Refuse a document with more pages than ``limits.max_pages``."""
    if count > limits.max_pages:
        pages = f"{count:,} pages" if fmt == "PDF" else "more pages (counting stopped there)"
        raise ImageTooLargeError(
            f"{shown_label(label)} is a {fmt} with {pages}; the limit is {limits.max_pages:,} "
            "pages; split the document, or raise the limit",
            source=label,
            remedy=Remedy("max_document_pages"),
        )


def check_jpeg_scans(data: bytes, label: str, limits: ImageLimits) -> None:
    """Refuse a JPEG whose scans would walk its pixels more than ``limits`` allow.

    Each scan costs a pass over every block of each colour component it holds; the passes may
    add up to ``max_jpeg_scans`` for an image of ``max_pixels`` pixels, proportionally more for
    a smaller one. Only the first image is counted (an MPO's further pictures are never
    decoded). Segments are skipped by their lengths and entropy-coded data by a search for the
    next marker, so this reads each byte at most once, in C.
    """
    allowed = limits.max_jpeg_scans
    passes = 0
    position = 2  # after SOI
    while True:
        marker = _JPEG_MARKER.search(data, position)
        if marker is None or marker.group(1)[0] == _JPEG_EOI:
            return
        code, start = marker.group(1)[0], marker.end()
        if code in _JPEG_SOF and start + 7 <= len(data):
            height, width = struct.unpack_from(">HH", data, start + 3)
            allowed = limits.max_jpeg_scans * max(1, limits.max_pixels // max(1, width * height))
        elif code == _JPEG_SOS and start + 3 <= len(data):
            passes += data[start + 2]  # the number of components in the scan
            if passes > allowed:
                break
        position = start + max(2, int.from_bytes(data[start : start + 2], "big"))
    raise ImageTooLargeError(
        f"{shown_label(label)} is a JPEG whose scans pass over its pixels more than {allowed:,} "
        f"times (one pass per colour component of each scan; encoders need at most about 20, "
        f"and {limits.max_jpeg_scans} are allowed at {limits.max_pixels:,} pixels, more for "
        "smaller images); decoding it would take far longer than its size suggests; re-encode "
        "it as a baseline JPEG or PNG, or raise the limit",
        source=label,
        remedy=Remedy("max_jpeg_scans"),
    )


def tiff_page_count(data: bytes, *, stop_after: int) -> int:
    """Pages of a TIFF, counted by walking its chain of directories; at most ``stop_after``.

    Follows the chain as Pillow does (a directory seen before ends it), reading only each
    directory's entry count and next-directory offset: a few bytes a page, where Pillow would
    parse every tag of every page. A chain pointing outside the data counts the page it points
    to (Pillow fails on that page, which is then a decode error).
    """
    little = data[:2] == b"II"
    order = "<" if little else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")  # BigTIFF: 8-byte counts and offsets
    count_format, offset_format = (f"{order}Q", f"{order}Q") if big else (f"{order}H", f"{order}I")
    entry_size = 20 if big else 12
    count_size = struct.calcsize(count_format)
    offset_size = struct.calcsize(offset_format)
    first = 8 if big else 4
    if len(data) < first + offset_size:
        return 1
    (offset,) = struct.unpack_from(offset_format, data, first)
    seen: set[int] = set()
    pages = 0
    while offset and offset not in seen and pages < stop_after:
        seen.add(offset)
        pages += 1
        if offset + count_size > len(data):
            break
        (entries,) = struct.unpack_from(count_format, data, offset)
        next_at = offset + count_size + entries * entry_size
        if next_at + offset_size > len(data):
            break
        (offset,) = struct.unpack_from(offset_format, data, next_at)
    return max(pages, 1)
