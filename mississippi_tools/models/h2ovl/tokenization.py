r"""The H2OVL-Mississippi tokenizer, giving exactly the ids the model was trained with.

The original loads the *slow* SentencePiece ``LlamaTokenizer`` (``use_fast=False``,
``legacy=true``): the text is split at the added tokens, and each remaining segment is encoded by
SentencePiece on its own, so every segment gets the model's dummy-prefix ``▁`` (``</img>\\nRead``
gives ``</img>``, ``▁``, ``<0x0A>``, ...). A fast tokenizer converted from the published
``tokenizer_config.json`` (``add_prefix_space: false``) drops that ``▁`` and gives other ids, so
we implement the slow behaviour directly on ``sentencepiece``; it is also faster than the Python
slow tokenizer.

Files read: ``tokenizer.model`` (SentencePiece), ``tokenizer_config.json``
(``added_tokens_decoder``), ``added_tokens.json`` and ``special_tokens_map.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mississippi_tools.errors import ModelLoadError

if TYPE_CHECKING:
    import sentencepiece

    from mississippi_tools.models.base import VocabType

__all__ = [
    "IMG_CONTEXT",
    "IMG_END",
    "IMG_START",
    "TURN_END",
    "H2OVLTokenizer",
]

IMG_START = "<img>"
IMG_END = "</img>"
IMG_CONTEXT = "<IMG_CONTEXT>"
#: The h2ogpt2 template's separator; the chat stops on it.
TURN_END = "<|end|>"


@dataclass(frozen=True)
class _AddedToken:
    content: str
    id: int
    special: bool


class H2OVLTokenizer:
    """SentencePiece tokenizer with the slow ``LlamaTokenizer`` (legacy) semantics.

    Setup:
        .. code-block:: python

            tok = H2OVLTokenizer.from_pretrained("path/to/h2ovl-mississippi-800m")
            ids = tok.encode("<|prompt|>Read the text.<|end|><|answer|>")
            text = tok.decode(ids)
    """

    def __init__(
        self,
        sp_model: sentencepiece.SentencePieceProcessor,
        added_tokens: Iterable[tuple[str, int, bool]],
        *,
        eos_token: str = TURN_END,
        pad_token: str = "<unk>",
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
        self.eos_token = eos_token
        self.eos_token_id = self.token_to_id(eos_token)
        self.pad_token_id = self.token_to_id(pad_token)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> H2OVLTokenizer:
        """Load the tokenizer files of an original checkpoint directory."""
        import sentencepiece as spm

        directory = Path(directory)
        model_file = directory / "tokenizer.model"
        if not model_file.is_file():
            raise ModelLoadError(
                f"{directory} has no tokenizer.model (the SentencePiece model the original "
                "tokenizer is built from)"
            )
        sp = spm.SentencePieceProcessor()
        try:
            sp.Load(str(model_file))
        except (OSError, RuntimeError) as e:
            raise ModelLoadError(f"{model_file} is not a SentencePiece model: {e}") from e
        config = _read_json(directory / "tokenizer_config.json")
        specials_map = _read_json(directory / "special_tokens_map.json")
        added: dict[str, tuple[int, bool]] = {}
        for idx, entry in (config.get("added_tokens_decoder") or {}).items():
            added[entry["content"]] = (int(idx), bool(entry.get("special", False)))
        special_names = set(config.get("additional_special_tokens") or [])
        special_names |= set(specials_map.get("additional_special_tokens") or [])
        for content, idx in _read_json(directory / "added_tokens.json").items():
            added.setdefault(content, (int(idx), content in special_names))
        eos = config.get("eos_token") or TURN_END
        if isinstance(eos, dict):
            eos = eos["content"]
        pad = config.get("pad_token") or "<unk>"
        if isinstance(pad, dict):
            pad = pad["content"]
        return cls(
            sp,
            [(content, idx, special) for content, (idx, special) in added.items()],
            eos_token=str(eos),
            pad_token=str(pad),
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

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` exactly as the original's slow tokenizer gives them (no BOS)."""
        ids: list[int] = []
        for part in self.split(text):
            token = self._added.get(part)
            if token is not None:
                ids.append(token.id)
            else:
                ids.extend(self._sp.encode(part))
        return ids

    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text`` (for inspection and tests)."""
        return [self.id_to_token(i) for i in self.encode(text)]

    # -- decoding -----------------------------------------------------------------------------

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``.

        Skipped special tokens do not break the surrounding text (as in the slow tokenizer);
        kept added tokens are inserted verbatim between SentencePiece-decoded runs.
        """
        out: list[str] = []
        run: list[int] = []
        for idx in ids:
            token = self._added_by_id.get(idx)
            if token is None:
                run.append(idx)
                continue
            if skip_special_tokens and token.special:
                continue
            if run:
                out.append(self._sp.decode(run))
                run = []
            out.append(token.content)
        if run:
            out.append(self._sp.decode(run))
        return "".join(out)

    def is_whitespace_token(self, idx: int) -> bool:
        """Whether the token decodes to whitespace only (used by the OCR mode)."""
        if idx in self._added_by_id:
            return False
        piece = self._sp.id_to_piece(idx)
        if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            return chr(int(piece[3:5], 16)) in " \t\n\r\x0b\x0c"
        return piece.replace("▁", " ").isspace()


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path} is not valid JSON: {e}") from e
    return data if isinstance(data, dict) else {}
