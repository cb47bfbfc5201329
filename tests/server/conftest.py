from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.live import LiveServer, quiet_settings, run_server


@pytest.fixture(scope="session")
def server_vlm(tiny_backend):  # type: ignore[no-untyped-def]
    """A model of the service's own (its engine is closed at the end)."""
    from mississippi_tools import MississippiVLM
    from mississippi_tools.engine.config import LocalEngineConfig

    vlm = MississippiVLM.from_backend(
        tiny_backend, engine_config=LocalEngineConfig(max_batch_size=8)
    )
    yield vlm
    vlm.close()


@pytest.fixture(scope="session")
def live(server_vlm) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    """The service on 127.0.0.1 with default settings, shared by the session."""
    with run_server(quiet_settings(), server_vlm) as server:
        yield server
