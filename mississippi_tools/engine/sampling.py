"""Choosing the next token of each row: greedy, or temperature / top-k / top-p sampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mississippi_tools.engine.base import SamplingParams

__all__ = ["apply_repetition_penalty", "sample_token"]


def apply_repetition_penalty(
    logits: torch.Tensor, previous: Sequence[int], penalty: float
) -> torch.Tensor:
    """The CTRL penalty (as transformers applies it) over tokens already generated."""
    if penalty == 1.0 or not previous:
        return logits
    index = torch.tensor(sorted(set(previous)), device=logits.device)
    scores = logits.index_select(0, index)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    logits.index_copy_(0, index, scores)
    return logits


def sample_token(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> int:
    """One token from 1-D ``logits`` according to ``params``."""
    if params.greedy:
        return int(torch.argmax(logits))
    scores = logits / params.temperature
    if params.top_k > 0:
        k = min(params.top_k, scores.shape[-1])
        threshold = torch.topk(scores, k).values[-1]
        scores = scores.masked_fill(scores < threshold, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
        # Drop tokens once the mass before them already reaches top_p (always keep the first).
        drop = cumulative - torch.softmax(sorted_scores, dim=-1) >= params.top_p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(0, order, sorted_scores)
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
