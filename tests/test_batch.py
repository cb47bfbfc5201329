"""The one page iterator every surface uses: order, errors in place, laziness, concurrency."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mississippi_tools.batch import (
    NamedSource,
    aiter_outcomes,
    iter_outcomes,
    iter_source_pages,
)
from mississippi_tools.errors import ImageNotFoundError, InvalidInputError
from mississippi_tools.images import ImageLimits, LoadedImage
from mississippi_tools.sources import SourcePolicy

PDF = Path(__file__).parent / "bad_inputs" / "three_pages.pdf"
POLICY = SourcePolicy()
LIMITS = ImageLimits()


def _png(path: Path, shade: int) -> Path:
    Image.new("RGB", (20, 10), (shade, shade, shade)).save(path)
    return path


def _items(sources: list[Any], pages: Any = None, max_pages: int = 20) -> Any:
    return iter_source_pages(sources, pages, limits=LIMITS, policy=POLICY, max_pages=max_pages)


def test_outcomes_keep_input_order_with_errors_in_place(tmp_path: Path) -> None:
    a, b = _png(tmp_path / "a.png", 10), _png(tmp_path / "b.png", 20)
    sources = [str(a), "missing.png", PDF, str(b)]

    outcomes = list(iter_outcomes(lambda image: image.page, _items(sources), concurrency=3))

    assert [(o.source, o.page, o.ok) for o in outcomes] == [
        (str(a), None, True),
        ("missing.png", None, False),
        (str(PDF), 1, True),
        (str(PDF), 2, True),
        (str(PDF), 3, True),
        (str(b), None, True),
    ]
    assert isinstance(outcomes[1].error, ImageNotFoundError) and not outcomes[1].opened
    assert [o.index for o in outcomes] == list(range(6))


def test_pages_of_several_sources_are_in_flight_together(tmp_path: Path) -> None:
    """Three calls must be running at once for any of them to return."""
    sources = [_png(tmp_path / f"{i}.png", i) for i in range(2)] + [PDF]
    barrier = threading.Barrier(3, timeout=30)

    def run(image: LoadedImage) -> str:
        barrier.wait()
        return image.source

    outcomes = list(iter_outcomes(run, _items(sources, pages="1"), concurrency=3))

    assert all(o.ok for o in outcomes), [o.error for o in outcomes]


def test_nothing_is_read_ahead_of_its_turn(tmp_path: Path) -> None:
    first, second = _png(tmp_path / "1.png", 1), _png(tmp_path / "2.png", 2)
    never = threading.Event()

    def slow_first(image: LoadedImage) -> str:
        if image.source == str(first):
            never.wait(0.5)  # time enough for a read-ahead to happen, if the iterator did it
        return image.source

    outcomes = iter_outcomes(slow_first, _items([first, second]), concurrency=1)

    assert next(outcomes).ok
    second.unlink()  # read only now, so its absence is what the next outcome says
    assert isinstance(next(outcomes).error, ImageNotFoundError)


def test_a_document_over_the_page_limit_is_refused_before_any_page(tmp_path: Path) -> None:
    called: list[int | None] = []
    outcomes = list(
        iter_outcomes(lambda image: called.append(image.page), _items([PDF], max_pages=2))
    )

    (refused,) = outcomes
    assert isinstance(refused.error, InvalidInputError) and called == []
    assert "3 pages to read and at most 2" in refused.error.message
    assert refused.error.remedy is not None and refused.error.remedy.option == "max_pages"
    assert [
        o.page for o in iter_outcomes(lambda i: i, _items([PDF], pages="2-3", max_pages=2))
    ] == [
        2,
        3,
    ]


def test_named_sources_keep_their_names() -> None:
    outcomes = list(
        iter_outcomes(lambda i: i, _items([NamedSource("s3://b/x.pdf", PDF.read_bytes())]))
    )
    assert {o.source for o in outcomes} == {"s3://b/x.pdf"}


async def test_the_async_twin_keeps_order_and_concurrency(tmp_path: Path) -> None:
    sources = [_png(tmp_path / f"{i}.png", i) for i in range(3)]
    started = asyncio.Event()
    running = 0

    async def run(image: LoadedImage) -> str:
        nonlocal running
        running += 1
        if running == 2:
            started.set()
        await asyncio.wait_for(started.wait(), 30)  # two in flight before either returns
        return image.source

    outcomes = [o async for o in aiter_outcomes(run, _items(sources), concurrency=2)]

    assert [o.result for o in outcomes] == [str(s) for s in sources]


@pytest.mark.parametrize("pages", ["0", "4", "x"])
def test_a_bad_selection_is_the_documents_own_error(pages: str) -> None:
    (outcome,) = list(iter_outcomes(lambda i: i, _items([PDF], pages=pages)))
    assert isinstance(outcome.error, InvalidInputError) and not outcome.opened
