"""Token ids to text while generating: stop strings, and stream deltas that add up to the answer."""

from __future__ import annotations

from collections.abc import Sequence

from mississippi_tools.models.base import TokenizerLike

__all__ = ["StreamingText"]


class StreamingText:
    """Tracks a request's answer text as tokens arrive.

    The answer is the decoded new tokens, cut at the first stop string and stripped, as the
    original's chat returns it. Deltas handed to a stream always concatenate to exactly that
    answer: text that may still be cut (a possible stop-string prefix) or stripped (trailing
    whitespace), and half-decoded characters, are held back until they are certain.
    """

    def __init__(
        self,
        tokenizer: TokenizerLike,
        *,
        stop: Sequence[str] = (),
        record_pieces: bool = False,
        skip_special_tokens: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._ids: list[int] = []
        self._raw = ""
        #: Text each token added to the raw decoded answer (when ``record_pieces``); they
        #: concatenate to the answer before stop-string cut and stripping.
        self.pieces: list[str] | None = [] if record_pieces else None
        self._stop = tuple(stop)
        self._holdback = max((len(s) for s in self._stop), default=1) - 1
        self._text = ""
        self._emitted = ""
        self._pending: str | None = None

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a token; return the new certain text and whether a stop string appeared."""
        self._ids.append(token_id)
        text = self._tokenizer.decode(self._ids, skip_special_tokens=self._skip_special)
        if text.endswith("\ufffd") and not any(stop in text for stop in self._stop):
            # A multi-byte character may still be incomplete: wait for the next token. Should
            # the answer end here, finish() keeps the U+FFFD, as the original's decode does.
            self._pending = text
            if self.pieces is not None:
                self.pieces.append("")
            return "", False
        self._pending = None
        if self.pieces is not None:
            self.pieces.append(self._new_raw(text))
        hit = self._cut(text)
        visible = self._text.lstrip()
        if not hit:
            certain = min(len(visible.rstrip()), len(visible) - self._holdback)
            visible = visible[: max(certain, 0)]
        return self._emit(visible), hit

    def _new_raw(self, text: str) -> str:
        new = text[len(self._raw) :] if text.startswith(self._raw) else ""
        self._raw = text
        return new

    def _cut(self, text: str) -> bool:
        """Keep ``text`` up to the first stop string; return whether there was one."""
        hit = False
        for stop in self._stop:
            index = text.find(stop)
            if index >= 0:
                text, hit = text[:index], True
        self._text = text
        return hit

    @property
    def raw_text(self) -> str:
        """The decoded answer so far, before any stop-string cut or stripping."""
        return self._raw

    def finish(self) -> tuple[str, str]:
        """The final answer, and the part of it not streamed yet.

        Text held back for an incomplete character is included: the decoder writes U+FFFD for
        the dangling bytes, and the original's answer keeps it.
        """
        if self._pending is not None:
            text, self._pending = self._pending, None
            new = self._new_raw(text)
            if self.pieces:
                self.pieces[-1] = new
            self._cut(text)
        final = self._text.strip()
        return final, self._emit(final)

    def _emit(self, visible: str) -> str:
        if not visible.startswith(self._emitted) or len(visible) <= len(self._emitted):
            return ""
        delta = visible[len(self._emitted) :]
        self._emitted = visible
        return delta
