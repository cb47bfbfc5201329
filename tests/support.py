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
