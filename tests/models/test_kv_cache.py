"""The growing, mergeable batch cache against a plain full recomputation."""

from __future__ import annotations

import torch

from mississippi_tools.models.kv_cache import BatchKVCache, GrowingLayer


def test_growing_layer_appends_in_place_and_grows() -> None:
    layer = GrowingLayer()
    chunks = [torch.randn(2, 3, n, 4) for n in (5, 1, 70, 1)]
    for chunk in chunks:
        keys, values = layer.update(chunk, chunk * 2)
    expected = torch.cat(chunks, dim=2)
    assert torch.equal(keys, expected)
    assert torch.equal(values, expected * 2)
    assert layer.get_seq_length() == 77
    assert layer.capacity >= 77


def _fill(cache: BatchKVCache, rows: int, length: int) -> torch.Tensor:
    data = torch.randn(rows, 2, length, 4)
    for layer in cache.growing_layers:
        layer.update(data, -data)
    cache.attention_mask = torch.ones(rows, length, dtype=torch.long)
    return data


def test_merge_left_pads_the_shorter_side_and_keep_rows_trims() -> None:
    a, b = BatchKVCache(2), BatchKVCache(2)
    da, db = _fill(a, 2, 6), _fill(b, 1, 3)
    a.merge(b)
    assert a.batch_size == 3
    assert a.length == 6
    assert a.attention_mask is not None
    assert a.attention_mask.tolist()[2] == [0, 0, 0, 1, 1, 1]
    keys = a.growing_layers[0].keys
    assert keys is not None
    assert torch.equal(keys[:2], da)
    assert torch.equal(keys[2, :, 3:], db[0])
    a.keep_rows([2])
    assert a.batch_size == 1
    assert a.length == 3
    assert torch.equal(a.growing_layers[1].values, -db)  # type: ignore[arg-type]


def test_keep_no_rows_empties_the_cache() -> None:
    cache = BatchKVCache(1)
    _fill(cache, 2, 4)
    cache.keep_rows([])
    assert cache.batch_size == 0
    assert cache.length == 0


def test_a_storage_dtype_holds_through_updates_merges_and_copies() -> None:
    a, b = BatchKVCache(2, dtype=torch.float32), BatchKVCache(2, dtype=torch.float32)
    half = torch.randn(1, 2, 5, 4).to(torch.bfloat16)
    for cache in (a, b):
        for layer in cache.growing_layers:
            keys, _ = layer.update(half, half)
            assert keys.dtype == torch.float32 and torch.equal(keys, half.float())
        cache.attention_mask = torch.ones(1, 5, dtype=torch.long)
    a.merge(b)
    a.keep_rows([1])
    copy = a.copy_rows()
    layer = copy.growing_layers[0]
    keys, _ = layer.update(half[:, :, :1], half[:, :, :1])
    assert keys.dtype == torch.float32 and keys.shape[-2] == 6


def test_batched_decoding_with_merged_rows_matches_single_runs(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    """Logits of rows decoded together equal those of each row decoded alone."""
    from mississippi_tools.engine.cache import TensorCache
    from mississippi_tools.engine.runner import ModelRunner

    prompts = [
        tiny_backend.prepare(q, [])
        for q in ("short", "a much longer question with more tokens in it")
    ]
    together = ModelRunner(tiny_backend, TensorCache(0))
    first = []
    for prompt in prompts:
        logits, cache = together.prefill(prompt, [])
        together.join(cache)
        first.append(int(logits.argmax()))
    batched = together.decode(first, [len(p.input_ids) for p in prompts])
    for row, prompt in enumerate(prompts):
        alone = ModelRunner(tiny_backend, TensorCache(0))
        logits, cache = alone.prefill(prompt, [])
        alone.join(cache)
        single = alone.decode([int(logits.argmax())], [len(prompt.input_ids)])
        torch.testing.assert_close(batched[row], single[0], rtol=1e-4, atol=1e-4)
