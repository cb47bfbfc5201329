"""Zoom: a region of an image is read alone, at full tile resolution, and results say which."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from mississippi_tools import InvalidInputError, MississippiVLM
from mississippi_tools.images import load_image
from mississippi_tools.regions import crop_image, parse_region, region_box

FAST = {"max_tiles": 1, "max_new_tokens": 4}


@pytest.fixture
def vlm(tiny_backend) -> Iterator[MississippiVLM]:  # type: ignore[no-untyped-def]
    with MississippiVLM.from_backend(tiny_backend) as fresh:
        yield fresh


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((0, 0, 0.5, 0.5), (0.0, 0.0, 0.5, 0.5)),
        ([10, 20, 110, 220], (10.0, 20.0, 110.0, 220.0)),
        (" 0, 0.8 ,1,1 ", (0.0, 0.8, 1.0, 1.0)),
        (None, None),
    ],
)
def test_regions_parse(given: object, expected: object) -> None:
    assert parse_region(given) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        ("0,0,1", "not four finite numbers"),
        ("a,b,c,d", "not four numbers separated by commas"),
        ((0, 0, True, 1), "not four numbers"),
        ((-1, 0, 10, 10), "negative edge"),
        ((10, 0, 5, 10), "is empty: it needs x0 < x1 and y0 < y1"),
        ((0, 0, float("inf"), 1), "finite"),
    ],
)
def test_bad_regions_say_how_to_write_one(given: object, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment) as caught:
        parse_region(given)  # type: ignore[arg-type]
    assert "region=(x0, y0, x1, y1)" in str(caught.value)


def test_fractions_and_pixels_resolve_to_pixel_boxes() -> None:
    assert region_box((0, 0, 0.5, 0.25), (640, 480)) == (0, 0, 320, 120)
    assert region_box((10.2, 20.7, 100.5, 200), (640, 480)) == (10, 20, 101, 200)


def test_a_region_past_the_image_names_its_size() -> None:
    with pytest.raises(InvalidInputError, match="which is 640x480 pixels; keep x1 <= 640"):
        region_box((0, 0, 700, 100), (640, 480))
    with pytest.raises(InvalidInputError, match="at least 4 pixels a side"):
        region_box((0, 0, 2, 100), (640, 480))


def test_a_crop_is_a_new_image_with_its_own_hash(sample_png: Path) -> None:
    whole = load_image(sample_png)
    crop = crop_image(whole, (0, 0, 0.5, 0.5))
    assert crop.size == (320, 240) and crop.region == (0, 0, 320, 240)
    assert crop.content_hash != whole.content_hash
    assert crop.source == whole.source
    assert crop.image.getpixel((45, 45)) == whole.image.getpixel((45, 45))
    inner = crop_image(crop, (100, 100, 200, 200))  # a region of a crop is within the crop
    assert inner.region == (100, 100, 200, 200)
    assert crop_image(crop_image(whole, (40, 40, 300, 300)), (10, 10, 50, 50)).region == (
        50,
        50,
        90,
        90,
    )


def test_results_say_which_region_they_read(vlm: MississippiVLM, sample_png: Path) -> None:
    result = vlm.ocr(sample_png, region=(0, 0, 0.5, 0.5), **FAST)
    assert result.meta.region == [0, 0, 320, 240]
    assert vlm.ocr(sample_png, **FAST).meta.region is None


def test_the_crop_is_read_at_full_tile_resolution(vlm: MississippiVLM, tmp_path: Path) -> None:
    """A wide image gets several tiles; a square crop of it gets the crop's own tiling."""
    wide = tmp_path / "wide.png"
    Image.new("RGB", (1792, 448), "white").save(wide)
    whole = vlm.ocr(wide, max_tiles=4, max_new_tokens=2)
    corner = vlm.ocr(wide, region=(0, 0, 448, 448), max_tiles=4, max_new_tokens=2)
    assert whole.meta.tiles == 5  # four 448-px tiles and the thumbnail
    assert corner.meta.tiles == 1  # one 448-px tile: the crop is not shrunk with the page


def test_the_cache_never_mixes_a_crop_with_the_whole_image(
    vlm: MississippiVLM, sample_png: Path
) -> None:
    assert not vlm.ocr(sample_png, **FAST).meta.cache_hit
    assert not vlm.ocr(sample_png, region=(0, 0, 0.5, 0.5), **FAST).meta.cache_hit
    assert vlm.ocr(sample_png, region=(0, 0, 0.5, 0.5), **FAST).meta.cache_hit


def test_every_page_of_a_batch_gets_the_region(vlm: MississippiVLM, bad_inputs: Path) -> None:
    results = vlm.ocr_batch([bad_inputs / "three_pages.pdf"], region=(0, 0, 0.5, 0.5), **FAST)
    assert [r.meta.region for r in results] == [[0, 0, 850, 1100]] * 3
    assert [r.meta.page for r in results] == [1, 2, 3]


def test_a_bad_region_fails_before_anything_is_read(vlm: MississippiVLM) -> None:
    with pytest.raises(InvalidInputError, match="region"):
        vlm.ocr("does-not-exist.png", region=(5, 5, 1, 1))
    with pytest.raises(InvalidInputError, match="region"):
        list(vlm.iter_batch("ocr", ["does-not-exist.png"], region="1,2"))
