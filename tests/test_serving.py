"""The servers' shared model loader: one background load, clear states, retries when allowed."""

from __future__ import annotations

import pytest

from mississippi_tools import MississippiVLM
from mississippi_tools.errors import ModelNotFoundError, RemoteConnectionError
from mississippi_tools.serving import ModelLoader, ModelNotReadyError


class Flaky:
    """Builds the model only from its ``succeed_from``-th attempt on; counts the attempts."""

    def __init__(self, vlm: MississippiVLM, error: Exception, succeed_from: int) -> None:
        self.vlm, self.error, self.succeed_from = vlm, error, succeed_from
        self.attempts = 0

    def __call__(self) -> MississippiVLM:
        self.attempts += 1
        if self.attempts < self.succeed_from:
            raise self.error
        return self.vlm


async def test_a_retryable_failure_is_tried_again_by_the_next_wait(
    tiny_vlm: MississippiVLM,
) -> None:
    build = Flaky(tiny_vlm, RemoteConnectionError("cannot reach http://127.0.0.1:9"), 2)
    loader = ModelLoader(build, name="remote", retry_on=(RemoteConnectionError,))
    with pytest.raises(ModelNotReadyError) as failed:
        await loader.await_ready(timeout=30)
    assert failed.value.state == "failed"
    assert isinstance(failed.value.cause, RemoteConnectionError)
    assert await loader.await_ready(timeout=30) is tiny_vlm
    assert build.attempts == 2 and loader.state == "ready" and loader.error is None


async def test_other_failures_are_reported_without_loading_again(
    tiny_vlm: MississippiVLM,
) -> None:
    build = Flaky(tiny_vlm, ModelNotFoundError("no weights for 'nope/model'"), 2)
    loader = ModelLoader(build, name="nope/model", retry_on=(RemoteConnectionError,))
    for _ in range(2):
        with pytest.raises(ModelNotReadyError, match="no weights for 'nope/model'"):
            await loader.await_ready(timeout=30)
    assert build.attempts == 1 and loader.state == "failed"


async def test_closing_releases_the_model_and_ends_serving(tiny_vlm: MississippiVLM) -> None:
    closed: list[bool] = []

    class Recording(MississippiVLM):
        def close(self) -> None:  # the shared engine stays open for the other tests
            closed.append(True)

    vlm = Recording(tiny_vlm.engine)
    loader = ModelLoader.loaded(vlm)
    assert loader.require() is vlm
    loader.close()
    with pytest.raises(ModelNotReadyError, match="shutting down"):
        await loader.await_ready(timeout=1)
    assert loader.state == "closed" and closed == [True]
