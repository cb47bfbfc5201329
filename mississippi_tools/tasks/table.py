"""Reading tables: the prompt, the :class:`TableData` result, and the parser of the model's answer.

The prompt asks for a Markdown table (see :func:`build_table_prompt` for why). The parser takes what
the model actually writes: Markdown pipe tables (with or without outer pipes, alignment rows,
escaped pipes, ragged rows), JSON in the shapes the H2OVL card uses (``{'products': [{...}]}``, a
list of objects, ``{"columns": [...], "rows": [[...]]}``), HTML ``<table>``, CSV/TSV, and
whitespace-aligned columns, inside code fences or not, with prose and a title line around them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mississippi_tools.errors import ExtractionError
from mississippi_tools.parsing import (
    JSONRepairError,
    is_missing,
    parse_json_lenient,
    parse_quantity,
)
from mississippi_tools.tasks.base import OneShotPlan, RunSettings, TaskContext, TaskPlan
from mississippi_tools.tasks.catalogue import TaskSpec
from mississippi_tools.tasks.results import ResultMetadata, TaskResult, cut_note

if TYPE_CHECKING:
    from mississippi_tools.engine.base import GenerationOutput
    from mississippi_tools.images import LoadedImage

__all__ = [
    "SPEC",
    "TABLE_PROMPT",
    "TableArguments",
    "TableCell",
    "TableData",
    "build_table_prompt",
    "parse_table_output",
    "render_table",
]

TableCell = str | int | float | None
"""A table cell: the text as read, a number when the answer gave a number (JSON), or empty."""

TABLE_PROMPT: Final = (
    "Extract the table from the image and format it as a Markdown table. "
    "Write the header row first, then one row per table row, "
    "with every cell exactly as shown in the image; leave empty cells empty. "
    "If the table has a title, write it on the line before the table."
)


def build_table_prompt() -> str:
    """Return the prompt that asks the model to read a table.

    The answer is asked for as a Markdown table rather than JSON, because:

    - the card's JSON recipe needs an explicit template naming the keys (``{'products':
      [{'product_name': '', 'price': '', 'quantity': 0}]}``), and for an arbitrary table the column
      names are what we want to read, so there is no template to give;
    - small VLMs (InternVL lineage, trained on document parsing) write pipe tables reliably, and a
      pipe table costs about one token per cell boundary where JSON repeats every key in every row;
    - a Markdown table cut by ``max_new_tokens`` still parses row by row.

    The parser accepts JSON, HTML and CSV answers as well.

    Returns:
        :data:`TABLE_PROMPT`.
    """
    return TABLE_PROMPT


def _cell_text(cell: TableCell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer() and abs(cell) < 1e15:
        return repr(cell)  # keep "1200.0": the cell is a float as given
    return str(cell)


def _typed_cell(cell: TableCell) -> TableCell:
    if not isinstance(cell, str):
        return cell
    if is_missing(cell):
        return None
    if re.fullmatch(r"\s*[+-]?0\d+\s*", cell):  # "007", "01234": identifiers, not numbers
        return cell
    quantity = parse_quantity(cell)
    if quantity.value is None:
        return cell
    if quantity.unit is None or quantity.unit == "%" or quantity.is_currency:
        return quantity.value
    return cell  # "12 kg": converting would lose the unit


class TableData(TaskResult):
    """A table read from an image.

    ``rows`` hold the cells as the model wrote them (text, or numbers when it answered in JSON);
    :meth:`records` with ``typed=True`` converts numeric text such as ``"$1,200"`` or ``"12%"``.

    Example:
        >>> table = vlm.read_table("invoice.png")  # doctest: +SKIP
        >>> table.columns
        ['Product', 'Price', 'Quantity']
        >>> table.records(typed=True)[0]
        {'Product': 'Shoes', 'Price': 80, 'Quantity': 5}
        >>> print(table.to_csv())
        Product,Price,Quantity
        Shoes,$80,5
    """

    title: str | None = None
    """The table's title or caption, when the answer gave one."""
    columns: list[str]
    """Column names, unique; unnamed columns are called ``column_<n>``."""
    rows: list[list[TableCell]]
    """The cells, one list per row, each as long as ``columns``; empty cells are ``null``."""
    notes: list[str] = Field(default_factory=list)
    """What the parser had to repair (ragged rows, a cut-off answer...), for the reader."""

    @model_validator(mode="after")
    def _check_shape(self) -> Self:
        if not self.columns:
            raise ValueError("a table needs at least one column")
        duplicates = sorted(name for name, n in Counter(self.columns).items() if n > 1)
        if duplicates:
            raise ValueError(f"column names must be unique; repeated: {duplicates}")
        width = len(self.columns)
        for i, row in enumerate(self.rows):
            if len(row) != width:
                raise ValueError(
                    f"row {i} has {len(row)} cells but there are {width} columns; "
                    "pad it with None or drop cells"
                )
        return self

    def records(self, typed: bool = False) -> list[dict[str, Any]]:
        """Return the rows as dictionaries keyed by column name.

        Args:
            typed: Convert text cells: placeholders (``"n/a"``, ``"-"``) become ``None``, and
                numbers as printed become ``int``/``float`` when nothing but a currency or ``%``
                would be lost (``"$1,200"`` gives 1200, ``"12%"`` gives 12). Text with another
                unit (``"12 kg"``), identifiers with leading zeros (``"007"``) and other text
                stay as they are.

        Returns:
            One ``{column: cell}`` dict per row.
        """
        return [
            dict(zip(self.columns, (_typed_cell(c) for c in row) if typed else row, strict=True))
            for row in self.rows
        ]

    def to_markdown(self) -> str:
        """Render the table as a Markdown pipe table, with the title in bold on the line before.

        Pipes in cells are escaped and line breaks become ``<br>``, so that
        :func:`parse_table_output` reads the text back into the same table.

        Returns:
            The Markdown text, ending with a newline.
        """

        def cell(value: TableCell) -> str:
            text = _cell_text(value).strip().replace("|", "\\|")
            return re.sub(r"\r?\n", "<br>", text)

        lines = []
        if self.title:
            lines += [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(cell(c) for c in self.columns) + " |")
        lines.append("|" + "|".join(" --- " for _ in self.columns) + "|")
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """Render the table as CSV (header row first, minimal quoting, Unix line ends).

        Empty cells are empty fields; the title is not written (CSV has no place for it).

        Returns:
            The CSV text.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows([_cell_text(c) for c in row] for row in self.rows)
        return buffer.getvalue()

    def __str__(self) -> str:
        return self.to_markdown()


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


@dataclass
class _ParsedTable:
    """A table recovered from an answer, before it becomes a :class:`TableData`."""

    columns: list[str]
    rows: list[list[TableCell]]
    title: str | None = None
    notes: list[str] = field(default_factory=list)
    kind: str = "markdown"


_FENCE_LINE_RE: Final = re.compile(r"^[ \t]*(?:`{3,}|~{3,}).*$\n?", re.MULTILINE)
_CHATTER_RE: Final = re.compile(
    r"(?:sure|certainly|okay|ok|of course|here(?:'s|\s+is|\s+are)|below|the\s+following|"
    r"the\s+(?:table|image|extracted|data)|this\s+(?:table|image)|i\s+(?:have|extracted|found)|"
    r"extracted|as\s+requested)\b",
    re.IGNORECASE,
)
_ALIGN_CELL_RE: Final = re.compile(r":?-+:?")
_PIPE_RE: Final = re.compile(r"(?<!\\)\|")
_GRID_RULE_RE: Final = re.compile(r"\s*\+[-=+:]*\+\s*")
_BR_RE: Final = re.compile(r"<br\s*/?>", re.IGNORECASE)
_EMPHASIS_RE: Final = re.compile(r"(\*\*|__)(.+)\1", re.DOTALL)


def _clean_title(line: str) -> str | None:
    """The title in a line before a table, or ``None`` for chatter such as "Here is the table:"."""
    text = line.strip()
    if not text or len(text) > 150 or text.startswith(("|", "```", "~~~", "<")):
        return None
    text = re.sub(r"^#{1,6}\s*", "", text)
    while (m := re.fullmatch(r"(\*\*|__|\*|_)(.+)\1", text)) is not None:
        text = m.group(2).strip()
    text = re.sub(r"^(?:table\s+title|title|table|caption)\s*:\s*", "", text, flags=re.IGNORECASE)
    text = text.rstrip(":").strip()
    if not text or _CHATTER_RE.match(text):
        return None
    if text[-1] in ".!?" and len(text.split()) > 3:  # a sentence, not a title
        return None
    return text


def _clean_cell(text: str) -> TableCell:
    text = _BR_RE.sub("\n", text).strip()
    if m := _EMPHASIS_RE.fullmatch(text):
        text = m.group(2).strip()
    return text or None


def _unique_names(names: Iterable[str | None]) -> list[str]:
    """Column names: empty ones become ``column_<n>``; repeats get ``_2``, ``_3``..."""
    result: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        base = (name or "").strip() or f"column_{i + 1}"
        candidate, n = base, 1
        while candidate in seen:
            n += 1
            candidate = f"{base}_{n}"
        seen.add(candidate)
        result.append(candidate)
    return result


def _describe_rows(numbers: Sequence[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:8])
    more = f" and {len(numbers) - 8} more" if len(numbers) > 8 else ""
    return f"row{'s' if len(numbers) > 1 else ''} {shown}{more}"


def _make_table(
    header: Sequence[TableCell],
    body: Sequence[Sequence[TableCell]],
    *,
    title: str | None = None,
    kind: str,
) -> _ParsedTable:
    """Square up ragged rows (padding, truncating or widening the header) and name the columns."""
    notes: list[str] = []
    width = len(header)
    data = [list(row) for row in body if any(c is not None for c in row)]
    longer = [row for row in data if len(row) > width]
    names: list[str | None] = [None if c is None else _cell_text(c) for c in header]
    if data and len(longer) * 2 > len(data):
        new_width = Counter(len(row) for row in longer).most_common(1)[0][0]
        notes.append(
            f"most rows have {new_width} cells but the header has {width}; "
            f"added {new_width - width} unnamed column(s)"
        )
        names += [None] * (new_width - width)
        width = new_width
    padded, cut = [], []
    rows: list[list[TableCell]] = []
    for number, row in enumerate(data, start=1):
        if len(row) < width:
            padded.append(number)
            row = row + [None] * (width - len(row))
        elif len(row) > width:
            if any(c is not None for c in row[width:]):
                cut.append(number)
            row = row[:width]
        rows.append(row)
    if padded:
        notes.append(
            f"{_describe_rows(padded)} had fewer cells than the {width} columns; "
            "padded with empty cells"
        )
    if cut:
        notes.append(
            f"{_describe_rows(cut)} had more cells than the {width} columns; extra cells dropped"
        )
    return _ParsedTable(_unique_names(names), rows, title=title, notes=notes, kind=kind)


# -- Markdown ----------------------------------------------------------------------------------


def _split_pipe_row(line: str) -> list[TableCell]:
    text = line.strip()
    parts = _PIPE_RE.split(text)
    if text.startswith("|"):
        parts = parts[1:]
    if len(parts) > 1 and _PIPE_RE.search(text[-1:]) and not text.endswith("\\|"):
        parts = parts[:-1]
    return [_clean_cell(p.replace("\\|", "|")) for p in parts]


def _is_align_row(cells: Sequence[TableCell]) -> bool:
    return bool(cells) and all(
        isinstance(c, str) and _ALIGN_CELL_RE.fullmatch(c.replace(" ", "")) for c in cells
    )


def _from_markdown(text: str) -> _ParsedTable | None:
    # "+----+----+" rules of grid tables separate rows like alignment rows do.
    lines = [line for line in text.split("\n") if not _GRID_RULE_RE.fullmatch(line)]
    blocks: list[tuple[int, int]] = []  # [start, end) of runs of lines with pipes
    i = 0
    while i < len(lines):
        if _PIPE_RE.search(lines[i]):
            start = i
            while i < len(lines) and _PIPE_RE.search(lines[i]):
                i += 1
            if i - start >= 2:
                blocks.append((start, i))
        else:
            i += 1
    if not blocks:
        return None
    rows_of = {b: [_split_pipe_row(line) for line in lines[b[0] : b[1]]] for b in blocks}
    with_align = [b for b in blocks if any(_is_align_row(r) for r in rows_of[b])]
    chosen = (with_align or blocks)[0]
    rows = [r for r in rows_of[chosen] if not _is_align_row(r)]
    if not rows:
        return None
    title = None
    for line in reversed(lines[: chosen[0]]):
        if line.strip():
            title = _clean_title(line)
            break
    table = _make_table(rows[0], rows[1:], title=title, kind="markdown")
    if len(with_align or blocks) > 1:
        table.notes.append(
            f"the answer has {len(with_align or blocks)} tables; only the first was read"
        )
    return table


# -- HTML --------------------------------------------------------------------------------------


class _HTMLTableReader(HTMLParser):
    """Collects the rows of the first ``<table>`` (``colspan`` pads with empty cells)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[TableCell]] = []
        self.caption: str | None = None
        self._depth = 0
        self._done = False
        self._cell: list[str] | None = None
        self._span = 1
        self._in_caption = False
        self._caption: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._done:
            return
        if tag == "table":
            self._depth += 1
        elif self._depth == 1 and tag == "tr":
            self._end_cell()
            self.rows.append([])
        elif self._depth == 1 and tag in ("td", "th"):
            self._end_cell()
            if not self.rows:
                self.rows.append([])
            self._cell = []
            span = dict(attrs).get("colspan") or "1"
            self._span = int(span) if span.isdigit() and 0 < int(span) <= 100 else 1
        elif self._depth == 1 and tag == "caption":
            self._in_caption = True
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self._done:
            return
        if tag in ("td", "th", "tr"):
            self._end_cell()
        elif tag == "caption":
            self._in_caption = False
            self.caption = " ".join("".join(self._caption).split()) or None
        elif tag == "table":
            self._end_cell()
            self._depth -= 1
            self._done = self._depth == 0

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        elif self._in_caption:
            self._caption.append(data)

    def _end_cell(self) -> None:
        if self._cell is None:
            return
        text = "\n".join(" ".join(part.split()) for part in "".join(self._cell).split("\n"))
        self.rows[-1].extend([_clean_cell(text)] + [None] * (self._span - 1))
        self._cell, self._span = None, 1


def _from_html(text: str) -> _ParsedTable | None:
    if not re.search(r"<t[rd]\b", text, re.IGNORECASE):
        return None
    reader = _HTMLTableReader()
    if not re.search(r"<table\b", text, re.IGNORECASE):
        text = "<table>" + text + "</table>"
    reader.feed(text)
    reader.close()
    reader._end_cell()
    rows = [r for r in reader.rows if r]
    if not rows:
        return None
    return _make_table(rows[0], rows[1:], title=reader.caption, kind="html")


# -- JSON --------------------------------------------------------------------------------------


def _norm_key(key: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


def _json_cell(value: Any) -> TableCell:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _clean_cell(value)
    return json.dumps(value, ensure_ascii=False)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float)


def _from_records(records: list[dict[str, Any]], title: str | None) -> _ParsedTable:
    keys: list[str] = []
    for record in records:
        keys += [k for k in record if k not in keys]
    body = [[_json_cell(record.get(k)) for k in keys] for record in records]
    return _make_table(keys, body, title=title, kind="json")


def _from_json_value(value: Any, title: str | None = None) -> _ParsedTable | None:
    """A table from the JSON shapes models use for tables (see the module docstring)."""
    if isinstance(value, list):
        if not value:
            return None
        if all(isinstance(v, dict) for v in value):
            return _from_records(value, title)
        if all(isinstance(v, list) for v in value):
            first = value[0]
            has_header = len(value) > 1 and all(
                isinstance(c, str) and parse_quantity(c).value is None for c in first
            )
            header = first if has_header else [None] * max(len(v) for v in value)
            body = value[1:] if has_header else value
            return _make_table(
                [_json_cell(c) for c in header],
                [[_json_cell(c) for c in row] for row in body],
                title=title,
                kind="json",
            )
        if all(_is_scalar(v) for v in value):
            return _make_table(
                ["value"], [[_json_cell(v)] for v in value], title=title, kind="json"
            )
        return None
    if not isinstance(value, dict) or not value:
        return None
    by_key = {_norm_key(k): v for k, v in value.items()}
    for key in ("title", "tabletitle", "caption", "tablename"):
        if isinstance(by_key.get(key), str) and by_key[key].strip():
            title = title or by_key[key].strip()
            break
    if "table" in by_key and isinstance(by_key["table"], dict | list):
        return _from_json_value(by_key["table"], title)
    columns = next(
        (by_key[k] for k in ("columns", "headers", "header", "fields") if k in by_key), None
    )
    rows = next((by_key[k] for k in ("rows", "data", "body", "values") if k in by_key), None)
    if isinstance(columns, list) and isinstance(rows, list):
        names = [
            _json_cell(c.get("name", c.get("title")) if isinstance(c, dict) else c) for c in columns
        ]
        if all(isinstance(r, dict) for r in rows):
            keys = [str(n) for n in names]
            body = [[_json_cell(r.get(k)) for k in keys] for r in rows]
        else:
            body = [
                [_json_cell(c) for c in r] if isinstance(r, list) else [_json_cell(r)] for r in rows
            ]
        return _make_table(names, body, title=title, kind="json")
    lists = [(k, v) for k, v in value.items() if isinstance(v, list) and v]
    record_lists = [(k, v) for k, v in lists if all(isinstance(x, dict) for x in v)]
    if record_lists:  # the card's {'products': [{...}, ...]}
        table = _from_records(record_lists[0][1], title)
        if len(record_lists) > 1:
            others = ", ".join(repr(k) for k, _ in record_lists[1:])
            table.notes.append(
                f"only the list {record_lists[0][0]!r} was read; also given: {others}"
            )
        return table
    scalars = {k: v for k, v in value.items() if _norm_key(k) not in ("title", "caption")}
    if lists and all(isinstance(v, list) and all(map(_is_scalar, v)) for v in scalars.values()):
        height = max(len(v) for v in scalars.values())  # columnar: {"Name": [...], "Price": [...]}
        body = [
            [_json_cell(v[i]) if i < len(v) else None for v in scalars.values()]
            for i in range(height)
        ]
        return _make_table(list(scalars), body, title=title, kind="json")
    if scalars and all(_is_scalar(v) for v in scalars.values()):  # a single record
        return _make_table(
            list(scalars), [[_json_cell(v) for v in scalars.values()]], title=title, kind="json"
        )
    return None


def _from_json(text: str) -> _ParsedTable | None:
    try:
        value = parse_json_lenient(text)
    except JSONRepairError:
        return None
    return _from_json_value(value)


# -- CSV, TSV and aligned columns --------------------------------------------------------------


def _longest_run(rows: list[list[str]]) -> tuple[int, int]:
    """``[start, end)`` of the longest run of rows with the same number (at least 2) of cells."""
    best = (0, 0)
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and len(rows[j]) == len(rows[i]) >= 2:
            j += 1
        if j - i > best[1] - best[0]:
            best = (i, j)
        i = max(j, i + 1)
    return best


def _implausible(rows: list[list[str]], delimiter: str) -> bool:
    """Not a table: sentences split at their commas, or numbers split at thousands separators."""
    cells = [cell.strip() for row in rows for cell in row if cell.strip()]
    if not cells or any(len(cell) > 200 for cell in cells):
        return True
    if delimiter == "," and any(
        re.match(r"\d{3}(?!\d)", row[i].strip()) and re.search(r"\d$", row[i - 1].strip())
        for row in rows
        for i in range(1, len(row))
    ):
        return True  # "January: $1,000" is not two cells
    words = sum(len(cell.split()) for cell in cells) / len(cells)
    sentence_ends = sum(1 for row in rows if re.search(r"[^\W\d]{2}[.!?]$", row[-1].strip()))
    return words > 3 or sentence_ends * 2 >= len(rows)


def _from_delimited(text: str) -> _ParsedTable | None:
    content = [line for line in text.strip().split("\n")]
    non_blank = sum(1 for line in content if line.strip())
    candidates: list[tuple[int, int, str, list[list[str]], tuple[int, int]]] = []
    for order, delimiter in enumerate(("\t", ",", ";", "  ")):
        if delimiter == "  ":
            rows = [re.split(r"\s{2,}", line.strip()) for line in content if line.strip()]
        else:
            reader = csv.reader(
                io.StringIO(text.strip()), delimiter=delimiter, skipinitialspace=True
            )
            try:
                rows = [row for row in reader if any(cell.strip() for cell in row)]
            except csv.Error:  # stray carriage returns, huge fields: not this delimiter's table
                continue
        start, end = _longest_run(rows)
        height = end - start
        if height < 2:
            continue
        width = len(rows[start])
        # A short run must be the whole answer: two prose lines with a comma are not a table.
        if height < 3 and width < 3 and height != non_blank:
            continue
        if _implausible(rows[start:end], delimiter):
            continue
        candidates.append((height * width, -order, delimiter, rows, (start, end)))
    if not candidates:
        return None
    _, _, delimiter, rows, (start, end) = max(candidates, key=lambda c: (c[0], c[1]))
    title = _clean_title(rows[start - 1][0]) if start > 0 and len(rows[start - 1]) == 1 else None
    run: list[list[TableCell]] = [[_clean_cell(c) for c in row] for row in rows[start:end]]
    kind = {"\t": "tsv", "  ": "aligned"}.get(delimiter, "csv")
    return _make_table(run[0], run[1:], title=title, kind=kind)


def _parse_table_text(raw: str) -> _ParsedTable | None:
    """The first table found in ``raw``, trying the formats in the order models use them."""
    text = _FENCE_LINE_RE.sub("", raw).strip()
    if not text:
        return None
    if text[:1] in "{[" and (table := _from_json(raw)) is not None:
        return table
    for reader in (_from_markdown, _from_html):
        if (table := reader(text)) is not None:
            return table
    if re.search(r"[\[{]", text) and (table := _from_json(raw)) is not None:
        return table
    return _from_delimited(text)


def parse_table_output(raw: str, meta: ResultMetadata) -> TableData:
    """Parse the model's answer to :func:`build_table_prompt` into a :class:`TableData`.

    Args:
        raw: The model's answer, as generated.
        meta: The engine's metadata for this generation.

    Returns:
        The table. Repairs (ragged rows, a cut-off answer) are listed in ``notes``.

    Raises:
        ExtractionError: The answer holds no table in any format understood (the raw text is
            kept in ``raw_text``).
    """
    table = _parse_table_text(raw)
    if table is None:
        preview = raw.strip()[:80]
        raise ExtractionError(
            f"no table found in the model's answer ({preview!r}); expected a Markdown table, "
            "JSON rows, HTML or CSV",
            raw_text=raw,
            errors=["no table found"],
        )
    notes = list(table.notes)
    if meta.finish_reason == "length":
        notes.append("the answer was cut off by max_new_tokens; the last row may be incomplete")
    return TableData(
        title=table.title, columns=table.columns, rows=table.rows, notes=notes, meta=meta
    )


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


class TableArguments(BaseModel):
    """Arguments of the ``read_table`` task (none beyond the image)."""

    model_config = ConfigDict(extra="forbid")


def plan_table(
    ctx: TaskContext, images: list[LoadedImage], args: TableArguments, settings: RunSettings
) -> TaskPlan[TableData]:
    """One request for the table as Markdown; JSON, HTML and CSV answers parse too."""
    request = ctx.request(
        "read_table",
        build_table_prompt(),
        args,
        images,
        settings,
        default_max_new_tokens=SPEC.default_max_new_tokens,
    )

    def parse(output: GenerationOutput, meta: ResultMetadata) -> TableData:
        return parse_table_output(output.text, meta)

    return OneShotPlan(request, images, parse)


def render_table(table: TableData) -> str:
    """The table as Markdown, with any notes, for an LLM."""
    text = table.to_markdown().rstrip()
    if table.notes:
        text += "\nNotes: " + "; ".join(table.notes)
    return text + cut_note(table.meta)


SPEC: TaskSpec[TableArguments, TableData] = TaskSpec(
    name="read_table",
    title="Read a table",
    description=(
        "Read a table (invoice lines, price lists, spreadsheets, timetables, statements) from "
        "an image or a PDF page, running locally. Returns it as a Markdown table with its "
        "column names and every row as printed. For charts use read_chart; for running text "
        "use ocr; for a few named fields use extract."
    ),
    arguments=TableArguments,
    result=TableData,
    plan=plan_table,
    render=render_table,
    aliases=("table",),
)
