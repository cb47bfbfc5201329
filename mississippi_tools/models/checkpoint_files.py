"""Files every tiny-checkpoint builder writes: JSON, safetensors (sharded or not), SentencePiece.

The per-family builders (``mississippi_tools.models.<family>.testing``) write each published
layout; what they share, the byte-level writers, lives here so the layouts stay side by side.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["save_weights", "train_sentencepiece", "write_json"]


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented UTF-8 JSON with a final newline, as the hub's files are."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_weights(
    directory: Path, tensors: dict[str, torch.Tensor], max_shard_bytes: int | None = None
) -> None:
    """Write ``model.safetensors``, or shards and their index above ``max_shard_bytes``."""
    from safetensors.torch import save_file

    metadata = {"format": "pt"}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(tensors, str(directory / "model.safetensors"), metadata=metadata)
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards, start=1):
        filename = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / filename), metadata=metadata)
        weight_map.update(dict.fromkeys(shard, filename))
    write_json(
        directory / "model.safetensors.index.json",
        {"metadata": {"total_size": total}, "weight_map": weight_map},
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _piece_message(piece: str, score: float) -> bytes:
    # ModelProto.pieces entry: piece (1, string), score (2, float), type (3, enum NORMAL=1).
    text = piece.encode("utf-8")
    body = b"\x0a" + _varint(len(text)) + text + b"\x15" + struct.pack("<f", score) + b"\x18\x01"
    return b"\x0a" + _varint(len(body)) + body


def train_sentencepiece(corpus: Iterable[str], vocab_size: int, *, pad_to: int) -> bytes:
    """A small BPE ``tokenizer.model`` trained on ``corpus``, padded to ``pad_to`` pieces.

    The padding pieces are made of a private-use character that no test text contains, so they
    are never produced, and every id above the trained pieces lines up with the real vocabulary.
    """
    import sentencepiece as spm

    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(corpus) * 20),
        model_writer=writer,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        hard_vocab_limit=False,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
        num_threads=1,
    )
    model = writer.getvalue()
    processor = spm.SentencePieceProcessor(model_proto=model)
    trained = int(processor.get_piece_size())
    # Repeated fields append in order.
    filler = b"".join(_piece_message(f"\ue000{i:05d}", -1e9 - i) for i in range(pad_to - trained))
    return model + filler
