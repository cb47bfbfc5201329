"""Every supported task through the API and the CLI on tiny IDEFICS checkpoints; refusals typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mississippi_tools import MississippiVLM
from mississippi_tools.cli import ExitCode, app
from mississippi_tools.errors import InvalidInputError, UnsupportedTaskError
from mississippi_tools.models.base import ModelInfo
from mississippi_tools.tasks.catalogue import all_tasks, check_supported, tasks_for_model
from tests.support import SCRIPTED_ANSWER, loaded_image

TASK_ARGUMENTS = {
    "ocr": {},
    "extract": {"json_schema": {"total": 0}},
    "extract_document": {"json_schema": {"total": 0}},
    "ask": {"question": "What is the total?"},
}


@pytest.fixture(scope="module")
def scripted_vlm(idefics1_scripted: Path):  # type: ignore[no-untyped-def]
    vlm = MississippiVLM.load(idefics1_scripted, device="cpu", dtype="float32")
    yield vlm
    vlm.close()


def test_every_supported_task_runs_through_the_api(
    scripted_vlm: MississippiVLM, sample_png: Path
) -> None:
    assert [t.name for t in scripted_vlm.tasks] == list(TASK_ARGUMENTS)
    for task, arguments in TASK_ARGUMENTS.items():
        result = scripted_vlm.run(task, sample_png, max_new_tokens=100, **arguments)
        assert result.meta.model.endswith("scripted-idefics-9b-instruct")
    assert str(scripted_vlm.ask(sample_png, "Total?")) == SCRIPTED_ANSWER
    assert str(scripted_vlm.run("ocr", sample_png)) == SCRIPTED_ANSWER
    data = scripted_vlm.run("extract", sample_png, json_schema={"total": 0}).data
    assert isinstance(data, dict) and isinstance(data["total"], int)  # the grammar holds


@pytest.mark.parametrize(
    ("command", "extra"),
    [("ocr", []), ("ask", ["-q", "Total?"]), ("extract", ["--schema", "SCHEMA"])],
)
def test_every_supported_task_runs_through_the_cli(
    idefics1_scripted: Path, sample_png: Path, command: str, extra: list[str], tmp_path: Path
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text('{"total": 0}')
    extra = [str(schema) if a == "SCHEMA" else a for a in extra]
    result = CliRunner().invoke(
        app,
        [command, str(sample_png), *extra, "--model", str(idefics1_scripted), "--json"],
    )
    assert result.exit_code == ExitCode.OK, result.stderr
    assert json.loads(result.stdout)


@pytest.mark.parametrize("task", ["read_chart", "read_table", "to_html"])
def test_unsupported_tasks_are_refused_with_the_typed_error(
    scripted_vlm: MississippiVLM, sample_png: Path, task: str
) -> None:
    with pytest.raises(UnsupportedTaskError, match=task) as caught:
        scripted_vlm.run(task, sample_png)
    assert caught.value.task == task


@pytest.mark.parametrize("command", ["chart", "table"])
def test_unsupported_tasks_are_refused_by_the_cli(
    idefics1_scripted: Path, sample_png: Path, command: str
) -> None:
    result = CliRunner().invoke(app, [command, str(sample_png), "--model", str(idefics1_scripted)])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "224 x 224 pixels" in result.stderr


def test_pretrained_checkpoint_refuses_every_task_naming_the_instruct_ones(
    idefics1_base_checkpoint: Path,
) -> None:
    from mississippi_tools.models.registry import load_backend

    backend = load_backend(idefics1_base_checkpoint, device="cpu", dtype="float32")
    info: ModelInfo = backend.info
    assert not info.instruction_tuned
    prepared = backend.prepare("In this image, we see", [loaded_image(Image.new("RGB", (40, 40)))])
    text = backend.tokenizer.decode(prepared.input_ids, skip_special_tokens=False)
    assert "User" not in text and text.endswith("In this image, we see")
    assert backend.stop_token_ids == frozenset({backend.tokenizer.eos_token_id})
    for spec in all_tasks():
        with pytest.raises(UnsupportedTaskError):
            check_supported(spec, info)
    ask = next(spec for spec in all_tasks() if spec.name == "ask")
    with pytest.raises(UnsupportedTaskError, match=r"pretrained-only.*idefics-9b-instruct"):
        check_supported(ask, info)


def test_capabilities_are_known_from_the_hub_id_before_loading() -> None:
    for name in ("HuggingFaceM4/idefics-9b-instruct", "HuggingFaceM4/idefics-80b-instruct"):
        assert [t.name for t in tasks_for_model(name)] == list(TASK_ARGUMENTS)
    for name in ("HuggingFaceM4/idefics-9b", "HuggingFaceM4/idefics-80b"):
        assert tasks_for_model(name) == []


def test_typed_control_tokens_stay_text(idefics1_backend) -> None:  # type: ignore[no-untyped-def]
    typed = "<end_of_utterance><fake_token_around_image><s></s>"
    ids = idefics1_backend.prepare(typed, []).input_ids
    assert {32000, 32001, 32002} & set(ids) == {32002}  # the template's own end of utterance
    assert ids.count(1) == 1 and ids[0] == 1 and 2 not in ids


def test_too_many_images_and_misplaced_markers_are_typed_errors(idefics1_backend) -> None:  # type: ignore[no-untyped-def]
    image = loaded_image(Image.new("RGB", (32, 32), "white"))
    with pytest.raises(InvalidInputError, match=r"17 images.*at most 16"):
        idefics1_backend.prepare("x", [image] * 17)
    with pytest.raises(InvalidInputError, match=r"2 <image> placeholder\(s\) for 1 image"):
        idefics1_backend.prepare("<image> and <image>", [image])
    with pytest.raises(InvalidInputError, match=r"max_tiles is not an option of idefics1"):
        idefics1_backend.prepare("x", [image], options={"max_tiles": 2})


def test_lone_surrogates_are_typed_errors_naming_the_text(idefics1_backend) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError, match=r"the prompt contains a lone surrogate U\+D83D"):
        idefics1_backend.prepare("smile \ud83d", [])
    with pytest.raises(InvalidInputError, match="answer of history turn 1"):
        idefics1_backend.prepare("q", [], history=[("q0", "\udc00")])


def test_ask_about_two_images_and_no_image(scripted_vlm: MississippiVLM, sample_png: Path) -> None:
    other = Image.new("RGB", (90, 300), "navy")
    two = scripted_vlm.ask([sample_png, other], "Compare them.")
    none = scripted_vlm.ask(None, "Compare them.")
    assert str(two) == str(none) == SCRIPTED_ANSWER
    assert two.meta.prompt_tokens >= none.meta.prompt_tokens + 5  # the two images' 5 tokens


def test_refusals_elsewhere_suggest_only_the_instruct_checkpoints() -> None:
    from mississippi_tools.models.registry import family_for_model_name
    from mississippi_tools.tasks.catalogue import supporting_models

    ask = next(spec for spec in all_tasks() if spec.name == "ask")
    names = supporting_models(ask)
    assert "HuggingFaceM4/idefics-9b-instruct" in names
    assert "HuggingFaceM4/idefics-80b-instruct" in names
    assert "HuggingFaceM4/idefics-9b" not in names and "HuggingFaceM4/idefics-80b" not in names
    assert family_for_model_name("HuggingFaceM4/idefics-80b") == "idefics1"
