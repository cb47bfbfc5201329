"""The CLI on whole documents: text layers, zoom, loops, document extraction, folders, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from mississippi_tools.cli import ExitCode
from tests.documents import INVOICE_LINES, Page, build_pdf
from tests.test_cli import invoke, on_model


@pytest.fixture
def mixed_pdf(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.pdf"
    path.write_bytes(build_pdf([Page("text"), Page("scan")]))
    return path


def _lines(text: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_text_layer_answers_through_the_cli(tiny_checkpoint: Path, mixed_pdf: Path) -> None:
    code, out, err = on_model(tiny_checkpoint, "ocr", str(mixed_pdf), "--json", tokens=4)
    assert code == ExitCode.OK, err
    first, second = _lines(out)
    assert first["result"]["text"] == "\n".join(INVOICE_LINES)
    assert first["result"]["meta"]["origin"] == "text_layer"
    assert second["result"]["meta"]["origin"] == "model"
    code, out, err = on_model(
        tiny_checkpoint, "ocr", str(mixed_pdf), "--pages", "1", "--text-layer", "never", tokens=4
    )
    assert code == ExitCode.OK, err
    assert "ACME Supplies" not in out


def test_region_option(tiny_checkpoint: Path, mixed_pdf: Path) -> None:
    args = ("ocr", str(mixed_pdf), "--pages", "1", "--region", "0,0,1,0.115", "--json")
    code, out, err = on_model(tiny_checkpoint, *args)
    assert code == ExitCode.OK, err
    (line,) = _lines(out)
    assert line["result"]["text"] == "\n".join(INVOICE_LINES[:2])
    assert line["result"]["meta"]["region"] == [0, 0, 1700, 253]
    code, _, err = on_model(tiny_checkpoint, "ocr", str(mixed_pdf), "--region", "0,0,-1,1")
    assert code == ExitCode.BAD_INPUT and "negative edge" in err


def test_a_loop_is_reported_with_exit_code_5(looping_checkpoint: Path, sample_png: Path) -> None:
    code, out, err = on_model(looping_checkpoint, "ocr", str(sample_png), tokens=300)
    assert code == ExitCode.NO_RESULT
    assert out == "" and "fell into a loop" in err and "again on the retry" in err
    code, out, err = on_model(looping_checkpoint, "ocr", str(sample_png), "--json", tokens=300)
    assert code == ExitCode.NO_RESULT
    (line,) = _lines(out)
    assert line["error"]["code"] == "repetition"
    args = ("ocr", str(sample_png), "--no-repetition-check")
    code, out, err = on_model(looping_checkpoint, *args, tokens=100)
    assert code == ExitCode.OK, err
    assert out.count("the cat") >= 20


def test_extract_document_command(scripted_checkpoint: Path, mixed_pdf: Path) -> None:
    args = ("extract-document", str(mixed_pdf), "--schema", '{"total": 0}', "--json")
    code, out, err = on_model(scripted_checkpoint, *args, tokens=32)
    assert code == ExitCode.OK, err
    (line,) = _lines(out)
    assert (line["source"], line["page"]) == (str(mixed_pdf), None)
    assert line["result"]["pages"] == [1, 2] and line["result"]["strategy"] == "per_page"


# -- folders, --out and --resume ------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three images (one in a subfolder), a two-page PDF, and files that are not read."""
    root = tmp_path / "scans"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for name in ("a.png", "sub/c.jpg", "b.PNG", ".hidden/x.png"):
        image = Image.new("RGB", (200, 120), "white")
        ImageDraw.Draw(image).text((10, 10), name, fill="black")
        image.save(root / name, format="JPEG" if name.endswith(".jpg") else "PNG")
    (root / "d.pdf").write_bytes(build_pdf([Page("scan"), Page("scan")]))
    (root / "notes.txt").write_text("not an image")
    return root


def _keys(path: Path) -> list[tuple[str, int | None]]:
    return [(Path(e["source"]).name, e["page"]) for e in _lines(path.read_text())]


def test_a_folder_is_walked_in_order_into_one_line_per_page(
    tiny_checkpoint: Path, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    code, stdout, err = on_model(tiny_checkpoint, "ocr", str(folder), "--out", str(out), tokens=3)
    assert code == ExitCode.OK, err
    assert stdout == ""  # results go to the file
    assert _keys(out) == [
        ("a.png", None),
        ("b.PNG", None),
        ("d.pdf", 1),
        ("d.pdf", 2),
        ("c.jpg", None),
    ]
    assert all("result" in e for e in _lines(out.read_text()))
    assert "5 result(s) and 0 error(s) written to" in err


def test_resume_reads_only_what_the_file_lacks(
    tiny_checkpoint: Path, folder: Path, tmp_path: Path
) -> None:
    """An interrupted run: two pages done, the last line cut in the middle of its write."""
    out = tmp_path / "results.jsonl"
    done = [
        {"source": str(folder / "a.png"), "page": None, "result": {"text": "DONE BEFORE"}},
        {"source": str(folder / "d.pdf"), "page": 1, "result": {"text": "DONE BEFORE"}},
        {"source": str(folder / "b.PNG"), "page": None, "error": {"code": "x", "message": "y"}},
    ]
    partial = json.dumps({"source": str(folder / "sub" / "c.jpg"), "page": None, "result": {}})
    out.write_text("".join(json.dumps(e) + "\n" for e in done) + partial[:-10])

    code, _, err = on_model(
        tiny_checkpoint, "ocr", str(folder), "--out", str(out), "--resume", tokens=3
    )
    assert code == ExitCode.OK, err
    assert "2 page(s) already in" in err
    entries = _lines(out.read_text())
    assert entries[:3] == done  # kept as they were; the cut line is gone
    new = [(Path(e["source"]).name, e["page"]) for e in entries[3:]]
    assert new == [("b.PNG", None), ("d.pdf", 2), ("c.jpg", None)]  # the failed one read again
    assert all("result" in e for e in entries[3:])

    code, _, err = invoke("ocr", str(folder), "--out", str(out), "--resume", "--model", "nowhere")
    assert code == ExitCode.OK, err  # nothing left: the model is not even loaded
    assert "nothing left to read" in err


def test_resume_matches_sources_however_the_folder_was_named(
    tiny_checkpoint: Path, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "results.jsonl"
    code, _, err = on_model(tiny_checkpoint, "ocr", str(folder), "--out", str(out), tokens=3)
    assert code == ExitCode.OK, err
    monkeypatch.chdir(folder.parent)
    code, _, err = invoke("ocr", "./scans/", "--out", str(out), "--resume", "--model", "nowhere")
    assert code == ExitCode.OK and "nothing left to read" in err


def test_resume_needs_out_and_an_empty_folder_is_bad_input(
    tiny_checkpoint: Path, tmp_path: Path, sample_png: Path
) -> None:
    code, _, err = on_model(tiny_checkpoint, "ocr", str(sample_png), "--resume")
    assert code == ExitCode.BAD_INPUT and "--out FILE.jsonl" in err
    (tmp_path / "empty").mkdir()
    code, _, err = on_model(tiny_checkpoint, "ocr", str(tmp_path / "empty"))
    assert code == ExitCode.BAD_INPUT and "holds no images or PDFs" in err
