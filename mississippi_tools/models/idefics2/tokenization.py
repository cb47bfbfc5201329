r"""The Idefics tokenizers: Idefics2's Mistral SentencePiece-BPE, Idefics3's Llama 3 byte-level BPE.

The published processors of both families load the *fast* tokenizer from ``tokenizer.json``
(transformers 4.40 / 4.46: ``LlamaTokenizerFast``, ``PreTrainedTokenizerFast``), which is a thin
wrapper over the ``tokenizers`` library. So the ids the models were used with are those of the
``tokenizers`` pipeline stored in ``tokenizer.json``, which is what this module runs. (transformers
5 rebuilds the Llama tokenizer from its vocabulary and drops the ``▁`` the published Idefics2
``tokenizer.json`` puts after every added token, e.g. between ``<end_of_utterance>`` and
``\n``; see the project's ECOSYSTEM notes §8.)

Prompts are encoded as :class:`Segment`\ s: control tokens that only the chat template and the
processor place (``<image>``, ``<fake_token_around_image>``, ``<end_of_utterance>``, BOS) and
text. Text is tokenized with a copy of the pipeline that knows no added tokens, so a user typing
``<image>`` or ``<end_of_utterance>`` gets the characters, never the control token. Text runs are
split where the template's control tokens are, exactly where the published tokenizer splits at
its added tokens, so ordinary prompts get the same ids as the published processor gives.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mississippi_tools.errors import ModelLoadError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from mississippi_tools.models.base import VocabType

__all__ = ["IdeficsTokenizer", "Segment"]


@dataclass(frozen=True)
class Segment:
    """A piece of a prompt: text (tokenized as text) or a control token placed by the template."""

    text: str
    control: bool = False


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path} is not valid JSON: {e}") from e
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class IdeficsTokenizer:
    """The published ``tokenizer.json`` pipeline, with control tokens placed only by templates.

    Setup:
        .. code-block:: python

            tok = IdeficsTokenizer.from_pretrained("path/to/idefics2-8b")
            ids = tok.encode_segments([Segment("User:"), Segment("<image>", control=True)])
    """

    def __init__(
        self,
        full: Tokenizer,
        text_only: Tokenizer,
        *,
        bos_ids: Sequence[int],
        eos_token: str,
        vocab_type: VocabType,
    ) -> None:
        self._full = full
        self._text = text_only
        self.bos_ids = list(bos_ids)
        self.added_tokens: dict[str, int] = {
            token.content: idx for idx, token in full.get_added_tokens_decoder().items()
        }
        self.special_ids = frozenset(
            idx for idx, token in full.get_added_tokens_decoder().items() if token.special
        )
        self.eos_token = eos_token
        self.eos_token_id = self.token_to_id(eos_token)
        self.vocab_type: VocabType = vocab_type
        self.add_prefix_space = vocab_type == "byte_fallback"

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> IdeficsTokenizer:
        """Load ``tokenizer.json`` and ``tokenizer_config.json`` of a published checkpoint.

        Raises:
            ModelLoadError: ``tokenizer.json`` is missing or unreadable.
        """
        from tokenizers import Tokenizer

        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(
                f"{directory} has no tokenizer.json (the fast tokenizer the published processor "
                "loads)"
            )
        try:
            raw = path.read_text(encoding="utf-8")
            data = json.loads(raw)
            full = Tokenizer.from_str(raw)
        except Exception as e:  # tokenizers raises its own exception type
            raise ModelLoadError(f"{path} is not a tokenizers file: {e}") from e
        config = _read_json(directory / "tokenizer_config.json")
        specials = _read_json(directory / "special_tokens_map.json")
        stripped = dict(data)
        stripped["added_tokens"] = []
        stripped["post_processor"] = None
        text_only = Tokenizer.from_str(json.dumps(stripped))
        model = data.get("model") or {}
        byte_level = model.get("byte_fallback") is not True and _has_byte_level(data)
        vocab_type: VocabType = "byte_level" if byte_level else "byte_fallback"
        eos = _token_text(config.get("eos_token")) or _token_text(specials.get("eos_token"))
        bos = _token_text(config.get("bos_token")) or _token_text(specials.get("bos_token"))
        if eos is None:
            raise ModelLoadError(f"{directory} names no eos_token in tokenizer_config.json")
        if str(config.get("tokenizer_class", "")).startswith("LlamaTokenizer"):
            # LlamaTokenizerFast rebuilds its post-processor from add_bos_token/add_eos_token.
            bos_id = full.token_to_id(bos) if bos and config.get("add_bos_token", True) else None
            bos_ids = [] if bos_id is None else [int(bos_id)]
        else:
            bos_ids = full.encode("", add_special_tokens=True).ids
        return cls(full, text_only, bos_ids=bos_ids, eos_token=eos, vocab_type=vocab_type)

    # -- vocabulary ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """Vocabulary size, added tokens included."""
        return int(self._full.get_vocab_size(with_added_tokens=True))

    def token_to_id(self, token: str) -> int:
        """Id of a token; ``KeyError`` when the vocabulary has none."""
        idx = self._full.token_to_id(token)
        if idx is None:
            raise KeyError(token)
        return int(idx)

    def id_to_token(self, idx: int) -> str:
        """The piece of an id (empty for ids beyond the vocabulary)."""
        return self._full.id_to_token(idx) or ""

    def vocab_pieces(self, size: int | None = None) -> list[str]:
        """Every id's piece, in id order, padded with empty strings up to ``size``."""
        pieces = [self.id_to_token(i) for i in range(len(self))]
        if size is not None and size > len(pieces):
            pieces.extend([""] * (size - len(pieces)))
        return pieces

    # -- encoding -----------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` as text: no BOS, and no control tokens even if it spells one."""
        return list(self._text.encode(text, add_special_tokens=False).ids) if text else []

    def encode_segments(self, segments: Sequence[Segment], *, bos: bool = True) -> list[int]:
        """Ids of a templated prompt: BOS (when the tokenizer adds one), then each segment.

        Adjacent text segments are joined before encoding (the published tokenizer only splits
        at added tokens).
        """
        ids: list[int] = list(self.bos_ids) if bos else []
        pending: list[str] = []
        for segment in segments:
            if not segment.control:
                pending.append(segment.text)
                continue
            ids.extend(self.encode("".join(pending)))
            pending = []
            ids.append(self.token_to_id(segment.text))
        ids.extend(self.encode("".join(pending)))
        return ids

    # -- decoding -----------------------------------------------------------------------------

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``."""
        return str(self._full.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def is_whitespace_token(self, idx: int) -> bool:
        """Whether the token decodes to whitespace only."""
        if idx in self.special_ids:
            return False
        text = self._full.decode([idx], skip_special_tokens=False)
        return bool(text) and text.isspace()


def _has_byte_level(data: dict[str, Any]) -> bool:
    """Whether the pipeline uses GPT-2 style byte-level pieces (Llama 3, Idefics3)."""

    def mentions(node: Any) -> bool:
        if isinstance(node, dict):
            return node.get("type") == "ByteLevel" or any(mentions(v) for v in node.values())
        if isinstance(node, list):
            return any(mentions(v) for v in node)
        return False

    return mentions(data.get("pre_tokenizer")) or mentions(data.get("decoder"))
