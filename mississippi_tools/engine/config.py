"""Settings of the in-process engine (importable without torch)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LocalEngineConfig"]


@dataclass(frozen=True)
class LocalEngineConfig:
    """Tuning of the in-process engine."""

    max_batch_size: int = 8
    """Requests decoding together."""
    max_queue_size: int = 64
    """Requests waiting beyond the batch before new ones get ``QueueFullError``."""
    max_vision_batch: int = 8
    """Tiles per vision-encoder forward (bounds activation memory)."""
    max_admit_tiles: int = 14
    """Tiles admitted per step (bounds how long running requests wait for newcomers)."""
    feature_cache_mb: float = 512.0
    """Vision-feature cache budget in MiB (0 disables it)."""
    prefix_cache_mb: float = 1024.0
    """Budget in MiB for the decoder keys/values of image prefixes (0 disables it): a later
    question about the same images skips the vision encoder and the image tokens' prefill. A
    6-tile page costs about 180 MB in float32 with the 800M model."""
    default_timeout: float | None = None
    """Seconds before a request without its own timeout fails (None: no deadline)."""
    retry_after: float = 1.0
    """Seconds suggested to callers refused by a full queue."""
