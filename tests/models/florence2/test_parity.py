"""Parity with transformers' native Florence-2 (model and processor) on the mapped checkpoint.

Identical prompt ids and pixels, logits within 1e-4 (float32) at every answer position, and
identical greedy continuations, for several image sizes and the task tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw

from tests.models.florence2.reference import native_model, native_processor
from tests.support import loaded_image

PROMPTS = ["<DocVQA>What is the total amount due?", "<OCR>", "<OCR_WITH_REGION>", "<CAPTION>"]
SIZES = [(64, 64), (320, 240), (200, 700)]
STEPS = 8


def _page(size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, 4), "Total 42", fill="black")
    draw.rectangle((size[0] // 3, size[1] // 3, size[0] - 2, size[1] - 2), fill=(30, 90, 200))
    return image


@pytest.fixture(scope="module")
def reference(florence2_checkpoint: Path, florence2_backend: Any) -> tuple[Any, Any]:
    processor = native_processor(florence2_checkpoint)
    return processor, native_model(florence2_backend, len(processor.tokenizer))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("prompt", PROMPTS)
def test_ids_pixels_logits_and_greedy_match_native(
    florence2_backend: Any, reference: tuple[Any, Any], prompt: str, size: tuple[int, int]
) -> None:
    processor, model = reference
    image = _page(size)
    expected = processor(text=prompt, images=image, return_tensors="pt")
    prepared = florence2_backend.prepare(prompt, [loaded_image(image)])
    assert prepared.input_ids == expected["input_ids"][0].tolist()
    assert torch.equal(prepared.images[0].render(), expected["pixel_values"])

    logits, state = florence2_backend.start(prepared)
    ours, tokens = [logits], []
    for _ in range(STEPS):
        tokens.append(int(ours[-1].argmax()))
        ours.append(florence2_backend.step(state, tokens[-1]))

    vocab = florence2_backend.vocab_size
    image_id = processor.tokenizer.image_token_id
    with torch.no_grad():
        decoder_ids = torch.tensor([florence2_backend.decoder_prefix + tokens])
        native = model(**expected, decoder_input_ids=decoder_ids).logits[0, 1:, :vocab]
        generated = model.generate(
            **expected,
            do_sample=False,
            num_beams=1,
            max_new_tokens=STEPS + 2,
            forced_bos_token_id=0,
            no_repeat_ngram_size=0,
            bad_words_ids=[[image_id]],
        )[0].tolist()
    assert (torch.stack(ours) - native).abs().max().item() < 1e-4
    assert generated[:2] == florence2_backend.decoder_prefix == [2, 0]
    assert generated[2 : 2 + STEPS] == tokens


def test_images_change_the_answer_logits(florence2_backend: Any) -> None:
    first = florence2_backend.prepare("<OCR>", [loaded_image(_page((64, 64)))])
    second = florence2_backend.prepare("<OCR>", [loaded_image(_page((300, 90)))])
    assert first.input_ids == second.input_ids
    assert not torch.equal(florence2_backend.start(first)[0], florence2_backend.start(second)[0])


def test_task_tokens_expand_as_the_processor_does(florence2_backend: Any) -> None:
    image = [loaded_image(_page((64, 64)))]
    ocr = florence2_backend.prepare("<OCR>", image).input_ids
    text = florence2_backend.tokenizer.decode(ocr[65:], skip_special_tokens=False)
    assert text == "<s>What is the text in the image?</s>"
    docvqa = florence2_backend.prepare("<DocVQA>Total?", image).input_ids
    text = florence2_backend.tokenizer.decode(docvqa[65:], skip_special_tokens=False)
    assert text == "<s><DocVQA>Total?</s>"  # the fine-tune's prefix is text, not a token
    assert ocr[:65] == [florence2_backend.image_token_id] * 65
