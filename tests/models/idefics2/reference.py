"""The reference: transformers' own Idefics2 classes and processor, on the same checkpoint files.

Loaded by a path independent of mississippi_tools: ``Idefics2ForConditionalGeneration.
from_pretrained`` on the published-format directory, the PIL image processor built from its
``preprocessor_config.json``, and the fast tokenizer from its ``tokenizer.json``.

Where transformers 5.24 deviates from the 4.40 processor the checkpoints were published with, the
reference follows 4.40 (and the tests that use it say so):

* 5.24's ``Idefics2Processor`` inserts a space after a closing ``<fake_token_around_image>``
  followed by a word (``closing_fake_pattern``); 4.40 does not. So the prompt string is expanded
  here as 4.40 does it: ``<image>`` -> fake + 64 x ``<image>`` + fake (x5 with splitting), then
  doubled fake tokens collapsed.
* 5.24's ``LlamaTokenizer`` rebuilds the pipeline and drops the ``▁`` after added tokens; 4.40
  loaded ``tokenizer.json`` as is, which ``PreTrainedTokenizerFast(tokenizer_file=...)`` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tests.models.reference_processors import pil_image_processor

FAKE = "<fake_token_around_image>"
IMAGE = "<image>"


def tokenizer(checkpoint: Path) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(checkpoint / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
    )


def image_processor(checkpoint: Path, **overrides: Any) -> Any:
    image_processor_class = pil_image_processor("idefics2", "Idefics2")

    config = json.loads((checkpoint / "preprocessor_config.json").read_text())
    kwargs = {
        k: config[k]
        for k in (
            "do_convert_rgb",
            "do_image_splitting",
            "do_normalize",
            "do_pad",
            "do_rescale",
            "do_resize",
            "image_mean",
            "image_std",
            "resample",
            "rescale_factor",
            "size",
        )
    }
    kwargs.update(overrides)
    return image_processor_class(**kwargs)


def chat_text(checkpoint: Path, messages: list[dict[str, Any]]) -> str:
    """The checkpoint's own chat template, rendered by transformers' Jinja machinery."""
    from transformers import Idefics2Processor

    template = json.loads((checkpoint / "tokenizer_config.json").read_text())["chat_template"]
    processor = Idefics2Processor(image_processor(checkpoint), tokenizer(checkpoint))
    return str(
        processor.apply_chat_template(messages, chat_template=template, add_generation_prompt=True)
    )


def expand_4_40(text: str, *, split: bool, seq_len: int = 64) -> str:
    """The 4.40 processor's prompt expansion (see the module docstring)."""
    image_str = f"{FAKE}{IMAGE * seq_len}{FAKE}"
    if split:
        image_str = image_str * 5
    text = text.replace(IMAGE, image_str)
    return text.replace(f"{FAKE}{FAKE}", FAKE)


def inputs(
    checkpoint: Path, text: str, images: list[Any], *, split: bool, longest_edge: int | None = None
) -> dict[str, torch.Tensor]:
    """Prompt ids, pixel values and masks exactly as the published processor makes them."""
    ids = tokenizer(checkpoint)(expand_4_40(text, split=split), return_tensors="pt")
    out: dict[str, torch.Tensor] = {
        "input_ids": ids["input_ids"],
        "attention_mask": ids["attention_mask"],
    }
    if images:
        overrides: dict[str, Any] = {"do_image_splitting": split}
        if longest_edge is not None:
            overrides["size"] = {"shortest_edge": 378, "longest_edge": longest_edge}
        pixels = image_processor(checkpoint, **overrides)([images], return_tensors="pt")
        out["pixel_values"] = pixels["pixel_values"]
        out["pixel_attention_mask"] = pixels["pixel_attention_mask"]
    return out


def model(checkpoint: Path) -> Any:
    from transformers import Idefics2ForConditionalGeneration

    return Idefics2ForConditionalGeneration.from_pretrained(
        checkpoint, dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
