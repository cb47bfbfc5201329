"""Every image input of mississippi-tools becomes one RGB PIL image here, within limits.

:func:`load_image` accepts a path, raw bytes, a base64 string, a ``data:`` URI, an http(s) URL
(only when :class:`~mississippi_tools.sources.SourcePolicy` allows URLs), a PIL image, a PDF page
or a page of a multi-page TIFF, and returns a :class:`LoadedImage`. :func:`iter_pages` yields one
per page of a document, rendering lazily.

What is accepted and how it is decoded:

- **Formats**: PNG, JPEG, GIF, WEBP, BMP, TIFF and PDF, recognised by their magic numbers, not by
  file names. Only those Pillow plugins are used. Anything else (SVG, HTML, text, HEIC, ZIP...)
  raises :class:`~mississippi_tools.errors.ImageDecodeError` saying what the data looks like.
- **Limits** (:class:`ImageLimits`), all checked from headers before any pixel is decoded, so
  that a small file that would cost far more to decode than its size suggests (a decode bomb)
  costs next to nothing: inputs over ``max_bytes``; images declaring more than ``max_pixels``
  pixels or a side longer than ``max_side``; progressive JPEGs with more than ``max_jpeg_scans``
  scans (each scan walks the whole image again); documents with more than ``max_pages`` pages
  (a TIFF's pages are counted by walking its directory chain, stopping past the limit); PDFs
  with a stream that inflates past ``max_pdf_stream_bytes`` (see :mod:`mississippi_tools.pdf`).
  Pillow's own guard (``PIL.Image.MAX_IMAGE_PIXELS``, twice which it refuses outright) still
  applies underneath; raise it too to accept larger images.
- **Orientation**: the EXIF orientation tag is applied (the same transpositions as
  ``PIL.ImageOps.exif_transpose``), to decoded files and to PIL images passed in. *This differs on
  purpose from the original H2OVL-Mississippi code, which ignores EXIF*: a phone photo is read the
  way it is displayed. An unreadable EXIF block leaves the image as stored.
- **Colour**: converted exactly as the original model code does, with ``img.convert("RGB")``:
  RGBA/LA/PA drop alpha *without compositing* (a transparent pixel keeps its stored colour, as in
  the original), L replicates grey, P looks up the palette, CMYK goes through Pillow's conversion.
  The exception is high-bit-depth greyscale, which ``convert`` would clip to white: 16-bit
  (``I;16``, ``I;16B``, ``I;16L``) keeps its high byte (``value >> 8``), 32-bit int and float
  (``I``, ``F``) are scaled from their actual min..max to 0..255.
- **Frames and pages**: animations (GIF, WEBP, APNG) give their first frame. A multi-page TIFF or
  a PDF with several pages needs ``page=`` (1-based) in :func:`load_image`, or use
  :func:`iter_pages`. PDF pages are rendered by :mod:`mississippi_tools.pdf`.
- **Identity**: :attr:`LoadedImage.content_hash` digests the size and RGB pixels, so the same
  pixels give the same hash whatever the file format.

Decoding never lets a foreign exception escape: whatever Pillow raises on a corrupt file becomes
``ImageDecodeError`` (with the original as ``__cause__``). Decodes run in parallel: no lock is
held. Pillow's warnings about the files it reads (a corrupt EXIF block, an image over its own
pixel guard, a malformed MPO or APNG) are not printed: a warning filter for ``UserWarning`` and
``DecompressionBombWarning`` raised inside the ``PIL`` package is installed once, and put back
in front only if other code moved it. Nothing else about the process's warnings changes.

Errors never quote the contents of what was read: a file that is not an image is described by
its kind (text, JSON, HTML, a ZIP archive...), never by its bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeAlias, cast
from urllib.parse import unquote_to_bytes

from PIL import Image

from mississippi_tools.errors import (
    ImageDecodeError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidInputError,
    MississippiError,
    PDFError,
    Remedy,
)
from mississippi_tools.image_limits import (
    DEFAULT_MAX_JPEG_SCANS,
    DEFAULT_MAX_PAGES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    ImageLimits,
    check_jpeg_scans,
    check_page_count,
    check_pixels,
    shown_label,
    tiff_page_count,
)
from mississippi_tools.pdf import (
    DEFAULT_MAX_PDF_STREAM_BYTES,
    DEFAULT_PDF_DPI,
    PDFDocument,
    _parse_page_selection,
    check_dpi,
    is_pdf,
)
from mississippi_tools.sources import DEFAULT_MAX_BYTES, SourcePolicy, fetch_url, read_path
from mississippi_tools.text_layer import TextLayer

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_JPEG_SCANS",
    "DEFAULT_MAX_PAGES",
    "DEFAULT_MAX_PDF_STREAM_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "SUPPORTED_FORMATS",
    "ImageInput",
    "ImageLimits",
    "LoadedImage",
    "count_pages",
    "is_document",
    "iter_pages",
    "load_image",
    "sniff_format",
]


SUPPORTED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "PDF")
"""Formats accepted, as reported in :attr:`LoadedImage.format`."""

# The Pillow plugins each sniffed format may use (JPEG files with extra pictures open as MPO).
_PIL_FORMATS: dict[str, list[str]] = {
    "PNG": ["PNG"],
    "JPEG": ["JPEG", "MPO"],
    "GIF": ["GIF"],
    "WEBP": ["WEBP"],
    "BMP": ["BMP"],
    "TIFF": ["TIFF"],
}
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {  # as in PIL.ImageOps.exif_transpose
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/_\-\s]+=*\s*")
_BASE64_MIN_CHARS = 64  # shorter strings are taken as paths without trying base64
_HASH_STRIP_BYTES = 4 * 1024 * 1024
_PIL_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
_BMP_HEADER_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)  # BITMAPCOREHEADER ... BITMAPV5HEADER
# Where Pillow's warnings about a file it reads come from; see _ensure_pillow_filters.
_PILLOW_MODULES = r"PIL(\.|$)"
_PILLOW_WARNINGS: tuple[type[Warning], ...] = (UserWarning, Image.DecompressionBombWarning)


@dataclass(frozen=True)
class LoadedImage:
    """A decoded input image, ready for the model.

    Equality and hashing use everything but the pixels object: two loads of the same pixels
    from the same source compare equal.

    Example:
        >>> loaded = load_image(Image.new("L", (4, 2), 128))
        >>> loaded.size, loaded.image.mode, loaded.source
        ((4, 2), 'RGB', 'PIL image')
    """

    image: Image.Image = field(compare=False)
    """The pixels: mode ``"RGB"``, fully loaded, EXIF orientation applied, first frame of an
    animation."""
    source: str
    """Where the image came from, for errors and metadata: the path, ``"bytes"``, ``"data URI"``,
    ``"base64"``, the URL or ``"PIL image"``."""
    content_hash: str
    """Hex blake2b digest (16 bytes) of the size and RGB pixels; the same pixels give the same
    hash whatever the encoding."""
    format: str | None
    """``"PNG"``, ``"JPEG"``, ``"PDF"``, ...; ``None`` for a PIL image created in memory."""
    page: int | None = None
    """1-based page number within a document (PDF, multi-page TIFF); ``None`` otherwise."""
    text_layer: TextLayer | None = field(default=None, compare=False, repr=False)
    """A PDF page's embedded text (empty when the page has none); ``None`` for other images."""
    region: tuple[int, int, int, int] | None = None
    """When the image is a crop of the loaded image: ``(x0, y0, x1, y1)`` in its pixels."""
    point_scale: tuple[float, float] | None = None
    """PDF pages: page points (1/72 inch) per rendered pixel, across and down; ``None`` for
    other images (text boxes use it to give positions on the page)."""

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return self.image.size


ImageInput: TypeAlias = (
    str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | LoadedImage
)
"""Everything :func:`load_image` accepts."""

_DEFAULT_LIMITS = ImageLimits()


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def load_image(
    source: ImageInput,
    *,
    page: int | None = None,
    limits: ImageLimits = _DEFAULT_LIMITS,
    policy: SourcePolicy | None = None,
    dpi: int = DEFAULT_PDF_DPI,
) -> LoadedImage:
    """Load one image from any supported input.

    Args:
        source: A path, bytes, a base64 string, a ``data:`` URI, an http(s) URL, a PIL image
            or a :class:`LoadedImage` (returned as is).
        page: 1-based page for a PDF or a multi-page TIFF. Required when the document has
            more than one page; for other images only ``None`` or 1.
        limits: Byte and pixel limits.
        policy: Which paths and URLs may be read; ``None`` means any local path, no URLs.
        dpi: Resolution for PDF pages.

    Returns:
        The decoded image.

    Raises:
        ImageNotFoundError: No file at the path (and the string is not base64 image data), a
            URL answered 404.
        AccessDeniedError: The path or URL is refused by ``policy``.
        ImageDecodeError: Empty, truncated, corrupt or unsupported data (SVG, text, HTML...).
        ImageTooLargeError: Over ``limits.max_bytes`` or ``limits.max_pixels``.
        PDFError: Corrupt or encrypted PDF, or ``page`` beyond its last page.
        InvalidInputError: A document with several pages and no ``page``; ``page`` beyond a
            TIFF's pages; an unsupported input type; a failed URL fetch.
        MissingDependencyError: A PDF and pypdfium2 is not installed.

    Example:
        >>> load_image(Image.new("RGB", (1, 20000))).size
        (1, 20000)
    """
    _check_page_number(page)
    if isinstance(source, LoadedImage | Image.Image):
        return _single(_from_memory(source, limits), pages=None if page is None else [page])
    data, label = _read_input(source, limits, policy)
    fmt = sniff_format(data, source=label)
    if fmt == "PDF":
        check_dpi(dpi)
        with _pdf(data, label, limits) as document:
            number = page or _only_page(document.page_count, label, "PDF")
            rendered, layer = _render(document, number, dpi, limits)
            scale = document.point_scale(number, rendered.size)
        with _decoding(label):
            rgb = _to_rgb(rendered)
        return _loaded(rgb, label, "PDF", number, layer, scale)
    opened, count = _open(data, fmt, label, limits)
    try:
        if count == 1:
            _check_single_page(page, label)
            return _decode(opened, 0, label, fmt, None, limits)
        number = page or _only_page(count, label, fmt)
        _parse_page_selection([number], count, what=shown_label(label), error=InvalidInputError)
        return _decode(opened, number - 1, label, fmt, number, limits)
    finally:
        opened.close()


def iter_pages(
    source: ImageInput,
    *,
    pages: str | Sequence[int] | None = None,
    limits: ImageLimits = _DEFAULT_LIMITS,
    policy: SourcePolicy | None = None,
    dpi: int = DEFAULT_PDF_DPI,
    documents_only: bool = False,
) -> Iterator[LoadedImage]:
    """Yield the selected pages of a document, or the image itself, one at a time.

    The input is read and the selection validated when this function is called; each page is
    decoded (or rendered) only when the iterator reaches it.

    Args:
        source: Anything :func:`load_image` accepts.
        pages: ``"3"``, ``"1-3"``, ``"1,3,5-7"``, ``"5-"`` or a sequence of 1-based ints;
            ``None`` selects every page. A plain image has one page.
        limits: Byte and pixel limits, applied to every page.
        policy: Which paths and URLs may be read.
        dpi: Resolution for PDF pages.
        documents_only: Apply ``pages`` to documents (PDFs, multi-page TIFFs) only; a plain
            image is yielded once whatever the selection (batches over mixed sources).

    Returns:
        An iterator of :class:`LoadedImage`: one with ``page=None`` for a plain image, one per
        selected page (``page`` set) for a PDF or a multi-page TIFF.

    Raises:
        InvalidInputError: A malformed selection, or a page beyond a TIFF's or an image's pages.
        PDFError: A page beyond a PDF's pages, a corrupt or encrypted PDF.
        ImageDecodeError: See :func:`load_image`; also raised while iterating, for a page that
            turns out to be corrupt.
        ImageTooLargeError: See :func:`load_image`.

    Example:
        >>> [page.page for page in iter_pages("report.pdf", pages="1-2")]  # doctest: +SKIP
        [1, 2]
    """
    if isinstance(source, LoadedImage | Image.Image):
        loaded = _from_memory(source, limits)
        return iter([loaded if documents_only else _single(loaded, pages=pages)])
    data, label = _read_input(source, limits, policy)
    fmt = sniff_format(data, source=label)
    if fmt == "PDF":
        check_dpi(dpi)
        document = _pdf(data, label, limits)
        try:
            selected = _select(pages, document.page_count, f"PDF {shown_label(label)}", PDFError)
        except BaseException:
            document.close()
            raise
        return _iter_pdf(document, selected, label, limits, dpi)
    opened, count = _open(data, fmt, label, limits)
    if count == 1 and documents_only:
        return _iter_frames(opened, [(0, None)], label, fmt, limits)
    selected = _select(pages, count, shown_label(label), InvalidInputError)
    if count == 1:
        return _iter_frames(opened, [(0, None)], label, fmt, limits)
    return _iter_frames(opened, [(n - 1, n) for n in selected], label, fmt, limits)


def count_pages(
    source: ImageInput,
    *,
    limits: ImageLimits = _DEFAULT_LIMITS,
    policy: SourcePolicy | None = None,
) -> int:
    """Number of pages in ``source``: a PDF's or a TIFF's pages, 1 for any other image.

    Raises:
        The errors of :func:`load_image` for unreadable inputs.
    """
    if isinstance(source, LoadedImage | Image.Image):
        return 1
    data, label = _read_input(source, limits, policy)
    fmt = sniff_format(data, source=label)
    if fmt == "PDF":
        with _pdf(data, label, limits) as document:
            return document.page_count
    if fmt != "TIFF":
        return 1
    opened, count = _open(data, fmt, label, limits)
    opened.close()
    return count


def is_document(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` is a PDF or a TIFF with more than one page (never raises)."""
    raw = bytes(data)
    fmt = _sniff(raw)
    if fmt == "PDF":
        return True
    return fmt == "TIFF" and tiff_page_count(raw, stop_after=2) > 1


def sniff_format(data: bytes, *, source: str = "bytes") -> str:
    """The format of ``data`` from its magic number: one of :data:`SUPPORTED_FORMATS`.

    Args:
        data: The start of the file (or all of it).
        source: How to name the data in errors.

    Returns:
        ``"PNG"``, ``"JPEG"``, ``"GIF"``, ``"WEBP"``, ``"BMP"``, ``"TIFF"`` or ``"PDF"``.

    Raises:
        ImageDecodeError: Empty data, or data in another format; the message says what it
            looks like (SVG, HTML, text, HEIC, ZIP...) and what to do.
    """
    if not data:
        raise ImageDecodeError(
            f"{shown_label(source)} is empty (0 bytes); pass the image file's contents",
            source=source,
        )
    fmt = _sniff(data)
    if fmt is None:
        looks_like, fix = _describe(data)
        raise ImageDecodeError(
            f"{shown_label(source)} is not a supported image: it looks like {looks_like}; {fix} "
            f"(supported: {', '.join(SUPPORTED_FORMATS)})",
            source=source,
        )
    return fmt


# --------------------------------------------------------------------------------------------
# Reading inputs into bytes
# --------------------------------------------------------------------------------------------


def _read_input(
    source: object, limits: ImageLimits, policy: SourcePolicy | None
) -> tuple[bytes, str]:
    """The bytes behind a path, URL, data URI, base64 string or bytes-like, and its label."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source) if not isinstance(source, memoryview) else source.tobytes()
        label = "bytes"
    elif isinstance(source, str):
        data, label = _read_string(source, limits, policy)
    elif isinstance(source, os.PathLike):
        path = os.fsdecode(source)
        data, label = read_path(path, policy, max_bytes=limits.max_bytes), path
    else:
        raise InvalidInputError(
            f"unsupported image input of type {type(source).__name__}; pass a path, bytes, a "
            "base64 string, a data URI, an http(s) URL, a PIL image or a LoadedImage"
        )
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"{shown_label(label)} is {len(data):,} bytes; the limit is "
            f"{limits.max_bytes:,} bytes; shrink the image or raise the limit",
            source=label,
            remedy=Remedy("max_bytes", str(len(data))),
        )
    return data, label


def _read_string(text: str, limits: ImageLimits, policy: SourcePolicy | None) -> tuple[bytes, str]:
    stripped = text.strip()
    if stripped[:5].lower() == "data:":
        return _decode_data_uri(stripped, limits), "data URI"
    scheme = _URL_SCHEME.match(stripped)
    if scheme is not None:
        if scheme.group(1).lower() in ("http", "https"):
            return fetch_url(stripped, policy, max_bytes=limits.max_bytes), stripped
        raise InvalidInputError(
            f"unsupported URL scheme {scheme.group(1)!r} in {shown_label(stripped)}; pass a local "
            "path (without file://), an http(s) URL, bytes, base64 or a data URI"
        )
    decoded, why_not = _try_base64(stripped, limits)
    if decoded is not None:
        return decoded, "base64"
    try:
        return read_path(text, policy, max_bytes=limits.max_bytes), text
    except ImageNotFoundError as e:
        if why_not is None:
            raise
        raise ImageNotFoundError(
            f"{e.message}; the string is not base64 image data either ({why_not})", path=e.path
        ) from None


def is_inline_image(text: str) -> bool:
    """Whether ``text`` is read as image data rather than as a path or URL.

    Image data is a data URI, or base64 of a supported format. Cheap (decodes 64 characters at
    most); never raises.
    """
    stripped = text.strip()
    if stripped[:5].lower() == "data:":
        return True
    if len(stripped) < _BASE64_MIN_CHARS or _BASE64_TEXT.fullmatch(stripped) is None:
        return False
    compact = "".join(stripped[:128].split()).rstrip("=").replace("-", "+").replace("_", "/")
    head = _b64decode(compact[:64])
    return head is not None and _sniff(head) is not None


def _try_base64(text: str, limits: ImageLimits) -> tuple[bytes | None, str | None]:
    """Decode ``text`` if it is base64 of a supported format.

    Returns ``(bytes, None)`` on success, ``(None, reason)`` when tried and failed, and
    ``(None, None)`` when ``text`` does not look like base64 at all.
    """
    if len(text) < _BASE64_MIN_CHARS or _BASE64_TEXT.fullmatch(text) is None:
        return None, None
    compact = "".join(text.split()).rstrip("=")
    if "-" in compact or "_" in compact:
        compact = compact.replace("-", "+").replace("_", "/")
    head = _b64decode(compact[:64])  # 48 bytes: enough for every magic number
    if head is None:
        return None, "it is not valid base64"
    if _sniff(head) is None:
        looks_like, _ = _describe(head)
        return None, f"as base64 it decodes to {looks_like}, not a supported image"
    estimated = len(compact) * 3 // 4
    if estimated > limits.max_bytes:
        raise ImageTooLargeError(
            f"the base64 input decodes to about {estimated:,} bytes; the limit is "
            f"{limits.max_bytes:,} bytes; shrink the image or raise the limit",
            source="base64",
            remedy=Remedy("max_bytes", str(estimated)),
        )
    data = _b64decode(compact)
    if data is None:
        return None, "it is not valid base64"
    return data, None


def _b64decode(compact: str) -> bytes | None:
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _decode_data_uri(uri: str, limits: ImageLimits) -> bytes:
    header, comma, payload = uri.partition(",")
    if not comma:
        raise ImageDecodeError(
            f"data URI {uri[:40]!r}… has no ',' before its data; use "
            "'data:image/png;base64,<base64 data>'",
            source="data URI",
        )
    params = [part.strip().lower() for part in header[5:].split(";")]
    media_type = params[0] or "text/plain"
    if not (
        media_type.startswith("image/")
        or media_type in ("application/pdf", "application/octet-stream")
    ):
        raise ImageDecodeError(
            f"data URI declares media type {media_type!r}, not an image or a PDF; pass image "
            "data as 'data:image/png;base64,...' or a PDF as 'data:application/pdf;base64,...'",
            source="data URI",
        )
    if "base64" in params[1:]:
        compact = "".join(payload.split())
        estimated = len(compact) * 3 // 4
        if estimated > limits.max_bytes:
            raise ImageTooLargeError(
                f"the data URI decodes to about {estimated:,} bytes; the limit is "
                f"{limits.max_bytes:,} bytes; shrink the image or raise the limit",
                source="data URI",
                remedy=Remedy("max_bytes", str(estimated)),
            )
        data = _b64decode(compact.rstrip("=").replace("-", "+").replace("_", "/"))
        if data is None:
            raise ImageDecodeError(
                f"the data URI's payload ({len(compact):,} characters) is not valid base64; "
                "re-encode the file with standard base64",
                source="data URI",
            )
        return data
    if len(payload) > 3 * limits.max_bytes:
        raise ImageTooLargeError(
            f"the data URI holds {len(payload):,} characters, over the limit of "
            f"{limits.max_bytes:,} bytes; shrink the image or raise the limit",
            source="data URI",
            remedy=Remedy("max_bytes"),
        )
    return unquote_to_bytes(payload)


# --------------------------------------------------------------------------------------------
# Sniffing
# --------------------------------------------------------------------------------------------


def _sniff(data: bytes) -> str | None:
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            if fmt == "BMP" and not _is_bmp(data):
                continue  # text that happens to start with "BM"
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if is_pdf(data):
        return "PDF"
    return None


def _is_bmp(data: bytes) -> bool:
    """Whether ``data``, which starts with ``BM``, has a BMP info header size where it should."""
    return len(data) >= 18 and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES


def _describe(data: bytes) -> tuple[str, str]:
    """What unsupported ``data`` looks like, and what to do about it.

    The description names a kind of data, never a byte of it: the data may be a file the caller
    should not have been able to read (a credentials file an agent was tricked into naming).
    """
    head = data[:1024]
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<") and b"<svg" in text:
        return "an SVG image", "SVG is a vector format; rasterize it to PNG first"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return (
            "an HTML page",
            "this is often an error or login page served instead of the image; check the URL",
        )
    if text.startswith(b"<"):
        return "XML or other markup", "pass the image itself, not a document describing it"
    if data[4:8] == b"ftyp":
        return "an ISO media file (HEIC, AVIF or video)", "convert it to PNG/JPEG"
    if data.startswith(b"PK\x03\x04"):
        return "a ZIP archive (DOCX, XLSX, ODT...)", "export the page as PDF or PNG"
    if data.startswith(b"\x1f\x8b"):
        return "gzip-compressed data", "decompress it first"
    if data.startswith(b"%!PS"):
        return "PostScript/EPS", "convert it to PDF or PNG"
    if data[:4] == b"RIFF":
        return "a RIFF file that is not WEBP (e.g. audio or video)", "pass an image"
    try:
        sample = head.decode("utf-8")
    except UnicodeDecodeError as e:
        sample = head[: e.start].decode("utf-8") if e.start >= len(head) - 3 else ""
    if sample and all(char.isprintable() or char in "\t\r\n" for char in sample):
        if sample.lstrip().startswith(("{", "[")):
            return "JSON text", "pass the image file, not JSON about it"
        return "text", "pass the image file's bytes, not text"
    return "binary data of an unknown format", "convert it to PNG or JPEG"


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _ensure_pillow_filters() -> None:
    """Keep Pillow's warnings about the files it reads from being printed.

    The filters (``ignore`` for ``UserWarning`` and ``DecompressionBombWarning`` raised inside
    the ``PIL`` package) are inserted once, and again only when other code has put filters in
    front of them or removed them (``warnings.catch_warnings`` on exit, a test runner, an
    application's ``simplefilter("error")``). Any change to the filters makes Python forget
    which warnings it has shown once, so this touches them as rarely as possible and never
    saves or restores the rest: unlike ``warnings.catch_warnings``, it is safe from any thread
    and leaves the other libraries' warnings as they were.
    """
    filters = warnings.filters
    if len(filters) >= len(_PILLOW_WARNINGS) and all(
        entry[0] == "ignore"
        and entry[2] is category
        and entry[3] is not None
        and entry[3].pattern == _PILLOW_MODULES
        for entry, category in zip(filters, _PILLOW_WARNINGS, strict=False)
    ):
        return
    for category in reversed(_PILLOW_WARNINGS):  # each goes in front: the first ends first
        warnings.filterwarnings("ignore", category=category, module=_PILLOW_MODULES)


_ensure_pillow_filters()


@contextmanager
def _decoding(label: str, limits: ImageLimits = _DEFAULT_LIMITS) -> Iterator[None]:
    """Keep Pillow's warnings unprinted, and map any decoder failure to our errors."""
    _ensure_pillow_filters()
    try:
        yield
    except MississippiError:
        raise
    except Image.DecompressionBombError as e:
        declared = _PIL_BOMB_PIXELS.search(str(e))
        pixels = f"{int(declared.group(1)):,} pixels" if declared else "too many pixels"
        raise ImageTooLargeError(
            f"{shown_label(label)} declares {pixels}; the limit is {limits.max_pixels:,} pixels "
            f"and Pillow refuses over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} outright; it was "
            "refused before decoding (a possible decompression bomb); downscale the image, "
            "or raise the limit (and PIL.Image.MAX_IMAGE_PIXELS)",
            source=label,
            remedy=Remedy("max_pixels"),
        ) from None
    except MemoryError:
        raise ImageTooLargeError(
            f"{shown_label(label)} ran out of memory while decoding; downscale the image or "
            "lower the pixel limit",
            source=label,
            remedy=Remedy("max_pixels"),
        ) from None
    except Exception as e:
        raise ImageDecodeError(
            f"{shown_label(label)} cannot be decoded: {type(e).__name__}: {_decoder_message(e)}; "
            "the file is truncated or corrupt; re-export or re-download it",
            source=label,
        ) from e


def _decoder_message(error: Exception) -> str:
    """Pillow's message, without the bytes some messages quote (``b'...'``), shortened."""
    text = re.sub(r"""b(['"]).*?(?<!\\)\1""", "<bytes>", str(error))
    return text if len(text) <= 160 else text[:157] + "..."


def _open(data: bytes, fmt: str, label: str, limits: ImageLimits) -> tuple[Image.Image, int]:
    """Open ``data`` (header only), check its declared size and cost, and count its pages.

    Animations (GIF, WEBP, APNG) count as one image; only a TIFF has pages.
    """
    count = 1
    if fmt == "TIFF":
        count = tiff_page_count(data, stop_after=limits.max_pages + 1)
        check_page_count(count, label, "TIFF", limits)
    elif fmt == "JPEG":
        check_jpeg_scans(data, label, limits)
    with _decoding(label, limits):
        image = Image.open(io.BytesIO(data), formats=_PIL_FORMATS[fmt])
        check_pixels(image.size, label, limits)
        return image, count


def _pdf(data: bytes, label: str, limits: ImageLimits) -> PDFDocument:
    """Open a PDF under ``limits``: its streams checked, its page count within ``max_pages``."""
    document = PDFDocument(
        data, source=shown_label(label), max_stream_bytes=limits.max_pdf_stream_bytes
    )
    if document.page_count > limits.max_pages:
        document.close()
        check_page_count(document.page_count, label, "PDF", limits)
    return document


def _render(
    document: PDFDocument, number: int, dpi: int, limits: ImageLimits
) -> tuple[Image.Image, TextLayer]:
    return document.render_with_text(
        number, dpi=dpi, max_pixels=limits.max_pixels, max_side=limits.max_side
    )


def _decode(
    opened: Image.Image, index: int, label: str, fmt: str, page: int | None, limits: ImageLimits
) -> LoadedImage:
    with _decoding(label, limits):
        if opened.tell() != index:
            opened.seek(index)
            check_pixels(opened.size, label, limits)  # each TIFF page has its own size
        opened.load()
        rgb = _to_rgb(_oriented(opened))
    return _loaded(rgb, label, fmt, page)


def _from_memory(source: LoadedImage | Image.Image, limits: ImageLimits) -> LoadedImage:
    if isinstance(source, LoadedImage):
        check_pixels(source.size, source.source, limits)
        return source
    check_pixels(source.size, "PIL image", limits)
    with _decoding("PIL image"):
        source.load()
        rgb = _to_rgb(_oriented(source))
    return _loaded(rgb, "PIL image", source.format)


def _oriented(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says; as stored when the EXIF is unreadable."""
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:
        return image
    method = _TRANSPOSE_FOR_ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return image if method is None else image.transpose(method)


def _to_rgb(image: Image.Image) -> Image.Image:
    """``convert("RGB")`` as the original model does, except that deep greys are scaled."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        raw = image.tobytes()  # two bytes per pixel, in the mode's byte order
        big_endian = mode == "I;16B" or (mode == "I;16N" and sys.byteorder == "big")
        image = Image.frombytes("L", image.size, raw[0::2] if big_endian else raw[1::2])
    elif mode in ("I", "F"):
        low, high = cast("tuple[float, float]", image.getextrema())
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ImageDecodeError(
                f"the {mode} image holds non-finite values (range {low}..{high}); replace NaN/inf "
                "before passing it"
            )
        if high > low:
            scale = 255.0 / (high - low)
            offset = -low * scale
            image = image.point(lambda value: value * scale + offset).convert("L")
        else:
            image = Image.new("L", image.size, int(min(max(low, 0), 255)))
    return image.convert("RGB")


def _content_hash(image: Image.Image) -> str:
    width, height = image.size
    digest = hashlib.blake2b(f"{width}x{height}:".encode(), digest_size=16)
    rows = max(1, _HASH_STRIP_BYTES // max(1, width * 3))
    if rows >= height:
        digest.update(image.tobytes())
    else:  # hash in strips: no second full-size copy of a big image
        for top in range(0, height, rows):
            digest.update(image.crop((0, top, width, min(height, top + rows))).tobytes())
    return digest.hexdigest()


def _loaded(
    rgb: Image.Image,
    label: str,
    fmt: str | None,
    page: int | None = None,
    text_layer: TextLayer | None = None,
    point_scale: tuple[float, float] | None = None,
) -> LoadedImage:
    return LoadedImage(
        image=rgb,
        source=label,
        content_hash=_content_hash(rgb),
        format=fmt,
        page=page,
        text_layer=text_layer,
        point_scale=point_scale,
    )


# --------------------------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------------------------


def _check_page_number(page: int | None) -> None:
    if page is None:
        return
    if isinstance(page, bool) or not isinstance(page, int):
        raise InvalidInputError(
            f"page must be an int (1-based) or None, got {page!r} ({type(page).__name__})"
        )
    if page < 1:
        raise InvalidInputError(f"page {page} is not a page number; pages are 1-based")


def _only_page(count: int, label: str, fmt: str) -> int:
    if count > 1:
        raise InvalidInputError(
            f"{shown_label(label)} is a {fmt} with {count} pages; choose one page (1..{count}), "
            f"or a page range such as '1-{min(count, 3)}' to read several"
        )
    return 1


def _check_single_page(page: int | None, label: str) -> None:
    if page not in (None, 1):
        raise InvalidInputError(
            f"page {page} requested, but {shown_label(label)} is a single image (animations count "
            "as one: their first frame is used); pass page=None"
        )


def _select(
    pages: str | Sequence[int] | None, count: int, what: str, error: type[InvalidInputError]
) -> list[int]:
    if pages is None:
        return list(range(1, count + 1))
    return _parse_page_selection(pages, count, what=what, error=error)


def _single(loaded: LoadedImage, *, pages: str | Sequence[int] | None) -> LoadedImage:
    """``loaded`` (an in-memory image: one page) after checking the requested page(s)."""
    if pages is None:
        return loaded
    own = loaded.page or 1  # a page taken out of a document is that page only
    if _select(pages, own, shown_label(loaded.source), InvalidInputError) != [own]:
        raise InvalidInputError(
            f"this in-memory image is page {own} of {shown_label(loaded.source)}; it cannot "
            f"provide page(s) {pages!r}; load the pages from the document itself"
        )
    return loaded


def _iter_pdf(
    document: PDFDocument, selected: list[int], label: str, limits: ImageLimits, dpi: int
) -> Iterator[LoadedImage]:
    with document:
        for number in selected:
            rendered, layer = _render(document, number, dpi, limits)
            scale = document.point_scale(number, rendered.size)
            with _decoding(label):
                rgb = _to_rgb(rendered)
            yield _loaded(rgb, label, "PDF", number, layer, scale)


def _iter_frames(
    opened: Image.Image,
    frames: list[tuple[int, int | None]],
    label: str,
    fmt: str,
    limits: ImageLimits,
) -> Iterator[LoadedImage]:
    try:
        for index, page in frames:
            yield _decode(opened, index, label, fmt, page, limits)
    finally:
        opened.close()
