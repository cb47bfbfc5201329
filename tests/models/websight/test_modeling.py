"""Parity of the VMistral backend with an independent re-statement of the original computation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.config import LocalEngineConfig
from mississippi_tools.engine.local import LocalEngine
from mississippi_tools.images import load_image
from mississippi_tools.models.registry import load_backend
from mississippi_tools.models.websight.backend import WebSightBackend
from tests.models.websight import reference

N_LATENTS = 64


def _screenshot(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A page-like picture: a coloured header, blocks and stripes that differ by seed."""
    generator = torch.Generator().manual_seed(seed)
    image = Image.new("RGB", size, (250, 250, 250))
    draw = ImageDraw.Draw(image)
    w, h = size
    colours = torch.randint(0, 256, (6, 3), generator=generator).tolist()
    draw.rectangle((0, 0, w, max(1, h // 8)), fill=tuple(colours[0]))
    for k in range(1, 6):
        x0, y0 = (k * w) // 7, (k * h) // 7
        draw.rectangle((x0, y0, x0 + w // 5, y0 + h // 9), fill=tuple(colours[k]))
    return image


SIZES = [(300, 200), (64, 900), (1000, 1000), (10, 7)]


@pytest.fixture(scope="module")
def published(websight_checkpoint: Path):  # type: ignore[no-untyped-def]
    return reference.load_published(websight_checkpoint)


def test_prompt_ids_are_the_cards_prompt(
    websight_backend: WebSightBackend, websight_checkpoint: Path
) -> None:
    prepared = websight_backend.prepare("", [load_image(_screenshot((300, 200)))])
    assert prepared.input_ids == reference.card_prompt_ids(websight_checkpoint, N_LATENTS)
    assert prepared.input_ids[:2] == [1, 32000]
    assert prepared.input_ids.count(32001) == N_LATENTS
    assert len(prepared.input_ids) == N_LATENTS + 3
    assert prepared.images[0].num_tokens == N_LATENTS


@pytest.mark.parametrize("size", SIZES)
def test_pixels_equal_the_cards_transform_exactly(
    websight_backend: WebSightBackend, size: tuple[int, int]
) -> None:
    image = _screenshot(size, seed=size[0])
    ours = websight_backend.prepare("", [load_image(image)]).images[0].render()
    theirs = reference.card_pixels(image, 56)
    assert ours.dtype == theirs.dtype == torch.float32
    assert ours.shape == theirs.shape == (1, 3, 56, 56)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("size", SIZES)
def test_logits_match_the_reference(
    websight_backend: WebSightBackend,
    published,
    size: tuple[int, int],  # type: ignore[no-untyped-def]
) -> None:
    weights, config = published
    image = _screenshot(size, seed=size[1])
    prepared = websight_backend.prepare("", [load_image(image)])
    pixels = prepared.images[0].render()
    ours = websight_backend.model(torch.tensor([prepared.input_ids]), pixels)[0]
    theirs = reference.logits(weights, config, prepared.input_ids, reference.card_pixels(image, 56))
    assert ours.shape == theirs.shape == (len(prepared.input_ids), 32002)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def _engine_tokens(
    backend: WebSightBackend, prompt: str, images: list, steps: int = 16
) -> list[int]:  # type: ignore[type-arg]
    with LocalEngine(backend, LocalEngineConfig(feature_cache_mb=0, prefix_cache_mb=0)) as engine:
        output = engine.generate(
            GenerationRequest(prompt, images=images, sampling=SamplingParams(max_new_tokens=steps))
        )
    return output.token_ids


@pytest.mark.parametrize("size", SIZES[:3])
def test_greedy_continuations_match_the_reference(
    websight_backend: WebSightBackend,
    published,
    size: tuple[int, int],  # type: ignore[no-untyped-def]
) -> None:
    weights, config = published
    image = _screenshot(size, seed=7)
    ids = websight_backend.prepare("", [load_image(image)]).input_ids
    expected = reference.greedy(weights, config, ids, reference.card_pixels(image, 56), 16)
    assert _engine_tokens(websight_backend, "", [load_image(image)]) == expected
    assert len(expected) == 16  # a random model does not stop at once: 16 real steps compared


def test_text_after_the_image_and_text_only_prompts(
    websight_backend: WebSightBackend,
    websight_checkpoint: Path,
    published,  # type: ignore[no-untyped-def]
) -> None:
    weights, config = published
    image = _screenshot((400, 300), seed=3)
    text = '<div class="container mx-auto">'
    with_image = websight_backend.prepare(text, [load_image(image)]).input_ids
    assert with_image == reference.card_prompt_ids(websight_checkpoint, N_LATENTS, text)
    pixels = reference.card_pixels(image, 56)
    assert _engine_tokens(websight_backend, text, [load_image(image)]) == reference.greedy(
        weights, config, with_image, pixels, 16
    )
    text_only = websight_backend.prepare("<html>\n<body>", []).input_ids
    assert text_only[0] == 1
    assert 32000 not in text_only
    assert _engine_tokens(websight_backend, "<html>\n<body>", []) == reference.greedy(
        weights, config, text_only, None, 16
    )


def test_sliding_window_follows_the_original_mask(windowed_checkpoint: Path) -> None:
    backend = load_backend(windowed_checkpoint, device="cpu", dtype="float32")
    assert isinstance(backend, WebSightBackend)
    weights, config = reference.load_published(windowed_checkpoint)
    image = _screenshot((500, 300), seed=11)
    prepared = backend.prepare("", [load_image(image)])
    pixels = reference.card_pixels(image, 56)
    ours = backend.model(torch.tensor([prepared.input_ids]), prepared.images[0].render())[0]
    torch.testing.assert_close(
        ours, reference.logits(weights, config, prepared.input_ids, pixels), atol=1e-4, rtol=0
    )
    # the window matters: without it the reference computes other logits
    unwindowed = reference.logits(
        weights, {**config, "sliding_window": None}, prepared.input_ids, pixels
    )
    assert (unwindowed[-1] - ours[-1]).abs().max() > 1e-3
    expected = reference.greedy(weights, config, prepared.input_ids, pixels, 16)
    assert _engine_tokens(backend, "", [load_image(image)]) == expected


def test_generation_never_writes_the_image_tokens() -> None:
    scores = torch.zeros(32002)
    scores[32000] = scores[32001] = 10.0
    from mississippi_tools.models.websight.backend import SuppressTokens

    processed = SuppressTokens([32000, 32001])([], scores.clone())
    assert int(processed.argmax()) not in (32000, 32001)
    assert torch.isinf(processed[[32000, 32001]]).all()


def test_batched_equals_one_at_a_time(websight_backend: WebSightBackend) -> None:
    requests = [
        GenerationRequest(
            "" if i % 2 == 0 else "<p>",
            images=[load_image(_screenshot(SIZES[i], seed=20 + i))],
            sampling=SamplingParams(max_new_tokens=8 + i),
        )
        for i in range(4)
    ]
    config = LocalEngineConfig(feature_cache_mb=0, prefix_cache_mb=0)
    with LocalEngine(websight_backend, config) as engine:
        single = [engine.generate(r).token_ids for r in requests]
        handles = [engine.submit(r) for r in requests]
        batched = [h.result(120).token_ids for h in handles]
        assert max(engine.metrics_snapshot().batch_size_counts) > 1
    assert batched == single
    assert [len(t) for t in single] == [8, 9, 10, 11]


def test_feature_and_prefix_caches_give_the_same_tokens(websight_backend: WebSightBackend) -> None:
    image = load_image(_screenshot((320, 240), seed=5))
    with LocalEngine(websight_backend) as engine:
        request = GenerationRequest(
            "<p>", images=[image], sampling=SamplingParams(max_new_tokens=10)
        )
        first = engine.generate(request)
        second = engine.generate(request)
    assert second.cache_hit
    assert first.token_ids == second.token_ids
