"""The reference: transformers' native Florence2ForConditionalGeneration and Florence2Processor.

The processor is assembled the way transformers' ``convert_florence2_original_pytorch_to_hf.py``
assembles it from Microsoft's files: the checkpoint's own tokenizer (``AutoTokenizer``) with
``<image>`` added as a special token, its ``CLIPImageProcessor``, and ``Florence2Processor``.
The native model holds the mapped weights with its embeddings resized to the tokenizer (as the
conversion script does), so the native processor's ``<image>`` id has a row; logits are compared
on the checkpoint's own vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def native_processor(directory: Path) -> Any:
    """``Florence2Processor`` over the checkpoint's tokenizer and image processor."""
    from transformers import AddedToken, AutoTokenizer, CLIPImageProcessor, Florence2Processor

    tokenizer = AutoTokenizer.from_pretrained(directory)
    image = AddedToken("<image>", special=True, normalized=False)
    tokenizer.add_tokens([image], special_tokens=True)
    tokenizer.image_token = "<image>"
    tokenizer.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    image_processor = CLIPImageProcessor.from_pretrained(directory)
    return Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)


def native_model(backend: Any, tokens: int) -> Any:
    """A fresh native model holding the backend's mapped weights, embeddings resized."""
    import torch
    from transformers import Florence2ForConditionalGeneration

    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(backend.model.config)
    missing, unexpected = model.load_state_dict(backend.model.state_dict(), strict=False)
    assert not unexpected and not missing
    model.resize_token_embeddings(tokens, mean_resizing=False)
    return model.eval()
