"""The reference: transformers' own IDEFICS classes and processor, on the same checkpoint files.

Loaded by a path independent of mississippi_tools: ``IdeficsForVisionText2Text.from_pretrained``
on the published-format directory, the image processor built from its
``preprocessor_config.json`` and the fast tokenizer from its ``tokenizer.json`` as the 4.32
processor loaded it (``PreTrainedTokenizerFast(tokenizer_file=...)``; transformers 5's
``LlamaTokenizer`` rebuilds the pipeline and drops the ``▁`` after added tokens, see ECOSYSTEM
§8). The processor is called with ``add_end_of_utterance_token=False`` and the instruct prompt
written out, as the idefics-9b-instruct model card does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

FAKE = "<fake_token_around_image>"
IMAGE = "<image>"
EOU = "<end_of_utterance>"


def processor(checkpoint: Path) -> Any:
    from transformers import IdeficsProcessor, PreTrainedTokenizerFast

    from tests.models.reference_processors import pil_image_processor

    image_processor = pil_image_processor("idefics", "Idefics")
    special = json.loads((checkpoint / "special_tokens_map.json").read_text())
    extra = [t["content"] for t in special["additional_special_tokens"]]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(checkpoint / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        additional_special_tokens=extra,
    )
    config = json.loads((checkpoint / "preprocessor_config.json").read_text())
    images = image_processor(
        image_size=config["image_size"],
        image_mean=config["image_mean"],
        image_std=config["image_std"],
    )
    return IdeficsProcessor(image_processor=images, tokenizer=tokenizer)


def model(checkpoint: Path) -> Any:
    from transformers import IdeficsForVisionText2Text

    loaded = IdeficsForVisionText2Text.from_pretrained(
        checkpoint, dtype=torch.float32, attn_implementation="eager"
    )
    return loaded.eval()


def instruct_items(question: str, images: list[Any], *, images_first: bool = True) -> list[Any]:
    """The model card's prompt list: ``User:``, the images, the question, the turn's end."""
    if not images:
        return [f"User: {question}{EOU}", "\nAssistant:"]
    if images_first:
        return ["User:", *images, f"{question}{EOU}", "\nAssistant:"]
    return [f"User: {question}", *images, EOU, "\nAssistant:"]


def inputs(proc: Any, items: list[Any]) -> Any:
    return proc(text=[items], add_end_of_utterance_token=False, return_tensors="pt")


def greedy(
    reference: Any, proc: Any, batch: Any, steps: int
) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy tokens and per-step float32 logits from transformers' ``generate``."""
    bad = [
        [proc.tokenizer.convert_tokens_to_ids(FAKE)],
        [proc.tokenizer.convert_tokens_to_ids(IMAGE)],
    ]
    with torch.inference_mode():
        out = reference.generate(
            **batch,
            max_new_tokens=steps,
            min_new_tokens=steps,
            do_sample=False,
            bad_words_ids=bad,
            output_scores=True,
            output_logits=True,
            return_dict_in_generate=True,
        )
    new = out.sequences[0, batch["input_ids"].shape[1] :].tolist()
    return new, [logits[0].float() for logits in out.logits]
