"""Chart answers as the model writes them, the table views, and re-drawing with matplotlib."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from mississippi_tools.errors import ExtractionError, MissingDependencyError
from mississippi_tools.tasks.chart import (
    Axis,
    ChartData,
    ChartPoint,
    ChartSeries,
    parse_chart_output,
)
from mississippi_tools.tasks.results import ResultMetadata
from mississippi_tools.tasks.table import parse_table_output

META = ResultMetadata(model="h2oai/h2ovl-mississippi-800m", engine="local", tiles=7)
CUT = META.model_copy(update={"finish_reason": "length"})


def values(chart: ChartData, series: int = 0) -> list[tuple[str, float | None]]:
    return [(p.label, p.value) for p in chart.series[series].points]


# -- The card's answer shape -------------------------------------------------------------------


def test_card_bar_chart_answer() -> None:
    raw = (
        "{'chart': {'title': 'Monthly Sales', 'x_axis': 'Months', 'y_axis': 'Sales (in $)', "
        "'data_points': [{'label': 'January', 'value': 1000}, "
        "{'label': 'February', 'value': 1200}]}}"
    )
    chart = parse_chart_output(raw, META)
    assert chart.title == "Monthly Sales"
    assert chart.chart_type is None
    assert chart.x_axis == Axis(label="Months")
    assert chart.y_axis == Axis(label="Sales", unit="$")
    assert len(chart.series) == 1
    assert chart.series[0].name is None
    assert chart.series[0].points == [
        ChartPoint(label="January", value=1000.0),
        ChartPoint(label="February", value=1200.0),
    ]
    assert chart.notes == []
    assert chart.meta == META


def test_card_multiline_answer_in_fence_with_trailing_prose() -> None:
    raw = """```json
{
"chart": {
"title": "Monthly Sales Report",
"x_axis": "Months",
"y_axis": "Sales (in $)",
"data_points": [
{
"label": "January",
"value": 500
},
{
"label": "February",
"value": 600
},
{
"label": "March",
"value": 700
}
]
}
}
```
The chart shows a steady increase in sales."""
    chart = parse_chart_output(raw, META)
    assert values(chart) == [("January", 500), ("February", 600), ("March", 700)]


# -- Our template and its variants -------------------------------------------------------------


def test_full_template_answer_with_multiple_series_and_text_values() -> None:
    raw = (
        '{"chart": {"title": "Revenue by Quarter", "type": "Bar Chart", "x_axis": "Quarter", '
        '"y_axis": "", "series": ['
        '{"name": "2022", "data_points": [{"label": "Q1", "value": "$1,200"}, '
        '{"label": "Q2", "value": "$1.5k"}]}, '
        '{"name": "2023", "data_points": [{"label": "Q1", "value": "$1,300"}, '
        '{"label": "Q2", "value": "n/a"}]}]}}'
    )
    chart = parse_chart_output(raw, META)
    assert chart.chart_type == "bar"
    assert chart.y_axis == Axis(label=None, unit="$")
    assert [s.name for s in chart.series] == ["2022", "2023"]
    assert chart.series[0].points[1] == ChartPoint(label="Q2", value=1500.0, raw="$1.5k")
    assert chart.series[1].points[1] == ChartPoint(label="Q2", value=None, raw="n/a")
    assert chart.notes == []


def test_pie_percentages_set_the_unit() -> None:
    raw = (
        '{"chart": {"title": "Market Share", "type": "pie", "x_axis": "", "y_axis": "", '
        '"series": [{"name": "", "data_points": [{"label": "Chrome", "value": "65%"}, '
        '{"label": "Safari", "value": "19%"}, {"label": "Other", "value": "16%"}]}]}}'
    )
    chart = parse_chart_output(raw, META)
    assert chart.chart_type == "pie"
    assert chart.x_axis is None
    assert chart.y_axis == Axis(unit="%")
    assert chart.series[0].name is None
    assert values(chart) == [("Chrome", 65), ("Safari", 19), ("Other", 16)]


def test_axis_unit_is_not_overwritten_by_values() -> None:
    raw = '{"chart": {"y_axis": "Revenue (USD)", "data_points": [{"label": "A", "value": "$5"}]}}'
    assert parse_chart_output(raw, META).y_axis == Axis(label="Revenue", unit="USD")


def test_points_with_several_numeric_keys_become_series() -> None:
    raw = """{"chart": {"title": "Visitors", "type": "line", "x_axis": "Month",
"y_axis": "Visitors", "data_points": [{"label": "Jan", "2022": 120, "2023": 150},
{"label": "Feb", "2022": 130, "2023": "1.2k"}]}}"""
    chart = parse_chart_output(raw, META)
    assert [s.name for s in chart.series] == ["2022", "2023"]
    assert values(chart, 1) == [("Jan", 150), ("Feb", 1200)]


def test_series_as_mapping_and_x_y_points() -> None:
    raw = (
        "{'type': 'scatter plot', 'x_axis': {'label': 'Height', 'unit': 'cm'}, "
        "'y_axis': {'title': 'Weight (kg)'}, "
        "'series': {'Group A': [{'x': 150, 'y': 50.5}, {'x': 160, 'y': 55}]}}"
    )
    chart = parse_chart_output(raw, META)
    assert chart.chart_type == "scatter"
    assert chart.x_axis == Axis(label="Height", unit="cm")
    assert chart.y_axis == Axis(label="Weight", unit="kg")
    assert chart.series[0].name == "Group A"
    assert values(chart) == [("150", 50.5), ("160", 55)]


def test_chartjs_style_labels_and_datasets() -> None:
    raw = (
        '{"title": "Temperature", "type": "line", "labels": ["Mon", "Tue", "Wed"], '
        '"datasets": [{"label": "Oslo", "data": [3, 5, 4]}, '
        '{"label": "Rome", "data": [15, 17, 16]}]}'
    )
    chart = parse_chart_output(raw, META)
    assert [s.name for s in chart.series] == ["Oslo", "Rome"]
    assert values(chart, 1) == [("Mon", 15), ("Tue", 17), ("Wed", 16)]


def test_plain_mapping_and_bare_point_list() -> None:
    assert values(parse_chart_output('{"January": 1000, "February": "1,200"}', META)) == [
        ("January", 1000),
        ("February", 1200),
    ]
    assert values(parse_chart_output('[["A", 1], ["B", 2]]', META)) == [("A", 1), ("B", 2)]


def test_values_without_labels_are_numbered_with_a_note() -> None:
    chart = parse_chart_output('{"chart": {"title": "T", "data_points": [4, 5]}}', META)
    assert values(chart) == [("1", 4), ("2", 5)]
    assert chart.notes == ["the answer gave values without labels; the points are numbered"]


def test_unreadable_values_are_kept_raw_with_a_note() -> None:
    raw = '{"data_points": [{"label": "A", "value": "about a dozen"}, {"label": "B", "value": 3}]}'
    chart = parse_chart_output(raw, META)
    assert chart.series[0].points[0] == ChartPoint(label="A", value=None, raw="about a dozen")
    assert chart.notes == ["1 value(s) are not numbers: 'about a dozen'"]


def test_truncated_answer_keeps_complete_points_and_notes_the_cut() -> None:
    raw = (
        '{"chart": {"title": "Monthly Sales", "x_axis": "Months", "y_axis": "Sales", '
        '"data_points": [{"label": "January", "value": 1000}, '
        '{"label": "February", "value": 1200}, {"label": "Mar'
    )
    chart = parse_chart_output(raw, CUT)
    assert values(chart) == [("January", 1000), ("February", 1200)]
    assert chart.notes == [
        "the answer was cut off by max_new_tokens; the last data points may be missing"
    ]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("Bar Chart", "bar"),
        ("horizontal_bar", "bar"),
        ("Column chart", "bar"),
        ("stacked-bar", "bar"),
        ("LINE GRAPH", "line"),
        ("Doughnut", "pie"),
        ("bubble chart", "scatter"),
        ("Area", "area"),
        ("Radar Chart", "radar"),
        ("", None),
    ],
)
def test_chart_type_is_normalised(written: str, expected: str | None) -> None:
    raw = f'{{"type": "{written}", "data_points": [{{"label": "a", "value": 1}}]}}'
    assert parse_chart_output(raw, META).chart_type == expected


# -- Fallbacks when there is no chart JSON -----------------------------------------------------


def test_markdown_table_answer() -> None:
    raw = """Here is the data from the chart:

| Month | Sales ($) | Costs ($) |
|-------|-----------|-----------|
| Jan | 1,000 | 800 |
| Feb | 1,200 | 850 |"""
    chart = parse_chart_output(raw, META)
    assert chart.x_axis == Axis(label="Month")
    assert [s.name for s in chart.series] == ["Sales", "Costs"]
    assert values(chart) == [("Jan", 1000), ("Feb", 1200)]
    assert chart.y_axis == Axis(unit="$")
    assert chart.notes == ["the answer had no chart JSON; the data was read from a markdown table"]


def test_csv_answer_with_one_series() -> None:
    raw = "Year,Share\n2021,12%\n2022,15%\n2023,19%"
    chart = parse_chart_output(raw, META)
    assert chart.series[0].name is None
    assert chart.y_axis == Axis(label="Share", unit="%")
    assert values(chart) == [("2021", 12), ("2022", 15), ("2023", 19)]


def test_label_value_lines_answer() -> None:
    raw = """Title: Monthly Sales
Type: bar chart
X-axis: Months
Y-axis: Sales (in $)
- January: $1,000
- February: $1,200"""
    chart = parse_chart_output(raw, META)
    assert chart.title == "Monthly Sales"
    assert chart.chart_type == "bar"
    assert chart.x_axis == Axis(label="Months")
    assert chart.y_axis == Axis(label="Sales", unit="$")
    assert values(chart) == [("January", 1000), ("February", 1200)]


def test_label_value_lines_with_thousands_separators_are_not_csv() -> None:
    chart = parse_chart_output("January: $1,000\nFebruary: $1,200", META)
    assert values(chart) == [("January", 1000), ("February", 1200)]
    assert chart.y_axis == Axis(unit="$")


@pytest.mark.parametrize(
    "raw",
    [
        "I'm sorry, I can't make out the values in this chart.",
        "{'chart': {'title': 'Monthly Sales', 'x_axis': 'Months', 'data_points': []}}",
        "",
    ],
)
def test_no_data_points_raise_extraction_error(raw: str) -> None:
    with pytest.raises(ExtractionError) as info:
        parse_chart_output(raw, META)
    assert info.value.raw_text == raw
    assert info.value.errors


# -- Table views -----------------------------------------------------------------------------

CHART = ChartData(
    title="Revenue",
    chart_type="bar",
    x_axis=Axis(label="Quarter"),
    y_axis=Axis(label="Revenue", unit="$"),
    series=[
        ChartSeries(
            name="2022",
            points=[ChartPoint(label="Q1", value=1200), ChartPoint(label="Q2", value=1500.5)],
        ),
        ChartSeries(
            name="2023",
            points=[ChartPoint(label="Q1", value=1300), ChartPoint(label="Q3", value=None)],
        ),
    ],
    meta=META,
)


def test_to_table_aligns_series_on_labels() -> None:
    table = CHART.to_table()
    assert table.title == "Revenue"
    assert table.columns == ["Quarter", "2022", "2023"]
    assert table.rows == [["Q1", 1200, 1300], ["Q2", 1500.5, None], ["Q3", None, None]]
    assert table.meta == META


def test_single_unnamed_series_column_is_the_value_axis() -> None:
    chart = parse_chart_output(
        "{'chart': {'x_axis': 'Months', 'y_axis': 'Sales (in $)', "
        "'data_points': [{'label': 'January', 'value': 1000}]}}",
        META,
    )
    assert chart.to_csv() == "Months,Sales ($)\nJanuary,1000\n"


def test_repeated_labels_get_their_own_rows() -> None:
    chart = ChartData(
        chart_type="scatter",
        series=[
            ChartSeries(points=[ChartPoint(label="1", value=2), ChartPoint(label="1", value=3)])
        ],
        meta=META,
    )
    assert chart.to_table().rows == [["1", 2], ["1", 3]]


def test_markdown_round_trip_through_the_parser() -> None:
    again = parse_chart_output(CHART.to_markdown(), META)
    assert again.title == CHART.title
    assert [s.name for s in again.series] == ["2022", "2023"]
    assert values(again, 0) == [("Q1", 1200), ("Q2", 1500.5), ("Q3", None)]
    assert parse_table_output(CHART.to_csv(), META).rows[1] == ["Q2", "1500.5", None]


def test_str_is_markdown() -> None:
    assert str(CHART) == CHART.to_markdown()
    assert CHART.to_markdown().startswith("**Revenue**\n\n| Quarter | 2022 | 2023 |")


# -- Plotting --------------------------------------------------------------------------------


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
        return image.size


@pytest.mark.parametrize("chart_type", ["bar", "line", "pie", "scatter"])
def test_plot_renders_a_png(tmp_path: Path, chart_type: str) -> None:
    chart = CHART.model_copy(update={"chart_type": chart_type, "title": "Revenue $ vs $ costs"})
    path = tmp_path / f"{chart_type}.png"
    figure = chart.plot(path)
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _png_size(path) == (800, 500)
    assert figure.axes[0].get_title() == r"Revenue \$ vs \$ costs"


@pytest.mark.parametrize(
    ("chart_type", "lines", "areas", "bars"),
    [("area", 2, 2, 0), (None, 0, 0, 3), ("radar", 0, 0, 3)],
)
def test_plot_other_types_without_saving(
    chart_type: str | None, lines: int, areas: int, bars: int
) -> None:
    figure = CHART.model_copy(update={"chart_type": chart_type}).plot()
    ax = figure.axes[0]
    # Missing values are not drawn as bars: 2022 has Q1 and Q2, 2023 only Q1.
    assert (len(ax.lines), len(ax.collections), len(ax.patches)) == (lines, areas, bars)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Q1", "Q2", "Q3"]


def test_plot_into_given_axes(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 3), dpi=50)
    ax = figure.add_subplot()
    assert CHART.plot(tmp_path / "mine.png", ax=ax) is figure
    assert _png_size(tmp_path / "mine.png") == (200, 150)
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["2022", "2023"]


def test_plot_without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match=r"mississippi-tools\[plot\]") as info:
        CHART.plot()
    assert info.value.package == "matplotlib"
    assert isinstance(info.value, ImportError)
