"""Every family's tiny checkpoint, every task it offers, through every surface; the rest refused.

For each model family the tiny checkpoint (its published on-disk layout, random weights) is
loaded once; each task the model offers runs through the Python API, the CLI, the HTTP task
route, the MCP tool, the LangChain tool and the LlamaIndex tool. Random weights write random
words, so a task whose answer must parse (a chart, a table) may end in its typed
``extraction_failed`` error: what is checked is that every surface runs the task and answers
with a result or that typed error, never anything else. Each task the model does not offer is
absent from the surfaces that list tools and refused with ``UnsupportedTaskError`` by the API.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from PIL import Image
from typer.testing import CliRunner

from langchain_mississippi import MississippiToolkit
from llama_index.tools.mississippi import MississippiToolSpec
from mississippi_tools import MississippiVLM
from mississippi_tools.errors import ExtractionError, RepetitionError, UnsupportedTaskError
from mississippi_tools.sources import SourcePolicy
from mississippi_tools.tasks.catalogue import all_tasks
from mississippi_tools.testing import FAMILIES, build_tiny_checkpoint
from tests.mcp.conftest import make_server
from tests.server.live import quiet_settings, run_server

SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
#: The task's own arguments for a call (tasks not listed take none).
ARGUMENTS: dict[str, dict[str, Any]] = {
    "ask": {"question": "What is written?"},
    "extract": {"json_schema": SCHEMA},
    "extract_document": {"json_schema": SCHEMA},
}
#: A task that could not parse the random words ends in one of these codes.
TYPED_CODES = {"extraction_failed", "repetition"}
RUN = {"max_new_tokens": 3}
#: Each case: a family's tiny checkpoint, plus other published models of a family (a preset).
CASES: dict[str, dict[str, str]] = {
    **{family: {"family": family} for family in FAMILIES},
    "h2ovl-2b": {"family": "h2ovl", "preset": "2b"},
}


@pytest.fixture(scope="module", params=list(CASES))
def family_vlm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, MississippiVLM]]:
    family = request.param
    checkpoint = build_tiny_checkpoint(tmp_path_factory.mktemp(family) / "tiny", **CASES[family])
    vlm = MississippiVLM.load(checkpoint, device="cpu", dtype="float32")
    yield family, checkpoint, vlm
    vlm.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("page") / "page.png"
    Image.new("RGB", (96, 64), "white").save(path)
    return path


def _offered(vlm: MississippiVLM) -> list[str]:
    return [spec.name for spec in vlm.tasks]


def test_the_api(family_vlm: tuple[str, Path, MississippiVLM], page: Path) -> None:
    family, _, vlm = family_vlm
    offered = _offered(vlm)
    assert offered, f"{family} offers no task"
    for task in offered:
        # Random words that do not parse end in the typed error of a task that ran.
        with contextlib.suppress(ExtractionError, RepetitionError):
            vlm.run(task, page, **ARGUMENTS.get(task, {}), **RUN)
    for spec in all_tasks():
        if spec.name not in offered:
            with pytest.raises(UnsupportedTaskError):
                vlm.run(spec.name, page, **ARGUMENTS.get(spec.name, {}), **RUN)


def test_the_cli(family_vlm: tuple[str, Path, MississippiVLM], page: Path) -> None:
    from mississippi_tools.cli import ExitCode, build_app

    _, checkpoint, vlm = family_vlm
    app = build_app()
    runner = CliRunner()
    for task in _offered(vlm):
        extra: list[str] = []
        for name, value in ARGUMENTS.get(task, {}).items():
            text = value if isinstance(value, str) else json.dumps(value)
            extra += [f"--{name.replace('_', '-')}", text]
        ran = runner.invoke(
            app,
            [task.replace("_", "-"), str(page), "--model", str(checkpoint), "--device", "cpu",
             "--dtype", "float32", "--max-new-tokens", "3", "--json", *extra],
        )  # fmt: skip
        assert ran.exit_code in (ExitCode.OK, ExitCode.NO_RESULT), (task, ran.stderr)
        if ran.exit_code == ExitCode.OK:
            assert "result" in json.loads(ran.stdout.strip().splitlines()[-1]), task


def test_the_http_routes(family_vlm: tuple[str, Path, MississippiVLM], page: Path) -> None:
    _, _, vlm = family_vlm
    image = base64.b64encode(page.read_bytes()).decode()
    offered = _offered(vlm)
    with run_server(quiet_settings(), vlm) as live:
        for task in offered:
            body = {"image": image, **ARGUMENTS.get(task, {}), "max_new_tokens": 3}
            response = httpx.post(f"{live.url}/v1/{task}", json=body, timeout=120)
            if response.status_code != 200:
                assert response.json()["error"]["code"] in TYPED_CODES, (task, response.text)
        listed = {entry["name"] for entry in httpx.get(f"{live.url}/v1/tasks").json()["data"]}
        assert listed == set(offered)
        for spec in all_tasks():
            if spec.name not in offered:
                body = {"image": image, **ARGUMENTS.get(spec.name, {})}
                refused = httpx.post(f"{live.url}/v1/{spec.name}", json=body, timeout=60)
                assert refused.status_code in (400, 404, 422), (spec.name, refused.text)


async def test_the_mcp_tools(
    family_vlm: tuple[str, Path, MississippiVLM], page: Path, tmp_path: Path
) -> None:
    _, _, vlm = family_vlm
    offered = _offered(vlm)
    with anyio.fail_after(240):
        async with Client(make_server(vlm, allow_dirs=[page.parent])) as client:
            listed = [tool.name for tool in (await client.list_tools()).tools]
            assert listed == [*offered, "read_more"]  # read_more pages through long results
            for task in offered:
                arguments = {"image": str(page), **ARGUMENTS.get(task, {})}
                result = await client.call_tool(task, arguments)
                if result.is_error:
                    text = result.content[0].text  # type: ignore[union-attr]
                    assert any(f"{code}:" in text for code in TYPED_CODES), (task, text)


def test_the_langchain_tools(family_vlm: tuple[str, Path, MississippiVLM], page: Path) -> None:
    _, _, vlm = family_vlm
    toolkit = MississippiToolkit(vlm=vlm, allowed_roots=[page.parent], max_new_tokens=3)
    tools = {tool.name: tool for tool in toolkit.get_tools()}
    assert sorted(tools) == sorted(f"mississippi_{task}" for task in _offered(vlm))
    for task in _offered(vlm):
        tool = tools[f"mississippi_{task}"]
        args = {"image": str(page), **ARGUMENTS.get(task, {})}
        message = tool.invoke({"type": "tool_call", "id": "1", "name": tool.name, "args": args})
        if message.status == "error":
            assert str(message.content).split(":")[0] in TYPED_CODES, (task, message.content)


def test_the_llamaindex_tools(family_vlm: tuple[str, Path, MississippiVLM], page: Path) -> None:
    _, _, vlm = family_vlm
    spec = MississippiToolSpec(
        vlm, policy=SourcePolicy(allowed_roots=(page.parent,)), max_new_tokens=3
    )
    tools = {tool.metadata.name: tool for tool in spec.to_tool_list()}
    assert sorted(tools) == sorted(_offered(vlm))
    for task, tool in tools.items():
        try:
            output = tool.call(image=str(page), **ARGUMENTS.get(task, {}))
        except (ExtractionError, RepetitionError):
            continue
        assert output.content, task
