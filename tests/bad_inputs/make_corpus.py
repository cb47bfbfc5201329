"""Regenerate the bad-input corpus in this folder: ``python tests/bad_inputs/make_corpus.py``.

Every file is built from fixed parameters (Pillow encoders or hand-written bytes), so running the
script twice writes the same bytes. The builders are also imported by the tests (through the
``corpus`` fixture) to make variants in memory: PDFs with other page sizes, bombs of other sizes.

What each file is for is in ``DESCRIPTIONS``; the expected outcomes are asserted in
``tests/test_images.py`` and ``tests/test_pdf.py``.
"""

from __future__ import annotations

import hashlib
import io
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent

# Colours used by the tests to check which frame or page was read.
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
FRAME_COLOURS = (RED, GREEN, BLUE)

# exif_rotated.jpg: stored 40 wide x 24 high with an 8x8 red marker in the stored top-left corner.
EXIF_STORED_SIZE = (40, 24)
EXIF_MARKER = 8


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_header_only(width: int, height: int, *, rows: int = 4) -> bytes:
    """A greyscale PNG declaring ``width`` x ``height`` whose IDAT holds only a few rows.

    The file is tiny whatever the declared size: it is what a decompression bomb looks like to a
    header check, and a reader that decoded it would allocate ``width * height`` bytes first.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    raw_rows = (b"\x00" + bytes(width)) * rows  # filter byte 0, then black pixels
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw_rows, 9))
        + _png_chunk(b"IEND", b"")
    )


def _gradient_rgb(width: int, height: int) -> Image.Image:
    # Noisy content so that PNG/JPEG cannot compress it to nothing (truncation must cut pixels).
    data = bytearray()
    for y in range(height):
        for x in range(width):
            data += bytes(((x * 7 + y * 3) % 256, (x * y) % 256, (x ^ y) * 5 % 256))
    return Image.frombytes("RGB", (width, height), bytes(data))


# --------------------------------------------------------------------------------------------
# Hand-written PDFs (Helvetica Type1 font, one content stream per page, xref table)
# --------------------------------------------------------------------------------------------

_PDF_PAD = bytes.fromhex(
    "28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A"
)  # the 32-byte padding string of the PDF standard security handler (ISO 32000-1, 7.6.3.3)


def _rc4(key: bytes, data: bytes) -> bytes:
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def _padded(password: bytes) -> bytes:
    return (password + _PDF_PAD)[:32]


def page_marker_x(page: int) -> int:
    """Left edge, in points, of the black square :func:`pdf_bytes` draws on ``page`` (1-based)."""
    return 72 * page


def pdf_bytes(
    page_count: int = 3,
    *,
    media_box: tuple[float, float] = (612, 792),
    user_password: bytes | None = None,
    owner_password: bytes = b"owner",
) -> bytes:
    """A PDF whose page N shows "Page N" and a 36 pt black square at x = 72*N, y = 600.

    With ``user_password``, the document is encrypted with the standard security handler
    (revision 2, 40-bit RC4), so that it cannot be opened without that password.
    """
    file_id = hashlib.md5(f"mississippi-tools corpus {page_count}".encode()).digest()
    permissions = -4
    key: bytes | None = None
    encrypt_dict = b""
    if user_password is not None:
        owner_key = hashlib.md5(_padded(owner_password)).digest()[:5]
        o_value = _rc4(owner_key, _padded(user_password))
        key = hashlib.md5(
            _padded(user_password) + o_value + struct.pack("<i", permissions) + file_id
        ).digest()[:5]
        u_value = _rc4(key, _PDF_PAD)
        encrypt_dict = (
            b"<< /Filter /Standard /V 1 /R 2 /O <"
            + o_value.hex().encode()
            + b"> /U <"
            + u_value.hex().encode()
            + b"> /P "
            + str(permissions).encode()
            + b" >>"
        )

    def stream(number: int, content: bytes) -> bytes:
        if key is not None:
            object_key = hashlib.md5(key + struct.pack("<I", number)[:3] + b"\x00\x00").digest()
            content = _rc4(object_key[:10], content)
        return b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"

    width, height = media_box
    first_page = 4
    kids = " ".join(f"{first_page + 2 * i} 0 R" for i in range(page_count))
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {page_count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for index in range(page_count):
        page = index + 1
        number = first_page + 2 * index
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width:g} {height:g}] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {number + 1} 0 R >>".encode()
        )
        content = (
            f"BT /F1 24 Tf 72 720 Td (Page {page}) Tj ET\n"
            f"0 0 0 rg {page_marker_x(page)} 600 36 36 re f\n"
        ).encode()
        objects.append(stream(number + 1, content))
    if key is not None:
        objects.append(encrypt_dict)

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    trailer = b"<< /Size %d /Root 1 0 R /ID [<%s> <%s>]" % (
        len(objects) + 1,
        file_id.hex().encode(),
        file_id.hex().encode(),
    )
    if key is not None:
        trailer += b" /Encrypt %d 0 R" % len(objects)
    out += b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def corrupt_pdf() -> bytes:
    """A PDF header followed by bytes that hold no objects, no xref and no trailer."""
    noise = b"".join(hashlib.sha256(b"corrupt %d" % i).digest() for i in range(16))
    return b"%PDF-1.7\n" + noise.replace(b"obj", b"xxx") + b"\n%%EOF\n"


# --------------------------------------------------------------------------------------------
# Raster files
# --------------------------------------------------------------------------------------------


def truncated_png() -> bytes:
    data = _encode(_gradient_rgb(64, 64), "PNG")
    return data[: len(data) // 2]


def truncated_jpg() -> bytes:
    data = _encode(_gradient_rgb(64, 64), "JPEG", quality=90)
    return data[: len(data) // 2]


def image_svg() -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<rect width="10" height="10" fill="red"/></svg>\n'
    )


def one_by_one_png() -> bytes:
    return _encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG")


def one_by_20000_png() -> bytes:
    """1 pixel wide, 20000 high: black on top, white below row 10000."""
    image = Image.new("L", (1, 20000), 255)
    image.paste(0, (0, 0, 1, 10000))
    return _encode(image, "PNG")


def cmyk_jpg() -> bytes:
    return _encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)  # red


def gray16_png() -> bytes:
    """256 x 4, 16-bit greyscale; column x holds x * 257, so its high byte is x."""
    image = Image.new("I;16", (256, 4))
    image.putdata([x * 257 for _ in range(4) for x in range(256)])
    return _encode(image, "PNG")


def palette_png() -> bytes:
    """Left half palette entry 0 (red), right half entry 1 (blue)."""
    image = Image.new("P", (8, 4), 0)
    image.putpalette([*RED, *BLUE] + [0] * (256 - 2) * 3)
    image.paste(1, (4, 0, 8, 4))
    return _encode(image, "PNG")


def rgba_png() -> bytes:
    """Left pixel fully transparent with stored colour (200, 100, 50); right pixel opaque green."""
    image = Image.new("RGBA", (2, 1))
    image.putpixel((0, 0), (200, 100, 50, 0))
    image.putpixel((1, 0), (0, 255, 0, 255))
    return _encode(image, "PNG")


def la_png() -> bytes:
    return _encode(Image.new("LA", (4, 4), (128, 0)), "PNG")


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (8, 8), colour) for colour in FRAME_COLOURS]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def multipage_tiff() -> bytes:
    """Three pages of different sizes and colours: page N is (10*N) x 8 in FRAME_COLOURS[N-1]."""
    pages = [Image.new("RGB", (10 * (i + 1), 8), colour) for i, colour in enumerate(FRAME_COLOURS)]
    return _encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def exif_rotated_jpg() -> bytes:
    """Stored 40x24 with a red 8x8 marker top-left, and EXIF orientation 6 (rotate 90° clockwise).

    Displayed correctly the image is 24x40 and the marker sits in the top-right corner.
    """
    image = Image.new("RGB", EXIF_STORED_SIZE, (255, 255, 255))
    image.paste(RED, (0, 0, EXIF_MARKER, EXIF_MARKER))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(image, "JPEG", quality=95, exif=exif.tobytes())


# --------------------------------------------------------------------------------------------
# Decode bombs: small files that cost far more to decode than their size suggests (issue 20.3).
# Built in memory by the tests, never committed: some are megabytes.
# --------------------------------------------------------------------------------------------


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """``(marker, start, end)`` of each segment of a JPEG, a scan running to its next marker."""
    segments: list[tuple[int, int, int]] = []
    position = 2  # after SOI
    while position < len(data):
        marker = data[position + 1]
        if marker == 0xD9:  # EOI
            segments.append((marker, position, position + 2))
            break
        end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == 0xDA:  # entropy-coded data follows, up to the next marker
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        segments.append((marker, position, end))
        position = end
    return segments


def progressive_jpeg_bomb(size: int = 8000, repeats: int = 1000) -> bytes:
    """A ``size`` x ``size`` grey progressive JPEG with one AC scan repeated ``repeats`` times.

    Each repeated scan is about 120 bytes (one Huffman table and an end-of-band run covering
    every block) but makes the decoder walk every block of the image again.
    """
    data = _encode(Image.new("L", (size, size), 128), "JPEG", progressive=True, quality=50)
    segments = _jpeg_segments(data)
    scans = [index for index, (marker, _, _) in enumerate(segments) if marker == 0xDA]
    _, table_start, _ = segments[scans[1] - 1]  # the Huffman table before the second scan
    _, _, scan_end = segments[scans[1]]
    unit = data[table_start:scan_end]
    return data[:table_start] + unit * repeats + data[table_start:]


def many_page_tiff(pages: int = 20_000) -> bytes:
    """A little-endian TIFF of ``pages`` 1x1 grey pages, about 100 bytes each."""
    entries = 8
    ifd_size = 2 + 12 * entries + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for index in range(pages):
        ifd_at = len(out)
        pixel_at = ifd_at + ifd_size
        next_at = pixel_at + 1 if index + 1 < pages else 0
        tags = (
            (256, 3, 1),  # ImageWidth
            (257, 3, 1),  # ImageLength
            (258, 3, 8),  # BitsPerSample
            (259, 3, 1),  # Compression: none
            (262, 3, 1),  # PhotometricInterpretation: black is zero
            (273, 4, pixel_at),  # StripOffsets
            (278, 3, 1),  # RowsPerStrip
            (279, 4, 1),  # StripByteCounts
        )
        out += struct.pack("<H", entries)
        for tag, kind, value in tags:
            packed = (
                struct.pack("<H", value) + b"\x00\x00" if kind == 3 else struct.pack("<I", value)
            )
            out += struct.pack("<HHI", tag, kind, 1) + packed
        out += struct.pack("<I", next_at)
        out.append(index % 256)
    return bytes(out)


def _zeros_deflated(size: int) -> bytes:
    """A zlib stream of ``size`` zero bytes, built without compressing them all (fast for GiBs)."""
    chunk = 1 << 20
    compressor = zlib.compressobj(9)
    head = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    unit = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    # After a full flush the compressor starts afresh, so the same chunk compresses to the same
    # bytes: repeat them, then close with an empty final block and the checksum of all the data.
    full, rest = divmod(size, chunk)
    tail = zlib.compressobj(9, wbits=-15)
    ending = tail.compress(bytes(rest)) + tail.flush()
    checksum = 1
    zero_chunk = bytes(chunk)
    for _ in range(full):
        checksum = zlib.adler32(zero_chunk, checksum)
    checksum = zlib.adler32(bytes(rest), checksum)
    body = head + unit * (full - 1) if full else head[:2]
    return body + ending + struct.pack(">I", checksum)


def pdf_with_content_stream(
    content: bytes | None = None, *, inflated_zeros: int = 0, filters: int = 1
) -> bytes:
    """A one-page PDF whose content stream is ``content`` or ``inflated_zeros`` NUL bytes.

    The stream is deflated ``filters`` times (``/Filter [/FlateDecode ...]``), so a stream of
    3 GiB of zeros takes about 3 MB once deflated, and a few KB deflated twice.
    """
    stream = _zeros_deflated(inflated_zeros) if content is None else zlib.compress(content, 9)
    for _ in range(filters - 1):
        stream = zlib.compress(stream, 9)
    names = " ".join(["/FlateDecode"] * filters)
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter [%s] >>\nstream\n" % (len(stream), names.encode())
        + stream
        + b"\nendstream",
    ]
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


def wide_png_bomb(width: int = 64_000_000) -> bytes:
    """A ``width`` x 1 greyscale PNG: within the pixel limit, a few KB, and absurdly wide."""
    return png_header_only(width, 1, rows=1)


BUILDERS: dict[str, Callable[[], bytes]] = {
    "zero-byte.png": lambda: b"",
    "truncated.png": truncated_png,
    "truncated.jpg": truncated_jpg,
    "text_renamed.png": lambda: b"This is a text file that was renamed to .png by mistake.\n",
    "image.svg": image_svg,
    "decompression_bomb.png": lambda: png_header_only(100_000, 100_000),
    "1x1.png": one_by_one_png,
    "1x20000.png": one_by_20000_png,
    "cmyk.jpg": cmyk_jpg,
    "gray16.png": gray16_png,
    "palette.png": palette_png,
    "rgba.png": rgba_png,
    "la.png": la_png,
    "animated.gif": animated_gif,
    "multipage.tiff": multipage_tiff,
    "exif_rotated.jpg": exif_rotated_jpg,
    "three_pages.pdf": pdf_bytes,
    "corrupt.pdf": corrupt_pdf,
    "encrypted.pdf": lambda: pdf_bytes(1, user_password=b"secret"),
}

DESCRIPTIONS: dict[str, str] = {
    "zero-byte.png": "empty file -> ImageDecodeError",
    "truncated.png": "first half of a valid PNG -> ImageDecodeError",
    "truncated.jpg": "first half of a valid JPEG -> ImageDecodeError",
    "text_renamed.png": "plain text with a .png name -> ImageDecodeError (looks like text)",
    "image.svg": "vector image -> ImageDecodeError (rasterize it first)",
    "decompression_bomb.png": "declares 100000x100000 in a few hundred bytes -> ImageTooLargeError",
    "1x1.png": "smallest valid image",
    "1x20000.png": "extreme aspect ratio, valid",
    "cmyk.jpg": "CMYK JPEG -> RGB red",
    "gray16.png": "16-bit grey gradient -> 0..255, not clipped to white",
    "palette.png": "P mode -> palette colours",
    "rgba.png": "transparent pixel keeps its stored colour (alpha dropped, not composited)",
    "la.png": "grey + alpha -> grey replicated",
    "animated.gif": "3 frames red/green/blue -> first frame (red)",
    "multipage.tiff": "3 pages of sizes 10x8, 20x8, 30x8 (red/green/blue)",
    "exif_rotated.jpg": "EXIF orientation 6; marker ends top-right after rotation",
    "three_pages.pdf": "3 pages, 'Page N' and a black square at x = 72*N pt",
    "corrupt.pdf": "PDF header then noise -> PDFError",
    "encrypted.pdf": "password 'secret' (RC4 40-bit) -> PDFError",
}


def build(directory: Path | None = None, names: Sequence[str] | None = None) -> dict[str, bytes]:
    """Build the corpus and, when ``directory`` is given, write it there; returns name -> bytes."""
    files = {name: BUILDERS[name]() for name in (names or BUILDERS)}
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (directory / name).write_bytes(data)
    return files


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    written = build(target)
    total = sum(len(data) for data in written.values())
    for name, data in written.items():
        print(f"{len(data):>8}  {name}")
    print(f"{total:>8}  total bytes in {target}")
