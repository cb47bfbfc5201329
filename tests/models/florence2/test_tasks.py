"""The supported tasks through the API and the CLI on the tiny Florence-2; the rest refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mississippi_tools import MississippiVLM
from mississippi_tools.cli import ExitCode, app
from mississippi_tools.errors import InvalidInputError, UnsupportedTaskError
from mississippi_tools.models.base import ModelInfo
from mississippi_tools.models.registry import family_for_model_name, family_of
from mississippi_tools.tasks.catalogue import all_tasks, check_supported, tasks_for_model


@pytest.fixture(scope="module")
def vlm(florence2_checkpoint: Path):  # type: ignore[no-untyped-def]
    loaded = MississippiVLM.load(florence2_checkpoint, device="cpu", dtype="float32")
    yield loaded
    loaded.close()


def test_the_model_offers_ask_and_ocr_only(vlm: MississippiVLM, florence2_checkpoint: Path) -> None:
    assert [t.name for t in vlm.tasks] == ["ocr", "ask"]
    assert [t.name for t in tasks_for_model(str(florence2_checkpoint))] == ["ocr", "ask"]
    assert family_of(florence2_checkpoint) == "florence2"
    assert family_for_model_name("HuggingFaceM4/Florence-2-DocVQA") == "florence2"
    assert family_for_model_name("/models/florence-2-docvqa") == "florence2"


def test_ask_sends_the_docvqa_prompt(vlm: MississippiVLM, sample_png: Path) -> None:
    backend: Any = vlm.engine.backend  # type: ignore[attr-defined]
    answer = vlm.ask(sample_png, "What is the total?", max_new_tokens=6)
    assert answer.meta.model.endswith("tiny-Florence-2-DocVQA")
    expected = backend.tokenizer.encode("<DocVQA>What is the total?")
    prompt = backend.prepare("<DocVQA>What is the total?", [_loaded(sample_png)]).input_ids
    assert prompt[66:-1] == expected
    assert answer.meta.prompt_tokens == len(prompt)


def test_ocr_sends_the_ocr_task_token(vlm: MississippiVLM, sample_png: Path) -> None:
    result = vlm.ocr(sample_png, max_new_tokens=6)
    backend: Any = vlm.engine.backend  # type: ignore[attr-defined]
    ocr = backend.prepare("<OCR>", [_loaded(sample_png)]).input_ids
    assert result.meta.prompt_tokens == len(ocr)
    assert isinstance(result.text, str)
    # The task's default budget (1024) fits: the answer stops where the decoder's positions end.
    whole = vlm.ocr(sample_png)
    assert whole.meta.new_tokens >= 1
    assert whole.meta.prompt_tokens + whole.meta.new_tokens <= 1024
    with pytest.raises(InvalidInputError, match=r"plain text only.*format='text'"):
        vlm.ocr(sample_png, format="markdown")


def test_boxes_ask_with_the_region_token_and_read_its_quads(
    vlm: MississippiVLM, sample_png: Path
) -> None:
    from mississippi_tools.tasks.dialects.florence2 import Florence2Dialect

    result = vlm.ocr(sample_png, boxes=True, max_new_tokens=6)
    backend: Any = vlm.engine.backend  # type: ignore[attr-defined]
    asked = backend.prepare("<OCR_WITH_REGION>", [_loaded(sample_png)]).input_ids
    assert result.meta.prompt_tokens == len(asked)
    assert all(line.box is None or line.box.pixels for line in result.lines)
    answer = "</s><s>Total<loc_100><loc_50><loc_600><loc_50><loc_600><loc_90><loc_100><loc_90></s>"
    found = Florence2Dialect().parse_regions(answer, (2000, 1000))
    assert found.text == "Total"
    (region,) = found.regions
    assert region.line == 0 and region.box == (201.0, 50.5, 1201.0, 90.5)
    assert region.quad == (201.0, 50.5, 1201.0, 50.5, 1201.0, 90.5, 201.0, 90.5)


def test_every_other_task_is_refused_with_the_typed_error(
    vlm: MississippiVLM, sample_png: Path
) -> None:
    info: ModelInfo = vlm.engine.backend.info  # type: ignore[attr-defined]
    refused = [spec.name for spec in all_tasks() if spec.name not in ("ask", "ocr")]
    assert {"extract", "read_chart", "read_table"} <= set(refused)
    for name in refused:
        spec = next(s for s in all_tasks() if s.name == name)
        with pytest.raises(UnsupportedTaskError, match=f"cannot do {name}"):
            check_supported(spec, info)
    with pytest.raises(UnsupportedTaskError, match=r"task tokens.*none for extract"):
        vlm.extract(sample_png, json_schema={"total": 0})


def test_cli_ask_and_ocr_and_refusal(florence2_checkpoint: Path, sample_png: Path) -> None:
    model = ["--model", str(florence2_checkpoint), "--max-new-tokens", "5", "--json"]
    asked = CliRunner().invoke(app, ["ask", str(sample_png), "-q", "Total?", *model])
    assert asked.exit_code == ExitCode.OK, asked.stderr
    result = json.loads(asked.stdout)["result"]
    prompt = 65 + 2 + len(_tokenizer(florence2_checkpoint).encode("<DocVQA>Total?"))
    assert result["meta"]["prompt_tokens"] == prompt and "text" in result
    read = CliRunner().invoke(app, ["ocr", str(sample_png), *model])
    assert read.exit_code == ExitCode.OK, read.stderr
    result = json.loads(read.stdout)["result"]
    prompt = 65 + 2 + len(_tokenizer(florence2_checkpoint).encode("What is the text in the image?"))
    assert result["meta"]["prompt_tokens"] == prompt and "text" in result
    refused = CliRunner().invoke(app, ["chart", str(sample_png), *model])
    assert refused.exit_code == ExitCode.BAD_INPUT
    assert "cannot do read_chart" in refused.stderr


def _loaded(path: Path) -> Any:
    from mississippi_tools.images import load_image

    return load_image(path)


def _tokenizer(directory: Path) -> Any:
    from mississippi_tools.models.florence2.tokenization import load_tokenizer

    return load_tokenizer(directory)


def test_cli_builds_the_tiny_checkpoint_in_microsofts_layout(tmp_path: Path) -> None:
    from mississippi_tools.testing import FAMILIES

    assert "florence2" in FAMILIES
    target = tmp_path / "tiny-florence2"
    built = CliRunner().invoke(app, ["build-checkpoint", str(target), "--family", "florence2"])
    assert built.exit_code == ExitCode.OK, built.stderr
    config = json.loads((target / "config.json").read_text())
    assert config["vision_config"]["model_type"] == "davit"
    assert config["text_config"]["model_type"] == "florence2_language"
    assert family_of(target) == "florence2"
