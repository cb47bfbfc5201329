"""``MississippiToolSpec`` as LlamaIndex ``FunctionTool``s, on a real (tiny, random) model."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.tools import FunctionTool

from llama_index.tools.mississippi import MississippiToolSpec
from mississippi_tools import (
    AccessDeniedError,
    ExtractionError,
    ImageNotFoundError,
    InvalidInputError,
    MississippiVLM,
    SourcePolicy,
)

from .conftest import BAD_INPUTS, CLOSED_SCHEMA, FAST, draw_image

TOOL_NAMES = ["ocr", "read_chart", "read_table", "extract", "extract_document", "ask"]


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one directory the tools may read, with an invoice; a secret lies next to it."""
    root = tmp_path_factory.mktemp("tools") / "inbox"
    root.mkdir()
    draw_image(root / "invoice.png", "Invoice 7\nTotal: 5")
    (root / "report.pdf").write_bytes((BAD_INPUTS / "three_pages.pdf").read_bytes())
    draw_image(root.parent / "secret.png", "not for agents")
    return root


@pytest.fixture(scope="module")
def tools(tiny_vlm: MississippiVLM, inbox: Path) -> dict[str, FunctionTool]:
    spec = MississippiToolSpec(tiny_vlm, policy=SourcePolicy(allowed_roots=(inbox,)), **FAST)
    return {tool.metadata.get_name(): tool for tool in spec.to_tool_list()}


def parameters(tool: FunctionTool) -> dict[str, Any]:
    return tool.metadata.get_parameters_dict()


def test_one_tool_per_task_with_sync_and_async_paths(tools: dict[str, FunctionTool]) -> None:
    assert list(tools) == TOOL_NAMES
    for tool in tools.values():
        assert tool.fn.__name__ == tool.metadata.name
        assert tool.async_fn.__name__ == f"a{tool.metadata.name}"


def test_descriptions_and_schemas_are_written_for_the_llm(
    tools: dict[str, FunctionTool], inbox: Path
) -> None:
    ocr = parameters(tools["ocr"])
    assert ocr["required"] == ["image"]
    assert "data URI" in ocr["properties"]["image"]["description"]
    assert "1-based page" in ocr["properties"]["pages"]["description"]
    assert ocr["properties"]["format"]["enum"] == ["text", "markdown", "lines"]
    assert tools["ocr"].metadata.description.startswith("Read all the text in an image")

    extract = parameters(tools["extract"])
    assert extract["required"] == ["image", "json_schema"]
    schema_types = {branch["type"] for branch in extract["properties"]["json_schema"]["anyOf"]}
    assert schema_types == {"object", "string"}
    assert '"invoice_number": ""' not in tools["extract"].metadata.description
    assert "template" in extract["properties"]["json_schema"]["description"]

    root = inbox.resolve()
    for tool in tools.values():
        assert tool.metadata.description.endswith(
            f"File paths must be inside {root}; relative paths start at {root}. "
            "URLs are not accepted."
        )
        assert len(tool.metadata.description) <= 1024

    ask = parameters(tools["ask"])
    assert ask["required"] == ["image", "question"]
    for name in TOOL_NAMES:
        json.dumps(tools[name].metadata.to_openai_tool())


def test_ocr_reads_an_allowed_path_and_a_data_uri(
    tools: dict[str, FunctionTool], inbox: Path
) -> None:
    output = tools["ocr"].call(image="invoice.png")  # relative to the first allowed root
    assert output.content.strip()
    assert not output.is_error

    data_uri = "data:image/png;base64," + base64.b64encode(
        (inbox / "invoice.png").read_bytes()
    ).decode("ascii")
    assert tools["ocr"].call(image=data_uri).content == output.content


async def test_extract_json_returns_json_of_the_requested_shape(
    tiny_vlm: MississippiVLM, inbox: Path
) -> None:
    """Needs ``vlm.extract_result`` (the JSON extraction work)."""
    spec = MississippiToolSpec(
        tiny_vlm, policy=SourcePolicy(allowed_roots=(inbox,)), max_new_tokens=64, max_tiles=1
    )
    (tool,) = spec.to_tool_list(spec_functions=[("extract_json", "aextract_json")])

    output = await tool.acall(image="invoice.png", json_schema=json.dumps(CLOSED_SCHEMA))

    data = json.loads(output.content)
    assert set(data) == {"paid", "kind"}
    assert data["kind"] in ("invoice", "receipt")


async def test_ask_image_answers_from_a_pdf_page(tools: dict[str, FunctionTool]) -> None:
    output = await tools["ask"].acall(image="report.pdf", question="What is the title?", pages=2)
    assert output.content.strip()
    with pytest.raises(InvalidInputError, match="page: Extra inputs are not permitted"):
        await tools["ask"].acall(image="report.pdf", question="What is the title?", page=2)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"image": "../secret.png"}, AccessDeniedError, "outside the allowed roots"),
        ({"image": "invoce.png"}, ImageNotFoundError, "no file at path"),
        ({"image": "http://example.com/a.png"}, AccessDeniedError, "URL"),
        ({"image": "report.pdf"}, InvalidInputError, r"PDF with 3 pages; .*\(1\.\.3\)"),
        ({"image": "report.pdf", "pages": 4}, InvalidInputError, "3 page"),
    ],
)
def test_bad_images_raise_errors_that_say_what_to_do(
    tools: dict[str, FunctionTool], arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        tools["ocr"].call(**arguments)


async def test_bad_schemas_raise_before_reading(tools: dict[str, FunctionTool]) -> None:
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        await tools["extract"].acall(image="invoice.png", json_schema="{name: ")
    with pytest.raises(InvalidInputError, match="must be a pydantic model class, a JSON Schema"):
        await tools["extract"].acall(image="invoice.png", json_schema="[1, 2]")


def test_a_model_failure_raises_the_library_error(tools: dict[str, FunctionTool]) -> None:
    """A random model writes no chart data; the error is raised, not returned as text."""
    with pytest.raises(ExtractionError, match="no chart data"):
        tools["read_chart"].call(image="invoice.png")


def test_the_spec_narrows_an_unrestricted_policy_to_the_current_directory(
    tiny_vlm: MississippiVLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert tiny_vlm.policy.allowed_roots is None  # the model's own: any path
    spec = MississippiToolSpec(tiny_vlm)
    assert spec.policy.allowed_roots == (tmp_path.resolve(),)
    (tool,) = spec.to_tool_list(spec_functions=[("ocr", "aocr")])
    assert f"File paths must be inside {tmp_path.resolve()}" in tool.metadata.description
    with pytest.raises(TypeError, match=r"MississippiVLM\.load"):
        MississippiToolSpec(object())  # type: ignore[arg-type]
