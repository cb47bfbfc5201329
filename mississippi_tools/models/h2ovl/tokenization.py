r"""The H2OVL-Mississippi tokenizer, giving exactly the ids the model was trained with.

The original loads the *slow* SentencePiece ``LlamaTokenizer`` (``use_fast=False``, transformers
4.46, ``legacy=true``): the text is split at the added tokens, and each remaining segment is encoded
by SentencePiece on its own, so every segment gets the model's dummy-prefix ``▁`` (``</img>\\nRead``
gives ``</img>``, ``▁``, ``<0x0A>``, ...). A fast tokenizer converted from the published
``tokenizer_config.json`` (``add_prefix_space: false``) drops that ``▁`` and gives other ids, so
we implement the slow tokenizer directly on ``sentencepiece``; it is also faster than the Python
slow tokenizer. Encoding and decoding follow its code path for path, including the settings the
published config does not use (``legacy: false``, ``add_prefix_space: true``,
``clean_up_tokenization_spaces: true``).

Text from users is never split at added tokens: :meth:`H2OVLTokenizer.encode_segments` takes
the prompt as spans marked template or text, and only template spans produce added-token ids.

Files read: ``tokenizer.model`` (SentencePiece), ``tokenizer_config.json``
(``added_tokens_decoder``, ``legacy``, ``add_prefix_space``, ``clean_up_tokenization_spaces``),
``added_tokens.json`` and ``special_tokens_map.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mississippi_tools.errors import InvalidInputError, ModelLoadError

if TYPE_CHECKING:
    import sentencepiece

    from mississippi_tools.models.base import VocabType

__all__ = [
    "IMG_CONTEXT",
    "IMG_END",
    "IMG_START",
    "SPIECE_UNDERLINE",
    "TURN_END",
    "H2OVLTokenizer",
    "check_text",
]

IMG_START = "<img>"
IMG_END = "</img>"
IMG_CONTEXT = "<IMG_CONTEXT>"
#: The h2ogpt2 template's separator; the chat stops on it.
TURN_END = "<|end|>"


#: SentencePiece's word-boundary symbol.
SPIECE_UNDERLINE = "▁"

# ModelProto.normalizer_spec (field 3) holding add_dummy_prefix (field 3) = false. Appended to a
# serialized model, protobuf merges it into the existing spec: the model the slow tokenizer builds
# for legacy=false (it sets the same field through protobuf; the bytes come out identical).
_NO_DUMMY_PREFIX = b"\x1a\x02\x18\x00"


@dataclass(frozen=True)
class _AddedToken:
    content: str
    id: int
    special: bool


def check_text(text: str, what: str) -> None:
    r"""Refuse text the tokenizer cannot encode: lone UTF-16 surrogates (U+D800..U+DFFF).

    They reach Python strings from JSON ``"\ud800"`` escapes or ``surrogateescape`` decoding,
    and have no UTF-8 form, so SentencePiece cannot take them.

    Args:
        text: The text.
        what: Names the text in the message, e.g. ``"the prompt"``.

    Raises:
        InvalidInputError: ``text`` holds a lone surrogate.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        # The message gives the code point, never the character: it cannot be encoded anywhere.
        raise InvalidInputError(
            f"{what} contains a lone surrogate U+{ord(text[e.start]):04X} at character "
            f"{e.start}, which is not valid Unicode text; send the text as valid UTF-8 "
            "(surrogates only come in pairs, as one character)"
        ) from None


class H2OVLTokenizer:
    """SentencePiece tokenizer with the slow ``LlamaTokenizer`` semantics of transformers 4.46.

    Setup:
        .. code-block:: python

            tok = H2OVLTokenizer.from_pretrained("path/to/h2ovl-mississippi-800m")
            ids = tok.encode("<|prompt|>Read the text.<|end|><|answer|>")
            text = tok.decode(ids)
            # user text never yields added tokens (here <|end|> stays plain text):
            ids = tok.encode_segments([("<|prompt|>", True), ("a<|end|>b", False)])

    Args:
        sp_model: The SentencePiece model; for ``legacy=False`` loaded without the dummy prefix
            (as :meth:`from_pretrained` does).
        added_tokens: ``(content, id, special)`` of every added token.
        eos_token: The end token (the loaded original reports ``<|end|>``).
        pad_token: The padding token.
        unk_token: The unknown token (used by the ``legacy=False`` encoding).
        legacy: The slow tokenizer's ``legacy`` (``True`` for the published models).
        add_prefix_space: Its ``add_prefix_space`` (``False`` in the published config).
        clean_up_tokenization_spaces: Its ``clean_up_tokenization_spaces`` (``False``).
    """

    def __init__(
        self,
        sp_model: sentencepiece.SentencePieceProcessor,
        added_tokens: Iterable[tuple[str, int, bool]],
        *,
        eos_token: str = TURN_END,
        pad_token: str = "<unk>",
        unk_token: str = "<unk>",
        legacy: bool = True,
        add_prefix_space: bool = False,
        clean_up_tokenization_spaces: bool = False,
    ) -> None:
        self._sp = sp_model
        self.base_vocab_size = int(sp_model.get_piece_size())
        self._added = {
            content: _AddedToken(content, idx, special) for content, idx, special in added_tokens
        }
        self._added_by_id = {t.id: t for t in self._added.values()}
        beyond = sorted(t.id for t in self._added.values() if t.id >= self.base_vocab_size)
        if beyond != list(range(self.base_vocab_size, self.base_vocab_size + len(beyond))):
            raise ModelLoadError(
                f"added token ids {beyond} do not follow the {self.base_vocab_size} "
                "SentencePiece pieces without gaps"
            )
        # Longest first, so that a token that is a prefix of another never wins (the slow
        # tokenizer's trie does the same).
        pattern = "|".join(re.escape(t) for t in sorted(self._added, key=len, reverse=True))
        self._split_re = re.compile(f"({pattern})") if pattern else None
        self.special_ids = frozenset(t.id for t in self._added.values() if t.special)
        self._special_contents = frozenset(t.content for t in self._added.values() if t.special)
        # Added tokens that _decode keeps apart from the text around them.
        self._splitting_ids = frozenset(
            t.id for t in self._added.values() if not t.special or t.id >= self.base_vocab_size
        )
        # Ids whose piece is a special token's text: the piece decoder renders them verbatim.
        self._piece_special_ids = frozenset(
            i
            for i in range(self.base_vocab_size)
            if (i in self._added_by_id and self._added_by_id[i].special)
            or sp_model.id_to_piece(i) in self._special_contents
        )
        self.legacy = legacy
        self.add_prefix_space = add_prefix_space
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.unk_token = unk_token
        self.eos_token = eos_token
        self.eos_token_id = self.token_to_id(eos_token)
        self.pad_token_id = self.token_to_id(pad_token)
        self._space_id = int(sp_model.piece_to_id(SPIECE_UNDERLINE))
        self._unk_length = len(sp_model.encode(unk_token))

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> H2OVLTokenizer:
        """Load the tokenizer files of an original checkpoint directory.

        Settings missing from ``tokenizer_config.json`` take the slow ``LlamaTokenizer``'s
        defaults: ``legacy`` true, ``add_prefix_space`` true, no clean-up.
        """
        import sentencepiece as spm

        directory = Path(directory)
        model_file = directory / "tokenizer.model"
        if not model_file.is_file():
            raise ModelLoadError(
                f"{directory} has no tokenizer.model (the SentencePiece model the original "
                "tokenizer is built from)"
            )
        config = _read_json(directory / "tokenizer_config.json")
        legacy = config.get("legacy")
        legacy = True if legacy is None else bool(legacy)
        proto = model_file.read_bytes()
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(proto if legacy else proto + _NO_DUMMY_PREFIX)
        except (OSError, RuntimeError) as e:
            raise ModelLoadError(f"{model_file} is not a SentencePiece model: {e}") from e
        specials_map = _read_json(directory / "special_tokens_map.json")
        added: dict[str, tuple[int, bool]] = {}
        for idx, entry in (config.get("added_tokens_decoder") or {}).items():
            added[entry["content"]] = (int(idx), bool(entry.get("special", False)))
        special_names = set(config.get("additional_special_tokens") or [])
        special_names |= set(specials_map.get("additional_special_tokens") or [])
        for content, idx in _read_json(directory / "added_tokens.json").items():
            added.setdefault(content, (int(idx), content in special_names))
        return cls(
            sp,
            [(content, idx, special) for content, (idx, special) in added.items()],
            eos_token=_token_name(config.get("eos_token"), TURN_END),
            pad_token=_token_name(config.get("pad_token"), "<unk>"),
            unk_token=_token_name(config.get("unk_token"), "<unk>"),
            legacy=legacy,
            add_prefix_space=bool(config.get("add_prefix_space", True)),
            clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        )

    # -- vocabulary ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """Total vocabulary: SentencePiece pieces plus added tokens beyond them."""
        beyond = sum(1 for t in self._added.values() if t.id >= self.base_vocab_size)
        return self.base_vocab_size + beyond

    def token_to_id(self, token: str) -> int:
        """Id of an added token or a SentencePiece piece; ``KeyError`` when neither."""
        if token in self._added:
            return self._added[token].id
        idx = int(self._sp.piece_to_id(token))
        if idx == self._sp.unk_id() and token != self._sp.id_to_piece(idx):
            raise KeyError(token)
        return idx

    def id_to_token(self, idx: int) -> str:
        """The piece or added-token text of an id."""
        if idx in self._added_by_id:
            return self._added_by_id[idx].content
        return str(self._sp.id_to_piece(idx))

    @property
    def vocab_type(self) -> VocabType:
        """``byte_fallback``: SentencePiece pieces, ``▁`` for a space and ``<0xNN>`` for bytes."""
        return "byte_fallback"

    def vocab_pieces(self, size: int | None = None) -> list[str]:
        """Every id's piece, in id order, padded with empty strings up to ``size``."""
        pieces = [self.id_to_token(i) for i in range(len(self))]
        if size is not None and size > len(pieces):
            pieces.extend([""] * (size - len(pieces)))
        return pieces

    @property
    def added_tokens(self) -> dict[str, int]:
        """Added tokens (including ``<unk>``, ``<s>``, ``</s>``) and their ids."""
        return {t.content: t.id for t in self._added.values()}

    # -- encoding -----------------------------------------------------------------------------

    def split(self, text: str) -> list[str]:
        """Split at added tokens, keeping them; empty segments are dropped."""
        if self._split_re is None:
            return [text] if text else []
        return [part for part in self._split_re.split(text) if part]

    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        """Token ids of ``text`` exactly as the original's slow tokenizer gives them (no BOS).

        Args:
            text: The text.
            allow_special: Whether added-token text (``<|end|>``, ``<img>``, ``<s>`` ...) becomes
                the added token's id, as in the original. ``False`` encodes it as plain text:
                use that for anything a user wrote.

        Raises:
            InvalidInputError: ``text`` holds a lone surrogate.
        """
        return self.encode_segments([(text, allow_special)])

    def encode_segments(self, segments: Iterable[tuple[str, bool]]) -> list[int]:
        """Token ids of the concatenated segments; only template segments yield added tokens.

        Each segment is ``(text, is_template)``. Template text is split at added tokens as
        the original does; other text never is. Text on both sides of a segment boundary is
        encoded together (the slow tokenizer encodes everything between two added tokens in
        one SentencePiece call), so a prompt whose user text holds no added-token text gets
        exactly the ids of ``encode("".join(texts))``.

        Raises:
            InvalidInputError: A segment holds a lone surrogate.
        """
        parts: list[str | _AddedToken] = []
        pending: list[str] = []
        for text, is_template in segments:
            check_text(text, "the text")
            for piece in self.split(text) if is_template else [text] if text else []:
                token = self._added.get(piece) if is_template else None
                if token is None:
                    pending.append(piece)
                    continue
                if pending:
                    parts.append("".join(pending))
                    pending = []
                parts.append(token)
        if pending:
            parts.append("".join(pending))
        return self._encode_parts(parts)

    def _encode_parts(self, parts: list[str | _AddedToken]) -> list[int]:
        # PreTrainedTokenizer.tokenize after its trie split, then LlamaTokenizer.tokenize/_tokenize.
        if not self.legacy and parts:
            parts = [p.replace(SPIECE_UNDERLINE, " ") if isinstance(p, str) else p for p in parts]
            if self.add_prefix_space:
                first = parts[0]
                if isinstance(first, str):
                    parts[0] = SPIECE_UNDERLINE + first
                else:
                    parts.insert(0, SPIECE_UNDERLINE)
        ids: list[int] = []
        for part in parts:
            if isinstance(part, _AddedToken):
                ids.append(part.id)
            elif self.legacy or not part.startswith((SPIECE_UNDERLINE, " ")):
                ids.extend(self._sp.encode(part))
            else:
                # Encode after the unknown token's text, then drop its pieces: the way the slow
                # tokenizer keeps a leading space without the dummy prefix.
                encoded = self._sp.encode(self.unk_token + part)
                n = self._unk_length
                ids.extend(encoded[n:] if len(encoded) >= n else encoded)
        if (
            not self.legacy
            and len(ids) > 1
            and ids[0] == self._space_id
            and ids[1] in self.special_ids
        ):
            del ids[0]
        return ids

    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text`` (for inspection and tests)."""
        return [self.id_to_token(i) for i in self.encode(text)]

    # -- decoding -----------------------------------------------------------------------------

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``, exactly as the slow tokenizer's ``decode`` gives it.

        Special tokens are skipped (default) without breaking the text around them, which is
        how the original's chat decodes answers. Kept added tokens are rendered as the slow
        tokenizer renders them: space-separated from the text (its ``_decode`` joins with
        spaces whatever ``spaces_between_special_tokens`` says), and with its ``legacy`` space
        before ``<unk>``/``<s>``/``</s>``. With ``add_prefix_space`` the first piece loses its
        ``▁``.
        """
        if skip_special_tokens:
            kept = [i for i in ids if i not in self.special_ids]
            if self._splitting_ids.isdisjoint(kept):  # the usual case: one run of pieces
                out = self._run_to_text(kept) if kept else ""
                return _clean_up_tokenization(out) if self.clean_up_tokenization_spaces else out
        texts: list[str] = []
        run: list[int] = []
        for idx in ids:
            idx = int(idx)
            if skip_special_tokens and idx in self.special_ids:
                continue
            token = self._added_by_id.get(idx)
            if token is None or (token.special and token.id < self.base_vocab_size):
                run.append(idx)  # <unk>, <s>, </s> are left to the piece decoder
                continue
            if run:
                text = self._run_to_text(run)
                if text:
                    texts.append(text)
                run = []
            texts.append(token.content)
        if run:
            texts.append(self._run_to_text(run))
        out = " ".join(texts)
        return _clean_up_tokenization(out) if self.clean_up_tokenization_spaces else out

    def _run_to_text(self, run: list[int]) -> str:
        # SentencePiece decodes ids as it decodes their pieces; the pieces are only needed when
        # convert_tokens_to_string would change or split them.
        if self.add_prefix_space or not self._piece_special_ids.isdisjoint(run):
            return self._pieces_to_text([self.id_to_token(i) for i in run])
        return str(self._sp.decode(run))

    def _pieces_to_text(self, pieces: list[str]) -> str:
        # LlamaTokenizer.convert_tokens_to_string.
        if self.add_prefix_space and pieces[0].startswith(SPIECE_UNDERLINE):
            pieces[0] = pieces[0][1:]
        out: list[str] = []
        current: list[str] = []
        previous_special = False
        for i, piece in enumerate(pieces):
            if piece in self._special_contents:
                if not previous_special and i != 0 and self.legacy:
                    out.append(" ")
                out.append(self._sp.decode(current) + piece)
                previous_special = True
                current = []
            else:
                if (
                    previous_special
                    and i == 1
                    and self.add_prefix_space
                    and not piece.startswith(SPIECE_UNDERLINE)
                ):
                    out.append(" ")
                current.append(piece)
                previous_special = False
        out.append(self._sp.decode(current))
        return "".join(out)

    def is_whitespace_token(self, idx: int) -> bool:
        r"""Whether the token decodes to whitespace only (used by the OCR mode).

        The original's test: the token's text stripped by Python's ``str.strip()`` is empty.
        So ``▁`` (which decodes to nothing) counts, as do the bytes ``\t\n\v\f\r``,
        ``0x1C``-``0x1F`` and space; added tokens decode to their own text and never count.
        """
        if not 0 <= idx < len(self):
            return False
        return not self.decode([idx], skip_special_tokens=False).strip()


def _clean_up_tokenization(text: str) -> str:
    # PreTrainedTokenizerBase.clean_up_tokenization (transformers 4.46).
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def _token_name(value: Any, default: str) -> str:
    if isinstance(value, dict):
        value = value.get("content")
    return str(value) if value else default


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path} is not valid JSON: {e}") from e
    return data if isinstance(data, dict) else {}
