"""Every image input of mississippi-tools becomes one RGB PIL image here, within limits.

:func:`load_image` accepts a path, raw bytes, a base64 string, a ``data:`` URI, an http(s) URL
(only when :class:`~mississippi_tools.sources.SourcePolicy` allows URLs), a PIL image, a PDF page
or a page of a multi-page TIFF, and returns a :class:`LoadedImage`. :func:`iter_pages` yields one
per page of a document, rendering lazily.

What is accepted and how it is decoded:

- **Formats**: PNG, JPEG, GIF, WEBP, BMP, TIFF and PDF, recognised by their magic numbers, not by
  file names. Only those Pillow plugins are used. Anything else (SVG, HTML, text, HEIC, ZIP...)
  raises :class:`~mississippi_tools.errors.ImageDecodeError` saying what the data looks like.
- **Limits** (:class:`ImageLimits`): inputs over ``max_bytes`` are refused before decoding, and
  images whose header declares more than ``max_pixels`` pixels are refused before their pixels
  are decoded, so a small file declaring a huge image (a decompression bomb) costs nothing.
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
``ImageDecodeError`` (with the original as ``__cause__``). Decoding holds a module-wide lock
(Pillow's warnings are silenced during it, which needs the process-wide warning filters).
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
import threading
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
)
from mississippi_tools.pdf import (
    DEFAULT_PDF_DPI,
    PDFDocument,
    _parse_page_selection,
    check_dpi,
    is_pdf,
)
from mississippi_tools.sources import DEFAULT_MAX_BYTES, SourcePolicy, fetch_url, read_path

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
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

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest ``width * height`` decoded by default (an 8000x8000 image)."""

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

# Pillow warns through the process-wide warning filters; silencing them (so that a corrupt EXIF
# block or an oversized header is handled here, not printed) must not race with other threads.
_DECODE_LOCK = threading.RLock()


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

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(
                    f"ImageLimits.{name} must be a positive int, got {value!r}; "
                    f"the default is {getattr(ImageLimits, name)}"
                )


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
        with PDFDocument(data, source=_shown(label)) as document:
            number = page or _only_page(document.page_count, label, "PDF")
            rendered = document.render(number, dpi=dpi, max_pixels=limits.max_pixels)
        with _decoding(label):
            rgb = _to_rgb(rendered)
        return _loaded(rgb, label, "PDF", number)
    opened, count = _open(data, fmt, label, limits)
    try:
        if count == 1:
            _check_single_page(page, label)
            return _decode(opened, 0, label, fmt, None, limits)
        number = page or _only_page(count, label, fmt)
        _parse_page_selection([number], count, what=_shown(label), error=InvalidInputError)
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
        document = PDFDocument(data, source=_shown(label))
        try:
            selected = _select(pages, document.page_count, f"PDF {_shown(label)}", PDFError)
        except BaseException:
            document.close()
            raise
        return _iter_pdf(document, selected, label, limits, dpi)
    opened, count = _open(data, fmt, label, limits)
    if count == 1 and documents_only:
        return _iter_frames(opened, [(0, None)], label, fmt, limits)
    selected = _select(pages, count, _shown(label), InvalidInputError)
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
        with PDFDocument(data, source=_shown(label)) as document:
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
    if fmt != "TIFF":
        return False
    try:
        opened, count = _open(raw, fmt, "bytes", _DEFAULT_LIMITS)
    except MississippiError:
        return False
    opened.close()
    return count > 1


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
            f"{_shown(source)} is empty (0 bytes); pass the image file's contents",
            source=source,
        )
    fmt = _sniff(data)
    if fmt is None:
        looks_like, fix = _describe(data)
        raise ImageDecodeError(
            f"{_shown(source)} is not a supported image: it looks like {looks_like}; {fix} "
            f"(supported: {', '.join(SUPPORTED_FORMATS)})",
            source=source,
        )
    return fmt


# --------------------------------------------------------------------------------------------
# Reading inputs into bytes
# --------------------------------------------------------------------------------------------


def _shown(label: str, limit: int = 120) -> str:
    if label in ("bytes", "data URI", "base64", "PIL image"):
        return f"the {label} input"
    if len(label) > limit:
        return f"{label[: limit - 20]!r}… ({len(label)} characters)"
    return repr(label)


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
            f"{_shown(label)} is {len(data):,} bytes; the limit is {limits.max_bytes:,} bytes; "
            "shrink the image or raise ImageLimits(max_bytes=...)",
            source=label,
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
            f"unsupported URL scheme {scheme.group(1)!r} in {_shown(stripped)}; pass a local path "
            "(without file://), an http(s) URL, bytes, base64 or a data URI"
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
            f"{limits.max_bytes:,} bytes; shrink the image or raise ImageLimits(max_bytes=...)",
            source="base64",
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
                f"{limits.max_bytes:,} bytes; shrink the image or raise ImageLimits(max_bytes=...)",
                source="data URI",
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
            f"{limits.max_bytes:,} bytes; shrink the image or raise ImageLimits(max_bytes=...)",
            source="data URI",
        )
    return unquote_to_bytes(payload)


# --------------------------------------------------------------------------------------------
# Sniffing
# --------------------------------------------------------------------------------------------


def _sniff(data: bytes) -> str | None:
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if is_pdf(data):
        return "PDF"
    return None


def _describe(data: bytes) -> tuple[str, str]:
    """What unsupported ``data`` looks like, and what to do about it."""
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
        brand = data[8:12].decode("latin-1")
        return f"an ISO media file (brand {brand!r}: HEIC, AVIF or video)", "convert it to PNG/JPEG"
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
        snippet = " ".join(sample.split())[:40]
        return f"text ({snippet!r})", "pass the image file's bytes, not text"
    return f"unknown binary data starting with {data[:8].hex(' ')}", "convert it to PNG or JPEG"


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


@contextmanager
def _decoding(label: str, limits: ImageLimits = _DEFAULT_LIMITS) -> Iterator[None]:
    """Serialize decoding, silence Pillow's warnings, and map any decoder failure to ours."""
    with _DECODE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)  # corrupt EXIF, malformed MPO/APNG...
        try:
            yield
        except MississippiError:
            raise
        except Image.DecompressionBombError as e:
            declared = _PIL_BOMB_PIXELS.search(str(e))
            pixels = f"{int(declared.group(1)):,} pixels" if declared else "too many pixels"
            raise ImageTooLargeError(
                f"{_shown(label)} declares {pixels}; the limit is {limits.max_pixels:,} pixels "
                f"and Pillow refuses over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} outright; it was "
                "refused before decoding (a possible decompression bomb); downscale the image, "
                "or raise ImageLimits(max_pixels=...) and PIL.Image.MAX_IMAGE_PIXELS",
                source=label,
            ) from None
        except MemoryError:
            raise ImageTooLargeError(
                f"{_shown(label)} ran out of memory while decoding; downscale the image or "
                "lower ImageLimits(max_pixels=...)",
                source=label,
            ) from None
        except Exception as e:
            raise ImageDecodeError(
                f"{_shown(label)} cannot be decoded: {type(e).__name__}: {e}; the file is "
                "truncated or corrupt; re-export or re-download it",
                source=label,
            ) from e


def _open(data: bytes, fmt: str, label: str, limits: ImageLimits) -> tuple[Image.Image, int]:
    """Open ``data`` (header only), check its declared size, and count its pages.

    Animations (GIF, WEBP, APNG) count as one image; only a TIFF has pages.
    """
    with _decoding(label, limits):
        image = Image.open(io.BytesIO(data), formats=_PIL_FORMATS[fmt])
        _check_pixels(image.size, label, limits)
        return image, int(getattr(image, "n_frames", 1)) if fmt == "TIFF" else 1


def _check_pixels(size: tuple[int, int], label: str, limits: ImageLimits) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"{_shown(label)} is {width}x{height} = {width * height:,} pixels; the limit is "
            f"{limits.max_pixels:,} pixels (checked before decoding, against decompression "
            "bombs); downscale the image or raise ImageLimits(max_pixels=...)",
            source=label,
        )


def _decode(
    opened: Image.Image, index: int, label: str, fmt: str, page: int | None, limits: ImageLimits
) -> LoadedImage:
    with _decoding(label, limits):
        if opened.tell() != index:
            opened.seek(index)
            _check_pixels(opened.size, label, limits)  # each TIFF page has its own size
        opened.load()
        rgb = _to_rgb(_oriented(opened))
    return _loaded(rgb, label, fmt, page)


def _from_memory(source: LoadedImage | Image.Image, limits: ImageLimits) -> LoadedImage:
    if isinstance(source, LoadedImage):
        _check_pixels(source.size, source.source, limits)
        return source
    _check_pixels(source.size, "PIL image", limits)
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


def _loaded(rgb: Image.Image, label: str, fmt: str | None, page: int | None = None) -> LoadedImage:
    return LoadedImage(
        image=rgb, source=label, content_hash=_content_hash(rgb), format=fmt, page=page
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
            f"{_shown(label)} is a {fmt} with {count} pages; choose one page (1..{count}), "
            f"or a page range such as '1-{min(count, 3)}' to read several"
        )
    return 1


def _check_single_page(page: int | None, label: str) -> None:
    if page not in (None, 1):
        raise InvalidInputError(
            f"page {page} requested, but {_shown(label)} is a single image (animations count "
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
    if _select(pages, own, _shown(loaded.source), InvalidInputError) != [own]:
        raise InvalidInputError(
            f"this in-memory image is page {own} of {_shown(loaded.source)}; it cannot provide "
            f"page(s) {pages!r}; load the pages from the document itself"
        )
    return loaded


def _iter_pdf(
    document: PDFDocument, selected: list[int], label: str, limits: ImageLimits, dpi: int
) -> Iterator[LoadedImage]:
    with document:
        for number in selected:
            rendered = document.render(number, dpi=dpi, max_pixels=limits.max_pixels)
            with _decoding(label):
                rgb = _to_rgb(rendered)
            yield _loaded(rgb, label, "PDF", number)


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
