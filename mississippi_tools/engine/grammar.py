r"""The JSON grammar: schemas compiled by xgrammar into per-request logits processors.

The only module that imports xgrammar. What a schema may use and how it is rewritten before
compiling is the schema package's business (:mod:`mississippi_tools.schema.support`,
:mod:`mississippi_tools.schema.rewrite`); this module gives xgrammar the model's vocabulary and
applies the token masks.

The vocabulary
--------------
xgrammar matches bytes, so it must know how the tokenizer's pieces spell them: the tokenizer's
``vocab_type`` (:data:`~mississippi_tools.models.base.VocabType`) becomes xgrammar's
``VocabType``: ``byte_fallback`` (SentencePiece: ``▁`` is a space, ``<0x0A>`` the byte 0x0A),
``byte_level`` (GPT-2 style byte-level BPE: ``Ġ`` is a space, ``Ċ`` the byte 0x0A, every byte one
character) or ``raw`` (the pieces are the text). ``add_prefix_space`` is the tokenizer's own when
it has one, else true for ``byte_fallback`` (SentencePiece's dummy prefix) and false otherwise; in
xgrammar 0.2.8 it is metadata only (the token masks are identical either way, measured).

Each piece is decoded to its bytes exactly as xgrammar decodes it (:func:`piece_bytes`), and these
pieces are given to xgrammar as empty strings, which it treats as special tokens that are never
allowed (:attr:`JSONGrammar.banned_token_ids`):

- the tokenizer's special and added tokens (``<unk>``, ``<s>``, ``</s>``, ``<img>``,
  ``<IMG_CONTEXT>``, ...; otherwise xgrammar would take them as literal text such as "<img>"
  inside a string), and padding ids beyond the tokenizer; the stop tokens stay allowed once the
  JSON is complete;
- every piece whose bytes hold a control character (U+0000-U+001F): **xgrammar bug #800** lets a
  string with ``minLength``/``maxLength`` hold raw control characters, which is invalid JSON (and
  forbids escape sequences there). No JSON needs a control character outside an escape, so
  nothing valid is lost, the per-token cost is zero, and length-limited strings can no longer
  break ``json.loads``. (Rewriting the limits as a ``pattern`` was measured too: xgrammar's
  patterns forbid escapes just the same, conflict with ``format``, and compile slowly for long
  limits, so it buys nothing.) For ``byte_fallback`` that is the ``<0x00>``-``<0x1F>`` pieces and
  any piece holding such a character; for ``byte_level`` every piece holding ``Ā``-``ğ`` (the
  characters of bytes 0x00-0x1F, e.g. ``Ċ``);
- every piece whose bytes hold a UTF-16 surrogate (``ED A0``-``ED BF``, never valid UTF-8), and
  every piece xgrammar cannot read (a ``<0x..>`` piece that is not two upper-case hex digits,
  text that is not encodable as UTF-8).

xgrammar also accepts a UTF-16 surrogate spread over two tokens (``ED`` then ``A0``-``BF``), which
is not UTF-8 (it decodes to three U+FFFD, breaking lengths): after a token whose bytes end with
``0xED`` (``<0xED>``, or a byte-level piece ending in that byte) the processor masks every token
whose bytes start with ``0xA0``-``0xBF``.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from mississippi_tools.errors import GenerationError, SchemaError
from mississippi_tools.schema import (
    JSON_SEPARATORS,
    check_schema_limits,
    check_schema_valid,
    check_supported,
    grammar_schema,
)

if TYPE_CHECKING:
    import torch

    from mississippi_tools.models.base import TokenizerLike, VocabType

__all__ = [
    "DEFAULT_GRAMMAR_CACHE_SIZE",
    "GrammarProcessor",
    "JSONGrammar",
    "piece_bytes",
]

DEFAULT_GRAMMAR_CACHE_SIZE: Final = 64
"""Compiled grammars kept by :class:`JSONGrammar` (least recently used ones are dropped)."""

_XGRAMMAR_VOCAB_TYPES: Final = {
    "byte_fallback": "BYTE_FALLBACK",
    "byte_level": "BYTE_LEVEL",
    "raw": "RAW",
}
_BYTE_PIECE_RE: Final = re.compile(r"<0x([0-9A-F]{2})>")
# Bytes no piece given to xgrammar may hold: control characters (bug #800), UTF-16 surrogates.
_FORBIDDEN_BYTES_RE: Final = re.compile(rb"[\x00-\x1f]|\xed[\xa0-\xbf]")


def _byte_level_table() -> dict[int, str]:
    """A ``str.translate`` table from byte-level characters to the latin-1 character of each byte.

    GPT-2's byte-to-unicode map keeps the printable bytes as themselves and shifts the others
    (0x00-0x20, 0x7F-0xA0, 0xAD) to U+0100 onwards, in order. The characters below U+0100 that
    are not byte-level characters map to U+FFFF, so that encoding the result as latin-1 fails.
    """
    kept = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    table: dict[int, str] = {}
    shifted = 0
    for byte in range(256):
        if byte in kept:
            table[byte] = chr(byte)
        else:
            table[byte] = "\uffff"
            table[0x100 + shifted] = chr(byte)
            shifted += 1
    return table


_BYTE_LEVEL_TABLE: Final = _byte_level_table()


def piece_bytes(piece: str, vocab_type: VocabType) -> bytes | None:
    r"""The bytes xgrammar decodes a vocabulary piece to, or None when it cannot take the piece.

    Args:
        piece: One entry of :meth:`~mississippi_tools.models.base.TokenizerLike.vocab_pieces`.
        vocab_type: How the pieces spell text.

    Example:
        >>> piece_bytes("▁a", "byte_fallback"), piece_bytes("<0x0A>", "byte_fallback")
        (b' a', b'\n')
        >>> piece_bytes("Ġa", "byte_level"), piece_bytes("Ċ", "byte_level")
        (b' a', b'\n')
    """
    if vocab_type == "byte_fallback" and len(piece) == 6 and piece.startswith("<0x"):
        match = _BYTE_PIECE_RE.fullmatch(piece)
        if match:
            return bytes((int(match.group(1), 16),))
        if piece.endswith(">"):  # xgrammar misreads (or refuses) other "<0x..>" pieces
            return None
    if vocab_type == "byte_level":
        try:
            return piece.translate(_BYTE_LEVEL_TABLE).encode("latin-1")
        except UnicodeEncodeError:
            pass  # a piece with other characters is taken as its UTF-8 text, as xgrammar does
    if vocab_type == "byte_fallback":
        piece = piece.replace("▁", " ")
    try:
        return piece.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return None


class JSONGrammar:
    """Compiles JSON Schemas into token-level grammars for one tokenizer (xgrammar).

    Built once per engine (the vocabulary is scanned once, about 0.1 s); :meth:`processor` then
    gives each request a fresh :class:`GrammarProcessor`. Compiled grammars are cached by the
    schema's canonical JSON (key order included: it is the order of the generated keys). How the
    vocabulary is given to xgrammar, and which tokens are never allowed, is in the module
    docstring.

    Args:
        tokenizer: The model's tokenizer; its ``vocab_type`` says how its pieces spell bytes.
        vocab_size: Rows of the model's output (may differ from the tokenizer's vocabulary).
        stop_token_ids: Tokens that end the answer; allowed only once the JSON is complete.
        cache_size: Compiled grammars kept.

    Raises:
        ValueError: The tokenizer's ``vocab_type`` is not one of ``byte_fallback``,
            ``byte_level`` and ``raw``.

    Example:
        >>> grammar = JSONGrammar(tokenizer, vocab_size=32010, stop_token_ids=[32009])
        >>> processor = grammar.processor({"type": "object", "properties": {...}})
        >>> logits = processor(generated_ids, logits)  # once per generated token
    """

    def __init__(
        self,
        tokenizer: TokenizerLike,
        *,
        vocab_size: int,
        stop_token_ids: Sequence[int],
        cache_size: int = DEFAULT_GRAMMAR_CACHE_SIZE,
    ) -> None:
        import xgrammar as xgr

        vocab_type = tokenizer.vocab_type
        if vocab_type not in _XGRAMMAR_VOCAB_TYPES:
            raise ValueError(
                f"the tokenizer's vocab_type is {vocab_type!r}; expected one of "
                f"{', '.join(sorted(_XGRAMMAR_VOCAB_TYPES))}"
            )
        self.vocab_type: VocabType = vocab_type
        self.vocab_size = vocab_size
        self.stop_token_ids = sorted(set(stop_token_ids))
        pieces = tokenizer.vocab_pieces(vocab_size)[:vocab_size]
        special = _special_ids(tokenizer, pieces)
        decoded = [
            None if i in special or not piece else piece_bytes(piece, vocab_type)
            for i, piece in enumerate(pieces)
        ]
        usable = [data is not None and not _FORBIDDEN_BYTES_RE.search(data) for data in decoded]
        vocabulary = [piece if ok else "" for piece, ok in zip(pieces, usable, strict=True)]
        #: Ids the grammar can never produce (specials, control characters, padding, ...).
        self.banned_token_ids = frozenset(
            i for i, ok in enumerate(usable) if not ok and i not in self.stop_token_ids
        ) | frozenset(range(len(pieces), vocab_size))
        add_prefix_space = getattr(tokenizer, "add_prefix_space", vocab_type == "byte_fallback")
        self.tokenizer_info = xgr.TokenizerInfo(
            vocabulary,
            xgr.VocabType[_XGRAMMAR_VOCAB_TYPES[vocab_type]],
            vocab_size=vocab_size,
            stop_token_ids=self.stop_token_ids,
            add_prefix_space=bool(add_prefix_space),
        )
        leads = frozenset(
            i for i, data in enumerate(decoded) if usable[i] and data and data.endswith(b"\xed")
        )
        continuations = [
            i for i, data in enumerate(decoded) if usable[i] and data and 0xA0 <= data[0] <= 0xBF
        ]
        self._surrogate_guard = (leads, continuations) if leads and continuations else None
        self._compiler = xgr.GrammarCompiler(self.tokenizer_info, max_threads=2)
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def compile(self, schema: Mapping[str, Any]) -> Any:
        """The compiled grammar (``xgrammar.CompiledGrammar``) of a schema, from the cache if there.

        Raises:
            SchemaError: The schema is too deep or large, or uses a feature the grammar cannot
                honour.
        """
        check_schema_limits(schema)  # before json.dumps recurses into it
        try:
            key = json.dumps(schema, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise SchemaError(f"the schema is not JSON-serialisable: {e}", path="") from e
        with self._lock:
            compiled = self._cache.get(key)
            if compiled is not None:
                self._cache.move_to_end(key)
                return compiled
        check_schema_valid(schema)
        check_supported(schema)
        rewritten = grammar_schema(schema)
        try:
            compiled = self._compiler.compile_json_schema(
                json.dumps(rewritten),
                any_whitespace=False,
                separators=JSON_SEPARATORS,
                strict_mode=True,
            )
        except RuntimeError as e:
            detail = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
            raise SchemaError(f"the grammar compiler refused the schema: {detail}") from e
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def processor(self, schema: Mapping[str, Any]) -> GrammarProcessor:
        """A new per-request logits processor constraining the answer to ``schema``."""
        return GrammarProcessor(
            self.compile(schema), self.vocab_size, surrogate_guard=self._surrogate_guard
        )


def _special_ids(tokenizer: TokenizerLike, pieces: Sequence[str]) -> set[int]:
    """The tokenizer's special and added tokens: ``special_ids``, else those ``decode`` drops."""
    special = set(getattr(tokenizer, "special_ids", ()))
    if special:
        return special
    return {
        i
        for i, piece in enumerate(pieces)
        if piece
        and tokenizer.decode([i], skip_special_tokens=True)
        != tokenizer.decode([i], skip_special_tokens=False)
    }


class GrammarProcessor:
    """One request's grammar state, as a :class:`~mississippi_tools.models.base.LogitsProcessor`.

    On each call it feeds the matcher the tokens generated since the previous call, then sets the
    logits of every token the grammar forbids to ``-inf``. Single-use: one per request.

    Args:
        compiled: An ``xgrammar.CompiledGrammar`` from :meth:`JSONGrammar.compile`.
        vocab_size: Rows of the logits.
        surrogate_guard: ``(ids of tokens ending with the byte 0xED, ids of tokens starting with
            a byte 0xA0-0xBF)``: after one of the first, the others are masked (UTF-16
            surrogates are not UTF-8).
    """

    def __init__(
        self,
        compiled: Any,
        vocab_size: int,
        *,
        surrogate_guard: tuple[frozenset[int], list[int]] | None = None,
    ) -> None:
        import xgrammar as xgr

        self._matcher = xgr.GrammarMatcher(compiled)
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self._apply = xgr.apply_token_bitmask_inplace
        self._vocab_size = vocab_size
        self._consumed = 0
        self._guard = surrogate_guard

    def __call__(self, token_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        """Accept the new tokens and mask ``logits`` (1-D ``[vocab]``) in place.

        Raises:
            GenerationError: A generated token is not allowed by the grammar (another processor
                changed the logits after this one unmasked a forbidden token).
        """
        for token in token_ids[self._consumed :]:
            if not self._matcher.accept_token(int(token)):
                raise GenerationError(
                    f"token {token} at position {self._consumed} does not fit the JSON grammar; "
                    "a logits processor after the grammar must not unmask tokens"
                )
            self._consumed += 1
        self._matcher.fill_next_token_bitmask(self._bitmask)
        rows = logits.view(1, -1)
        if logits.shape[-1] > self._vocab_size:
            logits[self._vocab_size :] = -math.inf
            rows = rows[:, : self._vocab_size]
        bitmask = self._bitmask if logits.device.type == "cpu" else self._bitmask.to(logits.device)
        self._apply(rows, bitmask)
        if self._guard is not None and token_ids and int(token_ids[-1]) in self._guard[0]:
            logits[self._guard[1]] = -math.inf
        return logits

    def is_terminated(self) -> bool:
        """Whether the grammar has ended (after a stop token; the engine normally stops first)."""
        return bool(self._matcher.is_terminated())

    def is_completed(self) -> bool:
        """Whether the JSON accepted so far is complete (a stop token would be allowed)."""
        return bool(self._matcher.is_completed())
