"""The model runners: tensors in, tensors out, for the engine loop.

The engine loop decides *what* runs (:mod:`~mississippi_tools.engine.scheduler`); a runner runs it,
through one interface (:class:`Runner`) for both kinds of backend:

* :class:`ModelRunner`, for :class:`~mississippi_tools.models.base.DecoderBackend`: it owns the
  running batch's key/value cache, the vision-feature cache and the prefix cache;
* :class:`GenerateRunner`, for :class:`~mississippi_tools.models.base.GenerateBackend`: one request
  at a time, whose state the backend keeps.

The decoder runner's steps:

* :meth:`ModelRunner.cached_prefix` — the keys and values of a prompt's image prefix, when an
  earlier request about the same images computed them;
* :meth:`ModelRunner.encode` — vision features for newly admitted requests, all their uncached
  tiles through the encoder together (in chunks of ``max_vision_batch`` tiles);
* :meth:`ModelRunner.prefill` — one request's prompt, image prefix first and the rest after, into
  a fresh cache (the prefix from the prefix cache when it is there); then
  :meth:`ModelRunner.join` adds it to the running batch;
* :meth:`ModelRunner.decode` — one token for every running row;
* :meth:`ModelRunner.keep` — drop finished rows.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from mississippi_tools.engine.cache import TensorCache
from mississippi_tools.models.base import DecoderBackend, GenerateBackend, PreparedPrompt
from mississippi_tools.models.kv_cache import BatchKVCache

__all__ = ["EncodedImages", "GenerateRunner", "ModelRunner", "Runner"]


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


class Runner(Protocol):
    """What the engine loop calls, whatever the backend's kind (single-threaded use)."""

    def cached_prefix(self, prompt: PreparedPrompt) -> Any | None:
        """A reusable computed prefix of ``prompt``, when one is cached."""
        ...

    def encode(self, prompts: Sequence[PreparedPrompt]) -> list[EncodedImages]:
        """Image features for newly admitted prompts (in order)."""
        ...

    def prefill(
        self, prompt: PreparedPrompt, features: Sequence[torch.Tensor], prefix: Any | None = None
    ) -> tuple[torch.Tensor, Any]:
        """Run one prompt; its last position's logits ``[vocab]`` and its state to join."""
        ...

    def join(self, state: Any) -> None:
        """Add a prefilled request to the running batch."""
        ...

    def decode(self, tokens: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
        """One step for every running row; logits ``[rows, vocab]``."""
        ...

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` of the running batch, in that order."""
        ...

    def reset(self) -> None:
        """Drop the running batch (after a failed step)."""
        ...


class ModelRunner:
    """Runs a decoder backend's model for the engine loop (single-threaded use)."""

    def __init__(
        self,
        backend: DecoderBackend,
        feature_cache: TensorCache,
        *,
        prefix_cache: TensorCache | None = None,
        max_vision_batch: int = 8,
    ) -> None:
        self.backend = backend
        self.feature_cache = feature_cache
        self.prefix_cache = prefix_cache or TensorCache(0)
        self.max_vision_batch = max(1, max_vision_batch)
        self.batch = backend.new_cache()

    @staticmethod
    def prefix_key(prompt: PreparedPrompt) -> str | None:
        """Identifies a prompt's image prefix: its images' feature keys and its token ids."""
        if prompt.prefix_length <= 0 or not prompt.images:
            return None
        digest = hashlib.blake2b(digest_size=16)
        for image in prompt.images:
            digest.update(image.cache_key.encode())
            digest.update(b"\0")
        digest.update(array("q", prompt.input_ids[: prompt.prefix_length]).tobytes())
        return digest.hexdigest()

    def cached_prefix(self, prompt: PreparedPrompt) -> tuple[torch.Tensor, ...] | None:
        """The prefix's keys and values (layer by layer), when cached."""
        key = self.prefix_key(prompt)
        if key is None or self.prefix_cache.max_bytes == 0:
            return None
        value = self.prefix_cache.get(key)
        return value if isinstance(value, tuple) else None

    def encode(self, prompts: Sequence[PreparedPrompt]) -> list[EncodedImages]:
        """Features for every image of ``prompts``; uncached images are encoded together."""
        found: dict[str, torch.Tensor] = {}
        pending: dict[str, Any] = {}
        tiles: dict[str, int] = {}
        render_time: dict[str, float] = {}
        for prompt in prompts:
            for image in prompt.images:
                if image.cache_key in found or image.cache_key in pending:
                    continue
                cached = self.feature_cache.get(image.cache_key)
                if isinstance(cached, torch.Tensor):
                    found[image.cache_key] = cached
                    continue
                started = time.perf_counter()
                pending[image.cache_key] = image.render()
                tiles[image.cache_key] = image.num_tiles
                render_time[image.cache_key] = time.perf_counter() - started
        vision_time: dict[str, float] = {}
        if pending:
            keys = list(pending)
            started = time.perf_counter()
            features = self.backend.encode_images(
                [pending[k] for k in keys], max_batch_tiles=self.max_vision_batch
            )
            elapsed = time.perf_counter() - started
            total_tiles = max(1, sum(tiles.values()))
            for key, value in zip(keys, features, strict=True):
                found[key] = value
                self.feature_cache.put(key, value)
                vision_time[key] = elapsed * tiles[key] / total_tiles
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
        self,
        prompt: PreparedPrompt,
        features: Sequence[torch.Tensor],
        prefix: tuple[torch.Tensor, ...] | None = None,
    ) -> tuple[torch.Tensor, BatchKVCache]:
        """Run one prompt into a fresh cache; return its last position's logits ``[vocab]``.

        The image prefix (up to the last ``</img>``) and the rest run as two chunks, always, so
        the computation does not depend on whether the prefix came from the prefix cache: with
        ``prefix`` (from :meth:`cached_prefix`) the first chunk is skipped, and ``features`` may
        be empty.
        """
        backend = self.backend
        ids = torch.tensor([prompt.input_ids], device=backend.device)
        cache = backend.new_cache()
        length = len(prompt.input_ids)
        split = prompt.prefix_length if 0 < prompt.prefix_length < length else 0
        start = 0
        if prefix is not None and split:
            for layer, keys, values in zip(
                cache.growing_layers, prefix[0::2], prefix[1::2], strict=True
            ):
                layer.set_state(keys, values, extra=length - split + 32)
            cache.attention_mask = torch.ones((1, split), dtype=torch.long, device=backend.device)
            start = split
        bounds = [start, *([split] if split > start else []), length]
        logits: torch.Tensor | None = None
        for begin, end in itertools.pairwise(bounds):
            chunk = ids[:, begin:end]
            chunk_features = torch.cat(list(features)) if begin == 0 and features else None
            embeds = backend.embed(chunk, chunk_features)
            mask = torch.ones((1, end), dtype=torch.long, device=backend.device)
            positions = torch.arange(begin, end, device=backend.device).unsqueeze(0)
            logits = backend.forward(embeds, mask, positions, cache, last_only=True)
            cache.attention_mask = mask
            if end == split and begin == 0:
                self._keep_prefix(prompt, cache, split)
        assert logits is not None
        return logits[0], cache

    def _keep_prefix(self, prompt: PreparedPrompt, cache: BatchKVCache, length: int) -> None:
        key = self.prefix_key(prompt)
        if key is None or self.prefix_cache.max_bytes == 0:
            return
        parts: list[torch.Tensor] = []
        for layer in cache.growing_layers:
            assert layer.keys is not None
            assert layer.values is not None
            parts += [layer.keys[:, :, :length].clone(), layer.values[:, :, :length].clone()]
        self.prefix_cache.put(key, tuple(parts))

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


class GenerateRunner:
    """Runs a generate backend for the engine loop: one request at a time, its state held here.

    The engine admits one request only while nothing runs (its batch size is 1 for these
    backends); images are encoded inside :meth:`GenerateBackend.start`, so :meth:`encode` has
    nothing to do and the prefill time includes the vision encoder.
    """

    def __init__(self, backend: GenerateBackend) -> None:
        self.backend = backend
        self._state: Any = None

    def cached_prefix(self, prompt: PreparedPrompt) -> None:
        """Generate backends keep no prefix cache."""
        return None

    def encode(self, prompts: Sequence[PreparedPrompt]) -> list[EncodedImages]:
        """Nothing to do ahead of :meth:`prefill` (see the class docstring)."""
        return [EncodedImages([], False, 0.0, 0.0) for _ in prompts]

    def prefill(
        self, prompt: PreparedPrompt, features: Sequence[torch.Tensor], prefix: Any | None = None
    ) -> tuple[torch.Tensor, Any]:
        """Start the request in the backend."""
        return self.backend.start(prompt)

    def join(self, state: Any) -> None:
        """Hold the running request's state."""
        if self._state is not None:
            raise RuntimeError("a generate backend runs one request at a time")
        self._state = state

    def decode(self, tokens: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
        """The running request's next logits, ``[1, vocab]``."""
        if self._state is None or len(tokens) != 1:
            raise RuntimeError(f"one running request expected, got {len(tokens)}")
        return self.backend.step(self._state, tokens[0]).unsqueeze(0)

    def keep(self, rows: list[int]) -> None:
        """Drop the request's state once it leaves."""
        if not rows:
            self._state = None

    def reset(self) -> None:
        """Forget the running request."""
        self._state = None
