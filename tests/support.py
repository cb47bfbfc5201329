"""Small helpers and constants shared by tests (not fixtures)."""

from __future__ import annotations

import time
from collections.abc import Callable

from PIL import Image

from mississippi_tools.images import LoadedImage, load_image


def loaded_image(image: Image.Image) -> LoadedImage:
    """A PIL image through the project's one image-input path."""
    return load_image(image)


SCRIPTED_ANSWER = '{"total": 5}'
"""What the scripted tiny model (fixture ``scripted_vlm``) writes for any unconstrained prompt."""


GROUNDING_ANSWER = "Receipt\n<ref>Total due</ref><box>[[120, 345,678 961]]</box>"
"""What the grounding tiny model (fixture ``grounding_vlm``) writes: a plain line, then a line in
InternVL's grounding markup. The separators vary (comma and space, comma, space) because the
scripted model writes each token once; the parser reads numbers separated by commas or spaces."""

GROUNDING_BOX = (0.120, 0.345, 0.678, 0.961)
"""The box of ``GROUNDING_ANSWER``'s second line, as fractions of the image's width and height."""


def grounding_pixels(size: tuple[int, int], offset: tuple[int, int] = (0, 0)) -> list[float]:
    """``GROUNDING_BOX`` in pixels of an image of ``size`` read at ``offset`` of a larger one."""
    width, height = size
    x0, y0, x1, y1 = GROUNDING_BOX
    dx, dy = offset
    return [
        round(x0 * width + dx, 2),
        round(y0 * height + dy, 2),
        round(x1 * width + dx, 2),
        round(y1 * height + dy, 2),
    ]


LOOPING_ANSWER = "the cat "
"""What the looping tiny model (fixture ``looping_backend``) writes again and again."""


def wait_until(
    condition: Callable[[], object], *, timeout: float = 30.0, what: str = "the condition"
) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds.

    Every wait in the suite goes through here (or through ``anyio.fail_after``), so that a broken
    condition fails with a message instead of hanging the run.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.01)


async def await_until(
    condition: Callable[[], object], *, timeout: float = 30.0, what: str = "the condition"
) -> None:
    """:func:`wait_until` for coroutines (sleeps without blocking the event loop)."""
    import anyio

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        await anyio.sleep(0.01)
