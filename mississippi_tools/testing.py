"""Tiny checkpoints in each model family's published on-disk format, for tests and benchmarks.

Each family's builders live beside its backend (``mississippi_tools.models.<family>.testing``);
this module is the front door: :func:`build_tiny_checkpoint` writes a tiny random checkpoint of
any family, and the H2OVL builders (the default model's) are re-exported under their old names.

Example:
    .. code-block:: python

        from mississippi_tools.testing import build_tiny_checkpoint
        path = build_tiny_checkpoint("/tmp/tiny-h2ovl")
        idefics = build_tiny_checkpoint("/tmp/tiny-idefics2", family="idefics2")
        two_b = build_tiny_checkpoint("/tmp/tiny-h2ovl-2b", family="h2ovl", preset="2b")
        vlm = MississippiVLM.load(path)
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from mississippi_tools.demo_checkpoint import (
    DEMO_ANSWERS,
    DEMO_EXTRACT_SCHEMA,
    DEMO_EXTRACT_TEMPLATE,
    build_demo_checkpoint,
)
from mississippi_tools.models.h2ovl.testing import (
    H2OVL_2B_CONFIG,
    H2OVL_800M_CONFIG,
    TINY_2B_CONFIG,
    TINY_CONFIG,
    build_checkpoint,
    build_scripted_checkpoint,
    build_tokenizer_files,
)

__all__ = [
    "DEMO_ANSWERS",
    "DEMO_EXTRACT_SCHEMA",
    "DEMO_EXTRACT_TEMPLATE",
    "FAMILIES",
    "H2OVL_2B_CONFIG",
    "H2OVL_800M_CONFIG",
    "TINY_2B_CONFIG",
    "TINY_CONFIG",
    "build_checkpoint",
    "build_demo_checkpoint",
    "build_scripted_checkpoint",
    "build_tiny_checkpoint",
    "build_tokenizer_files",
]

#: The families with a tiny-checkpoint builder, each ``mississippi_tools.models.<family>.testing``.
FAMILIES: tuple[str, ...] = ("h2ovl", "idefics1", "idefics2", "idefics3", "websight", "florence2")


def build_tiny_checkpoint(directory: str | Path, *, family: str = "h2ovl", **options: Any) -> Path:
    """A tiny random checkpoint of ``family`` in its published layout, ready to load.

    Args:
        directory: Where to write (created if needed).
        family: One of :data:`FAMILIES`.
        **options: The family builder's own options (``seed``, ``dtype``, ``max_shard_bytes`` ...;
            see ``mississippi_tools.models.<family>.testing.build_tiny_checkpoint``).

    Raises:
        ValueError: ``family`` has no builder.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    builder = importlib.import_module(f"mississippi_tools.models.{family}.testing")
    path: Path = builder.build_tiny_checkpoint(directory, **options)
    return path
