"""Tokenizers and a sampling loop for grammar tests: one vocabulary type each, no hub access.

- :class:`CharTokenizer`: a hand-made SentencePiece-style (``byte_fallback``) vocabulary of byte
  pieces, printable ASCII and a few odd pieces, for fast random walks through a grammar.
- :class:`ByteLevelTokenizer`: a GPT-2-style byte-level BPE (``byte_level``, as Llama-3 and so
  Idefics3) trained here with the ``tokenizers`` library, wrapped as a ``TokenizerLike``.
- :func:`sample_under_grammar`: a batched sampling loop over a tiny random ``LlamaForCausalLM``,
  one :class:`~mississippi_tools.engine.grammar.GrammarProcessor` per row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from mississippi_tools.engine.grammar import GrammarProcessor
    from mississippi_tools.models.base import VocabType


class CharTokenizer:
    """Byte pieces, printable ASCII, a few SentencePiece-style pieces, and special tokens."""

    vocab_type: VocabType = "byte_fallback"

    def __init__(self) -> None:
        pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
        pieces += [chr(c) for c in range(0x21, 0x7F)]
        pieces += ["▁", '▁"', '",', '":', "é", "日本", "a\x01b", "line\n"]
        pieces += ["<img>", "<IMG_CONTEXT>", "<|end|>"]
        self.pieces = pieces
        self.special_ids = frozenset({0, 1, 2, len(pieces) - 3, len(pieces) - 2, len(pieces) - 1})
        self.eos_token_id = len(pieces) - 1

    def id_of(self, piece: str) -> int:
        return self.pieces.index(piece)

    def vocab_pieces(self, size: int | None = None) -> list[str]:
        return self.pieces + [""] * max(0, (size or 0) - len(self.pieces))

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        data = bytearray()
        for i in ids:
            piece = self.pieces[i]
            if i in self.special_ids:
                if not skip_special_tokens:
                    data += piece.encode()
            elif re.fullmatch(r"<0x[0-9A-F]{2}>", piece):
                data.append(int(piece[3:5], 16))
            else:
                data += piece.replace("▁", " ").encode("utf-8", "surrogatepass")
        return data.decode("utf-8", errors="replace")

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def is_whitespace_token(self, idx: int) -> bool:
        return False


# Text the byte-level BPE is trained on: JSON as the schemas give it (indented, so that pieces
# glue newlines to spaces and punctuation, e.g. ",Ċ" and "ĊĠĠ"), and non-ASCII words.
_TRAINING_TEXTS = [
    json.dumps(
        {"name": "Ann Lee", "total": 12.5, "items": [{"qty": 3, "code": "AB-12"}], "ok": True},
        indent=2,
    ),
    json.dumps({"date": "2024-02-29", "at": "12:30:00Z", "status": "paid", "note": None}),
    'Ünïcode 日本語 say "hi"\tcafé naïve — 5 € \\ / paid due void cash card n/a red blue',
]


class ByteLevelTokenizer:
    """A byte-level BPE trained with ``tokenizers``, as a ``TokenizerLike``.

    Its pieces are the byte-to-unicode strings (``Ġ`` for a space, ``Ċ`` for a newline), every
    byte has a piece of its own (the trainer's initial alphabet), and ``<pad>``, ``<s>``,
    ``</s>`` and ``<img>`` are special.
    """

    vocab_type: VocabType = "byte_level"
    add_prefix_space = False

    def __init__(self, vocab_size: int = 600) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        specials = ["<pad>", "<s>", "</s>", "<img>"]
        tokenizer.train_from_iterator(
            _TRAINING_TEXTS * 20,
            trainers.BpeTrainer(
                vocab_size=vocab_size,
                special_tokens=specials,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            ),
        )
        self._tokenizer = tokenizer
        self.pieces = [tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size())]
        self.special_ids = frozenset(tokenizer.token_to_id(s) for s in specials)
        self.bos_token_id = tokenizer.token_to_id("<s>")
        self.eos_token_id = tokenizer.token_to_id("</s>")

    def id_of(self, piece: str) -> int:
        return self.pieces.index(piece)

    def vocab_pieces(self, size: int | None = None) -> list[str]:
        return self.pieces + [""] * max(0, (size or 0) - len(self.pieces))

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def is_whitespace_token(self, idx: int) -> bool:
        return not self.decode([idx]).strip()


def tiny_llama(vocab_size: int, seed: int = 0) -> Any:
    """A random 2-layer ``LlamaForCausalLM`` (hidden size 64) with ``vocab_size`` output rows."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config).eval()


def sample_under_grammar(
    model: Any,
    processors: Sequence[GrammarProcessor],
    *,
    start_token_id: int,
    stop_token_ids: Sequence[int],
    max_new_tokens: int,
    seed: int = 0,
) -> list[tuple[list[int], bool]]:
    """Sample one answer per processor, all rows in one batch (temperature 1, no top-k).

    Runs on one thread: a model this small is 30x slower with two on a busy machine.

    Returns:
        Per row, the generated ids (without the stop token) and whether a stop token ended it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _sample(model, processors, start_token_id, stop_token_ids, max_new_tokens, seed)
    finally:
        torch.set_num_threads(threads)


def _sample(
    model: Any,
    processors: Sequence[GrammarProcessor],
    start_token_id: int,
    stop_token_ids: Sequence[int],
    max_new_tokens: int,
    seed: int,
) -> list[tuple[list[int], bool]]:
    from transformers import DynamicCache

    generator = torch.Generator().manual_seed(seed)
    rows = len(processors)
    generated: list[list[int]] = [[] for _ in range(rows)]
    stopped = [False] * rows
    cache = DynamicCache(config=model.config)
    inputs = torch.full((rows, 1), start_token_id)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=inputs, cache=cache, use_cache=True).logits[:, -1].float()
            chosen = []
            for row, processor in enumerate(processors):
                if stopped[row]:
                    chosen.append(start_token_id)  # ignored: the row is finished
                    continue
                masked = processor(generated[row], logits[row].clone())
                token = int(torch.multinomial(torch.softmax(masked, -1), 1, generator=generator))
                if token in stop_token_ids:
                    stopped[row] = True
                else:
                    generated[row].append(token)
                chosen.append(token)
            if all(stopped):
                break
            inputs = torch.tensor(chosen).unsqueeze(1)
    return list(zip(generated, stopped, strict=True))
