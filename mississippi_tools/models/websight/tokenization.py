"""The VLM_WebSight tokenizer: the published ``tokenizer.json`` run by the ``tokenizers`` library.

The checkpoint ships a fast tokenizer only (``tokenizer.json``: Mistral's byte-fallback BPE with a
``Prepend("▁")`` normalizer, plus ``<fake_token_around_image>`` 32000 and ``<image>`` 32001 as
added special tokens); the original loads it with ``LlamaTokenizerFast``, which runs that file
as is. So do we, through ``tokenizers`` directly.

User text is encoded with ``encode_special_tokens`` on: typing ``<image>`` gives the pieces of
the text ``<image>``, never the control id. The prompt's control ids (``<s>``, the image block)
are placed by the backend, not parsed from text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mississippi_tools.errors import ModelLoadError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from mississippi_tools.models.base import VocabType

__all__ = ["WebSightTokenizer"]


class WebSightTokenizer:
    """``tokenizer.json`` with the :class:`~mississippi_tools.models.base.TokenizerLike` surface.

    Setup:
        .. code-block:: python

            tok = WebSightTokenizer.from_pretrained("path/to/VLM_WebSight_finetuned")
            tok.encode("<div>")          # text, never control tokens
            tok.token_to_id("<image>")   # 32001
    """

    #: SentencePiece-style pieces with ``<0xNN>`` byte fallback.
    vocab_type: VocabType = "byte_fallback"

    def __init__(self, tokenizer: Tokenizer, *, eos_token: str = "</s>", bos_token: str = "<s>"):
        self._tok = tokenizer
        self._text = tokenizer.__class__.from_str(tokenizer.to_str())
        self._text.encode_special_tokens = True
        self.eos_token_id = self.token_to_id(eos_token)
        self.bos_token_id = self.token_to_id(bos_token)
        self._specials = {
            token.content
            for token in tokenizer.get_added_tokens_decoder().values()
            if token.special
        }

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> WebSightTokenizer:
        """Load ``tokenizer.json`` (and the BOS/EOS names of ``tokenizer_config.json``)."""
        from tokenizers import Tokenizer

        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(
                f"{directory} has no tokenizer.json (VLM_WebSight ships its tokenizer only in "
                "that file)"
            )
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises its own untyped errors
            raise ModelLoadError(f"{path} is not a readable tokenizer.json: {e}") from e
        config_path = directory / "tokenizer_config.json"
        config: dict[str, object] = {}
        if config_path.is_file():
            try:
                loaded = json.loads(config_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ModelLoadError(f"{config_path} is not valid JSON: {e}") from e
            config = loaded if isinstance(loaded, dict) else {}
        eos, bos = config.get("eos_token", "</s>"), config.get("bos_token", "<s>")
        eos = eos.get("content", "</s>") if isinstance(eos, dict) else eos
        bos = bos.get("content", "<s>") if isinstance(bos, dict) else bos
        try:
            return cls(tokenizer, eos_token=str(eos), bos_token=str(bos))
        except KeyError as e:
            raise ModelLoadError(f"{path} lacks the token {e}") from None

    # -- vocabulary ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """Every id, added tokens included."""
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def token_to_id(self, token: str) -> int:
        """Id of a piece or added token; ``KeyError`` when the vocabulary has none."""
        idx = self._tok.token_to_id(token)
        if idx is None:
            raise KeyError(token)
        return int(idx)

    def id_to_token(self, idx: int) -> str:
        """The piece of an id (empty for ids outside the vocabulary)."""
        return self._tok.id_to_token(idx) or ""

    def vocab_pieces(self, size: int | None = None) -> list[str]:
        """Every id's piece, in id order, padded with empty strings up to ``size``."""
        pieces = [self.id_to_token(i) for i in range(len(self))]
        if size is not None and size > len(pieces):
            pieces.extend([""] * (size - len(pieces)))
        return pieces

    # -- text ---------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` as text (no BOS; control-token spellings stay text)."""
        if not text:
            return []
        return list(self._text.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``, as the original's ``batch_decode`` gives it."""
        return str(self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def is_whitespace_token(self, idx: int) -> bool:
        """Whether the token decodes to whitespace only."""
        piece = self.id_to_token(idx)
        if not piece or piece in self._specials:
            return False
        if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            return chr(int(piece[3:5], 16)) in " \t\n\r\x0b\x0c"
        return piece.replace("▁", " ").isspace()
