"""Reading charts: the prompt, the :class:`ChartData` result, and the parser of the model's answer.

The prompt follows the H2OVL card's bar-chart example ("Extract the details of the bar chart from
the image, including the title, axis labels, and data points and format it as JSON: {template}"),
whose answer shape is ``{"chart": {"title", "x_axis", "y_axis", "data_points": [{"label",
"value"}]}}``. Our template adds the chart type and a list of series for charts with a legend, and
keeps the card's plain-string axes (``"Sales (in $)"``), from which the unit is split off.

The parser accepts the card's shape, our template, the multi-series variants models drift into
(``{"series": [{"name", "data_points"}]}``, points with one numeric key per series, Chart.js-style
``labels`` + ``datasets``), values written as text (``"$1,200"``, ``"12%"``, ``"1.2k"``), missing
axis titles, code fences and prose, a truncated tail, and, when there is no usable JSON, a
Markdown/CSV table or ``label: value`` lines.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict, Field

from mississippi_tools.errors import ExtractionError, MissingDependencyError
from mississippi_tools.parsing import (
    JSONRepairError,
    is_missing,
    parse_json_lenient,
    parse_number,
    parse_quantity,
    strip_code_fences,
)
from mississippi_tools.tasks.base import OneShotPlan, RunSettings, TaskContext, TaskPlan
from mississippi_tools.tasks.catalogue import TaskSpec
from mississippi_tools.tasks.results import ResultMetadata, TaskResult, cut_note
from mississippi_tools.tasks.table import TableCell, TableData, _parse_table_text, _unique_names

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mississippi_tools.engine.base import GenerationOutput
    from mississippi_tools.images import LoadedImage

__all__ = [
    "CHART_JSON_SCHEMA",
    "CHART_JSON_TEMPLATE",
    "CHART_PROMPT",
    "DEFAULT_PLOT_DPI",
    "DEFAULT_PLOT_SIZE",
    "SPEC",
    "Axis",
    "ChartArguments",
    "ChartData",
    "ChartPoint",
    "ChartSeries",
    "build_chart_prompt",
    "parse_chart_output",
    "render_chart",
]

CHART_JSON_TEMPLATE: Final = (
    '{"chart": {"title": "", "type": "", "x_axis": "", "y_axis": "", '
    '"series": [{"name": "", "data_points": [{"label": "", "value": 0}]}]}}'
)
"""The JSON template given to the model: the card's chart template plus ``type`` and ``series``."""

CHART_PROMPT: Final = (
    "Extract the details of the chart from the image, including the title, chart type, "
    "axis labels and data points, and format it as JSON: "
    f"{CHART_JSON_TEMPLATE}\n"
    'Use bar, line, pie or scatter for "type". Write the axis labels with their units as shown, '
    'for example "Sales (in $)". Write one series per legend entry, named as in the legend; '
    'a chart without a legend has one series. Write each "value" as a number.'
)
"""The chart prompt, as returned by :func:`build_chart_prompt`."""

CHART_JSON_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "chart": {
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "type": {
                    "type": "string",
                    "enum": ["bar", "line", "pie", "scatter", "area", "other"],
                },
                "x_axis": {"type": "string"},
                "y_axis": {"type": "string"},
                "series": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "data_points": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "label": {"type": "string"},
                                        "value": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                                    },
                                    "required": ["label", "value"],
                                    "additionalProperties": False,
                                },
                            },
                        },
                        "required": ["name", "data_points"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["title", "type", "x_axis", "y_axis", "series"],
            "additionalProperties": False,
        }
    },
    "required": ["chart"],
    "additionalProperties": False,
}
"""The JSON Schema of :data:`CHART_JSON_TEMPLATE`, for engines that constrain output with a
grammar: the answer then always parses, and every value is a number (or null when unreadable)."""

DEFAULT_PLOT_SIZE: Final = (8.0, 5.0)
"""Size of the figure :meth:`ChartData.plot` creates, in inches."""
DEFAULT_PLOT_DPI: Final = 100
"""Resolution of the figure :meth:`ChartData.plot` creates: 800 x 500 pixels by default."""


def build_chart_prompt() -> str:
    """Return the prompt that asks the model to read a chart.

    It follows the card's advice for H2OVL-Mississippi: an explicit JSON template naming every key
    (:data:`CHART_JSON_TEMPLATE`), and explicit words on what goes in each (type, units, series).

    Returns:
        :data:`CHART_PROMPT`.
    """
    return CHART_PROMPT


# --------------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------------


class Axis(BaseModel):
    """A chart axis: its title and its unit, kept apart (``"Sales (in $)"`` gives Sales and $)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    label: str | None = None
    """The axis title without the unit, when the chart has one."""
    unit: str | None = None
    """The unit of the axis values (``$``, ``%``, ``kg``), from the title or the values."""

    def text(self) -> str | None:
        """The title with its unit as a chart prints it (``"Sales ($)"``), if there is a title."""
        if self.label and self.unit:
            return f"{self.label} ({self.unit})"
        return self.label


class ChartPoint(BaseModel):
    """One data point: a category (or x value) and its value."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    label: str
    """The category or x value, as written on the chart."""
    value: float | None
    """The value, or ``null`` when it could not be read as a number."""
    raw: str | None = None
    """The value as the model wrote it when it wrote text (``"$1,200"``), else ``null``."""


class ChartSeries(BaseModel):
    """The points of one series (one legend entry)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str | None = None
    """The legend entry, or ``null`` for a chart without a legend."""
    points: list[ChartPoint] = Field(default_factory=list)
    """The points in the order the chart shows them."""


class ChartData(TaskResult):
    """A chart read from an image: title, type, axes and the data of each series.

    Example:
        >>> chart = vlm.read_chart("sales.png")  # doctest: +SKIP
        >>> chart.title, chart.chart_type, chart.y_axis
        ('Monthly Sales', 'bar', Axis(label='Sales', unit='$'))
        >>> print(chart.to_csv())
        Months,Sales ($)
        January,1000
        February,1200
        >>> chart.plot("redrawn.png")  # re-draw the extracted data, to check it by eye
    """

    title: str | None = None
    """The chart title, when it has one."""
    chart_type: str | None = None
    """``bar``, ``line``, ``pie``, ``scatter``, ``area``, or another lower-case name."""
    x_axis: Axis | None = None
    """The category (x) axis."""
    y_axis: Axis | None = None
    """The value axis; for a pie chart, only its unit is meaningful."""
    series: list[ChartSeries] = Field(default_factory=list)
    """The data, one entry per series."""
    notes: list[str] = Field(default_factory=list)
    """What the parser had to repair or guess, for the reader."""

    def _series_names(self) -> list[str]:
        if len(self.series) == 1 and not self.series[0].name:
            axis = self.y_axis or Axis()
            name = axis.label or "value"
            return [f"{name} ({axis.unit})" if axis.unit else name]
        return [s.name or f"series_{i + 1}" for i, s in enumerate(self.series)]

    def _aligned(self) -> tuple[list[str], list[list[float | None]]]:
        """The labels in order, and each series' values aligned on them.

        A label repeated within a series (scatter x values) gets one row per occurrence.
        """
        keys: list[tuple[str, int]] = []
        index: dict[tuple[str, int], int] = {}
        columns: list[dict[tuple[str, int], float | None]] = []
        for series in self.series:
            seen: Counter[str] = Counter()
            column: dict[tuple[str, int], float | None] = {}
            for point in series.points:
                key = (point.label, seen[point.label])
                seen[point.label] += 1
                if key not in index:
                    index[key] = len(keys)
                    keys.append(key)
                column[key] = point.value
            columns.append(column)
        return [k[0] for k in keys], [[column.get(k) for k in keys] for column in columns]

    def to_table(self) -> TableData:
        """The data as a table: one row per label, one column per series.

        Returns:
            A :class:`~mississippi_tools.tasks.table.TableData` whose first column holds the labels
            (named after the x axis) and whose other columns hold each series' values (named after
            the legend, or the y axis for a single series); missing values are ``None``.
        """
        labels, values = self._aligned()
        first = (self.x_axis.text() if self.x_axis else None) or "label"
        rows: list[list[TableCell]] = [
            [label, *(_plain_number(v[i]) for v in values)] for i, label in enumerate(labels)
        ]
        return TableData(
            title=self.title,
            columns=_unique_names([first, *self._series_names()]),
            rows=rows,
            meta=self.meta.model_copy(),
        )

    def to_csv(self) -> str:
        """The data as CSV; see :meth:`to_table` for the layout."""
        return self.to_table().to_csv()

    def to_markdown(self) -> str:
        """The data as a Markdown table with the title above it; see :meth:`to_table`."""
        return self.to_table().to_markdown()

    def __str__(self) -> str:
        return self.to_markdown()

    def plot(self, path: str | Path | None = None, *, ax: Axes | None = None) -> Figure:
        """Re-draw the extracted data, to check the reading against the original by eye.

        Bar charts (also the default for unknown types) are drawn as grouped bars, line and area
        charts as lines over the labels, pie charts from the first series, and scatter charts with
        numeric labels as x values. Needs matplotlib (``pip install "mississippi-tools[plot]"``);
        pyplot is not used, so this is safe in servers and threads.

        Args:
            path: Save the figure there (the format follows the suffix; PNG is rendered with Agg).
            ax: Draw into these axes instead of a new figure of :data:`DEFAULT_PLOT_SIZE` inches
                at :data:`DEFAULT_PLOT_DPI`.

        Returns:
            The figure drawn into.

        Raises:
            MissingDependencyError: matplotlib is not installed.
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            raise MissingDependencyError("matplotlib", "plot", purpose="ChartData.plot()") from None
        if ax is None:
            figure = Figure(figsize=DEFAULT_PLOT_SIZE, dpi=DEFAULT_PLOT_DPI, layout="constrained")
            FigureCanvasAgg(figure)
            ax = figure.add_subplot()
        else:
            owner = ax.figure
            while not isinstance(owner, Figure):  # a SubFigure: climb to the root figure
                owner = owner.figure
            figure = owner
        self._draw(ax)
        if path is not None:
            figure.savefig(path)
        return figure

    def _draw(self, ax: Axes) -> None:
        labels, values = self._aligned()
        names = self._series_names()
        kind = self.chart_type or "bar"
        named = any(s.name for s in self.series)
        positions = list(range(len(labels)))
        if kind == "pie":
            pairs = [(lab, v) for lab, v in zip(labels, values[0] if values else [], strict=True)]
            shown = [(lab, v) for lab, v in pairs if v is not None and v > 0]
            if shown:
                ax.pie(
                    [v for _, v in shown],
                    labels=[_mpl(lab) for lab, _ in shown],
                    autopct="%1.0f%%",
                )
            ax.set_aspect("equal")
        elif kind == "scatter":
            numeric = [parse_number(lab) for lab in labels]
            xs = [float(x) if x is not None else float(i) for i, x in enumerate(numeric)]
            for name, column in zip(names, values, strict=True):
                pts = [(x, y) for x, y in zip(xs, column, strict=True) if y is not None]
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=_mpl(name))
            if any(x is None for x in numeric):
                ax.set_xticks(xs, [_mpl(lab) for lab in labels])
        elif kind in ("line", "area"):
            for name, column in zip(names, values, strict=True):
                ys = [math.nan if v is None else v for v in column]
                ax.plot(positions, ys, marker="o", label=_mpl(name))
                if kind == "area":
                    ax.fill_between(positions, [0.0 if v is None else v for v in column], alpha=0.3)
            ax.set_xticks(positions, [_mpl(lab) for lab in labels])
        else:
            width = 0.8 / max(len(values), 1)
            for i, (name, column) in enumerate(zip(names, values, strict=True)):
                offset = (i - (len(values) - 1) / 2) * width
                bars = [
                    (p + offset, v) for p, v in zip(positions, column, strict=True) if v is not None
                ]
                ax.bar([b[0] for b in bars], [b[1] for b in bars], width=width, label=_mpl(name))
            ax.set_xticks(positions, [_mpl(lab) for lab in labels])
        if kind != "pie":
            if labels and (len(labels) > 6 or max(len(lab) for lab in labels) > 10):
                ax.tick_params(axis="x", labelrotation=45)
            if self.x_axis and self.x_axis.text():
                ax.set_xlabel(_mpl(self.x_axis.text() or ""))
            if self.y_axis and self.y_axis.text():
                ax.set_ylabel(_mpl(self.y_axis.text() or ""))
        if self.title:
            ax.set_title(_mpl(self.title))
        if named and kind != "pie" and ax.get_legend_handles_labels()[0]:
            ax.legend()


def _mpl(text: str) -> str:
    """Escape ``$`` so that matplotlib prints it instead of starting math mode."""
    return text.replace("$", r"\$")


def _plain_number(value: float | None) -> float | int | None:
    if value is not None and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------

_TITLE_KEYS: Final[tuple[str, ...]] = ("title", "charttitle", "heading", "caption", "name")
_TYPE_KEYS: Final[tuple[str, ...]] = ("type", "charttype", "kind", "graphtype", "plottype")
_X_KEYS: Final[tuple[str, ...]] = ("xaxis", "xaxislabel", "xaxistitle", "xlabel", "xtitle", "x")
_Y_KEYS: Final[tuple[str, ...]] = ("yaxis", "yaxislabel", "yaxistitle", "ylabel", "ytitle", "y")
_UNIT_KEYS: Final[tuple[str, ...]] = ("unit", "units", "yunit", "valueunit")
_SERIES_KEYS: Final[tuple[str, ...]] = ("series", "datasets", "dataseries", "lines", "bars")
_POINTS_KEYS: Final[tuple[str, ...]] = ("datapoints", "points", "data", "values", "dataset", "y")
_CATEGORY_KEYS: Final[tuple[str, ...]] = (
    "labels",
    "categories",
    "xlabels",
    "xvalues",
    "x",
    "xaxislabels",
)
_LABEL_KEYS: Final[tuple[str, ...]] = (
    "label",
    "name",
    "category",
    "x",
    "xvalue",
    "key",
    "item",
    "group",
    "date",
    "month",
    "year",
    "period",
)
_VALUE_KEYS: Final[tuple[str, ...]] = (
    "value",
    "y",
    "yvalue",
    "values",
    "val",
    "amount",
    "count",
    "total",
    "percentage",
    "percent",
    "share",
    "size",
)
_META_KEYS: Final = frozenset(
    _TITLE_KEYS + _TYPE_KEYS + _X_KEYS + _Y_KEYS + _UNIT_KEYS + ("color", "colour", "legend")
)
# "Sales (in $)", "Revenue [USD m]": the unit in brackets at the end of an axis title.
_AXIS_UNIT_RE: Final = re.compile(
    r"(?P<label>.*?)\s*[(\[]\s*(?:in\s+)?(?P<unit>[^()\[\]]{1,24}?)\s*[)\]]\s*"
)
_KEY_VALUE_RE: Final = re.compile(
    r"\s*(?:[-*•]\s*|\d+[.)]\s+)?(?P<key>[^:=|]{1,80}?)\s*[:=]\s*(?P<value>.+?)\s*"
)


def _norm_key(key: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


def _normalised(mapping: dict[str, Any]) -> dict[str, Any]:
    """The mapping keyed by lower-case alphanumerics (``"X Axis"``, ``"xAxis"`` -> ``"xaxis"``)."""
    return {_norm_key(k): v for k, v in mapping.items()}


def _first(mapping: dict[str, Any], keys: Iterable[str], *types: type) -> Any:
    for key in keys:
        if key in mapping and isinstance(mapping[key], types) and mapping[key] != "":
            return mapping[key]
    return None


def _label_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _clean_text(value: Any) -> str | None:
    text = _label_text(value)
    return text or None


def _axis_from(value: Any) -> Axis | None:
    """An axis from ``"Sales (in $)"`` or ``{"label": "Sales", "unit": "$"}``."""
    label: str | None
    unit: str | None = None
    if isinstance(value, dict):
        d = _normalised(value)
        label = _clean_text(_first(d, ("label", "title", "name", "text"), str))
        unit = _clean_text(_first(d, _UNIT_KEYS, str))
    elif isinstance(value, str):
        label = _clean_text(value)
    else:
        return None
    if label and unit is None and (m := _AXIS_UNIT_RE.fullmatch(label)):
        candidate = m.group("unit").strip()
        if not re.fullmatch(r"[\d\s\-–,.]+", candidate):
            label, unit = m.group("label").strip() or None, candidate
    if label is None and unit is None:
        return None
    return Axis(label=label, unit=unit)


def _axis_categories(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = _first(_normalised(value), ("labels", "categories", "values", "ticks"), list)
        if found:
            return [_label_text(v) for v in found]
    return []


def _normalise_chart_type(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = re.sub(r"[_\-]+", " ", value.lower())
    text = re.sub(r"\b(?:charts?|graphs?|plots?|diagrams?)\b", " ", text)
    text = " ".join(text.split())
    for canonical, words in (
        ("pie", ("pie", "donut", "doughnut")),
        ("scatter", ("scatter", "bubble", "dot")),
        ("area", ("area",)),
        ("bar", ("bar", "column", "histogram")),
        ("line", ("line", "curve", "time series")),
    ):
        if any(re.search(rf"\b{w}", text) for w in words):
            return canonical
    return text or None


@dataclass
class _Value:
    value: float | None
    raw: str | None
    unit: str | None
    unreadable: bool


def _read_value(raw: Any) -> _Value:
    if isinstance(raw, bool | dict | list):
        return _Value(None, str(raw), None, True)
    if isinstance(raw, int | float):
        value = float(raw)
        return _Value(value if math.isfinite(value) else None, None, None, not math.isfinite(value))
    if isinstance(raw, str):
        quantity = parse_quantity(raw)
        if quantity.value is None:
            return _Value(None, raw, None, not is_missing(raw))
        return _Value(float(quantity.value), raw, quantity.unit, False)
    return _Value(None, None, None, False)


def _number_like(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and parse_number(value) is not None


@dataclass
class _ChartParts:
    """What was read so far; becomes a :class:`ChartData`."""

    title: str | None = None
    chart_type: str | None = None
    x_axis: Axis | None = None
    y_axis: Axis | None = None
    series: list[ChartSeries] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def has_points(self) -> bool:
        return any(s.points for s in self.series)


def _point_entries(
    point: Any, index: int, categories: Sequence[str]
) -> tuple[str, list[tuple[str | None, Any]], str | None]:
    """``(label, [(series key or None, raw value)], unit)`` for one point in any of its forms."""
    fallback = categories[index] if index < len(categories) else str(index + 1)
    if isinstance(point, dict):
        d = {_norm_key(k): (k, v) for k, v in point.items()}
        label_key = next((k for k in _LABEL_KEYS if k in d), None)
        if label_key is None:  # the first text that is not a number names the point
            label_key = next(
                (
                    k
                    for k, (_, v) in d.items()
                    if isinstance(v, str) and parse_number(v) is None and not is_missing(v)
                ),
                None,
            )
        label = _label_text(d[label_key][1]) if label_key else fallback
        unit_raw = next((d[k][1] for k in _UNIT_KEYS if k in d), None)
        unit = unit_raw.strip() or None if isinstance(unit_raw, str) else None
        value_key = next((k for k in _VALUE_KEYS if k in d and k != label_key), None)
        if value_key is not None:
            raw = d[value_key][1]
            if isinstance(raw, list):
                return label, [(str(j + 1), v) for j, v in enumerate(raw)], unit
            return label, [(None, raw)], unit
        entries: list[tuple[str | None, Any]] = [
            (str(original), v)
            for k, (original, v) in d.items()
            if k != label_key and k not in _META_KEYS and _number_like(v)
        ]
        return label, entries, unit
    if isinstance(point, list | tuple) and len(point) >= 2:
        if len(point) == 2:
            return _label_text(point[0]), [(None, point[1])], None
        return _label_text(point[0]), [(str(j + 1), v) for j, v in enumerate(point[1:])], None
    return fallback, [(None, point)], None


def _series_from_points(
    points: Any, name: str | None, categories: Sequence[str], parts: _ChartParts
) -> list[ChartSeries]:
    """Series from a list of points; points with several numeric keys give one series per key."""
    if isinstance(points, dict):  # {"January": 1000, "February": 1200}
        points = [
            {"label": k, **v} if isinstance(v, dict) else {"label": k, "value": v}
            for k, v in points.items()
        ]
    if not isinstance(points, list):
        return []
    if points and not categories and all(not isinstance(p, dict | list | tuple) for p in points):
        parts.notes.append("the answer gave values without labels; the points are numbered")
    order: list[str | None] = []
    by_key: dict[str | None, list[ChartPoint]] = {}
    for i, point in enumerate(points):
        label, entries, unit = _point_entries(point, i, categories)
        for key, raw in entries:
            read = _read_value(raw)
            if read.unreadable:
                parts.unreadable.append(str(raw))
            if read.unit or unit:
                parts.units.append(read.unit or unit or "")
            if not label and read.value is None:
                continue
            if key not in by_key:
                order.append(key)
                by_key[key] = []
            by_key[key].append(ChartPoint(label=label, value=read.value, raw=read.raw))
    if order == [None]:
        return [ChartSeries(name=name, points=by_key[None])]
    return [ChartSeries(name=key or "value", points=by_key[key]) for key in order]


def _chart_from_json(value: Any) -> _ChartParts | None:
    """Read the chart from the JSON shapes models produce (see the module docstring)."""
    if isinstance(value, list):
        if value and all(
            isinstance(v, dict) and any(k in _normalised(v) for k in _POINTS_KEYS) for v in value
        ):
            value = {"series": value}
        else:
            value = {"data_points": value}
    if not isinstance(value, dict):
        return None
    d = _normalised(value)
    for key in ("chart", "chartdata", "graph", "plot", "figure", "charts"):
        inner = d.get(key)
        if isinstance(inner, list) and inner and isinstance(inner[0], dict):
            inner = inner[0]
        if isinstance(inner, dict):
            d = {**{k: v for k, v in d.items() if k != key}, **_normalised(inner)}
            break
    parts = _ChartParts()
    has_data = any(k in d for k in _SERIES_KEYS + _POINTS_KEYS)
    title = _first(d, _TITLE_KEYS if has_data else _TITLE_KEYS[:-1], str)
    parts.title = _clean_text(title)
    parts.chart_type = _normalise_chart_type(_first(d, _TYPE_KEYS, str))
    x_raw = _first(d, _X_KEYS, str, dict)
    y_raw = _first(d, _Y_KEYS, str, dict)
    parts.x_axis, parts.y_axis = _axis_from(x_raw), _axis_from(y_raw)
    unit = _clean_text(_first(d, _UNIT_KEYS, str))
    if unit and (parts.y_axis is None or parts.y_axis.unit is None):
        parts.y_axis = Axis(label=parts.y_axis.label if parts.y_axis else None, unit=unit)
    categories = [_label_text(c) for c in _first(d, _CATEGORY_KEYS, list) or []]
    categories = categories or _axis_categories(x_raw)

    series_raw = _first(d, _SERIES_KEYS, list, dict)
    if isinstance(series_raw, dict):
        series_raw = [
            {"name": k, "data_points": v}
            if not isinstance(v, dict) or "data_points" not in v
            else v
            for k, v in series_raw.items()
        ]
    if isinstance(series_raw, list) and series_raw:
        items = [_normalised(s) if isinstance(s, dict) else None for s in series_raw]
        if all(
            item is not None and _first(item, _POINTS_KEYS, list, dict) is not None
            for item in items
        ):
            for item in items:
                assert item is not None
                name = _clean_text(
                    _first(item, ("name", "label", "series", "legend", "title"), str, int, float)
                )
                points = _first(item, _POINTS_KEYS, list, dict)
                parts.series += _series_from_points(points, name, categories, parts)
        else:  # "series" holding the points themselves
            parts.series += _series_from_points(series_raw, None, categories, parts)
    if not parts.has_points():
        points = _first(d, _POINTS_KEYS, list, dict)
        if points is not None:
            parts.series = _series_from_points(points, None, categories, parts)
    if not parts.has_points():  # {"January": 1000, "February": 1200}
        mapping = {k: v for k, v in value.items() if _norm_key(k) not in _META_KEYS}
        if mapping and all(_number_like(v) for v in mapping.values()):
            parts.series = _series_from_points(mapping, None, categories, parts)
    return parts


def _chart_from_table(raw: str) -> _ChartParts | None:
    table = _parse_table_text(raw)
    if table is None or len(table.columns) < 2:
        return None
    parts = _ChartParts(title=table.title)
    numeric_columns: list[int] = []
    for j in range(1, len(table.columns)):
        cells = [row[j] for row in table.rows if row[j] is not None]
        readable = [c for c in cells if _read_value(c).value is not None]
        if readable and len(readable) * 2 >= len(cells):
            numeric_columns.append(j)
    if not numeric_columns:
        return None
    headers = [_axis_from(table.columns[j]) or Axis() for j in numeric_columns]
    units = {h.unit for h in headers}
    shared = units.pop() if len(units) == 1 else None
    for j, header in zip(numeric_columns, headers, strict=True):
        # "Sales ($)", "Costs ($)": series Sales and Costs on a $ axis
        name = header.label if shared and header.label else table.columns[j]
        parts.series += _series_from_points(
            [[row[0], row[j]] for row in table.rows], name, [], parts
        )
    if not table.columns[0].startswith("column_"):
        parts.x_axis = _axis_from(table.columns[0])
    if len(parts.series) == 1:
        parts.y_axis = headers[0]
        parts.series[0].name = None
    elif shared:
        parts.y_axis = Axis(unit=shared)
    parts.notes.append(f"the answer had no chart JSON; the data was read from a {table.kind} table")
    return parts


def _chart_from_lines(raw: str) -> _ChartParts | None:
    """``label: value`` lines, with ``Title:``, ``X-axis:``, ``Type:`` lines when present."""
    parts = _ChartParts()
    pairs: list[list[str]] = []
    for line in strip_code_fences(raw).split("\n"):
        m = _KEY_VALUE_RE.fullmatch(line)
        if m is None:
            continue
        key = m.group("key").strip().strip("*_").strip()
        value = m.group("value").strip().strip("*_").strip()
        norm = _norm_key(key)
        if norm in ("title", "charttitle"):
            parts.title = value or None
        elif norm in _TYPE_KEYS:
            parts.chart_type = _normalise_chart_type(value)
        elif norm in _X_KEYS:
            parts.x_axis = _axis_from(value)
        elif norm in _Y_KEYS:
            parts.y_axis = _axis_from(value)
        elif _read_value(value).value is not None:
            pairs.append([key, value])
    if len(pairs) < 2:
        return None
    parts.series = _series_from_points(pairs, None, [], parts)
    parts.notes.append("the answer had no chart JSON; the data was read from 'label: value' lines")
    return parts


def parse_chart_output(raw: str, meta: ResultMetadata) -> ChartData:
    """Parse the model's answer to :func:`build_chart_prompt` into a :class:`ChartData`.

    Args:
        raw: The model's answer, as generated.
        meta: The engine's metadata for this generation.

    Returns:
        The chart. When the values carry a unit (``"$1,200"``, ``"12%"``) and the value axis has
        none, the unit is set on ``y_axis``. Guesses and repairs are listed in ``notes``.

    Raises:
        ExtractionError: No data points could be read from the answer in any form (the raw text
            is kept in ``raw_text``).
    """
    errors: list[str] = []
    parts: _ChartParts | None = None
    try:
        parts = _chart_from_json(parse_json_lenient(raw))
    except JSONRepairError as e:
        errors.append(str(e))
    if parts is None or not parts.has_points():
        if parts is not None:
            errors.append("the JSON in the answer has no data points")
        fallback = _chart_from_table(raw) or _chart_from_lines(raw)
        if fallback is not None and fallback.has_points():
            if parts is not None:  # keep what the JSON did say
                fallback.title = fallback.title or parts.title
                fallback.chart_type = fallback.chart_type or parts.chart_type
                fallback.x_axis = fallback.x_axis or parts.x_axis
                fallback.y_axis = fallback.y_axis or parts.y_axis
            parts = fallback
    if parts is None or not parts.has_points():
        preview = raw.strip()[:80]
        raise ExtractionError(
            f"no chart data found in the model's answer ({preview!r}); expected JSON data points, "
            "a table, or 'label: value' lines",
            raw_text=raw,
            errors=errors or ["no data points"],
        )
    units = {u for u in parts.units if u}
    if len(units) == 1 and (parts.y_axis is None or parts.y_axis.unit is None):
        parts.y_axis = Axis(label=parts.y_axis.label if parts.y_axis else None, unit=units.pop())
    elif len(units) > 1:
        parts.notes.append(f"the values carry different units: {sorted(units)}")
    if parts.unreadable:
        shown = ", ".join(repr(v) for v in parts.unreadable[:5])
        parts.notes.append(f"{len(parts.unreadable)} value(s) are not numbers: {shown}")
    if meta.finish_reason == "length":
        parts.notes.append(
            "the answer was cut off by max_new_tokens; the last data points may be missing"
        )
    return ChartData(
        title=parts.title,
        chart_type=parts.chart_type,
        x_axis=parts.x_axis,
        y_axis=parts.y_axis,
        series=[s for s in parts.series if s.points],
        notes=parts.notes,
        meta=meta,
    )


# --------------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------------


class ChartArguments(BaseModel):
    """Arguments of the ``read_chart`` task (none beyond the image)."""

    model_config = ConfigDict(extra="forbid")


def plan_chart(
    ctx: TaskContext, images: list[LoadedImage], args: ChartArguments, settings: RunSettings
) -> TaskPlan[ChartData]:
    """One request for the chart as JSON (grammar-constrained where the engine can)."""
    request = ctx.request(
        "read_chart",
        build_chart_prompt(),
        args,
        images,
        settings,
        default_max_new_tokens=SPEC.default_max_new_tokens,
        json_schema=CHART_JSON_SCHEMA if ctx.supports_grammar else None,
    )

    def parse(output: GenerationOutput, meta: ResultMetadata) -> ChartData:
        return parse_chart_output(output.text, meta)

    return OneShotPlan(request, images, parse)


def render_chart(chart: ChartData) -> str:
    """Title, type, axes, the data as a Markdown table and any notes, for an LLM."""
    head = f"Chart: {chart.title or '(untitled)'}"
    if chart.chart_type:
        head += f" ({chart.chart_type})"
    lines = [head]
    for name, axis in (("x axis", chart.x_axis), ("y axis", chart.y_axis)):
        label = axis.text() if axis is not None else None
        if label:
            lines.append(f"{name}: {label}")
    text = "\n".join(lines) + "\n\n" + chart.to_markdown().rstrip()
    if chart.notes:
        text += "\nNotes: " + "; ".join(chart.notes)
    return text + cut_note(chart.meta)


SPEC: TaskSpec[ChartArguments, ChartData] = TaskSpec(
    name="read_chart",
    title="Read a chart",
    description=(
        "Read the numbers behind a chart or graph (bar, line, pie, scatter, area) in an image "
        "or a PDF page, running locally. Returns the title, chart type and axis units, and the "
        "data as a Markdown table: one row per label (x value), one column per series. Use it "
        "to answer questions that need the plotted values. For plain text use ocr; for a "
        "printed table use read_table."
    ),
    arguments=ChartArguments,
    result=ChartData,
    plan=plan_chart,
    render=render_chart,
    aliases=("chart",),
)
