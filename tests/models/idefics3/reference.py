"""The reference: transformers' own Idefics3 processor (PIL image processor, fast tokenizer).

Built from the checkpoint's files by a path independent of mississippi_tools. The 4.46 processor
the model was published with crashes on text-only prompts (noted in ECOSYSTEM §8); 5.24's handles
them with the tokenizer alone, which is what 4.46 would have done had it not crashed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.models.reference_processors import pil_image_processor


def processor(checkpoint: Path, **image_overrides: Any) -> Any:
    from transformers import Idefics3Processor, PreTrainedTokenizerFast

    image_processor_class = pil_image_processor("idefics3", "Idefics3")

    pre = json.loads((checkpoint / "preprocessor_config.json").read_text())
    kwargs = {
        k: pre[k]
        for k in (
            "do_convert_rgb",
            "do_image_splitting",
            "do_normalize",
            "do_pad",
            "do_rescale",
            "do_resize",
            "image_mean",
            "image_std",
            "max_image_size",
            "resample",
            "rescale_factor",
            "size",
        )
    }
    kwargs.update(image_overrides)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(checkpoint / "tokenizer.json"),
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|reserved_special_token_0|>",
    )
    template = json.loads((checkpoint / "tokenizer_config.json").read_text())["chat_template"]
    return Idefics3Processor(
        image_processor_class(**kwargs), tokenizer, image_seq_len=169, chat_template=template
    )
