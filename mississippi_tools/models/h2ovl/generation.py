"""The original model's OCR mode: no runs of repeated whitespace tokens while decoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mississippi_tools.models.h2ovl.tokenization import H2OVLTokenizer

if TYPE_CHECKING:
    import torch

__all__ = ["OCRWhitespaceProcessor"]


class OCRWhitespaceProcessor:
    """Stop the decoder from repeating a whitespace token, as the original's OCR mode does.

    From the third generated token on: when the previous token decodes to whitespace and the
    current top-1 candidate is that same token, the whitespace tokens among the top
    ``top_k`` candidates are masked in rank order until the first non-whitespace one. The
    answer's runs of spaces are collapsed afterwards by the OCR task.
    """

    def __init__(self, tokenizer: H2OVLTokenizer, *, top_k: int = 30, start: int = 2) -> None:
        self._tokenizer = tokenizer
        self._top_k = top_k
        self._start = start
        self._whitespace: dict[int, bool] = {}

    def _is_whitespace(self, idx: int) -> bool:
        cached = self._whitespace.get(idx)
        if cached is None:
            cached = self._whitespace[idx] = self._tokenizer.is_whitespace_token(idx)
        return cached

    def __call__(self, token_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        """Mask repeated whitespace candidates in place."""
        if len(token_ids) < self._start:
            return logits
        previous = token_ids[-1]
        if not self._is_whitespace(previous):
            return logits
        candidates = logits.topk(min(self._top_k, logits.shape[-1])).indices.tolist()
        if candidates[0] != previous:
            return logits
        for idx in candidates:
            if not self._is_whitespace(idx):
                break
            logits[idx] = float("-inf")
        return logits
