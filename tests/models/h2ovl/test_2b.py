"""H2OVL-Mississippi-2B: its published config, MSAC tiling, and parity of the tiny-2B model.

The tiny-2B checkpoint is :data:`TINY_2B_CONFIG` (the 2B's config with only the sizes shrunk:
Mistral decoder, MSAC on). Every expectation comes from the independent re-statement in
``tests/models/h2ovl/reference.py`` (tiles and vision features) and plain transformers
``MistralForCausalLM`` (the decoder), never from the package's own tiling or model code.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine, LocalEngineConfig
from mississippi_tools.models.h2ovl.backend import H2OVLBackend
from mississippi_tools.models.h2ovl.configuration import H2OVLConfig
from mississippi_tools.testing import (
    H2OVL_2B_CONFIG,
    TINY_2B_CONFIG,
    build_tiny_checkpoint,
)
from tests.models.h2ovl import reference
from tests.support import loaded_image

IMG, IMG_END, IMG_CONTEXT, END = 32000, 32001, 32002, 32009

#: Image sizes (width, height) across the aspect ratios MSAC meets: squares, pages in both
#: orientations, banners, slivers, a one-pixel line and sizes on the grid boundaries.
SIZES = [
    (448, 448),
    (100, 100),
    (2000, 2000),
    (800, 1000),
    (1000, 800),
    (1600, 300),
    (300, 1600),
    (6000, 448),
    (448, 6000),
    (896, 448),
    (448, 896),
    (1344, 448),
    (1200, 500),
    (500, 1200),
    (640, 480),
    (1024, 768),
    (1920, 1080),
    (1240, 1754),
    (1754, 1240),
    (3000, 1000),
    (1, 500),
    (37, 29),
]


@pytest.fixture(scope="module")
def checkpoint_2b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-2b") / "ckpt", preset="2b")


@pytest.fixture(scope="module")
def backend_2b(checkpoint_2b: Path) -> H2OVLBackend:
    from mississippi_tools.models.registry import load_backend

    backend = load_backend(checkpoint_2b, device="cpu", dtype="float32")
    assert isinstance(backend, H2OVLBackend)
    return backend


def _marker(width: int, height: int) -> Image.Image:
    """A gradient image: every tile of every grid differs, so a wrong order cannot pass."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, (x * 3 + y) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def _page(seed: int, size: tuple[int, int]) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


def test_the_2b_config_is_danube2_with_msac() -> None:
    config = H2OVLConfig.from_dict(copy.deepcopy(H2OVL_2B_CONFIG))
    llm = config.llm_config
    assert llm["model_type"] == "mistral" and llm["architectures"] == ["MistralForCausalLM"]
    assert (llm["hidden_size"], llm["num_hidden_layers"]) == (2560, 24)
    assert (llm["num_attention_heads"], llm["num_key_value_heads"]) == (32, 8)
    assert (llm["rope_theta"], llm["vocab_size"], llm["sliding_window"]) == (10000, 32010, None)
    assert config.use_msac and config.template == "h2ogpt2"
    assert config.vision_config.hidden_size == 1024
    assert config.vision_config.num_hidden_layers == 24


def test_tiny_2b_shrinks_only_sizes() -> None:
    sizes = {
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
    }
    for part in ("llm_config", "vision_config"):
        full, tiny = H2OVL_2B_CONFIG[part], TINY_2B_CONFIG[part]
        assert full.keys() == tiny.keys()
        assert {k: v for k, v in full.items() if k not in sizes} == {
            k: v for k, v in tiny.items() if k not in sizes
        }
    top = {k: v for k, v in H2OVL_2B_CONFIG.items() if not k.endswith("_config")}
    assert top == {k: v for k, v in TINY_2B_CONFIG.items() if not k.endswith("_config")}


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_msac_tile_order_and_count_match_the_reference(
    backend_2b: H2OVLBackend, size: tuple[int, int]
) -> None:
    image = _marker(*size)
    _, tiles = reference.msac_tiles(image, H2OVL_2B_CONFIG["max_dynamic_patch"])
    prepared = backend_2b.prepare("Read the text.", [loaded_image(image)])
    (ours,) = prepared.images
    assert ours.num_tiles == len(tiles)
    assert prepared.input_ids.count(IMG_CONTEXT) == 256 * len(tiles)
    assert torch.equal(ours.render(), reference.pixel_values(tiles))


def test_msac_examples_from_the_reference_notes() -> None:
    # BEHAVIOUR.md at max_tiles 6: 800x1000 -> 2x3 then 3x2 (13); 1600x300 -> 5x1 then 3x2 (12).
    grids, tiles = reference.msac_tiles(_marker(800, 1000), 6)
    assert (grids, len(tiles)) == ([(3, 2), (2, 3)], 13)
    grids, tiles = reference.msac_tiles(_marker(1600, 300), 6)
    assert (grids, len(tiles)) == ([(3, 2), (5, 1)], 12)


def _original_ids(backend: H2OVLBackend, question: str, tiles: int) -> list[int]:
    """The original's prompt: the h2ogpt2 turn as one string, split at the added tokens."""
    image = "<img>" + "<IMG_CONTEXT>" * (256 * tiles) + "</img>"
    return backend.tokenizer.encode(f"<|prompt|>{image}\n{question}<|end|><|answer|>")


def _reference_inputs(backend: H2OVLBackend, checkpoint: Path, question: str, image: Image.Image):  # type: ignore[no-untyped-def]
    """Prompt ids and input embeddings the original's way (reference MSAC tiles and features)."""
    weights = reference.load_original(checkpoint)
    _, tiles = reference.msac_tiles(image, 6)
    features = reference.vision_features(
        weights,
        reference.pixel_values(tiles),
        heads=TINY_2B_CONFIG["vision_config"]["num_attention_heads"],
    )
    ids = torch.tensor([_original_ids(backend, question, len(tiles))])
    embeds = weights["language_model.model.embed_tokens.weight"][ids]
    embeds[ids == IMG_CONTEXT] = features.reshape(-1, features.shape[-1])
    return ids, embeds, weights


@pytest.mark.parametrize("size", [(800, 1000), (1600, 300), (448, 448)])
def test_prompt_ids_are_the_originals(backend_2b: H2OVLBackend, size: tuple[int, int]) -> None:
    image = _page(0, size)
    _, tiles = reference.msac_tiles(image, 6)
    prepared = backend_2b.prepare("What is the title?", [loaded_image(image)])
    assert prepared.input_ids == _original_ids(backend_2b, "What is the title?", len(tiles))


def _plain_mistral(backend: H2OVLBackend, weights: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    from transformers import MistralForCausalLM

    plain = MistralForCausalLM(backend.model.language_model.config).eval()
    plain.load_state_dict(
        {
            k.removeprefix("language_model."): v
            for k, v in weights.items()
            if k.startswith("language_model.")
        }
    )
    return plain


def test_logits_match_plain_transformers_mistral(
    backend_2b: H2OVLBackend, checkpoint_2b: Path
) -> None:
    image = _page(1, (1200, 500))
    ids, embeds, weights = _reference_inputs(backend_2b, checkpoint_2b, "What is shown?", image)
    prepared = backend_2b.prepare("What is shown?", [loaded_image(image)])
    assert prepared.input_ids == ids[0].tolist()
    assert type(backend_2b.model.language_model).__name__ == "MistralForCausalLM"
    plain = _plain_mistral(backend_2b, weights)
    with torch.no_grad():
        theirs = plain(inputs_embeds=embeds, position_ids=torch.arange(ids.shape[1])[None]).logits
        ours = backend_2b.model(ids, prepared.images[0].render(), image_token_id=IMG_CONTEXT)
    # The 800M parity bar: two float32 implementations round differently, about 1e-3.
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-3)
    assert torch.equal(ours[0, -1].argmax(), theirs[0, -1].argmax())


def test_greedy_continuation_matches_hf_generate(
    backend_2b: H2OVLBackend, checkpoint_2b: Path
) -> None:
    image = _page(2, (800, 1000))
    ids, embeds, weights = _reference_inputs(backend_2b, checkpoint_2b, "Describe.", image)
    plain = _plain_mistral(backend_2b, weights)
    with torch.no_grad():
        hf = plain.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=END,
            pad_token_id=0,
        )[0].tolist()
    expected = [t for t in hf if t != END]
    with LocalEngine(backend_2b) as engine:
        ours = engine.generate(
            GenerationRequest(
                "Describe.",
                images=[loaded_image(image)],
                sampling=SamplingParams(max_new_tokens=24),
            )
        )
    assert ours.tiles_per_image == [13]
    assert ours.token_ids == expected


def test_batched_equals_one_at_a_time(backend_2b: H2OVLBackend) -> None:
    sizes = [(800, 1000), (1600, 300), (448, 448), (1000, 800)]

    def request(i: int) -> GenerationRequest:
        return GenerationRequest(
            f"Question {i}?",
            images=[loaded_image(_page(10 + i, sizes[i]))],
            sampling=SamplingParams(max_new_tokens=6 + i),
        )

    with LocalEngine(backend_2b, LocalEngineConfig(feature_cache_mb=0)) as engine:
        one_at_a_time = [engine.generate(request(i)) for i in range(len(sizes))]
        handles = [engine.submit(request(i)) for i in range(len(sizes))]
        batched = [h.result(120) for h in handles]
        assert max(engine.metrics_snapshot().batch_size_counts) > 1
    assert [o.token_ids for o in batched] == [o.token_ids for o in one_at_a_time]
    assert [o.tiles_per_image for o in batched] == [[13], [12], [5], [13]]
