"""Florence-2's tokenizer: BART's byte-level BPE plus the location and task tokens.

The published files hold BART's ``tokenizer.json`` (and ``vocab.json``/``merges.txt``); Microsoft's
processor adds, at load time, ``<od>``, ``</od>``, ``<ocr>``, ``</ocr>``, the 1000 location tokens
``<loc_0>`` .. ``<loc_999>`` and the task markers ``<cap>`` .. ``<and>`` as special tokens (ids
50265 .. 51288 on top of BART's 50265). Fine-tunes saved with that processor (Florence-2-DocVQA)
already carry them; older snapshots do not, so they are added here in the same order when
missing. The prompt's image placeholder ``<image>`` is added after them (id 51289 published, one
past the model's vocabulary: it is never a logit, only a marker the backend fills with image
features). The pipeline itself is the ``tokenizers`` one of
:class:`~mississippi_tools.models.idefics2.tokenization.IdeficsTokenizer`: caller text is
tokenized without added tokens, so typing ``<loc_5>`` gives its characters.
"""

from __future__ import annotations

import json
from pathlib import Path

from mississippi_tools.errors import ModelLoadError
from mississippi_tools.models.florence2.processing import IMAGE_TOKEN
from mississippi_tools.models.idefics2.tokenization import IdeficsTokenizer

__all__ = ["LEGACY_SPECIAL_TOKENS", "load_tokenizer"]

#: The special tokens Microsoft's processor adds to BART's vocabulary, in order.
LEGACY_SPECIAL_TOKENS: tuple[str, ...] = (
    "<od>",
    "</od>",
    "<ocr>",
    "</ocr>",
    *(f"<loc_{i}>" for i in range(1000)),
    "<cap>",
    "</cap>",
    "<ncap>",
    "</ncap>",
    "<dcap>",
    "</dcap>",
    "<grounding>",
    "</grounding>",
    "<seg>",
    "</seg>",
    "<sep>",
    "<region_cap>",
    "</region_cap>",
    "<region_to_desciption>",
    "</region_to_desciption>",
    "<proposal>",
    "</proposal>",
    "<poly>",
    "</poly>",
    "<and>",
)


def load_tokenizer(directory: Path) -> IdeficsTokenizer:
    """The checkpoint's tokenizer with the Florence-2 special tokens and ``<image>`` last.

    Raises:
        ModelLoadError: ``tokenizer.json`` is missing or unreadable, or lacks ``<s>``/``</s>``.
    """
    from tokenizers import AddedToken, Tokenizer

    path = directory / "tokenizer.json"
    if not path.is_file():
        raise ModelLoadError(f"{directory} has no tokenizer.json (Florence-2's BART tokenizer)")
    try:
        raw = path.read_text(encoding="utf-8")
        data = json.loads(raw)
        full = Tokenizer.from_str(raw)
    except Exception as e:  # tokenizers raises its own exception type
        raise ModelLoadError(f"{path} is not a tokenizers file: {e}") from e
    missing = [t for t in LEGACY_SPECIAL_TOKENS if full.token_to_id(t) is None]
    if missing:
        full.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    if full.token_to_id(IMAGE_TOKEN) is None:
        full.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    bos = full.token_to_id("<s>")
    if bos is None or full.token_to_id("</s>") is None:
        raise ModelLoadError(f"{path} has no <s> or </s> token (BART's BOS and EOS)")
    stripped = dict(data)
    stripped["added_tokens"] = []
    stripped["post_processor"] = None
    text_only = Tokenizer.from_str(json.dumps(stripped))
    return IdeficsTokenizer(
        full, text_only, bos_ids=[int(bos)], eos_token="</s>", vocab_type="byte_level"
    )
