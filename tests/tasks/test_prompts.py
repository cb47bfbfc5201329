"""The prompts are pinned: a change here changes what the model sees, so it must be deliberate."""

from __future__ import annotations

import json

from mississippi_tools.tasks.ask import build_ask_prompt
from mississippi_tools.tasks.chart import CHART_JSON_TEMPLATE, build_chart_prompt
from mississippi_tools.tasks.ocr import build_ocr_prompt
from mississippi_tools.tasks.table import build_table_prompt


def test_ocr_prompts() -> None:
    assert build_ocr_prompt() == "Read the text in the image."
    assert build_ocr_prompt("text") == "Read the text in the image."
    assert build_ocr_prompt("lines") == "Read the text in the image."
    assert build_ocr_prompt("markdown") == (
        "Read the text in the image and format it as Markdown. "
        "Keep the reading order, headings, lists and tables; write tables as Markdown tables."
    )


def test_chart_prompt() -> None:
    assert build_chart_prompt() == (
        "Extract the details of the chart from the image, including the title, chart type, "
        "axis labels and data points, and format it as JSON: "
        '{"chart": {"title": "", "type": "", "x_axis": "", "y_axis": "", '
        '"series": [{"name": "", "data_points": [{"label": "", "value": 0}]}]}}\n'
        'Use bar, line, pie or scatter for "type". Write the axis labels with their units as '
        'shown, for example "Sales (in $)". Write one series per legend entry, named as in the '
        'legend; a chart without a legend has one series. Write each "value" as a number.'
    )


def test_chart_template_is_the_cards_template_extended() -> None:
    template = json.loads(CHART_JSON_TEMPLATE)
    # The card: {'chart': {'title': '', 'x_axis': '', 'y_axis': '', 'data_points': [...]}}
    assert set(template["chart"]) == {"title", "type", "x_axis", "y_axis", "series"}
    assert template["chart"]["series"][0]["data_points"] == [{"label": "", "value": 0}]
    assert CHART_JSON_TEMPLATE in build_chart_prompt()


def test_table_prompt() -> None:
    assert build_table_prompt() == (
        "Extract the table from the image and format it as a Markdown table. "
        "Write the header row first, then one row per table row, "
        "with every cell exactly as shown in the image; leave empty cells empty. "
        "If the table has a title, write it on the line before the table."
    )


def test_ask_prompts() -> None:
    assert build_ask_prompt("What is the title of the chart?", 1) == (
        "What is the title of the chart?"
    )
    assert build_ask_prompt("Compare the two charts.", 2) == (
        "Image-1: <image>\nImage-2: <image>\nCompare the two charts."
    )


def test_prompts_carry_no_image_placeholder() -> None:
    # With one image the engine puts "<image>\n" in front, as the original does.
    for prompt in (
        build_ocr_prompt("text"),
        build_ocr_prompt("markdown"),
        build_chart_prompt(),
        build_table_prompt(),
    ):
        assert "<image>" not in prompt
