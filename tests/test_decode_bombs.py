"""Decode bombs that pass the byte limit (issue 20.3): each is refused before the costly work.

The bombs are built in memory by tests/bad_inputs/make_corpus.py (some are megabytes; none is
committed). Peak memory is measured in a fresh interpreter that only loads the bomb; time is
never asserted in seconds: the concurrency tests check instead that a small image is decoded
while a slow (but allowed) input is being handled.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from mississippi_tools.errors import ImageTooLargeError
from mississippi_tools.images import ImageLimits, count_pages, iter_pages, load_image
from mississippi_tools.pdf import check_streams
from tests.support import wait_until

TWO_GIB = 2 * 1024**3
ROOT = Path(__file__).resolve().parents[1]

# Load the bomb through each entry point, in a fresh interpreter, and report what happened and
# the peak resident memory (the interpreter with Pillow and pypdfium2 loaded is about 100 MB).
_CHILD = """
import json, sys
from mississippi_tools.errors import MississippiError
from mississippi_tools.images import count_pages, iter_pages, load_image

path = sys.argv[1]
outcomes = {}
for name, call in (
    ("load_image", lambda: load_image(path)),
    ("load_image page 1", lambda: load_image(path, page=1)),
    ("count_pages", lambda: count_pages(path)),
    ("iter_pages", lambda: list(iter_pages(path))),
):
    try:
        call()
        outcomes[name] = "accepted"
    except MississippiError as error:
        outcomes[name] = type(error).__name__
# VmHWM belongs to this program's memory map, made new by exec; ru_maxrss would count the
# parent's pages that the forked child mapped before exec (gigabytes in a full test run).
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) * 1024
print(json.dumps({"outcomes": outcomes, "peak": peak}))
"""


def _bombs(corpus: ModuleType) -> dict[str, Callable[[], bytes]]:
    return {
        # 8000x8000, one 117-byte scan repeated 1000 times: minutes of decoding
        "progressive.jpg": lambda: corpus.progressive_jpeg_bomb(),
        # 20,000 one-pixel pages in 2 MB: seconds just to count them with Pillow
        "pages.tiff": lambda: corpus.many_page_tiff(20_000),
        # 64,000,000 x 1 in 62 KB: within the pixel limit, gigabytes to resize
        "wide.png": lambda: corpus.wide_png_bomb(),
        # a 3 MB content stream that inflates to 3 GiB: PDFium held 4.7 GiB
        "zeros.pdf": lambda: corpus.pdf_with_content_stream(inflated_zeros=3 * 1024**3),
        # the same deflated twice: 8 KB
        "zeros-twice.pdf": lambda: corpus.pdf_with_content_stream(
            inflated_zeros=3 * 1024**3, filters=2
        ),
        # 52 MB of drawing operators in 100 KB: PDFium took 6 s and 1.5 GB to parse them
        "operators.pdf": lambda: corpus.pdf_with_content_stream(b"0 0 1 1 re f\n" * (4 << 20)),
    }


BOMB_NAMES = [
    "progressive.jpg",
    "pages.tiff",
    "wide.png",
    "zeros.pdf",
    "zeros-twice.pdf",
    "operators.pdf",
]


@pytest.mark.parametrize("name", BOMB_NAMES)
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc")
def test_bomb_is_refused_with_bounded_memory(corpus: ModuleType, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(_bombs(corpus)[name]())
    assert path.stat().st_size < 4 * 1024 * 1024  # all of them pass the 50 MB byte limit
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=True,
    )
    report = json.loads(done.stdout)
    outcomes = report["outcomes"]
    if name.endswith((".jpg", ".png")):  # one page: counted without decoding anything
        assert outcomes.pop("count_pages") == "accepted"
    assert set(outcomes.values()) == {"ImageTooLargeError"}, report
    assert report["peak"] < TWO_GIB, report
    assert done.stderr == ""  # nothing printed: no warning, no log record


def test_bomb_messages_name_the_limit_to_raise(corpus: ModuleType) -> None:
    knobs = {
        "progressive.jpg": "max_jpeg_scans",
        "pages.tiff": "max_pages",
        "wide.png": "max_side",
        "zeros.pdf": "max_pdf_stream_bytes",
        "operators.pdf": "max_pdf_stream_bytes",
    }
    for name, knob in knobs.items():
        with pytest.raises(ImageTooLargeError, match=f"ImageLimits\\({knob}=") as info:
            load_image(_bombs(corpus)[name]())
        assert "bytes input" in str(info.value)


# --------------------------------------------------------------------------------------------
# Each limit: what it refuses, that ordinary files pass, that it can be raised
# --------------------------------------------------------------------------------------------


def test_jpeg_scan_limit_scales_with_the_image(corpus: ModuleType) -> None:
    ordinary = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(ordinary, "JPEG", progressive=True)
    assert load_image(ordinary.getvalue()).size == (64, 48)
    # 1006 scans of a 500x500 image are fewer passes over 64 Mpx than 40 full-size scans.
    assert load_image(corpus.progressive_jpeg_bomb(size=500, repeats=1000)).size == (500, 500)
    tight = ImageLimits(max_pixels=500 * 500, max_jpeg_scans=40)
    with pytest.raises(ImageTooLargeError, match="more than 40 times"):
        load_image(corpus.progressive_jpeg_bomb(size=500, repeats=1000), limits=tight)
    loose = ImageLimits(max_pixels=500 * 500, max_jpeg_scans=2000)
    assert load_image(corpus.progressive_jpeg_bomb(size=500, repeats=1000), limits=loose)


def test_page_limit_counts_tiff_pages_lazily(corpus: ModuleType) -> None:
    data = corpus.many_page_tiff(50)
    assert count_pages(data) == 50
    assert load_image(data, page=50).image.getpixel((0, 0)) == (49, 49, 49)
    limits = ImageLimits(max_pages=49)
    for call in (
        lambda: count_pages(data, limits=limits),
        lambda: load_image(data, page=1, limits=limits),
        lambda: iter_pages(data, limits=limits),
    ):
        with pytest.raises(ImageTooLargeError, match="limit is 49 pages"):
            call()
    assert count_pages(data, limits=ImageLimits(max_pages=50)) == 50


def test_page_limit_applies_to_pdfs(corpus: ModuleType) -> None:
    data = corpus.pdf_bytes(3)
    assert count_pages(data, limits=ImageLimits(max_pages=3)) == 3
    with pytest.raises(ImageTooLargeError, match="a PDF with 3 pages; the limit is 2 pages"):
        count_pages(data, limits=ImageLimits(max_pages=2))


def test_tiff_page_chain_with_a_loop_ends() -> None:
    from mississippi_tools.image_limits import tiff_page_count as _tiff_page_count

    header = b"II*\x00" + (8).to_bytes(4, "little")
    ifd = (0).to_bytes(2, "little") + (8).to_bytes(4, "little")  # no entries, next: itself
    assert _tiff_page_count(header + ifd, stop_after=100) == 1


def test_side_limit(corpus: ModuleType) -> None:
    strip = corpus.png_header_only(32_768, 1, rows=1)
    assert load_image(strip).size == (32_768, 1)
    with pytest.raises(ImageTooLargeError, match="longest side may be 32,767 pixels"):
        load_image(strip, limits=ImageLimits(max_side=32_767))
    with pytest.raises(ImageTooLargeError, match="longest side"):
        load_image(Image.new("L", (1, 40_000)))  # a PIL image in memory too
    assert load_image(corpus.wide_png_bomb(40_000), limits=ImageLimits(max_side=40_000))


def test_pdf_pages_are_rendered_within_the_side_limit(corpus: ModuleType) -> None:
    data = corpus.pdf_bytes(1, media_box=(14_400, 72))  # the largest page PDF allows, 200 x 1 in
    loaded = load_image(data, limits=ImageLimits(max_side=4_000))
    assert max(loaded.size) <= 4_000
    assert loaded.size[0] > 3_900


@pytest.mark.parametrize("filters", [1, 2])
def test_pdf_stream_limit(corpus: ModuleType, filters: int) -> None:
    ordinary = corpus.pdf_with_content_stream(b"0 0 1 1 re f\n" * 1000, filters=filters)
    assert load_image(ordinary).format == "PDF"
    big = corpus.pdf_with_content_stream(inflated_zeros=2 * 1024 * 1024, filters=filters)
    with pytest.raises(ImageTooLargeError, match="inflates to more than 1,048,576 bytes"):
        load_image(big, limits=ImageLimits(max_pdf_stream_bytes=1024 * 1024))
    assert load_image(big, limits=ImageLimits(max_pdf_stream_bytes=4 * 1024 * 1024))


def _with_filter(content_stream: bytes, filters: str) -> bytes:
    """A minimal stream object as it sits in a PDF file."""
    return (
        b"4 0 obj\n<< /Length %d /Filter %s >>\nstream\n" % (len(content_stream), filters.encode())
        + content_stream
        + b"\nendstream\nendobj\n"
    )


@pytest.mark.parametrize(
    ("filters", "encoded"),
    [
        ("/RunLengthDecode", bytes([129, 0]) * 9000),  # 128 zeros per 2 bytes
        ("/ASCIIHexDecode", b"00" * 1_100_000 + b">"),
        ("/ASCII85Decode", b"z" * 300_000 + b"~>"),  # "z" is four zero bytes
        ("[/ASCIIHexDecode /FlateDecode]", zlib.compress(bytes(2_000_000)).hex().encode()),
        ("[/ASCII85Decode /RunLengthDecode]", base64.a85encode(bytes([129, 0]) * 9000) + b"~>"),
    ],
)
def test_every_measured_filter_counts(filters: str, encoded: bytes) -> None:
    stream = _with_filter(encoded, filters)
    check_streams(stream, max_stream_bytes=4 * 1024 * 1024)
    with pytest.raises(ImageTooLargeError, match="inflates to more than 1,000,000 bytes"):
        check_streams(stream, max_stream_bytes=1_000_000)


def test_lzw_streams_are_measured() -> None:
    # PDF LZW (MSB first, early change) of 8 zero bytes followed by "end of data":
    # codes 256 (clear), 0, 258 ("00"), 259 ("000"), 0 ... written by hand, 9 bits each.
    codes = [256, 0, 258, 259, 0, 257]
    bits = "".join(format(code, "09b") for code in codes)
    encoded = int(bits + "0" * (-len(bits) % 8), 2).to_bytes((len(bits) + 7) // 8, "big")
    from mississippi_tools.pdf import _lzw

    assert b"".join(_lzw(iter([encoded]))) == bytes(7)
    stream = _with_filter(encoded, "/LZWDecode")
    check_streams(stream, max_stream_bytes=7)
    with pytest.raises(ImageTooLargeError):
        check_streams(stream, max_stream_bytes=6)


def test_image_streams_are_left_to_pdfium() -> None:
    image = (
        b"5 0 obj\n<< /Type /XObject /Subtype /Image /Width 4000 /Height 4000 "
        b"/ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode >>\nstream\n"
        + zlib.compress(bytes(16_000_000))
        + b"\nendstream\nendobj\n"
    )
    check_streams(image, max_stream_bytes=1_000_000)


def test_many_streams_share_one_total() -> None:
    one = _with_filter(zlib.compress(bytes(900_000)), "/FlateDecode")
    check_streams(one * 32, max_stream_bytes=1_000_000)
    with pytest.raises(ImageTooLargeError, match="in all"):
        check_streams(one * 40, max_stream_bytes=1_000_000)


# --------------------------------------------------------------------------------------------
# A slow input never stalls a small one
# --------------------------------------------------------------------------------------------


def _inside(thread: threading.Thread, function: str) -> bool:
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def _small_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


def _while_busy(slow: Callable[[], object], inside: str) -> None:
    """Decode a small image while ``slow`` runs in another thread and is inside ``inside``."""
    small = _small_png()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            slow()
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    wait_until(lambda: _inside(worker, inside) or not worker.is_alive(), what="the slow work")
    assert worker.is_alive(), "the slow input finished before the small one could start"
    assert load_image(small).size == (8, 8)
    assert _inside(worker, inside), "the small image waited for the slow input"
    worker.join(timeout=120)
    assert not errors


def test_a_slow_tiff_does_not_stall_other_decodes(corpus: ModuleType) -> None:
    # Seeking to the last of 10,000 pages makes Pillow parse every directory on the way.
    data = corpus.many_page_tiff(10_000)
    _while_busy(lambda: load_image(data, page=10_000), inside="_seek")


def test_a_slow_pdf_page_does_not_stall_image_decodes(corpus: ModuleType) -> None:
    # Within the stream limit, PDFium still takes a while to parse a million rectangles; it
    # holds the PDFium lock (PDFium is not thread-safe), which image decoding never takes.
    data = corpus.pdf_with_content_stream(b"0 0 1 1 re f\n" * 1_000_000)
    _while_busy(lambda: load_image(data), inside="__getitem__")
