from __future__ import annotations

import base64
import contextlib
import io
import random
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mississippi_tools import images
from mississippi_tools.errors import (
    ImageDecodeError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidInputError,
    MississippiError,
)
from mississippi_tools.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageLimits,
    LoadedImage,
    count_pages,
    is_document,
    iter_pages,
    load_image,
    sniff_format,
)
from mississippi_tools.sources import SourcePolicy

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 8) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# --------------------------------------------------------------------------------------------
# The corpus: each file gives the documented error or the right pixels
# --------------------------------------------------------------------------------------------


def test_zero_byte_file_is_a_decode_error(bad_inputs: Path) -> None:
    with pytest.raises(ImageDecodeError, match=r"empty \(0 bytes\)") as info:
        load_image(bad_inputs / "zero-byte.png")
    assert info.value.source == str(bad_inputs / "zero-byte.png")


@pytest.mark.parametrize("name", ["truncated.png", "truncated.jpg"])
def test_truncated_files_are_decode_errors(bad_inputs: Path, name: str) -> None:
    with pytest.raises(ImageDecodeError, match="truncated or corrupt") as info:
        load_image(bad_inputs / name)
    assert info.value.__cause__ is not None  # the decoder's exception is kept as the cause
    assert name in str(info.value)


def test_text_renamed_to_png_says_it_is_text_without_quoting_it(bad_inputs: Path) -> None:
    with pytest.raises(ImageDecodeError, match=r"looks like text;") as info:
        load_image(bad_inputs / "text_renamed.png")
    assert "text file" not in str(info.value)  # the file says "This is a text file ..."


def test_svg_says_rasterize_first(bad_inputs: Path) -> None:
    with pytest.raises(ImageDecodeError, match="SVG is a vector format; rasterize it to PNG first"):
        load_image(bad_inputs / "image.svg")


def test_decompression_bomb_is_refused_before_decoding(bad_inputs: Path) -> None:
    path = bad_inputs / "decompression_bomb.png"
    assert path.stat().st_size < 4096
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImageTooLargeError, match="10,000,000,000 pixels") as info:
            load_image(path)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 2 * 1024 * 1024  # decoding would need 10 GB
    assert "ImageLimits(max_pixels=" in str(info.value)


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (9_000, 9_000),  # over our 64 M default, under Pillow's own warning threshold
        (10_000, 10_000),  # in Pillow's warning band: the warning must not escape
    ],
)
def test_header_only_bombs_hit_our_pixel_check(corpus: ModuleType, width: int, height: int) -> None:
    data = corpus.png_header_only(width, height)
    with pytest.raises(ImageTooLargeError, match=f"{width}x{height} = {width * height:,} pixels"):
        load_image(data)


def test_pixel_limit_is_configurable(bad_inputs: Path) -> None:
    with pytest.raises(ImageTooLargeError, match="1x20000 = 20,000 pixels; the limit is 10,000"):
        load_image(bad_inputs / "1x20000.png", limits=ImageLimits(max_pixels=10_000))


def test_extreme_sizes_are_valid(bad_inputs: Path) -> None:
    tiny = load_image(bad_inputs / "1x1.png")
    assert tiny.size == (1, 1)
    assert tiny.image.getpixel((0, 0)) == (10, 20, 30)
    tall = load_image(bad_inputs / "1x20000.png")
    assert tall.size == (1, 20000)
    assert tall.image.mode == "RGB"
    assert tall.image.getpixel((0, 9999)) == (0, 0, 0)
    assert tall.image.getpixel((0, 10000)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb(bad_inputs: Path) -> None:
    loaded = load_image(bad_inputs / "cmyk.jpg")
    assert loaded.image.mode == "RGB"
    assert loaded.format == "JPEG"
    assert near(loaded.image.getpixel((8, 8)), RED)


def test_gray16_gradient_spans_0_to_255(bad_inputs: Path) -> None:
    loaded = load_image(bad_inputs / "gray16.png")
    assert loaded.size == (256, 4)
    row = [loaded.image.getpixel((x, 2)) for x in range(256)]
    assert row == [(x, x, x) for x in range(256)]  # value >> 8, not clipped to white


def test_palette_uses_the_palette(bad_inputs: Path) -> None:
    loaded = load_image(bad_inputs / "palette.png")
    assert loaded.image.getpixel((0, 0)) == RED
    assert loaded.image.getpixel((7, 3)) == BLUE


def test_rgba_drops_alpha_without_compositing(bad_inputs: Path) -> None:
    loaded = load_image(bad_inputs / "rgba.png")
    assert loaded.image.mode == "RGB"
    assert loaded.image.getpixel((0, 0)) == (200, 100, 50)  # transparent, keeps stored colour
    assert loaded.image.getpixel((1, 0)) == GREEN


def test_la_replicates_grey(bad_inputs: Path) -> None:
    assert load_image(bad_inputs / "la.png").image.getpixel((1, 1)) == (128, 128, 128)


def test_animated_gif_gives_first_frame(bad_inputs: Path) -> None:
    loaded = load_image(bad_inputs / "animated.gif")
    assert (loaded.size, loaded.format, loaded.page) == ((8, 8), "GIF", None)
    assert loaded.image.getpixel((4, 4)) == RED
    assert count_pages(bad_inputs / "animated.gif") == 1
    with pytest.raises(InvalidInputError, match="single image"):
        load_image(bad_inputs / "animated.gif", page=2)


def test_animated_webp_and_apng_give_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in (BLUE, RED)]
    for fmt in ("WEBP", "PNG"):
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], lossless=True)
        loaded = load_image(data)
        assert loaded.format == fmt
        assert near(loaded.image.getpixel((4, 4)), BLUE)


def test_multipage_tiff_needs_a_page(bad_inputs: Path) -> None:
    path = bad_inputs / "multipage.tiff"
    with pytest.raises(InvalidInputError, match="TIFF with 3 pages; choose one page"):
        load_image(path)
    second = load_image(path, page=2)
    assert (second.size, second.page, second.format) == ((20, 8), 2, "TIFF")
    assert second.image.getpixel((0, 0)) == GREEN
    with pytest.raises(InvalidInputError, match=r"page 4 is out of range.*has 3 pages") as info:
        load_image(path, page=4)
    assert type(info.value) is InvalidInputError  # not PDFError
    assert count_pages(path) == 3
    assert is_document(path.read_bytes())


def test_multipage_tiff_pages_iterate(bad_inputs: Path) -> None:
    path = bad_inputs / "multipage.tiff"
    pages = list(iter_pages(path))
    assert [(p.page, p.size, p.image.getpixel((0, 0))) for p in pages] == [
        (1, (10, 8), RED),
        (2, (20, 8), GREEN),
        (3, (30, 8), BLUE),
    ]
    assert [p.page for p in iter_pages(path, pages="3,1")] == [3, 1]
    assert [p.page for p in iter_pages(path, pages=[2])] == [2]
    with pytest.raises(InvalidInputError, match="has 3 pages"):
        iter_pages(path, pages="2-5")  # validated when called, before iterating


def test_exif_orientation_is_applied(bad_inputs: Path, corpus: ModuleType) -> None:
    width, height = corpus.EXIF_STORED_SIZE
    loaded = load_image(bad_inputs / "exif_rotated.jpg")
    assert loaded.size == (height, width)  # rotated 90° clockwise for display
    marker = corpus.EXIF_MARKER
    assert near(loaded.image.getpixel((height - marker // 2, marker // 2)), RED)  # top-right
    assert near(loaded.image.getpixel((marker // 2, marker // 2)), (255, 255, 255))
    # A PIL image passed in is turned the same way, and the caller's image is left alone.
    with Image.open(bad_inputs / "exif_rotated.jpg") as opened:
        from_pil = load_image(opened)
        assert opened.size == (width, height)
    assert from_pil.size == (height, width)
    assert from_pil.content_hash == loaded.content_hash


def test_corrupt_exif_leaves_the_image_as_stored() -> None:
    image = Image.new("RGB", (6, 4), RED)
    data = encode(image, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\x01")
    loaded = load_image(data)
    assert loaded.size == (6, 4)


def test_every_corpus_file_is_either_an_image_or_a_typed_error(bad_inputs: Path) -> None:
    outcomes = {}
    for path in sorted(bad_inputs.iterdir()):
        if path.suffix == ".py":
            continue
        try:
            outcomes[path.name] = type(load_image(path, page=1)).__name__
        except MississippiError as error:
            outcomes[path.name] = type(error).__name__
    assert outcomes == {
        "1x1.png": "LoadedImage",
        "1x20000.png": "LoadedImage",
        "animated.gif": "LoadedImage",
        "cmyk.jpg": "LoadedImage",
        "corrupt.pdf": "PDFError",
        "decompression_bomb.png": "ImageTooLargeError",
        "encrypted.pdf": "PDFError",
        "exif_rotated.jpg": "LoadedImage",
        "gray16.png": "LoadedImage",
        "image.svg": "ImageDecodeError",
        "la.png": "LoadedImage",
        "multipage.tiff": "LoadedImage",
        "palette.png": "LoadedImage",
        "rgba.png": "LoadedImage",
        "text_renamed.png": "ImageDecodeError",
        "three_pages.pdf": "LoadedImage",
        "truncated.jpg": "ImageDecodeError",
        "truncated.png": "ImageDecodeError",
        "zero-byte.png": "ImageDecodeError",
    }


def test_corpus_is_small_and_regenerates_deterministically(
    bad_inputs: Path, corpus: ModuleType, tmp_path: Path
) -> None:
    committed = {p.name for p in bad_inputs.iterdir() if p.suffix != ".py"}
    assert committed == set(corpus.BUILDERS) == set(corpus.DESCRIPTIONS)
    assert sum(p.stat().st_size for p in bad_inputs.iterdir() if p.is_file()) < 300 * 1024
    first = corpus.build(tmp_path / "a")
    assert corpus.build(tmp_path / "b") == first
    # Hand-written files do not depend on encoder versions: they match the committed bytes.
    for name in ("zero-byte.png", "text_renamed.png", "image.svg", "decompression_bomb.png"):
        assert (bad_inputs / name).read_bytes() == first[name]
    for name in ("three_pages.pdf", "corrupt.pdf", "encrypted.pdf"):
        assert (bad_inputs / name).read_bytes() == first[name]


# --------------------------------------------------------------------------------------------
# Input kinds
# --------------------------------------------------------------------------------------------


def test_every_input_kind_gives_the_same_pixels(bad_inputs: Path) -> None:
    path = bad_inputs / "palette.png"
    data = path.read_bytes()
    b64 = base64.b64encode(data).decode()
    inputs: list[object] = [
        path,
        str(path),
        data,
        bytearray(data),
        memoryview(data),
        b64,
        "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76)),  # MIME line breaks
        base64.urlsafe_b64encode(data).decode().rstrip("="),
        f"data:image/png;base64,{b64}",
        Image.open(io.BytesIO(data)),
    ]
    loaded = [load_image(item) for item in inputs]  # type: ignore[arg-type]
    assert len({item.content_hash for item in loaded}) == 1
    assert [item.source for item in loaded[:6]] == [
        str(path),
        str(path),
        "bytes",
        "bytes",
        "bytes",
        "base64",
    ]
    assert loaded[8].source == "data URI"
    assert loaded[9].source == "PIL image"


def test_hash_depends_on_pixels_not_encoding() -> None:
    image = Image.new("RGB", (5, 3))
    image.putpixel((2, 1), (9, 8, 7))
    hashes = {load_image(encode(image, fmt)).content_hash for fmt in ("PNG", "BMP", "TIFF")}
    hashes.add(load_image(image).content_hash)
    assert len(hashes) == 1
    other = image.copy()
    other.putpixel((0, 0), (0, 0, 1))
    assert load_image(other).content_hash not in hashes
    # Same bytes, other shape: the size is part of the hash.
    assert load_image(image.resize((3, 5))).content_hash not in hashes
    assert (
        load_image(Image.new("RGB", (15, 1))).content_hash
        != load_image(Image.new("RGB", (1, 15))).content_hash
    )


def test_hash_of_a_large_image_is_the_hash_of_its_bytes() -> None:
    # Big enough to be hashed in strips; the digest must equal a one-shot digest.
    import hashlib

    image = Image.frombytes("RGB", (2000, 1000), bytes(range(256)) * 23438 + bytes(32))
    expected = hashlib.blake2b(b"2000x1000:", digest_size=16)
    expected.update(image.tobytes())
    assert load_image(image).content_hash == expected.hexdigest()


def test_webp_and_bmp_load() -> None:
    image = Image.new("RGB", (4, 4), BLUE)
    for fmt in ("WEBP", "BMP"):
        loaded = load_image(encode(image, fmt, **({"lossless": True} if fmt == "WEBP" else {})))
        assert loaded.format == fmt
        assert loaded.image.getpixel((1, 1)) == BLUE


def test_missing_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageNotFoundError, match=r"nope.png") as info:
        load_image(str(missing))
    assert info.value.path == str(missing)
    assert "base64" not in str(info.value)  # it does not look like base64: not mentioned


def test_base64_looking_string_that_is_not_an_image_says_both() -> None:
    text = base64.b64encode(b"just some text, long enough to look like base64 data").decode()
    with pytest.raises(ImageNotFoundError, match=r"not base64 image data either.*text"):
        load_image(text)
    garbage = "A" * 63 + "*" + "B" * 10
    with pytest.raises(ImageNotFoundError):
        load_image(garbage)


def test_very_long_strings_are_not_os_errors() -> None:
    for text in ("x" * 100_000, "a/" * 50_000, "ab\x00cd", "é" * 5000):
        with pytest.raises(ImageNotFoundError) as info:
            load_image(text)
        assert len(str(info.value)) < 600  # the value is shortened in the message


def test_data_uris() -> None:
    svg = "data:image/svg+xml,%3Csvg%20xmlns%3D%22http%3A//www.w3.org/2000/svg%22/%3E"
    with pytest.raises(ImageDecodeError, match="SVG"):
        load_image(svg)
    with pytest.raises(ImageDecodeError, match="media type 'text/plain'"):
        load_image("data:text/plain;base64,aGVsbG8=")
    with pytest.raises(ImageDecodeError, match="not valid base64"):
        load_image("data:image/png;base64,***")
    with pytest.raises(ImageDecodeError, match="no ','"):
        load_image("data:image/png;base64")
    with pytest.raises(ImageDecodeError, match="empty"):
        load_image("data:image/png;base64,")
    png = encode(Image.new("RGB", (2, 2), GREEN), "PNG")
    uri = "DATA:image/PNG;BASE64," + base64.b64encode(png).decode()
    assert load_image(uri).image.getpixel((1, 1)) == GREEN


def test_urls_are_refused_by_default() -> None:
    with pytest.raises(PermissionError, match=r"SourcePolicy\(allow_urls=True\)"):
        load_image("https://example.com/a.png")


def test_other_url_schemes_are_invalid() -> None:
    with pytest.raises(InvalidInputError, match="unsupported URL scheme 'file'"):
        load_image("file:///etc/passwd")


def test_unsupported_input_type() -> None:
    with pytest.raises(InvalidInputError, match="unsupported image input of type int"):
        load_image(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "looks_like"),
    [
        (b"<!DOCTYPE html><html><body>Not found</body></html>", "an HTML page"),
        (b'{"error": "nope"}', "JSON text"),
        (b"PK\x03\x04" + bytes(30), "a ZIP archive"),
        (b"\x00\x00\x00\x18ftypheic" + bytes(20), "an ISO media file"),
        (b"\x1f\x8b\x08\x00" + bytes(20), "gzip"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", "PostScript"),
        (b"\x00\x01\x02\x03\xfe\xfd", "binary data of an unknown format"),
        (b"BMW owners' club\nmembers: 12\n", "text"),  # "BM" alone does not make a BMP
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "a RIFF file that is not WEBP"),
    ],
)
def test_unsupported_data_says_what_it_looks_like(data: bytes, looks_like: str) -> None:
    with pytest.raises(ImageDecodeError, match=f"looks like {looks_like}") as info:
        load_image(data)
    message = str(info.value)
    assert data[:4].hex(" ") not in message and data[:4].hex() not in message
    with pytest.raises(ImageDecodeError):
        sniff_format(data)


def test_byte_limit(bad_inputs: Path, tmp_path: Path) -> None:
    data = (bad_inputs / "palette.png").read_bytes()
    limits = ImageLimits(max_bytes=100)
    pattern = f"{len(data):,} bytes; the limit is 100 bytes.*ImageLimits\\(max_bytes="
    with pytest.raises(ImageTooLargeError, match=pattern):
        load_image(data, limits=limits)
    with pytest.raises(ImageTooLargeError, match=pattern):
        load_image(bad_inputs / "palette.png", limits=limits)
    with pytest.raises(ImageTooLargeError, match="decodes to about"):
        load_image(base64.b64encode(data).decode(), limits=limits)
    with pytest.raises(ImageTooLargeError, match="decodes to about"):
        load_image("data:image/png;base64," + base64.b64encode(data).decode(), limits=limits)


def test_limits_validate() -> None:
    assert ImageLimits() == ImageLimits(DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="positive int"):
            ImageLimits(max_pixels=bad)  # type: ignore[arg-type]


def test_page_argument_is_validated(bad_inputs: Path) -> None:
    with pytest.raises(InvalidInputError, match="1-based"):
        load_image(bad_inputs / "1x1.png", page=0)
    with pytest.raises(InvalidInputError, match="page must be an int"):
        load_image(bad_inputs / "1x1.png", page="1")  # type: ignore[arg-type]
    assert load_image(bad_inputs / "1x1.png", page=1).page is None
    with pytest.raises(InvalidInputError, match="single image"):
        load_image(bad_inputs / "1x1.png", page=2)


def test_plain_image_is_one_page(bad_inputs: Path) -> None:
    path = bad_inputs / "1x1.png"
    assert [p.page for p in iter_pages(path)] == [None]
    assert [p.page for p in iter_pages(path, pages="1")] == [None]
    with pytest.raises(InvalidInputError, match="has 1 page"):
        iter_pages(path, pages="2")
    assert count_pages(path) == 1
    assert not is_document(path.read_bytes())
    assert not is_document(b"")


# --------------------------------------------------------------------------------------------
# PIL images and LoadedImage inputs
# --------------------------------------------------------------------------------------------


def test_loaded_image_passes_through() -> None:
    loaded = load_image(Image.new("RGB", (3, 3)))
    assert load_image(loaded) is loaded
    assert list(iter_pages(loaded)) == [loaded]
    assert count_pages(loaded) == 1
    with pytest.raises(InvalidInputError):
        load_image(loaded, page=2)
    with pytest.raises(ImageTooLargeError):
        load_image(loaded, limits=ImageLimits(max_pixels=4))


def test_loaded_image_is_hashable_and_compares_by_content() -> None:
    first = load_image(Image.new("RGB", (3, 3), RED))
    second = load_image(encode(Image.new("RGB", (3, 3), RED), "PNG"))
    again = load_image(Image.new("RGB", (3, 3), RED))
    assert first == again
    assert first != second  # other source and format
    assert len({first, again, second}) == 2
    with pytest.raises(AttributeError):
        first.page = 3  # type: ignore[misc]


def test_pil_input_is_copied_and_converted() -> None:
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 0))
    loaded = load_image(rgba)
    assert loaded.image.mode == "RGB"
    assert loaded.image.getpixel((0, 0)) == (10, 20, 30)
    assert rgba.mode == "RGBA"
    rgb = Image.new("RGB", (2, 2))
    assert load_image(rgb).image is not rgb
    with pytest.raises(ImageTooLargeError):
        load_image(Image.new("L", (100, 100)), limits=ImageLimits(max_pixels=9999))


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_sixteen_bit_modes_keep_the_high_byte(mode: str) -> None:
    values = [0, 255, 256, 0x1234, 0x8000, 0xFFFF]
    image = Image.new(mode, (len(values), 1))
    image.putdata(values)
    loaded = load_image(image)
    assert [loaded.image.getpixel((x, 0))[0] for x in range(len(values))] == [
        v >> 8 for v in values
    ]


def test_int_and_float_modes_scale_by_their_range() -> None:
    ints = Image.new("I", (3, 1))
    ints.putdata([-1000, 0, 1000])
    assert [load_image(ints).image.getpixel((x, 0))[0] for x in range(3)] == [0, 127, 255]
    floats = Image.new("F", (3, 1))
    floats.putdata([0.0, 0.5, 1.0])
    assert [load_image(floats).image.getpixel((x, 0))[0] for x in range(3)] == [0, 127, 255]
    flat = Image.new("F", (2, 2), 7.0)
    assert load_image(flat).image.getpixel((0, 0)) == (7, 7, 7)
    tiff = encode(floats, "TIFF")
    assert load_image(tiff).image.getpixel((2, 0)) == (255, 255, 255)


def test_float_with_infinity_is_a_decode_error() -> None:
    image = Image.new("F", (2, 1))
    image.putdata([0.0, float("inf")])
    with pytest.raises(ImageDecodeError, match="non-finite"):
        load_image(image)
    image.putdata([0.0, float("nan")])  # Pillow's extrema skip NaN; it decodes as black
    assert load_image(image).image.getpixel((1, 0)) == (0, 0, 0)


def test_pillow_warnings_do_not_escape() -> None:
    # A palette PNG whose tRNS holds several entries makes convert("RGB") warn in Pillow.
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *BLUE] + [0] * 762)
    image.putpixel((1, 0), 1)
    data = encode(image, "PNG", transparency=bytes([0, 128]))
    assert isinstance(Image.open(io.BytesIO(data)).info["transparency"], bytes)
    loaded = load_image(data)  # pytest turns warnings into errors
    assert loaded.image.getpixel((1, 0)) == BLUE


_WARNINGS_SCRIPT = """
import sys, threading, warnings
from mississippi_tools.images import load_image

def old_api():
    warnings.warn("old_api is deprecated", FutureWarning, stacklevel=1)

def mine():
    warnings.warn("a warning of the application", UserWarning, stacklevel=1)

def decode_all():
    for path in sys.argv[1:]:
        load_image(path)

old_api()
for _ in range(20):
    decode_all()
    old_api()
    mine()

def work():
    for _ in range(10):
        decode_all()
        old_api()

threads = [threading.Thread(target=work) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("done")
"""


def test_other_warnings_are_shown_once_across_decodes(tmp_path: Path) -> None:
    # Files that make Pillow warn: a palette with tRNS bytes (convert), a corrupt EXIF block.
    palette = Image.new("P", (2, 1))
    palette.putpalette([*RED, *BLUE] + [0] * 762)
    (tmp_path / "palette.png").write_bytes(encode(palette, "PNG", transparency=bytes([0, 128])))
    corrupt_exif = encode(Image.new("RGB", (4, 4)), "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff")
    (tmp_path / "exif.jpg").write_bytes(corrupt_exif)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _WARNINGS_SCRIPT,
            str(tmp_path / "palette.png"),
            str(tmp_path / "exif.jpg"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "done"
    # Python's default: each warning shown once per place; decoding must not make it forget.
    assert done.stderr.count("FutureWarning: old_api is deprecated") == 1, done.stderr
    assert done.stderr.count("UserWarning: a warning of the application") == 1, done.stderr
    assert "PIL" not in done.stderr  # Pillow's own warnings about the files are not printed


def test_pillow_filter_comes_back_after_other_code_resets_the_filters() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *BLUE] + [0] * 762)
    image.putpixel((1, 0), 1)
    data = encode(image, "PNG", transparency=bytes([0, 128]))
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("error")  # what an application or a test runner may do
        assert load_image(data).image.getpixel((1, 0)) == BLUE
        with pytest.warns(UserWarning, match="not from Pillow"):
            warnings.warn("not from Pillow", UserWarning, stacklevel=1)


# --------------------------------------------------------------------------------------------
# Robustness
# --------------------------------------------------------------------------------------------


def test_concurrent_loads_agree(bad_inputs: Path) -> None:
    names = ["palette.png", "cmyk.jpg", "gray16.png", "animated.gif", "exif_rotated.jpg"]
    expected = {name: load_image(bad_inputs / name).content_hash for name in names}
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                for name in names:
                    assert load_image(bad_inputs / name).content_hash == expected[name]
                with pytest.raises(ImageDecodeError):
                    load_image(bad_inputs / "truncated.png")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    if len(out) < 2:
        return bytes(out) + rng.randbytes(8)
    kind = rng.randrange(6)
    if kind == 0:  # flip a few bits
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(out))
            out[position] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncate
        del out[rng.randrange(1, len(out)) :]
    elif kind == 2:  # overwrite a span with noise
        start = rng.randrange(len(out))
        span = rng.randint(1, 16)
        out[start : start + span] = rng.randbytes(span)
    elif kind == 3:  # insert noise
        start = rng.randrange(len(out))
        out[start:start] = rng.randbytes(rng.randint(1, 32))
    elif kind == 4:  # duplicate a chunk
        start = rng.randrange(len(out))
        out[start:start] = out[start : start + rng.randint(1, 64)]
    else:  # blow up header fields (sizes, counts, offsets)
        start = rng.randrange(min(64, len(out)))
        out[start : start + 4] = b"\xff\xff\xff\x7f"
    return bytes(out)


def test_fuzz_mutated_corpus_only_raises_our_errors(bad_inputs: Path) -> None:
    seeds = [
        (bad_inputs / name).read_bytes()
        for name in (
            "1x1.png",
            "palette.png",
            "gray16.png",
            "rgba.png",
            "cmyk.jpg",
            "exif_rotated.jpg",
            "animated.gif",
            "multipage.tiff",
        )
    ]
    small = Image.new("RGB", (6, 5), (1, 2, 3))
    seeds += [encode(small, "BMP"), encode(small, "WEBP"), encode(small, "JPEG")]
    limits = ImageLimits(max_pixels=1_000_000)
    rng = random.Random(20261122)
    deadline = time.monotonic() + 1.5
    tried = 0
    while time.monotonic() < deadline:
        data = _mutate(rng.choice(seeds), rng)
        try:
            for page in iter_pages(data, limits=limits):
                assert page.image.mode == "RGB"
        except MississippiError:
            pass
        except Exception as error:  # pragma: no cover - the failure report
            pytest.fail(f"{type(error).__name__}: {error} for input {data[:64]!r}...")
        tried += 1
    assert tried > 100


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    prefix=st.sampled_from(
        [
            b"",
            b"\x89PNG\r\n\x1a\n",
            b"\xff\xd8\xff",
            b"GIF89a",
            b"II*\x00",
            b"MM\x00*",
            b"BM",
            b"RIFF\x00\x00\x00\x00WEBP",
            b"data:image/png;base64,",
        ]
    ),
    body=st.binary(max_size=300),
)
def test_fuzz_random_bytes_only_raise_our_errors(prefix: bytes, body: bytes) -> None:
    with contextlib.suppress(MississippiError):
        load_image(prefix + body, limits=ImageLimits(max_pixels=1_000_000))


@given(text=st.text(max_size=200))
@settings(max_examples=150, deadline=None, database=None)
def test_fuzz_random_strings_only_raise_our_errors(text: str) -> None:
    with contextlib.suppress(MississippiError):
        load_image(text, policy=SourcePolicy(allowed_roots=(Path("/nonexistent-root"),)))


def test_modules_import_without_heavy_dependencies() -> None:
    code = (
        "import sys\n"
        "import mississippi_tools.images, mississippi_tools.pdf, mississippi_tools.sources\n"
        "heavy = {'httpx', 'pypdfium2', 'numpy', 'torch'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=root, env={"PYTHONPATH": str(root)}
    )


def test_public_api() -> None:
    assert set(images.__all__) == {
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
    }
    assert LoadedImage.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_documents_only_selection_leaves_plain_images_alone(bad_inputs: Path) -> None:
    from mississippi_tools.images import iter_pages

    plain = list(iter_pages(bad_inputs / "1x1.png", pages="2-3", documents_only=True))
    assert [p.page for p in plain] == [None]
    pdf = list(iter_pages(bad_inputs / "three_pages.pdf", pages="2-3", documents_only=True))
    assert [p.page for p in pdf] == [2, 3]
    with pytest.raises(InvalidInputError):
        list(iter_pages(bad_inputs / "1x1.png", pages="2-3"))
