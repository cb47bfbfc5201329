"""The plain path: the same weights run the straightforward way, as the original chat() does.

One request at a time: tile the image, run the vision encoder and projector, build the prompt
embeddings, then transformers' ``generate`` (its own cache, no batching, no feature cache).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from mississippi_tools.images import load_image
from mississippi_tools.models.h2ovl.backend import H2OVLBackend

PROMPT = "Read the text in the image."


def plain_request(backend: H2OVLBackend, png: bytes, *, new_tokens: int) -> dict[str, Any]:
    """Seconds for one request the plain way, and the tokens it produced."""
    started = time.perf_counter()
    prepared = backend.prepare(PROMPT, [load_image(png)])
    pixels = prepared.images[0].render()
    with torch.inference_mode():
        features = backend.model.extract_features(pixels)
        ids = torch.tensor([prepared.input_ids])
        embeds = backend.model.embed(ids, features, image_token_id=backend.image_token_id)
        tokens = backend.model.language_model.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=backend.tokenizer.eos_token_id,
            pad_token_id=backend.tokenizer.pad_token_id,
        )
    return {"seconds": time.perf_counter() - started, "token_ids": tokens[0].tolist()}


def plain_sequential(
    backend: H2OVLBackend, pngs: list[bytes], *, new_tokens: int
) -> dict[str, Any]:
    """A list of requests, one after the other, the plain way."""
    started = time.perf_counter()
    outputs = [plain_request(backend, png, new_tokens=new_tokens) for png in pngs]
    elapsed = time.perf_counter() - started
    return {
        "requests": len(pngs),
        "seconds": elapsed,
        "requests_per_s": len(pngs) / elapsed,
        "tokens_per_s": len(pngs) * new_tokens / elapsed,
        "token_ids": [o["token_ids"] for o in outputs],
    }
