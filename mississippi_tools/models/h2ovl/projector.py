"""The MLP projector (``mlp1``) from pixel-shuffled vision features to the decoder's width."""

from __future__ import annotations

from torch import nn

__all__ = ["H2OVLProjector"]


class H2OVLProjector(nn.Sequential):
    """LayerNorm (eps 1e-5, PyTorch's default), Linear, exact GELU, Linear.

    A ``Sequential`` so that parameter names match the original (``mlp1.0``, ``mlp1.1``,
    ``mlp1.3``).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(
            nn.LayerNorm(in_features),
            nn.Linear(in_features, out_features),
            nn.GELU(),
            nn.Linear(out_features, out_features),
        )
