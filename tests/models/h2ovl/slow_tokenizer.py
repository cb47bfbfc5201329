"""A naive re-statement of transformers 4.46's slow ``LlamaTokenizer``, the original's tokenizer.

Written from that version's ``tokenization_llama.py`` and ``tokenization_utils.py`` (``tokenize``,
``_tokenize``, ``_decode``, ``convert_tokens_to_string``), on token *strings* as the slow
tokenizer works, with the ``sentencepiece`` library for the piece handling. It shares no code with
mississippi_tools.models.h2ovl.tokenization, which works on ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import sentencepiece as spm

SPIECE_UNDERLINE = "▁"


class SlowLlamaTokenizer:
    def __init__(
        self,
        directory: Path,
        *,
        legacy: bool = True,
        add_prefix_space: bool = False,
        clean_up_tokenization_spaces: bool = False,
    ) -> None:
        config = json.loads((directory / "tokenizer_config.json").read_text())
        self.legacy = legacy
        self.add_prefix_space = add_prefix_space
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.added_decoder = {
            int(idx): entry["content"] for idx, entry in config["added_tokens_decoder"].items()
        }
        self.added_encoder = {content: idx for idx, content in self.added_decoder.items()}
        self.additional_special_tokens = list(config["additional_special_tokens"])
        named = [config[k] for k in ("bos_token", "eos_token", "unk_token", "sep_token")]
        named += [config[k] for k in ("pad_token", "cls_token")]
        self.all_special_tokens = set(named) | set(self.additional_special_tokens)
        self.all_special_ids = {self.added_encoder[t] for t in self.all_special_tokens}
        self.unk_token = config["unk_token"]
        proto = (directory / "tokenizer.model").read_bytes()
        if not legacy:
            # get_spm_processor: the same model with normalizer_spec.add_dummy_prefix = False.
            # Written as protobuf bytes: field 3 (normalizer_spec) { field 3 (add_dummy_prefix): 0 }
            # appended, which protobuf merges into the existing message.
            proto += bytes([3 << 3 | 2, 2, 3 << 3 | 0, 0])
        self.sp_model = spm.SentencePieceProcessor(model_proto=proto)
        self.vocab_size = self.sp_model.get_piece_size()

    # -- tokenize ------------------------------------------------------------------------------

    def _split_on_added(self, text: str) -> list[str]:
        """The trie split: at each position, the longest added token that starts there."""
        out, start, i = [], 0, 0
        tokens = sorted(self.added_encoder, key=len, reverse=True)
        while i < len(text):
            match = next((t for t in tokens if text.startswith(t, i)), None)
            if match is None:
                i += 1
                continue
            out += [text[start:i], match]
            i += len(match)
            start = i
        out.append(text[start:])
        return out

    def _tokenize(self, text: str) -> list[str]:
        if self.legacy or not text.startswith((SPIECE_UNDERLINE, " ")):
            return self.sp_model.encode(text, out_type=str)
        unk_token_length = len(self.sp_model.encode(str(self.unk_token)))
        tokens = self.sp_model.encode(self.unk_token + text, out_type=str)
        return tokens[unk_token_length:] if len(tokens) >= unk_token_length else tokens

    def tokenize(self, text: str, *, split_special_tokens: bool = False) -> list[str]:
        if not self.legacy and len(text) != 0:
            text = text.replace(SPIECE_UNDERLINE, " ")
            if self.add_prefix_space:
                text = SPIECE_UNDERLINE + text
        parts = [text] if split_special_tokens else self._split_on_added(text)
        tokens: list[str] = []
        for part in parts:
            if not part:
                continue
            if not split_special_tokens and part in self.added_encoder:
                tokens.append(part)
            else:
                tokens.extend(self._tokenize(part))
        if (
            not self.legacy
            and len(tokens) > 1
            and tokens[0] == SPIECE_UNDERLINE
            and tokens[1] in self.all_special_tokens
        ):
            tokens = tokens[1:]
        return tokens

    def encode(self, text: str, *, split_special_tokens: bool = False) -> list[int]:
        return [
            self.added_encoder[t] if t in self.added_encoder else self.sp_model.piece_to_id(t)
            for t in self.tokenize(text, split_special_tokens=split_special_tokens)
        ]

    # -- decode --------------------------------------------------------------------------------

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        if tokens[0].startswith(SPIECE_UNDERLINE) and self.add_prefix_space:
            tokens[0] = tokens[0][1:]
        current_sub_tokens: list[str] = []
        out_string = ""
        prev_is_special = False
        for i, token in enumerate(tokens):
            if token in self.all_special_tokens:
                if not prev_is_special and i != 0 and self.legacy:
                    out_string += " "
                out_string += self.sp_model.decode(current_sub_tokens) + token
                prev_is_special = True
                current_sub_tokens = []
            else:
                if (
                    prev_is_special
                    and i == 1
                    and self.add_prefix_space
                    and not token.startswith(SPIECE_UNDERLINE)
                ):
                    out_string += " "
                current_sub_tokens.append(token)
                prev_is_special = False
        out_string += self.sp_model.decode(current_sub_tokens)
        return out_string

    def decode(self, ids: list[int], *, skip_special_tokens: bool = False) -> str:
        tokens = [
            self.added_decoder[i] if i in self.added_decoder else self.sp_model.id_to_piece(i)
            for i in ids
            if not (skip_special_tokens and i in self.all_special_ids)
        ]
        legacy_added_tokens = set(self.added_encoder) - self.all_special_tokens | {
            t for t in self.additional_special_tokens if self.added_encoder[t] >= self.vocab_size
        }
        sub_texts: list[str] = []
        current_sub_text: list[str] = []
        for token in tokens:
            if skip_special_tokens and token in self.all_special_tokens:
                continue
            if token in legacy_added_tokens:
                if current_sub_text:
                    string = self.convert_tokens_to_string(current_sub_text)
                    if len(string) > 0:
                        sub_texts.append(string)
                    current_sub_text = []
                sub_texts.append(token)
            else:
                current_sub_text.append(token)
        if current_sub_text:
            sub_texts.append(self.convert_tokens_to_string(current_sub_text))
        # _decode's spaces_between_special_tokens defaults to True and the config's value never
        # reaches it.
        text = " ".join(sub_texts)
        if self.clean_up_tokenization_spaces:
            for before, after in [
                (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
            ]:  # fmt: skip
                text = text.replace(before, after)
        return text
