"""A task added to the catalogue at run time appears on every surface, with the same arguments.

The task is real, not a stub: it builds its own prompt and parses the tiny model's answer like
any built-in task. Registering it is all it takes: the Python API, the CLI, the HTTP routes, the
LangChain tools, the LlamaIndex tool spec and the MCP tools are all generated from the catalogue.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from mcp import Client
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from mississippi_tools import MississippiVLM
from mississippi_tools.engine.base import GenerationOutput
from mississippi_tools.images import LoadedImage
from mississippi_tools.tasks.base import OneShotPlan, RunSettings, TaskContext, TaskPlan
from mississippi_tools.tasks.catalogue import TaskSpec, register_task, unregister_task
from mississippi_tools.tasks.results import ResultMetadata, TaskResult


class CaptionArguments(BaseModel):
    """Arguments of the test-only ``caption`` task."""

    model_config = ConfigDict(extra="forbid")

    length: Literal["short", "detailed"] = Field(
        default="short", description="How long the caption should be."
    )


class Caption(TaskResult):
    """A caption of an image."""

    text: str


def plan_caption(
    ctx: TaskContext, images: list[LoadedImage], args: CaptionArguments, settings: RunSettings
) -> TaskPlan[Caption]:
    words = "one sentence" if args.length == "short" else "a detailed paragraph"
    request = ctx.request(
        "caption", f"Describe the image in {words}.", args, images, settings,
        default_max_new_tokens=4,
    )  # fmt: skip

    def parse(output: GenerationOutput, meta: ResultMetadata) -> Caption:
        return Caption(text=output.text.strip(), meta=meta)

    return OneShotPlan(request, images, parse)


CAPTION = TaskSpec(
    name="caption",
    title="Caption an image",
    description="Describe an image in one sentence or a paragraph (a test-only task).",
    arguments=CaptionArguments,
    result=Caption,
    plan=plan_caption,
    render=lambda caption: caption.text or "(no caption)",
    default_max_new_tokens=4,
    families=frozenset({"h2ovl"}),
)

SETTINGS: dict[str, Any] = {"max_tiles": 1, "max_new_tokens": 4}


@pytest.fixture
def caption_task() -> Iterator[TaskSpec[Any, Any]]:
    register_task(CAPTION)
    try:
        yield CAPTION
    finally:
        unregister_task("caption")


def _length_schema(properties: dict[str, Any]) -> dict[str, Any]:
    """The ``length`` argument's schema, without what each framework adds (title, description)."""
    schema = dict(properties["length"])
    schema.pop("title", None)
    schema.pop("description", None)
    return schema


EXPECTED_LENGTH = {"default": "short", "enum": ["short", "detailed"], "type": "string"}


def test_the_python_api(caption_task: TaskSpec[Any, Any], tiny_vlm: MississippiVLM) -> None:
    assert "caption" in [spec.name for spec in tiny_vlm.tasks]
    result = tiny_vlm.caption(_red_image(), length="detailed", **SETTINGS)
    assert isinstance(result, Caption) and result.meta.new_tokens <= 4
    assert isinstance(tiny_vlm.run("caption", _red_image(), **SETTINGS), Caption)


def test_the_cli(caption_task: TaskSpec[Any, Any], tiny_checkpoint: Path, tmp_path: Path) -> None:
    from mississippi_tools.cli import build_app

    image = tmp_path / "red.png"
    _red_image().save(image)
    runner = CliRunner()
    app = build_app()
    helped = runner.invoke(app, ["caption", "--help"])
    assert helped.exit_code == 0 and "--length" in helped.stdout
    ran = runner.invoke(
        app,
        ["caption", str(image), "--length", "detailed", "--json", "--model", str(tiny_checkpoint),
         "--max-tiles", "1", "--max-new-tokens", "4"],
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    line = json.loads(ran.stdout.strip().splitlines()[-1])
    assert "text" in line["result"]
    refused = runner.invoke(app, ["caption", str(image), "--length", "epic"])
    assert refused.exit_code == 2 and "epic" in refused.stderr


def test_the_http_routes(caption_task: TaskSpec[Any, Any], tiny_vlm: MississippiVLM) -> None:
    from tests.server.live import png_bytes, run_server

    image = base64.b64encode(png_bytes()).decode()
    with run_server(vlm=tiny_vlm) as live:
        answered = httpx.post(
            f"{live.url}/v1/caption", json={"image": image, "length": "detailed", **SETTINGS},
            timeout=60,
        )  # fmt: skip
        refused = httpx.post(
            f"{live.url}/v1/caption", json={"image": image, "length": "epic"}, timeout=60
        )
        document = httpx.get(f"{live.url}/openapi.json", timeout=60).json()
    assert answered.status_code == 200, answered.text
    assert Caption.model_validate(answered.json()).meta.new_tokens <= 4
    assert refused.status_code == 422
    body = document["components"]["schemas"]["CaptionRequest"]["properties"]
    assert _length_schema(body) == EXPECTED_LENGTH


def test_the_langchain_tools(caption_task: TaskSpec[Any, Any], tiny_vlm: MississippiVLM) -> None:
    from langchain_mississippi import MississippiToolkit

    tools = {tool.name: tool for tool in MississippiToolkit(vlm=tiny_vlm).get_tools()}
    tool = tools["mississippi_caption"]
    assert _length_schema(tool.tool_call_schema.model_json_schema()["properties"]) == (
        EXPECTED_LENGTH
    )
    image = "data:image/png;base64," + base64.b64encode(_png()).decode()
    assert isinstance(tool.invoke({"image": image, "length": "detailed"}), str)


def test_the_llamaindex_tools(caption_task: TaskSpec[Any, Any], tiny_vlm: MississippiVLM) -> None:
    from llama_index.tools.mississippi import MississippiToolSpec

    tools = {t.metadata.name: t for t in MississippiToolSpec(tiny_vlm).to_tool_list()}
    tool = tools["caption"]
    schema = tool.metadata.get_parameters_dict()
    assert _length_schema(schema["properties"]) == EXPECTED_LENGTH
    image = "data:image/png;base64," + base64.b64encode(_png()).decode()
    assert tool.call(image=image, length="short").raw_output is not None


async def test_the_mcp_tools(caption_task: TaskSpec[Any, Any], tiny_vlm: MississippiVLM) -> None:
    from tests.mcp.conftest import make_server

    async with Client(make_server(tiny_vlm)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        image = base64.b64encode(_png()).decode()
        result = await client.call_tool("caption", {"image": image, "length": "detailed"})
    assert _length_schema(tools["caption"].input_schema["properties"]) == EXPECTED_LENGTH
    assert not result.is_error
    assert result.structured_content is not None
    assert "text" in result.structured_content["result"]


def test_without_the_registration_no_surface_offers_it(tiny_vlm: MississippiVLM) -> None:
    from langchain_mississippi import MississippiToolkit

    assert "caption" not in [spec.name for spec in tiny_vlm.tasks]
    assert "mississippi_caption" not in [
        t.name for t in MississippiToolkit(vlm=tiny_vlm).get_tools()
    ]
    with pytest.raises(AttributeError):
        _ = tiny_vlm.caption


def _red_image() -> Any:
    from PIL import Image

    return Image.new("RGB", (64, 48), (200, 30, 30))


def _png() -> bytes:
    from tests.server.live import png_bytes

    return png_bytes()
