"""Parity with transformers' own Idefics2 classes and processor on the same published-format files.

Identical prompt ids, last-position logits within 1e-4 (float32) and identical 16-token greedy
continuations, for images of several sizes and aspect ratios, image splitting on and off, two
images, a text-only prompt and a history (the reference follows the 4.40 processor where 5.24
deviates: see reference.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine, LocalEngineConfig
from tests.models.idefics2 import reference
from tests.support import loaded_image


def page(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def messages_for(
    question: str, n_images: int, history: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for q, a in history:
        out.append({"role": "user", "content": [{"type": "text", "text": q}]})
        out.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": question}]
    out.append({"role": "user", "content": content})
    return out


CASES = [
    pytest.param([(500, 300)], True, [], id="landscape-split"),
    pytest.param([(500, 300)], False, [], id="landscape-whole"),
    pytest.param([(1300, 420)], False, [], id="wide-over-longest-edge"),
    pytest.param([(230, 900)], True, [], id="tall-split"),
    pytest.param([(60, 40)], False, [], id="tiny-upscaled"),
    pytest.param([(400, 400), (300, 520)], False, [], id="two-images"),
    pytest.param([], False, [], id="text-only"),
    pytest.param([(420, 380)], True, [("What is it?", "A chart of sales.")], id="history"),
]


@pytest.mark.parametrize(("sizes", "split", "history"), CASES)
def test_prompt_logits_and_greedy_tokens_match_transformers(
    idefics2_backend, idefics2_reference, idefics2_checkpoint: Path, sizes, split, history
) -> None:  # type: ignore[no-untyped-def]
    question = "What does the page say?"
    pils = [page(i, size) for i, size in enumerate(sizes)]
    images = [loaded_image(p) for p in pils]
    options = {"do_image_splitting": split}
    prepared = idefics2_backend.prepare(question, images, history=history, options=options)

    text = reference.chat_text(idefics2_checkpoint, messages_for(question, len(pils), history))
    theirs = reference.inputs(idefics2_checkpoint, text, pils, split=split)
    assert prepared.input_ids == theirs["input_ids"][0].tolist()

    with torch.no_grad():
        ref_logits = idefics2_reference(**theirs, logits_to_keep=1).logits[0, -1]
        features = idefics2_backend.encode_images([i.render() for i in prepared.images])
        ids = torch.tensor([prepared.input_ids])
        embeds = idefics2_backend.embed(ids, torch.cat(features) if features else None)
        cache = idefics2_backend.new_cache()
        ours = idefics2_backend.forward(
            embeds, torch.ones_like(ids), torch.arange(ids.shape[1])[None], cache
        )[0]
    torch.testing.assert_close(ours, ref_logits, rtol=1e-4, atol=1e-4)

    with torch.no_grad():
        generated = idefics2_reference.generate(**theirs, max_new_tokens=16, do_sample=False)
    hf_tokens = generated[0, theirs["input_ids"].shape[1] :].tolist()
    with LocalEngine(idefics2_backend) as engine:
        out = engine.generate(
            GenerationRequest(
                question,
                images=images,
                history=history,
                options=options,
                sampling=SamplingParams(max_new_tokens=16),
            )
        )
    stops = idefics2_backend.stop_token_ids
    assert out.token_ids == [t for t in hf_tokens if t not in stops][: len(out.token_ids)]
    assert len(out.token_ids) == 16 or hf_tokens[len(out.token_ids)] in stops


def test_four_requests_batched_equal_one_at_a_time(idefics2_backend) -> None:  # type: ignore[no-untyped-def]
    requests = [
        GenerationRequest(
            f"Question {i}: what is written?",
            images=[loaded_image(page(10 + i, size))],
            options={"do_image_splitting": i % 2 == 0},
            sampling=SamplingParams(max_new_tokens=12, ignore_eos=True),
            logprobs=True,
        )
        for i, size in enumerate([(400, 300), (700, 420), (380, 380), (300, 800)])
    ]
    with LocalEngine(idefics2_backend, LocalEngineConfig(max_batch_size=1)) as engine:
        alone = [engine.generate(r) for r in requests]
    with LocalEngine(idefics2_backend, LocalEngineConfig(max_batch_size=4)) as engine:
        handles = [engine.submit(r) for r in requests]
        together = [h.result(120) for h in handles]
        assert engine.metrics.batch_size_counts.get(4, 0) > 0
    for a, b in zip(alone, together, strict=True):
        assert a.token_ids == b.token_ids
        assert a.token_logprobs is not None and b.token_logprobs is not None
        np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=1e-4)
