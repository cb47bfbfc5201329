"""Idle unloading and the memory ceiling through the SDK's client, with the tiny checkpoint
loaded by the server itself."""

from __future__ import annotations

from pathlib import Path

from mcp import Client

from mississippi_mcp import MCPSettings, ModelHolder, build_server
from mississippi_mcp.server import load_vlm
from tests.mcp.support import FAST_SETTINGS, check_error, text_of
from tests.support import await_until


def _server(checkpoint: Path, **settings: object) -> tuple[object, ModelHolder]:
    config = MCPSettings(
        model=str(checkpoint), device="cpu", dtype="float32", **{**FAST_SETTINGS, **settings}
    )
    holder = ModelHolder(lambda: load_vlm(config), name="tiny", progress_interval=0.05)
    return build_server(config, holder=holder), holder


async def test_an_idle_model_is_unloaded_and_the_next_call_reloads_it_with_progress(
    tiny_checkpoint: Path, images: Path
) -> None:
    server, holder = _server(tiny_checkpoint, idle_unload=0.3, allow_dirs=[images])
    events: list[str | None] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        events.append(message)

    async with Client(server) as client:
        first = await client.call_tool("ocr", {"image": "page.png"})
        assert not first.is_error, text_of(first)
        await await_until(lambda: holder.state == "idle", timeout=60, what="the unload")
        assert holder.loader.unloads == 1 and holder.loader.vlm is None
        second = await client.call_tool("ocr", {"image": "page.png"}, progress_callback=progress)
    assert not second.is_error, text_of(second)
    assert text_of(second) == text_of(first)
    assert any("loading the model tiny" in (message or "") for message in events), events
    assert holder.loader.unloads == 1


async def test_a_model_over_the_memory_ceiling_fails_every_call_with_a_typed_error(
    tiny_checkpoint: Path, images: Path
) -> None:
    server, _ = _server(tiny_checkpoint, max_memory="1kB", allow_dirs=[images])
    async with Client(server) as client:
        result = await client.call_tool("ocr", {"image": "page.png"})
    check_error(result, "model_too_large", "ceiling is 1.0 kB", "--max-memory")


def test_the_flags_of_long_work() -> None:
    from mississippi_mcp.settings import parse_args

    flags = ["--idle-unload", "30", "--max-memory", "2GiB", "--result-budget", "5000"]
    settings = parse_args(flags)
    assert (settings.idle_unload, settings.max_memory, settings.result_budget) == (
        30.0,
        2 * 2**30,
        5000,
    )
    assert MCPSettings().result_budget == 60_000 and MCPSettings().idle_unload is None
