"""Lenient parsing of model output: JSON values and numbers written the way small VLMs write them.

A 0.8B model asked for JSON mostly answers with JSON, but not always *strict* JSON: the H2OVL card's
own examples answer with Python-style dicts (``{'name': 'Emily Johnson'}``), answers are wrapped in
code fences or prose, and a long answer stops wherever ``max_new_tokens`` cut it. The functions here
recover the value the model meant without guessing beyond what the text supports:

- :func:`parse_json_lenient` finds and parses the JSON value in an answer, repairing the usual
  defects (see its docstring for the list), and raises :class:`JSONRepairError` when there is none.
- :func:`parse_quantity` / :func:`parse_number` read a number as it is printed in a chart or a table
  cell (``"$1,200"``, ``"12%"``, ``"1.200,50 €"``, ``"(1,234)"``, ``"3.4k"``), returning the unit
  separately, and ``None`` for placeholders such as ``"n/a"`` or ``"-"``.

Everything here is pure standard library, so the module is safe to import anywhere.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Final, NamedTuple

__all__ = [
    "JSONRepairError",
    "Quantity",
    "is_missing",
    "parse_json_lenient",
    "parse_number",
    "parse_quantity",
    "strip_code_fences",
]


class JSONRepairError(ValueError):
    """No JSON value could be found or repaired in a model's answer.

    Attributes:
        text: The text that was searched, unchanged.
    """

    def __init__(self, message: str, *, text: str) -> None:
        super().__init__(message)
        self.text = text


# --------------------------------------------------------------------------------------------------
# Code fences
# --------------------------------------------------------------------------------------------------

# An opening fence (``` or ~~~, optional info string), its content, and the closing fence or the end
# of the text: an answer cut by max_new_tokens has no closing fence.
_FENCE_RE: Final = re.compile(
    r"(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\n`]*)\n(?P<body>.*?)(?:(?P=fence)|\Z)", re.DOTALL
)


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Return ``(language, body)`` for every fenced code block in ``text``, in order."""
    return [(m.group("lang").strip().lower(), m.group("body")) for m in _FENCE_RE.finditer(text)]


def strip_code_fences(text: str) -> str:
    r"""Return the content of the first fenced code block in ``text``, or ``text`` if it has none.

    An unterminated fence (an answer cut by ``max_new_tokens``) runs to the end of the text. The
    prose around the block is dropped.

    Args:
        text: A model's answer.

    Returns:
        The body of the first ```` ``` ```` or ``~~~`` block without its fence lines, or ``text``
        unchanged when it contains no fence.

    Example:
        >>> strip_code_fences("Here it is:\n```markdown\n# Title\n```\nDone.")
        '# Title\n'
    """
    blocks = _fenced_blocks(text)
    return blocks[0][1] if blocks else text


# --------------------------------------------------------------------------------------------------
# Lenient JSON
# --------------------------------------------------------------------------------------------------

_DOUBLE_QUOTES: Final = '"\u201c\u201d\u201e\u201f'  # " “ ” „ ‟
_SINGLE_QUOTES: Final = "'\u2018\u2019\u201a\u201b"  # ' ‘ ’ ‚ ‛
_QUOTES: Final = _DOUBLE_QUOTES + _SINGLE_QUOTES
_WHITESPACE: Final = " \t\r\n\f\v\u00a0\u200b\ufeff\u202f\u2009"
_SIMPLE_ESCAPES: Final = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    "/": "/",
    "\\": "\\",
    '"': '"',
    "'": "'",
}
_LITERALS: Final[dict[str, Any]] = {
    "true": True,
    "false": False,
    "null": None,
    "none": None,
    "nan": None,
    "undefined": None,
    "infinity": None,
    "-infinity": None,
}
_BARE_NUMBER_RE: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_LEADING_ZERO_RE: Final = re.compile(r"[+-]?0\d+")
_MEMBERS_RE: Final = re.compile(r"\A\s*[\"'\u201c\u2018][^\"'\n]{1,100}[\"'\u201d\u2019]\s*:")


class _ParseFailure(Exception):
    """Internal: the lenient parser could not make sense of the text at a position."""


class _LenientParser:
    """A forgiving recursive-descent JSON parser (see :func:`parse_json_lenient` for the repairs).

    ``evidence`` records whether anything JSON-like was seen (a quoted string, a key, a number, a
    literal or a nested container): a bracketed run of prose words such as ``[see note]`` parses
    to ``["see note"]`` but carries no evidence, and is not taken for the answer.
    """

    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos
        self.truncated = False
        self.evidence = False
        self.depth = 0

    # -- helpers ----------------------------------------------------------------------------------

    def _eof(self) -> bool:
        return self.pos >= len(self.text)

    def _skip_ws(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n:
            ch = text[self.pos]
            if ch in _WHITESPACE:
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end + 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                self.pos = n if end < 0 else end + 2
            else:
                return

    def _closes_string(self, i: int) -> bool:
        """Whether the quote at ``i`` ends the string (rather than being a stray apostrophe/quote).

        A quote closes when what follows can follow a string in JSON: ``,`` ``:`` ``}`` ``]``, the
        end of the text, or a newline and then the start of another value (a missing comma).
        """
        text, j, n = self.text, i + 1, len(self.text)
        newline = False
        while j < n and text[j] in _WHITESPACE:
            newline = newline or text[j] == "\n"
            j += 1
        if j >= n or text[j] in ",:}]":
            return True
        return newline and text[j] in _QUOTES + "{["

    # -- values -----------------------------------------------------------------------------------

    def parse_value(self) -> Any:
        self._skip_ws()
        if self._eof():
            self.truncated = True
            raise _ParseFailure("end of text where a value was expected")
        ch = self.text[self.pos]
        if ch == "{":
            return self._parse_object()
        if ch == "[":
            return self._parse_array()
        if ch in _QUOTES:
            self.evidence = True
            return self._parse_string()
        return self._parse_bare()

    def _parse_object(self) -> dict[str, Any]:
        self.pos += 1
        self.depth += 1
        if self.depth > 1:
            self.evidence = True
        result: dict[str, Any] = {}
        try:
            while True:
                self._skip_ws()
                if self._eof():
                    self.truncated = True
                    return result
                ch = self.text[self.pos]
                if ch == "}":
                    self.pos += 1
                    return result
                if ch == ",":
                    self.pos += 1
                    continue
                if ch == "]":  # "{... ]": a missing "}"; let the enclosing array close
                    return result
                key = self._parse_key()
                if key is None:  # the text ended inside the key
                    return result
                self._skip_ws()
                if self._eof():
                    self.truncated = True
                    return result
                if self.text[self.pos] not in ":=":
                    raise _ParseFailure(f"expected ':' after key {key!r}")
                self.pos += 1
                self._skip_ws()
                if self._eof():
                    self.truncated = True
                    return result
                if self.text[self.pos] in ",}":
                    result[key] = None
                    continue
                try:
                    result[key] = self.parse_value()
                except _ParseFailure:
                    if self.truncated:
                        return result
                    raise
        finally:
            self.depth -= 1

    def _parse_key(self) -> str | None:
        ch = self.text[self.pos]
        self.evidence = True
        if ch in _QUOTES:
            key = self._parse_string()
            return None if self.truncated else key
        # An unquoted key: everything up to the ':' when that is unambiguous.
        start = self.pos
        text, n = self.text, len(self.text)
        while self.pos < n and text[self.pos] not in ":=":
            if text[self.pos] in ",{}[]\n" + _QUOTES:
                raise _ParseFailure(f"unquoted key at {start} has no ':'")
            self.pos += 1
        if self.pos >= n:
            self.truncated = True
            return None
        key = text[start : self.pos].strip()
        if not key:
            raise _ParseFailure(f"empty key at {start}")
        return key

    def _parse_array(self) -> list[Any]:
        self.pos += 1
        self.depth += 1
        if self.depth > 1:
            self.evidence = True
        result: list[Any] = []
        try:
            while True:
                self._skip_ws()
                if self._eof():
                    self.truncated = True
                    return result
                ch = self.text[self.pos]
                if ch == "]":
                    self.pos += 1
                    return result
                if ch == ",":
                    self.pos += 1
                    continue
                if ch == "}":  # "[... }": a missing "]"; let the enclosing object close
                    return result
                start = self.pos
                try:
                    result.append(self.parse_value())
                except _ParseFailure:
                    if self.truncated:
                        return result
                    raise
                if self.pos == start:  # never loop without progress
                    self.pos += 1
        finally:
            self.depth -= 1

    def _parse_string(self) -> str:
        text, n = self.text, len(self.text)
        quote = text[self.pos]
        family = _DOUBLE_QUOTES if quote in _DOUBLE_QUOTES else _SINGLE_QUOTES
        self.pos += 1
        out: list[str] = []
        while self.pos < n:
            ch = text[self.pos]
            if ch == "\\":
                self._parse_escape(out)
                continue
            if ch in family and self._closes_string(self.pos):
                self.pos += 1
                return "".join(out)
            out.append(ch)
            self.pos += 1
        self.truncated = True  # the text ended inside the string: keep what was written
        return "".join(out)

    def _parse_escape(self, out: list[str]) -> None:
        text, n = self.text, len(self.text)
        if self.pos + 1 >= n:
            self.pos = n
            self.truncated = True
            return
        esc = text[self.pos + 1]
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
            self.pos += 2
        elif esc == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[self.pos + 2 : self.pos + 6]):
            code = int(text[self.pos + 2 : self.pos + 6], 16)
            self.pos += 6
            if 0xD800 <= code < 0xDC00 and re.fullmatch(
                r"\\u[dD][c-fC-F][0-9a-fA-F]{2}", text[self.pos : self.pos + 6]
            ):
                low = int(text[self.pos + 2 : self.pos + 6], 16)
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                self.pos += 6
            out.append("\ufffd" if 0xD800 <= code < 0xE000 else chr(code))
        elif esc == "U" and re.fullmatch(r"[0-9a-fA-F]{8}", text[self.pos + 2 : self.pos + 10]):
            code = int(text[self.pos + 2 : self.pos + 10], 16)
            out.append(chr(code) if code <= 0x10FFFF and not 0xD800 <= code < 0xE000 else "\ufffd")
            self.pos += 10
        elif esc == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[self.pos + 2 : self.pos + 4]):
            out.append(chr(int(text[self.pos + 2 : self.pos + 4], 16)))
            self.pos += 4
        elif esc.isalnum():  # "C:\Users": not an escape, keep the backslash
            out.append("\\" + esc)
            self.pos += 2
        else:  # Markdown habits such as "\$" or "\_": the character was meant
            out.append(esc)
            self.pos += 2

    def _parse_bare(self) -> Any:
        """An unquoted token: a number, a literal (true/True/None...), or an unquoted string."""
        stops = ",]}\n"
        text, n = self.text, len(self.text)
        start = self.pos
        while self.pos < n and text[self.pos] not in stops:
            self.pos += 1
        token = text[start : self.pos].strip()
        if self.pos >= n:
            self.truncated = True
        if not token:
            return None
        literal = token.lower()
        if literal in _LITERALS:
            self.evidence = True
            return _LITERALS[literal]
        if _BARE_NUMBER_RE.fullmatch(token) and not _LEADING_ZERO_RE.fullmatch(token):
            self.evidence = True
            if re.search(r"[.eE]", token):
                return float(token)
            return int(token)
        return token


_NOTHING: Final = object()
# Each candidate costs up to one pass over the text; prose full of brackets must not cost n².
_MAX_CANDIDATES: Final = 64


def _parse_candidate(text: str, start: int) -> tuple[Any, int, bool] | None:
    """Parse the value starting at ``start``; return ``(value, end, strict)`` or ``None``."""
    try:
        value, end = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        pass
    else:
        return value, end, True
    parser = _LenientParser(text, start)
    try:
        value = parser.parse_value()
    except (_ParseFailure, RecursionError):
        return None
    if not parser.evidence:
        return None
    if parser.truncated and not value:
        return None  # "Here is the JSON: {" -- nothing was written yet
    return value, parser.pos, False


def _best_value(text: str) -> Any:
    """The JSON value in ``text``: the longest span parsed from any ``{`` or ``[``."""
    stripped = text.strip()
    if not stripped:
        return _NOTHING
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    best: tuple[int, Any] | None = None
    covered_until = -1
    tried = 0
    for match in re.finditer(r"[\[{]", text):
        start = match.start()
        if start < covered_until:
            continue  # inside a value already parsed
        tried += 1
        if tried > _MAX_CANDIDATES:
            break
        found = _parse_candidate(text, start)
        if found is None:
            continue
        value, end, _ = found
        covered_until = end
        if best is None or end - start > best[0]:
            best = (end - start, value)
    if best is not None:
        return best[1]
    if _MEMBERS_RE.match(stripped):  # '"name": "x", "age": 3' -- the braces were left out
        found = _parse_candidate("{" + stripped + "}", 0)
        if found is not None:
            return found[0]
    return _NOTHING


def parse_json_lenient(text: str) -> Any:
    r"""Find and parse the JSON value in a model's answer, repairing what small models get wrong.

    Strict JSON is tried first, so well-formed answers cost one ``json.loads``. Otherwise the value
    is searched for, in order, inside fenced code blocks (```` ```json ````, also unterminated)
    and then in the whole text, skipping prose before and after it. These defects are repaired:

    - Python literals: single-quoted strings, ``True``/``False``/``None`` (the H2OVL card's own
      example answers are Python dicts);
    - trailing commas, missing commas between values on separate lines, ``//`` and ``/* */``
      comments;
    - unquoted keys where the key runs unambiguously up to a ``:`` (``{name: "x"}``), and unquoted
      scalar values (``{"price": $80}`` gives ``"$80"``);
    - smart quotes (``“…”``, ``‘…’``) used as string delimiters, stray unescaped quotes or
      apostrophes inside strings (``'O'Brien'``), Markdown escapes such as ``\$``;
    - a truncated tail (the answer was cut by ``max_new_tokens``): the open string is closed, a key
      without a value is dropped, and open arrays and objects are closed.

    Args:
        text: The model's raw answer.

    Returns:
        The parsed value: a ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` or ``None``.

    Raises:
        JSONRepairError: The text holds no JSON value, e.g. plain prose.

    Example:
        >>> parse_json_lenient("Sure! ```json\n{'name': 'Emily', 'age': 30,}\n```")
        {'name': 'Emily', 'age': 30}
        >>> parse_json_lenient('{"points": [{"label": "Jan", "value": 10}, {"label": "Fe')
        {'points': [{'label': 'Jan', 'value': 10}, {'label': 'Fe'}]}
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_json_lenient() takes a str, not {type(text).__name__}")
    cleaned = text.strip().lstrip("\ufeff")
    if not cleaned:
        raise JSONRepairError("the answer is empty; there is no JSON to parse", text=text)
    try:
        return json.loads(cleaned)
    except ValueError:
        pass
    for _, body in _fenced_blocks(cleaned):
        value = _best_value(body)
        if value is not _NOTHING:
            return value
    value = _best_value(cleaned)
    if value is not _NOTHING:
        return value
    preview = cleaned if len(cleaned) <= 80 else cleaned[:77] + "..."
    raise JSONRepairError(
        f"no JSON object or array found in the answer {preview!r}; "
        "ask for JSON with an explicit template, or use constrained decoding",
        text=text,
    )


# --------------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------------


class Quantity(NamedTuple):
    """A number read from text, with its unit or currency kept apart.

    Attributes:
        value: The number (an ``int`` when the text had no fractional part, or when a multiplier
            such as ``k`` made it whole), or ``None`` when the text is a placeholder (``"n/a"``,
            ``"-"``) or not a single number.
        unit: ``"%"`` for percentages, the currency as written (``"$"``, ``"€"``, ``"USD"``) or a
            short unit (``"kg"``, ``"°C"``), or ``None``.
    """

    value: float | int | None
    unit: str | None

    @property
    def is_currency(self) -> bool:
        """Whether :attr:`unit` is a currency (``"$"``, ``"€"``, ``"US$"``, ``"EUR"``...)."""
        unit = self.unit
        if unit is None:
            return False
        return unit in _CURRENCY_CODES or bool(_CURRENCY_PREFIX_RE.fullmatch(unit))


_MISSING_MARKERS: Final = frozenset(
    {
        "",
        "-",
        "--",
        "---",
        "n/a",
        "n.a.",
        "n.a",
        "na",
        "nan",
        "none",
        "null",
        "nil",
        "?",
        "...",
        "…",
        "unknown",
        "not available",
    }
)
_DASHES: Final = str.maketrans(
    {
        "\u2212": "-",  # minus sign
        "\u2012": "-",  # figure dash
        "\u2013": "-",  # en dash
        "\u2014": "-",  # em dash
        "\ufe63": "-",  # small hyphen-minus
        "\uff0d": "-",  # full-width hyphen-minus
        "\u00a0": " ",
        "\u202f": " ",
        "\u2009": " ",
        "\u2007": " ",
        "\u2019": "'",
        **{chr(0xFF10 + d): str(d) for d in range(10)},  # full-width digits
    }
)
_CURRENCY_SYMBOLS: Final = "$€£¥₹₩₽₺₪₫฿₦₱₴¢"
_CURRENCY_CODES: Final = frozenset(
    [
        "USD",
        "EUR",
        "GBP",
        "JPY",
        "CNY",
        "RMB",
        "INR",
        "CHF",
        "CAD",
        "AUD",
        "NZD",
        "HKD",
        "SGD",
        "SEK",
        "NOK",
        "DKK",
        "PLN",
        "CZK",
        "HUF",
        "RUB",
        "BRL",
        "MXN",
        "ZAR",
        "KRW",
        "TRY",
        "ILS",
        "AED",
        "SAR",
        "THB",
        "IDR",
        "MYR",
        "PHP",
        "VND",
        "NGN",
        "EGP",
        "ARS",
        "CLP",
        "COP",
    ]
)
_CURRENCY_PREFIX_RE: Final = re.compile(
    rf"(?:[A-Z]{{1,3}}\$|[{_CURRENCY_SYMBOLS}]|(?:{'|'.join(sorted(_CURRENCY_CODES))})(?![A-Za-z])"
    r"|Rs\.?(?![A-Za-z]))\s*"
)
_APPROX_RE: Final = re.compile(
    r"(?:~|≈|approx\.?|approximately|about|around|circa|ca\.|est\.)\s*", re.IGNORECASE
)
_CORE_RE: Final = re.compile(r"(?:\d(?:[\d.,' ]*\d)?|[.,]\d+)(?:[eE][+-]?\d+)?")
_MULTIPLIER_RE: Final = re.compile(
    r"(?P<m>thousands?|millions?|billions?|trillions?|mln|mn|bn|bln|tn|MM|[kKMBT]|[mbt])"
    r"(?![^\W\d_])\.?",
)
_MULTIPLIERS: Final = {
    "k": 3,
    "thousand": 3,
    "m": 6,
    "mm": 6,
    "mn": 6,
    "mln": 6,
    "million": 6,
    "b": 9,
    "bn": 9,
    "bln": 9,
    "billion": 9,
    "t": 12,
    "tn": 12,
    "trillion": 12,
}
_PERCENT_RE: Final = re.compile(r"(?:%|percent|per cent|pct\.?)", re.IGNORECASE)
_ORDINAL_RE: Final = re.compile(r"(?:st|nd|rd|th)", re.IGNORECASE)
# A short unit after a number: "kg", "°C", "km/h", "m²", "pts" (no digits, no spaces).
_UNIT_RE: Final = re.compile(r"(?:[^\W\d_]|[°µ%‰'\"])[^\W\d_]*(?:/[^\W\d_]+)?")


def is_missing(text: str) -> bool:
    """Whether ``text`` is a placeholder for a missing value (``""``, ``"-"``, ``"n/a"``...).

    Args:
        text: A cell or point value as written.

    Returns:
        ``True`` for empty strings and the usual "no value" markers, case-insensitively.
    """
    return text.translate(_DASHES).strip().lower() in _MISSING_MARKERS


def _group_ok(int_part: str, sep: str) -> bool:
    """Whether ``int_part`` is correctly grouped in thousands by ``sep`` (or Indian lakh style)."""
    groups = int_part.split(sep)
    if not all(g.isdigit() for g in groups) or not 1 <= len(groups[0]) <= 3:
        return False
    rest = groups[1:]
    if all(len(g) == 3 for g in rest):
        return True
    # 1,23,45,678: pairs, then a final group of three.
    return sep == "," and len(rest[-1]) == 3 and all(len(g) == 2 for g in rest[:-1])


def _read_core(core: str) -> tuple[Decimal, bool] | None:
    """Read the digits of a number with its separators; return ``(value, has_fraction)``.

    The decimal separator is decided only where that is unambiguous: with both ``.`` and ``,`` the
    last one is decimal (``1.200,50`` and ``1,200.50``); a single ``,`` followed by exactly three
    digits groups thousands (``1,200``), otherwise it is decimal (``0,5``, ``12,5``); a single ``.``
    is decimal; repeated separators group thousands. Space and ``'`` only group thousands.
    """
    exponent = ""
    match = re.search(r"[eE][+-]?\d+$", core)
    if match:
        exponent, core = match.group(), core[: match.start()]
    if core[0] in ".,":
        return (Decimal("0." + core[1:] + exponent), True) if core[1:].isdigit() else None
    soft = {c for c in core if c in " '"}
    hard = {c for c in core if c in ".,"}
    if len(soft) > 1:
        return None
    decimal_sep: str | None = None
    group_sep: str | None = next(iter(soft)) if soft else None
    if len(hard) == 2:
        decimal_sep = max(".,", key=core.rfind)
        other = "," if decimal_sep == "." else "."
        if core.count(decimal_sep) != 1 or group_sep is not None:
            return None
        group_sep = other
    elif len(hard) == 1:
        sep = next(iter(hard))
        if core.count(sep) > 1:
            if group_sep is not None:
                return None
            group_sep = sep
        elif group_sep is not None:
            decimal_sep = sep
        else:
            int_part, frac = core.split(sep)
            if sep == "," and len(frac) == 3 and 1 <= len(int_part) <= 3 and int_part[0] != "0":
                group_sep = sep
            else:
                decimal_sep = sep
    int_part, _, frac = core.partition(decimal_sep) if decimal_sep else (core, "", "")
    if group_sep is not None and group_sep in int_part:
        if not _group_ok(int_part, group_sep):
            return None
        int_part = int_part.replace(group_sep, "")
    if not int_part.isdigit() or (frac and not frac.isdigit()):
        return None
    try:
        value = Decimal(int_part + ("." + frac if frac else "") + exponent)
    except InvalidOperation:  # pragma: no cover - the checks above make this unreachable
        return None
    return value, bool(frac or exponent)


def _is_unit(text: str) -> bool:
    return len(text) <= 8 and _UNIT_RE.fullmatch(text) is not None


def parse_quantity(text: str) -> Quantity:
    """Read a number as printed in a chart label or table cell, keeping its unit apart.

    Understood: thousands separators (``1,200``, ``1 200``, ``1'200``, Indian ``1,23,456``),
    European decimals when unambiguous (``1.200,50`` and ``0,5``, but ``1,200`` is 1200), a currency
    before or after (``$``, ``€``, ``US$``, ``USD``), percentages (``12%``, ``12 percent``), signs
    including the Unicode minus (``−5``), accounting negatives (``(1,234)``), scale suffixes
    (``3.4k``, ``2M``, ``1.5 million``, ``$2bn``; a lower-case ``m``/``b``/``t`` scales only after
    a currency, otherwise ``5 m`` is five metres), scientific notation, and a short unit after the
    number (``12 kg``, ``21°C``).

    Args:
        text: The value as written.

    Returns:
        ``Quantity(value, unit)``. ``value`` is ``None`` for placeholders (see :func:`is_missing`)
        and for text that is not exactly one number (``"Q1"``, ``"2019-2020"``, ``"12 apples and
        3 pears"``); ``unit`` is then ``None`` too.

    Example:
        >>> parse_quantity("$1,200")
        Quantity(value=1200, unit='$')
        >>> parse_quantity("1.200,50 €")
        Quantity(value=1200.5, unit='€')
        >>> parse_quantity("12%")
        Quantity(value=12, unit='%')
    """
    nothing = Quantity(None, None)
    if not isinstance(text, str) or is_missing(text):
        return nothing
    s = text.translate(_DASHES).strip()
    negative = False
    paren = re.fullmatch(r"\(\s*(.+?)\s*\)", s)
    if paren:  # accounting: (1,234) is -1234
        negative, s = True, paren.group(1)
    currency: str | None = None
    signed = False
    while True:  # prefixes in any order: "~", "-", "$" ("-$5", "$-5", "≈ €3")
        if m := _APPROX_RE.match(s):
            s = s[m.end() :]
        elif s[:1] in ("+", "-") and not signed:
            negative, signed, s = negative ^ (s[0] == "-"), True, s[1:].lstrip()
        elif (m := _CURRENCY_PREFIX_RE.match(s)) and currency is None:
            currency, s = m.group().strip(), s[m.end() :]
        else:
            break
    core_match = _CORE_RE.match(s)
    if core_match is None:
        return nothing
    read = _read_core(core_match.group())
    if read is None:
        return nothing
    value, has_fraction = read
    rest = s[core_match.end() :].strip().rstrip(".,;:").strip()
    scaled = False
    if m := _MULTIPLIER_RE.match(rest):
        word = m.group("m")
        key = word.lower().rstrip("s") if len(word) > 2 else word.lower()
        if word not in ("m", "b", "t") or currency is not None:
            value *= Decimal(10) ** _MULTIPLIERS[key]
            scaled = True
            rest = rest[m.end() :].strip()
    unit = currency
    if rest:
        if _PERCENT_RE.fullmatch(rest):
            unit = "%"
        elif rest in _CURRENCY_CODES or (len(rest) == 1 and rest in _CURRENCY_SYMBOLS):
            unit = unit or rest
        elif _ORDINAL_RE.fullmatch(rest) or not _is_unit(rest):
            return nothing
        else:
            unit = unit or rest
    if negative:
        value = -value
    if (not has_fraction or scaled) and value == value.to_integral_value():
        return Quantity(int(value), unit)
    return Quantity(float(value), unit)


def parse_number(text: str) -> float | int | None:
    """Read a number as printed in a chart or table, dropping its unit.

    See :func:`parse_quantity` for the formats understood.

    Args:
        text: The value as written.

    Returns:
        The number, or ``None`` for placeholders and for text that is not a single number.

    Example:
        >>> parse_number("(1,234)"), parse_number("3.4k"), parse_number("n/a")
        (-1234, 3400, None)
    """
    return parse_quantity(text).value
