"""Parity of the native model with the original computation (an independent reference)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.models.h2ovl import processing as P
from mississippi_tools.models.h2ovl.backend import H2OVLBackend
from mississippi_tools.models.h2ovl.vision import pixel_shuffle
from tests.models.h2ovl import reference
from tests.support import loaded_image


def _page(seed: int = 0, size: tuple[int, int] = (900, 700)) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


def test_pixel_shuffle_v2_follows_the_neighbour_rule() -> None:
    x = torch.randn(2, 32, 32, 8)
    out = pixel_shuffle(x, 0.5, "v2")
    assert out.shape == (2, 16, 16, 32)
    for r, c in [(0, 0), (3, 7), (15, 15), (9, 2)]:
        expected = torch.cat(
            [
                x[:, 2 * r, 2 * c],
                x[:, 2 * r, 2 * c + 1],
                x[:, 2 * r + 1, 2 * c],
                x[:, 2 * r + 1, 2 * c + 1],
            ],
            -1,
        )
        assert torch.equal(out[:, r, c], expected)


def test_vision_features_match_the_reference(
    tiny_backend: H2OVLBackend, tiny_checkpoint: Path
) -> None:
    weights = reference.load_original(tiny_checkpoint)
    tiles = P.pixel_values(P.render_tiles(_page(), P.plan_tiles(900, 700, max_tiles=4)))
    (ours,) = tiny_backend.encode_images([tiles])
    theirs = reference.vision_features(
        weights, tiles, heads=tiny_backend.config.vision_config.num_attention_heads
    )
    assert ours.shape == theirs.shape == (tiles.shape[0], 256, tiny_backend.config.llm_hidden_size)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def _reference_inputs(backend: H2OVLBackend, checkpoint: Path, question: str, image: Image.Image):  # type: ignore[no-untyped-def]
    """Prompt ids and embeddings built the original's way (features over IMG_CONTEXT)."""
    weights = reference.load_original(checkpoint)
    prepared = backend.prepare(question, [loaded_image(image)], options={"max_tiles": 6})
    plan = P.plan_tiles(*image.size, max_tiles=6)
    tiles = P.pixel_values(P.render_tiles(image, plan))
    features = reference.vision_features(
        weights, tiles, heads=backend.config.vision_config.num_attention_heads
    )
    ids = torch.tensor([prepared.input_ids])
    embeds = weights["language_model.model.embed_tokens.weight"][ids]
    embeds[ids == 32002] = features.reshape(-1, features.shape[-1])
    return ids, embeds, plan


def test_prompt_ids_hold_256_image_tokens_per_tile(tiny_backend: H2OVLBackend) -> None:
    image = _page(size=(800, 1000))
    prepared = tiny_backend.prepare("Read the text.", [loaded_image(image)])
    assert prepared.num_tiles == 7
    ids = prepared.input_ids
    assert ids.count(32002) == 7 * 256
    start = ids.index(32000)
    assert ids[start + 1 : start + 1 + 1792] == [32002] * 1792
    assert ids[start + 1793] == 32001
    # The slow tokenizer renders kept added tokens space-separated from the text.
    text = tiny_backend.tokenizer.decode(ids, skip_special_tokens=False)
    assert text.startswith("<|prompt|> <img> <IMG_CONTEXT>")
    assert text.endswith("</img> \nRead the text. <|end|> <|answer|>")
    assert prepared.prefix_length == start + 1794


def test_full_logits_match_plain_transformers_llama(
    tiny_backend: H2OVLBackend, tiny_checkpoint: Path
) -> None:
    from transformers import LlamaForCausalLM

    image = _page(1, (1200, 500))
    ids, embeds, _ = _reference_inputs(tiny_backend, tiny_checkpoint, "What is shown?", image)
    plain = LlamaForCausalLM(tiny_backend.model.language_model.config).eval()
    weights = reference.load_original(tiny_checkpoint)
    plain.load_state_dict(
        {
            k.removeprefix("language_model."): v
            for k, v in weights.items()
            if k.startswith("language_model.")
        }
    )
    with torch.no_grad():
        theirs = plain(inputs_embeds=embeds, position_ids=torch.arange(ids.shape[1])[None]).logits
        ours = tiny_backend.model(
            ids,
            P.pixel_values(P.render_tiles(image, P.plan_tiles(1200, 500))),
            image_token_id=32002,
        )
    # The bar: about 1e-3 on logits (two float32 implementations round differently).
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-3)
    assert torch.equal(ours[0, -1].argmax(), theirs[0, -1].argmax())


def test_greedy_tokens_match_hf_generate(
    tiny_backend: H2OVLBackend, tiny_checkpoint: Path, tiny_engine
) -> None:  # type: ignore[no-untyped-def]
    image = _page(2, (640, 480))
    ids, embeds, _ = _reference_inputs(tiny_backend, tiny_checkpoint, "Describe.", image)
    with torch.no_grad():
        hf = tiny_backend.model.language_model.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=32009,
            pad_token_id=0,
        )[0].tolist()
    ours = tiny_engine.generate(
        GenerationRequest(
            "Describe.",
            images=[loaded_image(image)],
            options={"max_tiles": 6},
            sampling=SamplingParams(max_new_tokens=24),
        )
    )
    assert ours.token_ids == [t for t in hf if t != 32009][: len(ours.token_ids)]
    assert len(ours.token_ids) == len([t for t in hf if t != 32009])


def test_history_and_two_images_prompt(tiny_backend: H2OVLBackend, tiny_engine) -> None:  # type: ignore[no-untyped-def]
    images = [loaded_image(_page(3, (500, 500))), loaded_image(_page(4, (1000, 300)))]
    prepared = tiny_backend.prepare("Compare <image> with <image>.", images)
    assert [i.num_tiles for i in prepared.images] == [1, 4]
    assert prepared.input_ids.count(32002) == 5 * 256
    out = tiny_engine.generate(
        GenerationRequest(
            "And now?",
            images=images,
            history=[("Image-1: <image>\nImage-2: <image>\nFirst?", "yes")],
            sampling=SamplingParams(max_new_tokens=5),
        )
    )
    assert out.tiles_per_image == [1, 4]
    assert len(out.token_ids) == 5


def test_eager_and_sdpa_agree(tiny_checkpoint: Path) -> None:
    from mississippi_tools.models.registry import load_backend

    eager = load_backend(tiny_checkpoint, device="cpu", dtype="float32", attention="eager")
    sdpa = load_backend(tiny_checkpoint, device="cpu", dtype="float32", attention="sdpa")
    image = _page(5)
    prepared = eager.prepare("x", [loaded_image(image)])
    tiles = prepared.images[0].render()
    ids = torch.tensor([prepared.input_ids])
    with torch.no_grad():
        torch.testing.assert_close(
            eager.model(ids, tiles, image_token_id=32002),
            sdpa.model(ids, tiles, image_token_id=32002),
            rtol=1e-4,
            atol=1e-3,
        )


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_keeps_rotary_frequencies_in_float32(
    tiny_checkpoint: Path, dtype: str
) -> None:
    from mississippi_tools.models.registry import load_backend

    backend = load_backend(tiny_checkpoint, device="cpu", dtype=dtype)
    rotary = backend.model.language_model.model.rotary_emb
    assert rotary.inv_freq.dtype == torch.float32
    assert backend.dtype == getattr(torch, dtype)
    (out,) = backend.encode_images([P.pixel_values([_page(6, (448, 448))])])
    assert out.dtype == getattr(torch, dtype)
    assert torch.isfinite(out.float()).all()
