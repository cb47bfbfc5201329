"""Table answers as the model writes them: Markdown, the card's JSON, CSV, HTML; round trips."""

from __future__ import annotations

import csv
import io

import pytest
from pydantic import ValidationError

from mississippi_tools.errors import ExtractionError
from mississippi_tools.tasks.results import ResultMetadata
from mississippi_tools.tasks.table import TableData, parse_table_output

META = ResultMetadata(model="h2oai/h2ovl-mississippi-800m", engine="local", tiles=7)
CUT = META.model_copy(update={"finish_reason": "length"})


# -- JSON answers (the card's shapes) ------------------------------------------------------------


def test_card_products_answer_single_quoted() -> None:
    raw = (
        "{'products': [{'product_name': 'Shoes', 'price': '$80', 'quantity': 5}, "
        "{'product_name': 'T-Shirts', 'price': '$20', 'quantity': 10}]}"
    )
    table = parse_table_output(raw, META)
    assert table.columns == ["product_name", "price", "quantity"]
    assert table.rows == [["Shoes", "$80", 5], ["T-Shirts", "$20", 10]]
    assert table.records() == [
        {"product_name": "Shoes", "price": "$80", "quantity": 5},
        {"product_name": "T-Shirts", "price": "$20", "quantity": 10},
    ]
    assert table.records(typed=True)[0] == {"product_name": "Shoes", "price": 80, "quantity": 5}
    assert table.meta == META


def test_card_products_answer_multiline_in_fence() -> None:
    raw = """```json
{
"products": [
{
"product_name": "Apples",
"price": "$2",
"quantity": 10
},
{
"product_name": "Bananas",
"price": "$1",
"quantity": 20
}
]
}
```"""
    table = parse_table_output(raw, META)
    assert table.rows == [["Apples", "$2", 10], ["Bananas", "$1", 20]]


def test_json_columns_and_rows() -> None:
    raw = '{"title": "Inventory", "columns": ["Item", "Qty"], "rows": [["Pen", 3], ["Ink", null]]}'
    table = parse_table_output(raw, META)
    assert table.title == "Inventory"
    assert table.columns == ["Item", "Qty"]
    assert table.rows == [["Pen", 3], ["Ink", None]]


def test_json_list_of_records_with_missing_keys_and_nested_values() -> None:
    raw = '[{"name": "Ann", "tags": ["a", "b"], "active": true}, {"name": "Bob", "score": 7.5}]'
    table = parse_table_output(raw, META)
    assert table.columns == ["name", "tags", "active", "score"]
    assert table.rows == [["Ann", '["a", "b"]', "true", None], ["Bob", None, None, 7.5]]


def test_json_list_of_lists_with_header_row() -> None:
    table = parse_table_output(
        '[["City", "Pop"], ["Oslo", "709,000"], ["Bergen", "291,000"]]', META
    )
    assert table.columns == ["City", "Pop"]
    assert table.records(typed=True)[1] == {"City": "Bergen", "Pop": 291000}


def test_json_columnar() -> None:
    table = parse_table_output('{"Name": ["Ann", "Bob"], "Age": [31, 45]}', META)
    assert table.columns == ["Name", "Age"]
    assert table.rows == [["Ann", 31], ["Bob", 45]]


def test_json_truncated_records_keep_complete_rows() -> None:
    raw = '{"products": [{"product_name": "Shoes", "price": "$80"}, {"product_name": "Ha'
    table = parse_table_output(raw, CUT)
    assert table.rows == [["Shoes", "$80"], ["Ha", None]]
    assert any("cut off" in note for note in table.notes)


# -- Markdown answers --------------------------------------------------------------------------


def test_markdown_with_title_prose_alignment_and_ragged_rows() -> None:
    raw = """Here is the table extracted from the image:

**Quarterly Results**

| Region | Q1 | Q2 |
|:-------|---:|---:|
| North | 1,200 | 1,350 |
| South | 980 |
| East | 1,100 | 1,150 | 99 |

Let me know if you need anything else."""
    table = parse_table_output(raw, META)
    assert table.title == "Quarterly Results"
    assert table.columns == ["Region", "Q1", "Q2"]
    assert table.rows == [
        ["North", "1,200", "1,350"],
        ["South", "980", None],
        ["East", "1,100", "1,150"],
    ]
    assert table.notes == [
        "row 2 had fewer cells than the 3 columns; padded with empty cells",
        "row 3 had more cells than the 3 columns; extra cells dropped",
    ]
    assert table.records(typed=True)[0] == {"Region": "North", "Q1": 1200, "Q2": 1350}


def test_markdown_without_outer_pipes_and_with_escaped_pipes() -> None:
    raw = "Name | Price\n--- | ---\nA \\| B | $5\n**Total** | $5"
    table = parse_table_output(raw, META)
    assert table.rows == [["A | B", "$5"], ["Total", "$5"]]


def test_markdown_in_fence_with_heading_title_and_br() -> None:
    raw = (
        "```markdown\n## Table: Opening hours\n| Day | Hours |\n|---|---|\n"
        "| Mon | 9-17<br>closed 12-13 |\n```"
    )
    table = parse_table_output(raw, META)
    assert table.title == "Opening hours"
    assert table.rows == [["Mon", "9-17\nclosed 12-13"]]


def test_markdown_empty_and_repeated_headers_are_named() -> None:
    raw = "|  | Sales | Sales |\n|---|---|---|\n| Jan | 1 | 2 |"
    table = parse_table_output(raw, META)
    assert table.columns == ["column_1", "Sales", "Sales_2"]


def test_markdown_header_widened_when_most_rows_are_longer() -> None:
    raw = "| Name | Price |\n|---|---|\n| Shoes | $80 | 5 |\n| Hat | $20 | 2 |"
    table = parse_table_output(raw, META)
    assert table.columns == ["Name", "Price", "column_3"]
    assert table.rows == [["Shoes", "$80", "5"], ["Hat", "$20", "2"]]
    assert "added 1 unnamed column(s)" in table.notes[0]


def test_markdown_truncated_last_row() -> None:
    raw = "| Item | Qty | Price |\n|---|---|---|\n| Pen | 3 | $1 |\n| Penc"
    table = parse_table_output(raw, CUT)
    assert table.rows == [["Pen", "3", "$1"], ["Penc", None, None]]
    assert len(table.notes) == 2


def test_grid_table_rules_and_a_sentence_that_is_not_a_title() -> None:
    raw = (
        "The prices are listed in the grid below.\n\n"
        "+------+-----+\n| Item | Qty |\n+======+=====+\n| Pen  | 3   |\n+------+-----+\n"
        "| Ink  | 4   |\n+------+-----+"
    )
    table = parse_table_output(raw, META)
    assert table.title is None
    assert table.columns == ["Item", "Qty"]
    assert table.rows == [["Pen", "3"], ["Ink", "4"]]


def test_only_the_first_of_two_tables() -> None:
    raw = "| a | b |\n|---|---|\n| 1 | 2 |\n\n| c | d |\n|---|---|\n| 3 | 4 |"
    table = parse_table_output(raw, META)
    assert table.columns == ["a", "b"]
    assert table.notes == ["the answer has 2 tables; only the first was read"]


# -- CSV, TSV, HTML, aligned -------------------------------------------------------------------


def test_csv_in_fence_with_quoted_commas() -> None:
    raw = 'Sure:\n```csv\nName,Price,Qty\n"Shoes, red",$80,5\nHat,$20,\n```'
    table = parse_table_output(raw, META)
    assert table.columns == ["Name", "Price", "Qty"]
    assert table.rows == [["Shoes, red", "$80", "5"], ["Hat", "$20", None]]


def test_tsv_and_semicolons() -> None:
    assert parse_table_output("Name\tPrice\nShoes\t$80\nHat\t$20", META).rows == [
        ["Shoes", "$80"],
        ["Hat", "$20"],
    ]
    table = parse_table_output("Produkt;Preis\nSchuhe;80,50 €\nHut;20,00 €", META)
    assert table.records(typed=True) == [
        {"Produkt": "Schuhe", "Preis": 80.5},
        {"Produkt": "Hut", "Preis": 20.0},
    ]


def test_whitespace_aligned_columns() -> None:
    raw = "Item        Qty    Price\nPen         3      $1.20\nNotebook    12     $4.00"
    table = parse_table_output(raw, META)
    assert table.columns == ["Item", "Qty", "Price"]
    assert table.rows[1] == ["Notebook", "12", "$4.00"]


def test_html_table_with_caption_and_colspan() -> None:
    raw = (
        "<table><caption>Stock levels</caption>"
        "<tr><th>Item</th><th>Qty</th><th>Note</th></tr>"
        "<tr><td>Pen</td><td>3</td><td>ok</td></tr>"
        "<tr><td colspan=2>Total&nbsp;items</td><td>3</td></tr></table>"
    )
    table = parse_table_output(raw, META)
    assert table.title == "Stock levels"
    assert table.rows == [["Pen", "3", "ok"], ["Total items", None, "3"]]


@pytest.mark.parametrize(
    "raw",
    [
        "I could not find a table in this image.",
        "The chart shows sales, which rose in spring.\nThey peaked in March, then fell.",
        "",
        "```\n```",
        "{'note': {'text': 'no table'}}",
    ],
)
def test_no_table_raises_extraction_error(raw: str) -> None:
    with pytest.raises(ExtractionError) as info:
        parse_table_output(raw, META)
    assert info.value.raw_text == raw
    assert info.value.code == "extraction_failed"


# -- Typed records -------------------------------------------------------------------------------


def test_records_typed_conversions() -> None:
    table = TableData(
        columns=["text", "money", "pct", "missing", "id", "weight", "year", "neg"],
        rows=[["Shoes", "$1,200", "12%", "n/a", "007", "12 kg", "2019", "(1,234)"]],
        meta=META,
    )
    assert table.records(typed=True) == [
        {
            "text": "Shoes",
            "money": 1200,
            "pct": 12,
            "missing": None,
            "id": "007",
            "weight": "12 kg",
            "year": 2019,
            "neg": -1234,
        }
    ]
    assert table.records()[0]["money"] == "$1,200"


# -- Rendering and round trips -----------------------------------------------------------------

TRICKY = TableData(
    title="Orders | Q1",
    columns=["Customer", "Note", "Amount"],
    rows=[
        ["Smith, John", 'said "hi"', "$1,200.50"],
        ["A | B", "two\nlines", None],
        ["Émilie", "", "12%"],
    ],
    meta=META,
)


def test_to_markdown() -> None:
    table = TableData(columns=["Item", "Qty"], rows=[["Pen", 3], ["Ink", None]], meta=META)
    assert table.to_markdown() == "| Item | Qty |\n| --- | --- |\n| Pen | 3 |\n| Ink |  |\n"
    assert str(table) == table.to_markdown()


def test_markdown_round_trip() -> None:
    again = parse_table_output(TRICKY.to_markdown(), META)
    assert again.title == TRICKY.title
    assert again.columns == TRICKY.columns
    assert again.rows == [[c or None for c in row] for row in TRICKY.rows]
    assert again.notes == []


def test_csv_is_proper_csv_and_round_trips() -> None:
    text = TRICKY.to_csv()
    assert list(csv.reader(io.StringIO(text)))[1] == ["Smith, John", 'said "hi"', "$1,200.50"]
    again = parse_table_output(text, META)
    assert again.columns == TRICKY.columns
    assert again.rows == [[c or None for c in row] for row in TRICKY.rows]


def test_numbers_render_as_written() -> None:
    table = TableData(columns=["a", "b"], rows=[[1200, 1200.0], [0.5, -3]], meta=META)
    assert table.to_csv() == "a,b\n1200,1200.0\n0.5,-3\n"


# -- Validation ----------------------------------------------------------------------------------


def test_ragged_rows_are_rejected_on_construction() -> None:
    with pytest.raises(ValidationError, match="row 0 has 1 cells but there are 2 columns"):
        TableData(columns=["a", "b"], rows=[["x"]], meta=META)


def test_duplicate_and_missing_columns_are_rejected() -> None:
    with pytest.raises(ValidationError, match="repeated"):
        TableData(columns=["a", "a"], rows=[], meta=META)
    with pytest.raises(ValidationError, match="at least one column"):
        TableData(columns=[], rows=[], meta=META)


def test_extra_fields_are_forbidden() -> None:
    with pytest.raises(ValidationError):
        TableData(columns=["a"], rows=[], meta=META, colour="red")  # type: ignore[call-arg]


def test_stray_carriage_returns_never_escape_as_csv_errors() -> None:
    """Random model output with a bare \\r once made the csv module raise csv.Error."""
    from mississippi_tools.errors import ExtractionError
    from mississippi_tools.tasks.results import ResultMetadata
    from mississippi_tools.tasks.table import parse_table_output

    meta = ResultMetadata(model="m", engine="local")
    with pytest.raises(ExtractionError):
        parse_table_output('ab"c\rde,f\rgh', meta)
    table = parse_table_output("a,b\r\n1,2\r\n3,4", meta)
    assert table.columns == ["a", "b"]
