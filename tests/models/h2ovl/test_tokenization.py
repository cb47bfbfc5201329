"""Token ids as the original's slow SentencePiece tokenizer (legacy) produces them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm

from mississippi_tools.models.h2ovl.tokenization import H2OVLTokenizer

SPECIAL_IDS = {
    "<img>": 32000,
    "</img>": 32001,
    "<IMG_CONTEXT>": 32002,
    "<quad>": 32003,
    "</quad>": 32004,
    "<ref>": 32005,
    "</ref>": 32006,
    "<box>": 32007,
    "</box>": 32008,
    "<|end|>": 32009,
    "<unk>": 0,
    "<s>": 1,
    "</s>": 2,
}


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint: Path) -> H2OVLTokenizer:
    return H2OVLTokenizer.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def with_real_files(
    tiny_checkpoint: Path, reference_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> H2OVLTokenizer:
    """The tiny tokenizer.model with the published tokenizer_config/added_tokens/special map."""
    directory = tmp_path_factory.mktemp("real-tokenizer-files")
    shutil.copy(tiny_checkpoint / "tokenizer.model", directory)
    for name in ("tokenizer_config.json", "added_tokens.json", "special_tokens_map.json"):
        shutil.copy(reference_dir / name, directory)
    return H2OVLTokenizer.from_pretrained(directory)


def test_builder_writes_the_published_tokenizer_config(
    tiny_checkpoint: Path, reference_dir: Path
) -> None:
    for name in ("tokenizer_config.json", "added_tokens.json", "special_tokens_map.json"):
        ours = json.loads((tiny_checkpoint / name).read_text())
        real = json.loads((reference_dir / name).read_text())
        assert ours == real, name


@pytest.mark.parametrize("fixture", ["tokenizer", "with_real_files"])
def test_special_token_ids(fixture: str, request: pytest.FixtureRequest) -> None:
    tok: H2OVLTokenizer = request.getfixturevalue(fixture)
    assert len(tok) == 32010
    for token, idx in SPECIAL_IDS.items():
        assert tok.token_to_id(token) == idx
        assert tok.encode(token) == [idx]
    assert tok.eos_token_id == 32009  # the loaded tokenizer reports <|end|>
    assert tok.pad_token_id == 0


def test_each_segment_between_added_tokens_gets_the_dummy_prefix(
    with_real_files: H2OVLTokenizer,
) -> None:
    # BEHAVIOUR.md: "</img>\nRead" gives </img>, ▁, <0x0A>, ...
    pieces = with_real_files.tokenize("</img>\nRead")
    assert pieces[:3] == ["</img>", "▁", "<0x0A>"]
    # "<|end|><|answer|>" gives <|end|>, ▁<... : <|answer|> is plain text, not an added token
    pieces = with_real_files.tokenize("<|end|><|answer|>")
    assert pieces[0] == "<|end|>"
    assert pieces[1].startswith("▁")
    assert len(pieces) > 2
    assert "<|prompt|>" not in with_real_files.added_tokens


def test_ids_are_sentencepiece_per_segment(
    tiny_checkpoint: Path, tokenizer: H2OVLTokenizer
) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(tiny_checkpoint / "tokenizer.model"))
    text = "<|prompt|><img><IMG_CONTEXT><IMG_CONTEXT></img>\nRead  the text.<|end|><|answer|>"
    expected = [
        *sp.encode("<|prompt|>"),
        32000,
        32002,
        32002,
        32001,
        *sp.encode("\nRead  the text."),
        32009,
        *sp.encode("<|answer|>"),
    ]
    assert tokenizer.encode(text) == expected


def test_no_bos_is_added(tokenizer: H2OVLTokenizer) -> None:
    assert tokenizer.encode("hello")[0] != 1


def test_decode_skips_special_tokens_without_breaking_words(tokenizer: H2OVLTokenizer) -> None:
    ids = [*tokenizer.encode("hello world"), 32005, *tokenizer.encode("again")]
    assert tokenizer.decode(ids) == "hello world again"
    assert "<ref>" in tokenizer.decode(ids, skip_special_tokens=False)


def test_decode_round_trip_of_unicode_and_spaces(tokenizer: H2OVLTokenizer) -> None:
    text = "Price: 1,200 €  —  naïve ✓\ttab\nline"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_whitespace_tokens(tokenizer: H2OVLTokenizer) -> None:
    assert tokenizer.is_whitespace_token(tokenizer.token_to_id("▁"))
    assert tokenizer.is_whitespace_token(tokenizer.token_to_id("<0x0A>"))
    assert not tokenizer.is_whitespace_token(tokenizer.token_to_id("<|end|>"))
    assert not tokenizer.is_whitespace_token(tokenizer.encode("a")[-1])
