"""The mississippi-tools CLI on real tiny checkpoints: outputs, options and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mississippi_tools.cli import ExitCode, app

PDF = Path(__file__).parent / "bad_inputs" / "three_pages.pdf"
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process: exit code, stdout, stderr."""
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def on_model(model: Path, *args: str, tokens: int = 8) -> tuple[int, str, str]:
    """Run a model command on ``model`` with one tile and ``tokens`` new tokens at most."""
    return invoke(*args, "--model", str(model), "--max-tiles", "1", "--max-new-tokens", str(tokens))


def test_ocr_json_with_pages(tiny_checkpoint: Path) -> None:
    code, out, err = on_model(
        tiny_checkpoint, "ocr", str(PDF), "--pages", "2-3", "--json", tokens=3
    )
    assert code == ExitCode.OK, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["source"], line["page"]) for line in lines] == [(str(PDF), 2), (str(PDF), 3)]
    assert [line["result"]["meta"]["page"] for line in lines] == [2, 3]
    assert all(line["result"]["meta"]["new_tokens"] == 3 for line in lines)


def test_ocr_lines_with_confidence(tiny_checkpoint: Path, sample_png: Path) -> None:
    args = ("ocr", str(sample_png), "--format", "lines", "--confidence")
    code, out, err = on_model(tiny_checkpoint, *args, tokens=6)
    assert code == ExitCode.OK, err
    first = out.splitlines()[0]
    assert 0.0 <= float(first.split("\t")[0]) <= 1.0


def test_chart_csv_and_plot(scripted_checkpoint: Path, sample_png: Path, tmp_path: Path) -> None:
    plot = tmp_path / "chart.png"
    args = ("chart", str(sample_png), "--csv", "--plot", str(plot))
    code, out, err = on_model(scripted_checkpoint, *args, tokens=200)
    assert code == ExitCode.OK, err
    assert out.splitlines()[0] == "label,value"  # the grammar-shaped chart, as CSV
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_markdown(scripted_checkpoint: Path, sample_png: Path) -> None:
    code, out, err = on_model(scripted_checkpoint, "table", str(sample_png), tokens=64)
    assert code == ExitCode.OK, err
    assert "| total |" in out


def test_extract_with_a_schema_file(
    tiny_checkpoint: Path, sample_png: Path, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.json"
    properties = {"paid": {"type": "boolean"}, "status": {"enum": ["open", "closed"]}}
    schema.write_text(
        json.dumps({"type": "object", "properties": properties, "required": ["paid", "status"]})
    )
    args = ("extract", str(sample_png), "--schema", str(schema))
    code, out, err = on_model(tiny_checkpoint, *args, tokens=64)
    assert code == ExitCode.OK, err
    data = json.loads(out)  # the data alone, as pretty JSON
    assert isinstance(data["paid"], bool) and data["status"] in ("open", "closed")
    code, out, err = on_model(tiny_checkpoint, *args, "--json", tokens=64)
    assert code == ExitCode.OK, err
    (line,) = [json.loads(text) for text in out.splitlines()]
    assert line["result"]["data"] == data and line["result"]["meta"]["attempts"] == 1


def test_ask_and_generate(tiny_checkpoint: Path, sample_png: Path) -> None:
    code, _, err = on_model(
        tiny_checkpoint, "ask", str(sample_png), "-q", "What is the total?", tokens=3
    )
    assert code == ExitCode.OK, err
    args = ("generate", str(sample_png), "Describe it.", "--no-stream")
    code, out, err = invoke(*args, "--model", str(tiny_checkpoint), "--max-new-tokens", "3")
    assert code == ExitCode.OK, err
    assert out.strip()


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["ocr", "missing.png"], ExitCode.BAD_INPUT, "missing.png"),
        (["ocr", str(PDF), "--pages", "5"], ExitCode.BAD_INPUT, "3 pages"),
        (["ocr", "x.png", "--format", "bogus"], ExitCode.USAGE, "--format"),
        (["table", "SAMPLE"], ExitCode.NO_RESULT, "table"),
    ],
)
def test_exit_codes(
    args: list[str], code: int, fragment: str, tiny_checkpoint: Path, sample_png: Path
) -> None:
    args = [str(sample_png) if a == "SAMPLE" else a for a in args]
    got, _, err = on_model(tiny_checkpoint, *args)
    assert got == code
    assert fragment in err


def test_unreadable_schema_is_bad_input(
    tiny_checkpoint: Path, sample_png: Path, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text("{not json")
    code, _, err = on_model(tiny_checkpoint, "extract", str(sample_png), "--schema", str(schema))
    assert code == ExitCode.BAD_INPUT
    assert "--json-schema" in err and "is not valid JSON (" in err and "not json" not in err


def test_inline_schema_json_and_old_command_names(
    scripted_checkpoint: Path, sample_png: Path
) -> None:
    args = ("extract", str(sample_png), "--schema", '{"total": 0}')
    code, out, err = on_model(scripted_checkpoint, *args, tokens=64)
    assert code == ExitCode.OK, err
    assert set(json.loads(out)) == {"total"}  # the grammar writes compact JSON, not the script
    for old, new in (("chart", "read-chart"), ("table", "read-table")):
        assert invoke(old, "--help")[1] == invoke(new, "--help")[1].replace(new, old)


def test_missing_inputs_are_reported_before_any_model_loads(
    tmp_path: Path, sample_png: Path
) -> None:
    nowhere = str(tmp_path / "no-such-model")  # loading it would fail with a model error
    code, out, err = invoke("ocr", "missing.png", str(tmp_path / "gone.pdf"), "--model", nowhere)
    assert code == ExitCode.BAD_INPUT
    assert "missing.png" in err and "gone.pdf" in err and out == ""


def test_a_mixed_batch_prints_each_result_and_names_each_failure(
    scripted_checkpoint: Path, sample_png: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    inputs = [str(sample_png), "missing.png", str(broken), str(PDF), str(sample_png)]
    code, out, err = on_model(scripted_checkpoint, "ask", *inputs, "-q", "Total?", "--json")
    assert code == ExitCode.PARTIAL
    lines = [json.loads(text) for text in out.splitlines()]
    assert [(line["source"], line["page"]) for line in lines if "result" in line] == [
        (str(sample_png), None),
        (str(PDF), 1),
        (str(PDF), 2),
        (str(PDF), 3),
        (str(sample_png), None),
    ]
    failed = {line["source"]: line["error"]["code"] for line in lines if "error" in line}
    assert failed == {"missing.png": "image_not_found", str(broken): "image_decode_error"}
    assert "error: missing.png:" in err and f"error: {broken}:" in err
    code, out, _ = on_model(scripted_checkpoint, "ask", *inputs, "-q", "Total?")
    assert code == ExitCode.PARTIAL
    assert out.count('{"total": 5}') == 5 and f"== {PDF}, page 2" in out


def test_missing_model_offline_is_a_model_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    code, _, err = invoke("download", "h2oai/h2ovl-mississippi-800m")
    assert code == ExitCode.MODEL and "mississippi-tools download" in err


def test_build_checkpoint_writes_the_original_layout(tmp_path: Path) -> None:
    code, out, err = invoke("build-checkpoint", str(tmp_path / "tiny"))
    assert code == ExitCode.OK, err
    written = {p.name for p in (tmp_path / "tiny").iterdir()}
    assert written >= {"config.json", "model.safetensors", "tokenizer.model"}
    assert out.strip() == str(tmp_path / "tiny")  # stdout stays the path, for scripts
    assert "random weights" in err and "--demo" in err


def test_build_checkpoint_tiny_2b_writes_the_2b_config_shrunk(tmp_path: Path) -> None:
    from mississippi_tools.testing import TINY_2B_CONFIG

    code, out, err = invoke("build-checkpoint", str(tmp_path / "2b"), "--size", "tiny-2b")
    assert code == ExitCode.OK, err
    config = json.loads((tmp_path / "2b" / "config.json").read_text())
    assert config["use_msac"] is True
    assert config["llm_config"]["model_type"] == "mistral"
    assert config["llm_config"] == TINY_2B_CONFIG["llm_config"]
    assert out.strip() == str(tmp_path / "2b")


def test_build_checkpoint_writes_other_families_that_load(tmp_path: Path) -> None:
    from mississippi_tools.models.registry import family_of

    code, out, err = invoke("build-checkpoint", str(tmp_path / "i2"), "--family", "idefics2")
    assert code == ExitCode.OK, err
    config = json.loads((tmp_path / "i2" / "config.json").read_text())
    assert config["model_type"] == "idefics2"
    assert family_of(out.strip()) == "idefics2"


def test_build_checkpoint_refuses_an_unknown_family_naming_the_option(tmp_path: Path) -> None:
    code, _, err = invoke("build-checkpoint", str(tmp_path / "x"), "--family", "llava")
    assert code == ExitCode.USAGE
    assert "--family must be one of h2ovl, idefics1, idefics2" in err
    assert not (tmp_path / "x").exists()


def test_build_checkpoint_help_says_what_the_weights_are() -> None:
    code, out, _ = invoke("build-checkpoint", "--help")
    assert code == ExitCode.OK
    text = " ".join(out.split())
    assert "Its weights are random" in text
    assert "--demo" in text and "well-formed answer" in text
    assert "--size <tiny|tiny-2b|800m|2b>" in text


def test_demo_checkpoint_answers_every_command(tmp_path: Path, sample_png: Path) -> None:
    from mississippi_tools.testing import DEMO_ANSWERS, DEMO_EXTRACT_TEMPLATE

    demo = tmp_path / "demo"
    code, _, err = invoke("build-checkpoint", str(demo), "--demo")
    assert code == ExitCode.OK, err
    assert "well-formed answer" in err
    model = ("--model", str(demo))
    plot = tmp_path / "chart.png"
    code, out, err = invoke("chart", str(sample_png), "--csv", "--plot", str(plot), *model)
    assert code == ExitCode.OK, err
    assert out.split() == ["Month,Sales", "January,1000", "February,1200", "March,900"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, err = invoke("table", str(sample_png), "--csv", *model)
    assert code == ExitCode.OK, err
    assert out.splitlines()[0] == "Product,Price,Quantity"
    schema = tmp_path / "invoice.json"
    schema.write_text(json.dumps(DEMO_EXTRACT_TEMPLATE))
    code, out, err = invoke("extract", str(sample_png), "--schema", str(schema), *model)
    assert code == ExitCode.OK, err
    assert json.loads(out) == {
        "invoice_number": "12345",
        "date": "2024-10-17",
        "total": 1200.0,
        "paid": False,
    }
    code, out, err = invoke("ocr", str(sample_png), *model)
    assert (code, out.strip()) == (ExitCode.OK, DEMO_ANSWERS["ocr"]), err
    code, out, err = invoke("ask", str(sample_png), "-q", "What is the total?", *model)
    assert (code, out.strip()) == (ExitCode.OK, DEMO_ANSWERS["ask"]), err


@pytest.mark.slow  # six processes that each import torch: a minute on a busy 2-core machine
def test_demo_walkthrough_in_subprocesses(tmp_path: Path, sample_png: Path) -> None:
    """The README's offline walkthrough, command by command, as a newcomer runs it."""
    import os
    import subprocess
    import sys

    from mississippi_tools.testing import DEMO_ANSWERS, DEMO_EXTRACT_TEMPLATE

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "mississippi_tools", *args],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def done(process: subprocess.Popen[str]) -> str:
        out, err = process.communicate(timeout=300)
        assert process.returncode == ExitCode.OK, err
        return out

    assert done(run("build-checkpoint", "demo", "--demo")).strip() == "demo"
    (tmp_path / "invoice.json").write_text(json.dumps(DEMO_EXTRACT_TEMPLATE))
    image = str(sample_png)
    commands = {  # in parallel: each process spends most of its time importing
        "chart": run("chart", "--model", "demo", image, "--plot", "chart.png", "--csv"),
        "table": run("table", "--model", "demo", image, "--csv"),
        "extract": run("extract", "--model", "demo", image, "--schema", "invoice.json"),
        "ocr": run("ocr", "--model", "demo", image),
        "ask": run("ask", "--model", "demo", image, "-q", "What is the total?"),
    }
    outputs = {name: done(process) for name, process in commands.items()}
    assert outputs["chart"].splitlines()[1] == "January,1000"
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert outputs["table"].splitlines()[1] == "Shoes,$80,5"
    assert json.loads(outputs["extract"])["total"] == 1200.0
    assert outputs["ocr"].strip() == DEMO_ANSWERS["ocr"]
    assert outputs["ask"].strip() == DEMO_ANSWERS["ask"]
