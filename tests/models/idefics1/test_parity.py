"""Parity with transformers' own IDEFICS classes and processor on the same published-format files.

Identical prompt ids, logits within 1e-4 (float32) at the prompt's end and at every generated
step, and identical greedy continuations: for several image sizes and aspect ratios, two images,
images after the question, and a text-only prompt; on the instruct and the pretrained variant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from mississippi_tools.images import load_image
from mississippi_tools.models.idefics1.backend import Idefics1Backend
from tests.models.idefics1 import reference

STEPS = 6


def _image(size: tuple[int, int], seed: int) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


def _run(backend: Idefics1Backend, prompt: Any) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy decoding through the backend's own start/step and its logits processors."""
    logits, state = backend.start(prompt)
    tokens: list[int] = []
    steps: list[torch.Tensor] = []
    for step in range(STEPS):
        steps.append(logits.clone())
        for process in prompt.logits_processors:
            logits = process(tokens, logits)
        tokens.append(int(logits.argmax()))
        if step < STEPS - 1:
            logits = backend.step(state, tokens[-1])
    return tokens, steps


def _compare(
    backend: Idefics1Backend, ref: tuple[Any, Any], prepared: Any, items: list[Any]
) -> None:
    model, processor = ref
    batch = reference.inputs(processor, items)
    assert prepared.input_ids == batch["input_ids"][0].tolist()
    expected_tokens, expected_logits = reference.greedy(model, processor, batch, STEPS)
    tokens, logits = _run(backend, prepared)
    assert tokens == expected_tokens
    rows = backend.vocab_size
    for mine, theirs in zip(logits, expected_logits, strict=True):
        # transformers' bad_words_ids set the image tokens to -inf before reporting; compare the
        # rows both leave as computed.
        finite = torch.isfinite(theirs[:rows])
        assert torch.allclose(mine[finite], theirs[:rows][finite], atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", [(224, 224), (640, 480), (97, 413), (1500, 60)])
def test_one_image_of_several_sizes(idefics1_backend, idefics1_reference, size) -> None:  # type: ignore[no-untyped-def]
    image = _image(size, seed=size[0])
    prepared = idefics1_backend.prepare("What is in this image?", [load_image(image)])
    _compare(
        idefics1_backend,
        idefics1_reference,
        prepared,
        reference.instruct_items("What is in this image?", [image]),
    )


def test_pixels_match_the_image_processor(idefics1_backend, idefics1_reference) -> None:  # type: ignore[no-untyped-def]
    image = _image((333, 211), seed=3)
    prepared = idefics1_backend.prepare("Hi", [load_image(image)])
    mine = prepared.images[0].render()
    theirs = reference.inputs(idefics1_reference[1], ["User:", image, "Hi"])["pixel_values"][0, 0]
    assert mine.shape == (3, 224, 224)
    assert torch.allclose(mine, theirs, atol=1e-5)


def test_two_images(idefics1_backend, idefics1_reference) -> None:  # type: ignore[no-untyped-def]
    first, second = _image((300, 200), seed=1), _image((120, 360), seed=2)
    prepared = idefics1_backend.prepare(
        "Compare <image> with <image> please.", [load_image(first), load_image(second)]
    )
    items = ["User: Compare", first, "with", second, f"please.{reference.EOU}", "\nAssistant:"]
    _compare(idefics1_backend, idefics1_reference, prepared, items)


def test_two_images_in_a_row(idefics1_backend, idefics1_reference) -> None:  # type: ignore[no-untyped-def]
    first, second = _image((64, 64), seed=4), _image((500, 100), seed=5)
    prepared = idefics1_backend.prepare("Which is wider?", [load_image(first), load_image(second)])
    _compare(
        idefics1_backend,
        idefics1_reference,
        prepared,
        reference.instruct_items("Which is wider?", [first, second]),
    )


def test_text_only_prompt(idefics1_backend, idefics1_reference) -> None:  # type: ignore[no-untyped-def]
    prepared = idefics1_backend.prepare("Write a haiku about rivers.", [])
    _compare(
        idefics1_backend,
        idefics1_reference,
        prepared,
        reference.instruct_items("Write a haiku about rivers.", []),
    )


def test_history_turns(idefics1_backend, idefics1_reference) -> None:  # type: ignore[no-untyped-def]
    image = _image((256, 256), seed=6)
    prepared = idefics1_backend.prepare(
        "And the colour?", [load_image(image)], history=[("<image>What is it?", "A square.")]
    )
    items = [
        "User:",
        image,
        f"What is it?{reference.EOU}",
        f"\nAssistant: A square.{reference.EOU}",
        f"\nUser: And the colour?{reference.EOU}",
        "\nAssistant:",
    ]
    _compare(idefics1_backend, idefics1_reference, prepared, items)


def test_pretrained_variant_continues_text(idefics1_base_checkpoint: Path) -> None:
    from mississippi_tools.models.registry import load_backend

    backend = load_backend(idefics1_base_checkpoint, device="cpu", dtype="float32")
    assert isinstance(backend, Idefics1Backend)
    assert not backend.info.instruction_tuned
    ref = reference.model(idefics1_base_checkpoint), reference.processor(idefics1_base_checkpoint)
    image = _image((400, 300), seed=7)
    prepared = backend.prepare("<image>A photo of", [load_image(image)])
    _compare(backend, ref, prepared, [image, "A photo of"])
