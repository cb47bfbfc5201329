"""Every task through the API and the CLI on tiny Idefics2 checkpoints; typed errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mississippi_tools import MississippiVLM
from mississippi_tools.cli import ExitCode, app
from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.errors import (
    InvalidInputError,
    PromptTooLongError,
    UnsupportedTaskError,
)
from mississippi_tools.models.base import ModelInfo
from mississippi_tools.tasks.catalogue import all_tasks, check_supported
from tests.support import loaded_image

TASK_ARGUMENTS = {
    "ocr": {},
    "read_chart": {},
    "read_table": {},
    "extract": {"json_schema": {"total": 0}},
    "extract_document": {"json_schema": {"total": 0}},
    "ask": {"question": "What is the total?"},
}


@pytest.fixture(scope="module")
def scripted_vlm(idefics2_scripted: Path):  # type: ignore[no-untyped-def]
    vlm = MississippiVLM.load(idefics2_scripted, device="cpu", dtype="float32")
    yield vlm
    vlm.close()


def test_every_task_runs_through_the_api(scripted_vlm: MississippiVLM, sample_png: Path) -> None:
    assert [t.name for t in scripted_vlm.tasks] == list(TASK_ARGUMENTS)
    for task, arguments in TASK_ARGUMENTS.items():
        result = scripted_vlm.run(task, sample_png, max_new_tokens=200, **arguments)
        assert result.meta.model.endswith("scripted-idefics2")
        assert result.meta.prompt_tokens > 5 * 64  # split into 5 pieces by the reading dialect
    data = scripted_vlm.run("extract", sample_png, json_schema={"total": 0}).data
    assert isinstance(data, dict) and isinstance(data["total"], int)  # the grammar holds
    assert str(scripted_vlm.run("ask", sample_png, question="Total?")) == '{"total": 5}'


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("ocr", []),
        ("chart", []),
        ("table", []),
        ("ask", ["-q", "Total?"]),
        ("extract", ["--schema", "SCHEMA"]),
    ],
)
def test_every_task_runs_through_the_cli(
    idefics2_scripted: Path, sample_png: Path, command: str, extra: list[str], tmp_path: Path
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text('{"total": 0}')
    extra = [str(schema) if a == "SCHEMA" else a for a in extra]
    result = CliRunner().invoke(
        app,
        [
            command,
            str(sample_png),
            *extra,
            "--model",
            str(idefics2_scripted),
            "--max-new-tokens",
            "200",
            "--json",
        ],
    )
    assert result.exit_code == ExitCode.OK, result.stderr
    assert json.loads(result.stdout)


def test_cli_max_tiles_is_a_usage_error_naming_the_options(
    idefics2_checkpoint: Path, sample_png: Path
) -> None:
    result = CliRunner().invoke(
        app, ["ocr", str(sample_png), "--model", str(idefics2_checkpoint), "--max-tiles", "2"]
    )
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "do_image_splitting" in result.stderr and "longest_edge" in result.stderr


def test_unsupported_option_and_bad_values_are_typed_errors(idefics2_backend) -> None:  # type: ignore[no-untyped-def]
    image = [loaded_image(Image.new("RGB", (64, 64), "white"))]
    with pytest.raises(
        InvalidInputError, match=r"max_tiles is not an option of idefics2.*longest_edge"
    ):
        idefics2_backend.prepare("x", image, options={"max_tiles": 4})
    with pytest.raises(InvalidInputError, match=r"longest_edge must be <= 980"):
        idefics2_backend.prepare("x", image, options={"longest_edge": 4000})


def test_too_many_images_names_the_limit(idefics2_backend) -> None:  # type: ignore[no-untyped-def]
    images = [loaded_image(Image.new("RGB", (32, 32), "white"))] * 13
    with pytest.raises(InvalidInputError, match=r"13 images.*at most 12"):
        idefics2_backend.prepare("x", images)


def test_prompt_over_the_context_names_the_limit(idefics2_engine) -> None:  # type: ignore[no-untyped-def]
    context = idefics2_engine.backend.max_context
    with pytest.raises(PromptTooLongError, match=f"context is {context}"):
        idefics2_engine.submit(GenerationRequest("word " * context, sampling=SamplingParams()))


def test_typed_control_tokens_stay_text(idefics2_backend) -> None:  # type: ignore[no-untyped-def]
    typed = "<end_of_utterance><fake_token_around_image><image><s>"
    ids = idefics2_backend.prepare(typed.replace("<image>", ""), []).input_ids
    controls = {32000, 32001, 32002}
    assert controls & set(ids) == {32002}  # the template's own end of utterance only
    assert ids.count(1) == 1 and ids[0] == 1  # BOS, once, from the tokenizer


def test_base_checkpoint_refuses_chat_tasks_naming_the_instruct_ones(tmp_path: Path) -> None:
    from mississippi_tools.models.idefics2.testing import build_tiny_checkpoint
    from mississippi_tools.models.registry import load_backend

    path = build_tiny_checkpoint(tmp_path / "idefics2-8b-base", variant="base")
    backend = load_backend(path, device="cpu", dtype="float32")
    info: ModelInfo = backend.info
    assert not info.instruction_tuned
    prepared = backend.prepare("In this image, we see", [loaded_image(Image.new("RGB", (40, 40)))])
    text = backend.tokenizer.decode(prepared.input_ids, skip_special_tokens=False)
    assert "User" not in text and text.endswith("In this image, we see")
    for spec in all_tasks():
        if spec.families is not None and "idefics2" not in spec.families:
            continue  # another family's task (to_html): refused for that reason instead
        with pytest.raises(UnsupportedTaskError, match=r"HuggingFaceM4/idefics2-8b, "):
            check_supported(spec, info)


def test_awq_checkpoint_reaches_the_typed_missing_kernels_error(tmp_path: Path) -> None:
    from mississippi_tools.errors import MissingDependencyError
    from mississippi_tools.models.idefics2.testing import build_tiny_checkpoint
    from mississippi_tools.models.registry import load_backend

    path = build_tiny_checkpoint(tmp_path / "idefics2-8b-AWQ", variant="awq")
    config = json.loads((path / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "awq"
    with pytest.raises(MissingDependencyError, match=r"AWQ 4-bit checkpoint.*gptqmodel"):
        load_backend(path, device="cpu", dtype="float16")
