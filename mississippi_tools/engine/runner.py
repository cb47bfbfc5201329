"""The model runner: tensors in, tensors out, for the engine loop.

It owns the running batch's key/value cache and the vision-feature cache. The engine loop decides
*what* runs (:mod:`~mississippi_tools.engine.scheduler`); the runner runs it:

* :meth:`ModelRunner.encode` — vision features for newly admitted requests, all their uncached
  tiles through the encoder together (in chunks of ``max_vision_batch`` tiles);
* :meth:`ModelRunner.prefill` — one request's prompt, image prefix first and the rest after, into
  a fresh cache; then :meth:`ModelRunner.join` adds it to the running batch;
* :meth:`ModelRunner.decode` — one token for every running row;
* :meth:`ModelRunner.keep` — drop finished rows.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mississippi_tools.engine.feature_cache import FeatureCache
from mississippi_tools.engine.kv_cache import BatchKVCache
from mississippi_tools.models.base import PreparedPrompt, VLMBackend

__all__ = ["EncodedImages", "ModelRunner"]


@dataclass
class EncodedImages:
    """Features of one request's images, in prompt order, and what it cost.

    Attributes:
        features: ``[tiles, tokens_per_tile, hidden]`` per image.
        cache_hit: Every image came from the feature cache.
        render_seconds: Time spent cutting and normalising tiles.
        vision_seconds: This request's share of the vision encoder's time.
    """

    features: list[torch.Tensor]
    cache_hit: bool
    render_seconds: float
    vision_seconds: float


class ModelRunner:
    """Runs the backend's model for the engine loop (single-threaded use)."""

    def __init__(
        self, backend: VLMBackend, feature_cache: FeatureCache, *, max_vision_batch: int = 8
    ) -> None:
        self.backend = backend
        self.feature_cache = feature_cache
        self.max_vision_batch = max(1, max_vision_batch)
        self.batch = backend.new_cache()

    def encode(self, prompts: Sequence[PreparedPrompt]) -> list[EncodedImages]:
        """Features for every image of ``prompts``; uncached tiles are encoded together."""
        found: dict[str, torch.Tensor] = {}
        pending: dict[str, torch.Tensor] = {}
        render_time: dict[str, float] = {}
        for prompt in prompts:
            for image in prompt.images:
                if image.cache_key in found or image.cache_key in pending:
                    continue
                cached = self.feature_cache.get(image.cache_key)
                if cached is not None:
                    found[image.cache_key] = cached
                    continue
                started = time.perf_counter()
                pending[image.cache_key] = image.render()
                render_time[image.cache_key] = time.perf_counter() - started
        vision_time: dict[str, float] = {}
        if pending:
            keys = list(pending)
            tiles = torch.cat([pending[k] for k in keys])
            started = time.perf_counter()
            chunks = [
                self.backend.encode_images(tiles[i : i + self.max_vision_batch])
                for i in range(0, tiles.shape[0], self.max_vision_batch)
            ]
            features = torch.cat(chunks)
            elapsed = time.perf_counter() - started
            offset = 0
            for key in keys:
                count = pending[key].shape[0]
                found[key] = features[offset : offset + count]
                self.feature_cache.put(key, found[key])
                vision_time[key] = elapsed * count / tiles.shape[0]
                offset += count
        results = []
        for prompt in prompts:
            keys = [image.cache_key for image in prompt.images]
            results.append(
                EncodedImages(
                    features=[found[k] for k in keys],
                    cache_hit=bool(keys) and not any(k in pending for k in keys),
                    render_seconds=sum(render_time.get(k, 0.0) for k in dict.fromkeys(keys)),
                    vision_seconds=sum(vision_time.get(k, 0.0) for k in dict.fromkeys(keys)),
                )
            )
        return results

    def prefill(
        self, prompt: PreparedPrompt, features: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, BatchKVCache]:
        """Run one prompt into a fresh cache; return its last position's logits ``[vocab]``.

        The image prefix (up to the last ``</img>``) and the rest run as two chunks, always, so
        the computation does not depend on whether a prefix could be reused.
        """
        backend = self.backend
        ids = torch.tensor([prompt.input_ids], device=backend.device)
        image_features = torch.cat(list(features)) if features else None
        cache = backend.new_cache()
        cuts = [prompt.prefix_length] if 0 < prompt.prefix_length < len(prompt.input_ids) else []
        bounds = [0, *cuts, len(prompt.input_ids)]
        logits: torch.Tensor | None = None
        for start, end in itertools.pairwise(bounds):
            chunk = ids[:, start:end]
            chunk_features = image_features if start == 0 else None
            embeds = backend.embed(chunk, chunk_features)
            mask = torch.ones((1, end), dtype=torch.long, device=backend.device)
            positions = torch.arange(start, end, device=backend.device).unsqueeze(0)
            logits = backend.forward(embeds, mask, positions, cache, last_only=True)
            cache.attention_mask = mask
        assert logits is not None
        return logits[0], cache

    def join(self, cache: BatchKVCache) -> None:
        """Append a prefilled request's rows to the running batch."""
        self.batch.merge(cache)

    def decode(self, tokens: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
        """One step for every running row; logits ``[rows, vocab]``."""
        backend = self.backend
        assert self.batch.attention_mask is not None
        ids = torch.tensor(tokens, device=backend.device).unsqueeze(1)
        embeds = backend.embed(ids, None)
        mask = torch.cat(
            [self.batch.attention_mask, self.batch.attention_mask.new_ones((len(tokens), 1))],
            dim=1,
        )
        position_ids = torch.tensor(positions, device=backend.device).unsqueeze(1)
        logits = backend.forward(embeds, mask, position_ids, self.batch, last_only=True)
        self.batch.attention_mask = mask
        return logits

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` of the running batch, in that order."""
        self.batch.keep_rows(rows)

    def reset(self) -> None:
        """Drop the running batch (after a failed step)."""
        self.batch = self.backend.new_cache()
