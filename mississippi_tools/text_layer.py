"""A PDF page's embedded text, and the test of whether it can stand in for reading the page.

A PDF made from a word processor carries its text: reading it costs milliseconds where a model
costs seconds to tens of seconds per page on a CPU (docling#3464, OCRmyPDF#1668). But a text
layer can also be wrong: a scanner's OCR layer, invisible over the picture, full of garbage; a
font without a Unicode map that gives nonsense; a stamp such as "Page 3" on a scanned page.
:meth:`TextLayer.problem` is the documented test, applied in this order:

1. **Enough text**: at least ``min_chars`` (:data:`DEFAULT_MIN_TEXT_LAYER_CHARS`) characters
   other than white space. A scanned page with a page-number stamp has a few.
2. **No glyph-less fonts**: no character is drawn in a font whose name says it has no glyphs
   (``GlyphLessFont``, the font Tesseract and OCRmyPDF put their invisible OCR text in). Such
   text is another OCR engine's guess, not the document's own text.
3. **Mapped characters**: at most 2% of the characters lack a Unicode mapping (PDFium's
   ``HasUnicodeMapError``, U+FFFD, private-use or control characters). A font without a
   ``ToUnicode`` map turns text into nonsense.
4. **Looks like text**: at least half of the characters other than white space are letters or
   digits.
5. **Not an invisible OCR layer with garbage**: when most characters are invisible (text render
   mode 3, or 7: clip only), the words must look like words: at least 60% of the
   white-space-separated tokens hold two or more letters or digits, with at most two punctuation
   marks around them and few inside (``1,200.00`` is a word, ``l|`` and ``;i'`` are not).

The text keeps the layer's reading order (PDFium's, which is the order of the content stream
with line breaks between lines). Characters keep their boxes, as fractions of the rendered page
(``(x0, y0, x1, y1)``, origin at the top left, as the image), so :meth:`TextLayer.within` gives the
text inside a region of the page.

Limits: text drawn inside images on a page whose layer passes is not read (pass
``text_layer="never"`` to OCR with the model), and white-on-white or covered text is not detected.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_MIN_TEXT_LAYER_CHARS",
    "GLYPHLESS",
    "INVISIBLE",
    "UNMAPPED",
    "Box",
    "TextLayer",
]

DEFAULT_MIN_TEXT_LAYER_CHARS: Final = 20
"""Fewest characters (white space aside) a text layer needs to answer for its page."""

INVISIBLE: Final = 1
"""Flag of a character drawn invisibly (text render mode 3 or 7)."""
GLYPHLESS: Final = 2
"""Flag of a character drawn in a glyph-less font."""
UNMAPPED: Final = 4
"""Flag of a character without a Unicode mapping."""

_MAX_UNMAPPED_SHARE: Final = 0.02
_MIN_ALNUM_SHARE: Final = 0.5
_MIN_WORD_SHARE: Final = 0.6
_WORD_PUNCTUATION: Final = "\"'([{<«“‘¿¡.,;:!?)]}>»”’%-$€£#*"

Box = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` as fractions of the page's width and height, origin at the top left."""


@dataclass(frozen=True)
class TextLayer:
    r"""The embedded text of one PDF page, character by character.

    Attributes:
        text: The text in the layer's reading order; lines end with ``\\n``.
        boxes: One box per character of ``text``; ``None`` for the spaces and line breaks PDFium
            inserts between words and lines.
        flags: One byte per character of ``text``: :data:`INVISIBLE`, :data:`GLYPHLESS`,
            :data:`UNMAPPED`.
        fonts: The names of the glyph-less fonts the page uses (empty when none).
    """

    text: str
    boxes: tuple[Box | None, ...]
    flags: bytes
    fonts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not len(self.text) == len(self.boxes) == len(self.flags):
            raise ValueError(
                f"a text layer needs one box and one flag per character: {len(self.text)} "
                f"characters, {len(self.boxes)} boxes, {len(self.flags)} flags"
            )

    @property
    def clean_text(self) -> str:
        """The text as a reader wants it: lines without trailing spaces, no blank ends."""
        lines = [line.rstrip() for line in self.text.replace("\r\n", "\n").split("\n")]
        return "\n".join(lines).strip("\n")

    def line_boxes(self) -> list[Box | None]:
        """One box per line of :attr:`clean_text`, around its characters.

        Boxes are fractions of the page, like the characters'; ``None`` for a line without
        boxed characters.
        """
        per_line: list[Box | None] = []
        current: list[Box] = []
        for i, char in enumerate(self.text):
            if char == "\n":
                per_line.append(_union(current))
                current = []
            elif self.boxes[i] is not None and not char.isspace():
                current.append(self.boxes[i])  # type: ignore[arg-type]
        per_line.append(_union(current))
        lines = [line.rstrip() for line in self.text.replace("\r\n", "\n").split("\n")]
        start = next((i for i, line in enumerate(lines) if line), len(lines))
        return per_line[start : start + self.clean_text.count("\n") + 1]

    def problem(self, *, min_chars: int = DEFAULT_MIN_TEXT_LAYER_CHARS) -> str | None:
        """Why the layer cannot stand for its page (see the module docstring), or ``None``."""
        visible = [i for i, char in enumerate(self.text) if not char.isspace()]
        if len(visible) < min_chars:
            what = "no text layer" if not visible else f"only {len(visible)} characters of text"
            return f"the page has {what} (fewer than {min_chars})"
        glyphless = sum(1 for i in visible if self.flags[i] & GLYPHLESS)
        if glyphless:
            fonts = ", ".join(self.fonts) or "a glyph-less font"
            return (
                f"{glyphless} characters are in a glyph-less font ({fonts}): an OCR layer "
                "another program added"
            )
        unmapped = sum(1 for i in visible if self.flags[i] & UNMAPPED or _unusable(self.text[i]))
        if unmapped > _MAX_UNMAPPED_SHARE * len(visible):
            return (
                f"{unmapped} of {len(visible)} characters have no Unicode mapping (a font "
                "without a ToUnicode map)"
            )
        alnum = sum(1 for i in visible if self.text[i].isalnum())
        if alnum < _MIN_ALNUM_SHARE * len(visible):
            return f"only {alnum} of {len(visible)} characters are letters or digits"
        invisible = sum(1 for i in visible if self.flags[i] & INVISIBLE)
        if invisible * 2 > len(visible):
            tokens = self.text.split()
            words = sum(1 for token in tokens if _wordlike(token))
            if words < _MIN_WORD_SHARE * len(tokens):
                return (
                    f"the text is an invisible OCR layer and only {words} of its {len(tokens)} "
                    "words look like words"
                )
        return None

    def within(self, box: Box) -> TextLayer:
        """The layer of the crop ``box`` (fractions of the page).

        The characters whose centre lies in ``box``, in order, with their boxes as fractions of
        the crop. Spaces and line breaks PDFium inserted are kept between kept characters.
        """
        x0, y0, x1, y1 = box
        span_x, span_y = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)

        def moved(b: Box | None) -> Box | None:
            if b is None:
                return None
            return (
                (b[0] - x0) / span_x,
                (b[1] - y0) / span_y,
                (b[2] - x0) / span_x,
                (b[3] - y0) / span_y,
            )

        text: list[str] = []
        boxes: list[Box | None] = []
        flags = bytearray()
        pending: list[int] = []  # inserted separators waiting for a kept character after them
        for i, (char, char_box) in enumerate(zip(self.text, self.boxes, strict=True)):
            if char_box is None:
                if text:
                    pending.append(i)
                continue
            cx, cy = (char_box[0] + char_box[2]) / 2, (char_box[1] + char_box[3]) / 2
            if not (x0 <= cx <= x1 and y0 <= cy <= y1):
                if char.isspace() and text:
                    pending.append(i)
                continue
            for j in _separators(pending, self.text):
                text.append(self.text[j])
                boxes.append(moved(self.boxes[j]))
                flags.append(self.flags[j])
            pending = []
            text.append(char)
            boxes.append(moved(char_box))
            flags.append(self.flags[i])
        return TextLayer("".join(text), tuple(boxes), bytes(flags), self.fonts)


def _separators(pending: list[int], text: str) -> list[int]:
    """Of the separators between two kept characters: the line breaks, else one space."""
    if not pending:
        return []
    breaks = [j for j in pending if text[j] in "\r\n"]
    if breaks:
        return breaks[:2] if text[breaks[0]] == "\r" else breaks[:1]
    return pending[:1]


def _unusable(char: str) -> bool:
    code = ord(char)
    if char == "\ufffd" or 0xE000 <= code <= 0xF8FF:
        return True
    return unicodedata.category(char) in ("Cc", "Cs", "Co")


def _wordlike(token: str) -> bool:
    core = token.strip(_WORD_PUNCTUATION)
    if len(token) - len(core) > 2:
        return False
    alnum = sum(1 for char in core if char.isalnum())
    return alnum >= 2 and len(core) - alnum <= max(1, len(core) // 4)


def _union(boxes: list[Box]) -> Box | None:
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
