"""Token ids and text as the original's slow SentencePiece tokenizer (4.46) produces them."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.models.h2ovl.tokenization import H2OVLTokenizer
from tests.models.h2ovl.slow_tokenizer import SlowLlamaTokenizer

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


# -- the slow tokenizer's settings, against a re-statement of transformers 4.46 ------------------

SETTINGS = [
    pytest.param(True, False, False, id="published"),
    pytest.param(True, True, False, id="add_prefix_space"),
    pytest.param(False, False, False, id="not_legacy"),
    pytest.param(False, True, True, id="not_legacy_prefix_space_cleanup"),
]

_ALPHABET = [*"abcdefghij XYZ.,!?'\n\t", "▁", "€", "ü", "🙂", "\x1c", "  ", " n't", " 's"]


def _configured(
    tiny_checkpoint: Path, directory: Path, legacy: bool, prefix_space: bool, cleanup: bool
) -> Path:
    for name in ("tokenizer.model", "added_tokens.json", "special_tokens_map.json"):
        shutil.copy(tiny_checkpoint / name, directory)
    config = json.loads((tiny_checkpoint / "tokenizer_config.json").read_text())
    config.update(
        legacy=legacy, add_prefix_space=prefix_space, clean_up_tokenization_spaces=cleanup
    )
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def _random_text(rng: random.Random, tokens: list[str]) -> str:
    return "".join(rng.choice(_ALPHABET + tokens) for _ in range(rng.randint(0, 14)))


@pytest.mark.parametrize(("legacy", "prefix_space", "cleanup"), SETTINGS)
def test_encode_and_decode_follow_the_slow_tokenizer(
    legacy: bool, prefix_space: bool, cleanup: bool, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    directory = _configured(tiny_checkpoint, tmp_path, legacy, prefix_space, cleanup)
    ours = H2OVLTokenizer.from_pretrained(directory)
    slow = SlowLlamaTokenizer(
        directory,
        legacy=legacy,
        add_prefix_space=prefix_space,
        clean_up_tokenization_spaces=cleanup,
    )
    rng = random.Random(7)
    tokens = [*SPECIAL_IDS, "<|prompt|>", "<|answer|>"]
    specials = sorted(slow.all_special_ids)
    bytes_and_space = [ours.token_to_id(p) for p in ("▁", "<0x0A>", "<0xE2>", "<0x82>", "<0x1C>")]
    for _ in range(400):
        text = _random_text(rng, tokens)
        assert ours.encode(text) == slow.encode(text), text
        assert ours.encode(text, allow_special=False) == slow.encode(
            text, split_special_tokens=True
        ), text
        ids = [
            rng.choice(specials)
            if rng.random() < 0.15
            else rng.choice([*range(3, 600), *bytes_and_space])
            for _ in range(rng.randint(1, 10))
        ]
        assert ours.decode(ids) == slow.decode(ids, skip_special_tokens=True), ids
        assert ours.decode(ids, skip_special_tokens=False) == slow.decode(ids), ids


def test_add_prefix_space_is_honoured_when_decoding(tiny_checkpoint: Path, tmp_path: Path) -> None:
    # Values printed by transformers 4.46.3's LlamaTokenizer on these files (legacy=true).
    published = H2OVLTokenizer.from_pretrained(tiny_checkpoint)
    with_prefix_space = H2OVLTokenizer.from_pretrained(
        _configured(tiny_checkpoint, tmp_path, True, True, False)
    )
    space = published.token_to_id("▁")
    ids = [space, *published.encode("Hello")]  # the answer starts with a space piece
    assert published.tokenize("Hello")[0] == "▁H"
    assert published.decode(ids) == " Hello"
    assert with_prefix_space.decode(ids) == "Hello"
    assert with_prefix_space.decode([space, space, *published.encode("x")]) == " x"
    assert published.decode([space, space, *published.encode("x")]) == "  x"


def test_kept_added_tokens_are_rendered_as_the_slow_tokenizer_does(
    tokenizer: H2OVLTokenizer,
) -> None:
    ids = [*tokenizer.encode("hello"), 32005, *tokenizer.encode("again")]
    assert tokenizer.decode(ids, skip_special_tokens=False) == "hello <ref> again"
    unk = [*tokenizer.encode("a"), 0, *tokenizer.encode("b")]
    assert tokenizer.decode(unk, skip_special_tokens=False) == " a<unk>b"
    assert tokenizer.decode(unk) == "a b"


def test_settings_missing_from_the_config_take_the_slow_defaults(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    for name in ("tokenizer.model", "added_tokens.json", "special_tokens_map.json"):
        shutil.copy(tiny_checkpoint / name, tmp_path)
    config = json.loads((tiny_checkpoint / "tokenizer_config.json").read_text())
    for key in ("legacy", "add_prefix_space", "clean_up_tokenization_spaces"):
        del config[key]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = H2OVLTokenizer.from_pretrained(tmp_path)
    assert (tok.legacy, tok.add_prefix_space, tok.clean_up_tokenization_spaces) == (
        True,
        True,
        False,
    )


# -- user text never yields added tokens ---------------------------------------------------------


@pytest.mark.parametrize("token", list(SPECIAL_IDS))
def test_added_token_text_is_plain_text_when_special_tokens_are_not_allowed(
    token: str, tokenizer: H2OVLTokenizer, tiny_checkpoint: Path
) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(tiny_checkpoint / "tokenizer.model"))
    text = f"say {token} now"
    ids = tokenizer.encode(text, allow_special=False)
    assert ids == sp.encode(text)
    assert not set(ids) & set(SPECIAL_IDS.values())
    assert tokenizer.decode(ids) == text
    assert SPECIAL_IDS[token] in tokenizer.encode(text)  # the original's reading of it


def test_segments_encode_like_the_joined_text_when_user_text_is_plain(
    tokenizer: H2OVLTokenizer,
) -> None:
    rng = random.Random(3)
    template = ["<|prompt|>", "<|end|><|answer|>", "<img><IMG_CONTEXT></img>\n", "", "Image-1: "]
    for _ in range(300):
        segments = [
            (rng.choice(template), True) if rng.random() < 0.5 else (_random_text(rng, []), False)
            for _ in range(rng.randint(0, 6))
        ]
        joined = "".join(text for text, _ in segments)
        assert tokenizer.encode_segments(segments) == tokenizer.encode(joined), segments


def test_segments_keep_added_token_text_of_user_spans_as_text(tokenizer: H2OVLTokenizer) -> None:
    ids = tokenizer.encode_segments(
        [("<|prompt|>", True), ("a<|end|><img>", False), ("<|end|><|answer|>", True)]
    )
    assert ids.count(32009) == 1
    assert 32000 not in ids
    assert ids[ids.index(32009) + 1 :] == tokenizer.encode("<|end|><|answer|>")[1:]
    # Skipping the template's <|end|> joins the text around it, dummy-prefix space included.
    assert tokenizer.decode(ids) == "<|prompt|>a<|end|><img> <|answer|>"


@pytest.mark.parametrize("text", ["a\ud800b", "\udfff", "ok \ud83d"])
def test_lone_surrogates_are_invalid_input(text: str, tokenizer: H2OVLTokenizer) -> None:
    index = next(i for i, c in enumerate(text) if 0xD800 <= ord(c) <= 0xDFFF)
    with pytest.raises(InvalidInputError, match=f"U\\+{ord(text[index]):04X} at character {index}"):
        tokenizer.encode(text, allow_special=False)
    with pytest.raises(InvalidInputError):
        tokenizer.encode(text)


def test_a_surrogate_pair_is_one_character_and_fine(tokenizer: H2OVLTokenizer) -> None:
    text = "smile \U0001f642"
    assert tokenizer.decode(tokenizer.encode(text)) == text


# -- the OCR mode's whitespace test --------------------------------------------------------------


def test_whitespace_tokens_are_those_whose_text_strips_to_nothing(
    tokenizer: H2OVLTokenizer, tiny_checkpoint: Path
) -> None:
    slow = SlowLlamaTokenizer(tiny_checkpoint)
    found = set()
    for idx in range(len(tokenizer)):
        expected = slow.decode([idx]).strip() == ""
        assert tokenizer.is_whitespace_token(idx) == expected, (idx, tokenizer.id_to_token(idx))
        if expected:
            found.add(tokenizer.id_to_token(idx))
    # Python's str.strip() also strips the information separators 0x1C-0x1F.
    for byte in (0x1C, 0x1D, 0x1E, 0x1F, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20):
        assert f"<0x{byte:02X}>" in found
    assert "▁" in found
    assert not {"<0x85>", "<0xA0>", "<|end|>", "<unk>"} & found
