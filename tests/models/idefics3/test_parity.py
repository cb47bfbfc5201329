"""Parity with transformers' own Idefics3 classes and processor on the same files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine, LocalEngineConfig
from tests.models.idefics2.test_parity import messages_for, page
from tests.models.idefics3 import reference
from tests.support import loaded_image

CASES = [
    pytest.param([(500, 300)], True, None, [], id="landscape-2x2"),
    pytest.param([(500, 300)], False, None, [], id="global-only"),
    pytest.param([(300, 1000)], True, 1092, [], id="tall-3-tiles-up"),
    pytest.param([(50, 40)], True, None, [], id="tiny-upscaled"),
    pytest.param([(364, 364)], True, 364, [], id="one-tile-not-split"),
    pytest.param([(400, 400), (300, 520)], True, None, [], id="two-images"),
    pytest.param([], True, None, [], id="text-only"),
    pytest.param([(420, 380)], True, None, [("What is it?", "A chart.")], id="history"),
]


@pytest.mark.parametrize(("sizes", "split", "longest", "history"), CASES)
def test_prompt_logits_and_greedy_tokens_match_transformers(
    idefics3_backend, idefics3_reference, idefics3_checkpoint: Path, sizes, split, longest, history
) -> None:  # type: ignore[no-untyped-def]
    question = "What does the page say?"
    pils = [page(i, size) for i, size in enumerate(sizes)]
    images = [loaded_image(p) for p in pils]
    options: dict[str, Any] = {"do_image_splitting": split}
    overrides: dict[str, Any] = {"do_image_splitting": split}
    if longest is not None:
        options["longest_edge"] = longest
        overrides["size"] = {"longest_edge": longest}
    prepared = idefics3_backend.prepare(question, images, history=history, options=options)

    proc = reference.processor(idefics3_checkpoint, **overrides)
    text = proc.apply_chat_template(
        messages_for(question, len(pils), history), add_generation_prompt=True
    )
    theirs = proc(text=text, images=pils or None, return_tensors="pt")
    theirs.pop("rows", None), theirs.pop("cols", None)
    assert prepared.input_ids == theirs["input_ids"][0].tolist()

    with torch.no_grad():
        ref_logits = idefics3_reference(**theirs, logits_to_keep=1).logits[0, -1]
        features = idefics3_backend.encode_images([i.render() for i in prepared.images])
        ids = torch.tensor([prepared.input_ids])
        embeds = idefics3_backend.embed(ids, torch.cat(features) if features else None)
        ours = idefics3_backend.forward(
            embeds,
            torch.ones_like(ids),
            torch.arange(ids.shape[1])[None],
            idefics3_backend.new_cache(),
        )[0]
    torch.testing.assert_close(ours, ref_logits, rtol=1e-4, atol=1e-4)

    with torch.no_grad():
        generated = idefics3_reference.generate(**theirs, max_new_tokens=16, do_sample=False)
    hf_tokens = generated[0, theirs["input_ids"].shape[1] :].tolist()
    with LocalEngine(idefics3_backend) as engine:
        out = engine.generate(
            GenerationRequest(
                question,
                images=images,
                history=history,
                options=options,
                sampling=SamplingParams(max_new_tokens=16),
            )
        )
    stops = idefics3_backend.stop_token_ids
    assert out.token_ids == [t for t in hf_tokens if t not in stops][: len(out.token_ids)]
    assert len(out.token_ids) == 16 or hf_tokens[len(out.token_ids)] in stops


def test_four_requests_batched_equal_one_at_a_time(idefics3_backend) -> None:  # type: ignore[no-untyped-def]
    requests = [
        GenerationRequest(
            f"Question {i}: what is written?",
            images=[loaded_image(page(20 + i, size))],
            options={"do_image_splitting": i % 2 == 0},
            sampling=SamplingParams(max_new_tokens=12, ignore_eos=True),
            logprobs=True,
        )
        for i, size in enumerate([(400, 300), (700, 420), (380, 380), (300, 800)])
    ]
    with LocalEngine(idefics3_backend, LocalEngineConfig(max_batch_size=1)) as engine:
        alone = [engine.generate(r) for r in requests]
    with LocalEngine(idefics3_backend, LocalEngineConfig(max_batch_size=4)) as engine:
        handles = [engine.submit(r) for r in requests]
        together = [h.result(120) for h in handles]
        assert engine.metrics.batch_size_counts.get(4, 0) > 0
    for a, b in zip(alone, together, strict=True):
        assert a.token_ids == b.token_ids
        assert a.token_logprobs is not None and b.token_logprobs is not None
        np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=1e-4)
