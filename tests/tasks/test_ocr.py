"""OCR answers: space collapsing, lines with confidences, Markdown with and without fences."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.tasks.ocr import (
    OCRLine,
    OCRResult,
    build_ocr_prompt,
    collapse_spaces,
    parse_ocr_output,
)
from mississippi_tools.tasks.results import ResultMetadata

META = ResultMetadata(model="h2oai/h2ovl-mississippi-800m", engine="local", tiles=3)

RECEIPT = "\nACME  Store\n\n12  Main   Street  \nTotal due:    $1,200.00\n\n"


def test_collapse_spaces() -> None:
    assert collapse_spaces("Total   due:  $1,200") == "Total due: $1,200"
    assert collapse_spaces("a\t\tb\n\nc") == "a\t\tb\n\nc"
    assert collapse_spaces("") == ""


def test_text_answer() -> None:
    result = parse_ocr_output(RECEIPT, "text", None, META)
    assert result.text == "ACME Store\n\n12 Main Street\nTotal due: $1,200.00"
    assert str(result) == result.text
    assert [line.text for line in result.lines] == [
        "ACME Store",
        "12 Main Street",
        "Total due: $1,200.00",
    ]
    assert all(line.confidence is None for line in result.lines)
    assert result.markdown is None
    assert result.format == "text"
    assert result.meta == META


def test_line_confidences_follow_the_raw_lines() -> None:
    confidences = [0.5, 0.99, 0.1, 0.95, 0.9, 0.2, 0.3]
    assert len(confidences) == len(RECEIPT.split("\n"))
    result = parse_ocr_output(RECEIPT, "lines", confidences, META)
    assert result.format == "lines"
    assert result.lines == [
        OCRLine(text="ACME Store", confidence=0.99),
        OCRLine(text="12 Main Street", confidence=0.95),
        OCRLine(text="Total due: $1,200.00", confidence=0.9),
    ]


def test_confidences_must_match_the_lines() -> None:
    with pytest.raises(InvalidInputError, match="got 2 line confidences for 3 lines"):
        parse_ocr_output("a\nb\nc", "text", [0.5, 0.5], META)
    with pytest.raises(InvalidInputError, match="probabilities"):
        parse_ocr_output("a\nb", "text", [0.5, -1.2], META)


def test_markdown_answer_in_a_fence() -> None:
    raw = (
        "```markdown\n# Invoice  No. 42\n\n- Item:   Shoes\n  - Size:  42\n\n"
        "| Item | Price |\n|---|---|\n| Shoes | $80 |\n```\n"
    )
    confidences = [0.1] + [0.9] * 8 + [0.1, 0.1]
    assert len(confidences) == len(raw.split("\n"))
    result = parse_ocr_output(raw, "markdown", confidences, META)
    assert result.markdown == (
        "# Invoice No. 42\n\n- Item: Shoes\n  - Size: 42\n\n| Item | Price |\n|---|---|\n"
        "| Shoes | $80 |"
    )
    assert result.text == result.markdown
    assert result.lines[2] == OCRLine(text="- Size: 42", confidence=0.9)
    assert len(result.lines) == 6


def test_markdown_keeps_inner_code_blocks_and_unterminated_fence() -> None:
    raw = "# Setup\n\n```bash\npip  install x\n```\n"
    assert parse_ocr_output(raw, "markdown", None, META).markdown == (
        "# Setup\n\n```bash\npip install x\n```"
    )
    cut = "```md\n# Title\n\nSome text that was cut"
    assert parse_ocr_output(cut, "markdown", None, META).text == "# Title\n\nSome text that was cut"


def test_code_fences_are_kept_in_plain_text() -> None:
    raw = "```\nprint('hi')\n```"
    assert parse_ocr_output(raw, "text", None, META).text == raw


def test_empty_answer() -> None:
    result = parse_ocr_output("  \n\n", "text", None, META)
    assert result.text == ""
    assert result.lines == []


def test_unknown_format() -> None:
    with pytest.raises(InvalidInputError, match="unknown OCR format 'html'"):
        build_ocr_prompt("html")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        parse_ocr_output("x", "html", None, META)  # type: ignore[arg-type]


def test_models_validate() -> None:
    with pytest.raises(ValidationError):
        OCRLine(text="x", confidence=1.5)
    with pytest.raises(ValidationError):
        OCRResult(text="x", format="pdf", meta=META)  # type: ignore[arg-type]
    result = OCRResult(text="x", meta=META)
    assert result.lines == []
    assert result.format == "text"
