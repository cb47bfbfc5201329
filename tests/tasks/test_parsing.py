"""Lenient JSON and number parsing on answers written the way H2OVL-Mississippi writes them."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mississippi_tools.parsing import (
    JSONRepairError,
    Quantity,
    is_missing,
    parse_json_lenient,
    parse_number,
    parse_quantity,
    strip_code_fences,
)

# -- The model card's own example answers ------------------------------------------------------


def test_card_form_answer_is_a_python_dict() -> None:
    raw = (
        "{'name': 'Emily Johnson', 'date_of_birth': '1995-05-12', "
        "'address': '4567 Oak Street, New York'}"
    )
    assert parse_json_lenient(raw) == {
        "name": "Emily Johnson",
        "date_of_birth": "1995-05-12",
        "address": "4567 Oak Street, New York",
    }


def test_card_table_answer() -> None:
    raw = (
        "{'products': [{'product_name': 'Shoes', 'price': '$80', 'quantity': 5}, "
        "{'product_name': 'T-Shirts', 'price': '$20', 'quantity': 10}]}"
    )
    assert parse_json_lenient(raw)["products"][1] == {
        "product_name": "T-Shirts",
        "price": "$20",
        "quantity": 10,
    }


def test_card_nested_form_answer_multiline() -> None:
    raw = """{
"personal_details": {
"name": "Sarah Connor",
"age": 35,
"gender": "Female"
},
"contact": {
"phone": "555-1234",
"email": "sarah.connor@example.com"
},
"emergency_contact": {
"name": "Kyle Reese",
"relation": "Friend",
"phone": "555-5678"
}
}"""
    value = parse_json_lenient(raw)
    assert value["personal_details"]["age"] == 35
    assert value["emergency_contact"]["name"] == "Kyle Reese"


# -- Wrappers: fences and prose ------------------------------------------------------------------


def test_fenced_json_with_prose_around() -> None:
    raw = (
        "Sure! Here is the extracted information:\n\n```json\n"
        '{"events": [{"name": "Morning Meeting", "time": "09:00 AM", '
        '"location": "Conference Room 1"}]}\n```\n\n'
        "Let me know if you need anything else."
    )
    assert parse_json_lenient(raw) == {
        "events": [{"name": "Morning Meeting", "time": "09:00 AM", "location": "Conference Room 1"}]
    }


def test_unterminated_fence_with_truncated_json() -> None:
    raw = (
        '```json\n{"chart": {"title": "Monthly Sales Report", "x_axis": "Months", '
        '"data_points": [{"label": "January", "value": 500}, {"label": "February", "value": 6'
    )
    value = parse_json_lenient(raw)
    assert value["chart"]["data_points"] == [
        {"label": "January", "value": 500},
        {"label": "February", "value": 6},
    ]


def test_prose_brackets_before_the_json_are_not_taken() -> None:
    raw = 'Based on the image [see legend], the data is: {"a": 1, "b": [1, 2]} (values approximate)'
    assert parse_json_lenient(raw) == {"a": 1, "b": [1, 2]}


def test_trailing_prose_after_single_quoted_dict() -> None:
    raw = "{'name': 'John Doe', 'age': 30}\nNote: the address was not legible."
    assert parse_json_lenient(raw) == {"name": "John Doe", "age": 30}


# -- Repairs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"a": 1, "b": [1, 2, 3,],}', {"a": 1, "b": [1, 2, 3]}),
        ("{'ok': True, 'missing': None, 'no': False}", {"ok": True, "missing": None, "no": False}),
        (
            '{name: "John Doe", date_of_birth: "1990-01-01"}',
            {"name": "John Doe", "date_of_birth": "1990-01-01"},
        ),
        (
            "{“name”: “John Doe”, ‘city’: ‘Springfield’}",
            {"name": "John Doe", "city": "Springfield"},
        ),
        (
            "{'name': 'Miles O'Brien', 'note': 'it's fine'}",
            {"name": "Miles O'Brien", "note": "it's fine"},
        ),
        ('{"title": "Kyle’s “best” year"}', {"title": "Kyle’s “best” year"}),
        (
            '{"price": $80, "discount": 12%, "qty": 5}',
            {"price": "$80", "discount": "12%", "qty": 5},
        ),
        ('{\n  "a": "x"\n  "b": "y"\n}', {"a": "x", "b": "y"}),
        ('{"a": 1, // the first\n "b": /* second */ 2}', {"a": 1, "b": 2}),
        ('{"total": \\$5}', {"total": "\\$5"}),
        ('{"a": "caf\\u00e9 \\ud83d\\ude00 \\$5 \\_x"}', {"a": "café 😀 $5 _x"}),
        ('{"path": "C:\\Users\\emily"}', {"path": "C:\\Users\\emily"}),
        ('{"a": [1, 2}', {"a": [1, 2]}),
        ('{"zip": 01234}', {"zip": "01234"}),
        ("{'v': 1.5e3, 'n': -2, 'f': .5}", {"v": 1500.0, "n": -2, "f": 0.5}),
    ],
)
def test_repairs(raw: str, expected: Any) -> None:
    assert parse_json_lenient(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"name": "Sarah Con', {"name": "Sarah Con"}),
        ('{"name": "Sarah", "age":', {"name": "Sarah"}),
        ('{"name": "Sarah", "ag', {"name": "Sarah"}),
        ('[{"a": 1}, {"a": 2}, {"a"', [{"a": 1}, {"a": 2}, {}]),
        ('{"rows": [["x", 1], ["y", 2', {"rows": [["x", 1], ["y", 2]]}),
        ('{"text": "ends with a backslash \\', {"text": "ends with a backslash "}),
    ],
)
def test_truncated_tail_is_closed(raw: str, expected: Any) -> None:
    assert parse_json_lenient(raw) == expected


def test_members_without_braces() -> None:
    assert parse_json_lenient('"name": "Emily", "age": 30') == {"name": "Emily", "age": 30}


def test_strict_scalars_are_returned() -> None:
    assert parse_json_lenient(" 42 ") == 42
    assert parse_json_lenient('"hello"') == "hello"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "I'm sorry, I cannot read the chart in this image.",
        "The image shows [a bar chart] with monthly values.",
        "Here is the JSON: {",
        "{see the table below}",
    ],
)
def test_no_json_raises_with_the_text(raw: str) -> None:
    with pytest.raises(JSONRepairError) as info:
        parse_json_lenient(raw)
    assert info.value.text == raw
    assert isinstance(info.value, ValueError)


def test_not_a_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_json_lenient(b"{}")  # type: ignore[arg-type]


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(_json_values)
def test_strict_json_round_trips(value: Any) -> None:
    assert parse_json_lenient(json.dumps(value)) == value


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=10), _json_values, min_size=1, max_size=4))
def test_python_repr_round_trips_inside_prose_and_fence(value: dict[str, Any]) -> None:
    raw = f"Here you go:\n```python\n{value!r}\n```\nDone."
    assert parse_json_lenient(raw) == value


# -- Code fences -------------------------------------------------------------------------------


def test_strip_code_fences() -> None:
    assert strip_code_fences("Intro\n```markdown\n# Title\n\nText\n```\nBye") == "# Title\n\nText\n"
    assert strip_code_fences("```\nunterminated") == "unterminated"
    assert strip_code_fences("no fence here") == "no fence here"


# -- Numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "unit"),
    [
        ("$1,200", 1200, "$"),
        ("1,200", 1200, None),
        ("1.200,50", 1200.5, None),
        ("1.200,50 €", 1200.5, "€"),
        ("€1.200,50", 1200.5, "€"),
        ("1,200.50", 1200.5, None),
        ("1.200", 1.2, None),
        ("0,5", 0.5, None),
        ("12,5 %", 12.5, "%"),
        ("12%", 12, "%"),
        ("+3.5 percent", 3.5, "%"),
        ("(1,234)", -1234, None),
        ("($1,234.50)", -1234.5, "$"),
        ("−5", -5, None),
        ("-$5", -5, "$"),
        ("$-5", -5, "$"),
        ("3.4k", 3400, None),
        ("2M", 2000000, None),
        ("$1.2B", 1200000000, "$"),
        ("$2m", 2000000, "$"),
        ("1.5 million", 1500000, None),
        ("1 234 567", 1234567, None),
        ("1\u202f234,5", 1234.5, None),
        ("1'234", 1234, None),
        ("1,23,456", 123456, None),
        ("USD 1,200", 1200, "USD"),
        ("1,200 USD", 1200, "USD"),
        ("US$ 40", 40, "US$"),
        ("12 kg", 12, "kg"),
        ("21°C", 21, "°C"),
        ("5 m", 5, "m"),
        ("90 km/h", 90, "km/h"),
        ("~300", 300, None),
        ("approx. 1,000", 1000, None),
        ("1e3", 1000.0, None),
        ("12.0", 12.0, None),
        (".5", 0.5, None),
        ("2019", 2019, None),
        ("１２", 12, None),
    ],
)
def test_parse_quantity(text: str, value: float, unit: str | None) -> None:
    quantity = parse_quantity(text)
    assert quantity == Quantity(value, unit)
    assert type(quantity.value) is type(value)
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "text",
    ["n/a", "N/A", "-", "—", "–", "", "  ", "null", "None", "NaN", "?", "…", "unknown"],
)
def test_placeholders_are_missing(text: str) -> None:
    assert is_missing(text)
    assert parse_quantity(text) == Quantity(None, None)


@pytest.mark.parametrize(
    "text",
    [
        "January",
        "Q1",
        "FY2020",
        "2019-2020",
        "10:30",
        "555-1234",
        "12 apples and 3 pears",
        "1st",
        "1,2,3",
        "1.2.3",
        "3 4",
        "$",
        "%",
        "1,234.567,8",
    ],
)
def test_not_a_single_number(text: str) -> None:
    assert parse_number(text) is None
    assert not is_missing(text)


def test_quantity_is_currency() -> None:
    assert parse_quantity("$5").is_currency
    assert parse_quantity("5 EUR").is_currency
    assert parse_quantity("US$5").is_currency
    assert not parse_quantity("5%").is_currency
    assert not parse_quantity("5 kg").is_currency
    assert not parse_quantity("5").is_currency


@settings(max_examples=100, deadline=None)
@given(st.integers(-(10**12), 10**12))
def test_grouped_integers(n: int) -> None:
    assert parse_number(f"{n:,}") == n
    assert parse_quantity(f"${n:,}") == Quantity(n, "$")
    assert parse_number(f"{n:_}".replace("_", " ")) == n


@settings(max_examples=100, deadline=None)
@given(st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False))
def test_two_decimal_amounts_in_both_conventions(d: Any) -> None:
    english = f"{d:,.2f}"
    european = english.replace(",", "_").replace(".", ",").replace("_", ".")
    assert math.isclose(parse_number(english) or 0.0, float(d))
    assert math.isclose(parse_number(european) or 0.0, float(d))
