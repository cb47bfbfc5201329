"""An independent, naive re-statement of the original computation, written from BEHAVIOUR.md.

It reads the ORIGINAL tensor names straight from the safetensors file and shares no code with
mississippi_tools.models: fused qkv split as (3, heads, head_dim), q scaled by head_dim^-0.5,
pre-norm blocks with layer scale, exact GELU, no final norm, CLS dropped, pixel shuffle v2 by
the explicit neighbour rule, projector LayerNorm(eps 1e-5) -> Linear -> GELU -> Linear.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file


def load_original(directory: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in load_file(str(directory / "model.safetensors")).items()}


def vision_features(
    w: dict[str, torch.Tensor], pixels: torch.Tensor, heads: int, eps: float = 1e-6
) -> torch.Tensor:
    """[tiles, 3, 448, 448] -> projected features [tiles, 256, llm_hidden]."""
    x = F.conv2d(
        pixels,
        w["vision_model.embeddings.patch_embedding.weight"],
        w["vision_model.embeddings.patch_embedding.bias"],
        stride=14,
    )
    n, c, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = w["vision_model.embeddings.class_embedding"].expand(n, 1, c)
    x = torch.cat([cls, x], dim=1) + w["vision_model.embeddings.position_embedding"]
    layer = 0
    while f"vision_model.encoder.layers.{layer}.ls1" in w:
        p = f"vision_model.encoder.layers.{layer}."
        h = F.layer_norm(x, (c,), w[p + "norm1.weight"], w[p + "norm1.bias"], eps)
        qkv = h @ w[p + "attn.qkv.weight"].T + w[p + "attn.qkv.bias"]
        d = c // heads
        qkv = qkv.reshape(n, -1, 3, heads, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * d**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        a = (attn @ v).transpose(1, 2).reshape(n, -1, c)
        a = a @ w[p + "attn.proj.weight"].T + w[p + "attn.proj.bias"]
        x = x + w[p + "ls1"] * a
        h = F.layer_norm(x, (c,), w[p + "norm2.weight"], w[p + "norm2.bias"], eps)
        h = F.gelu(h @ w[p + "mlp.fc1.weight"].T + w[p + "mlp.fc1.bias"])
        h = h @ w[p + "mlp.fc2.weight"].T + w[p + "mlp.fc2.bias"]
        x = x + w[p + "ls2"] * h
        layer += 1
    grid = x[:, 1:].reshape(n, gh, gw, c)
    tokens = []
    for r in range(gh // 2):
        for col in range(gw // 2):
            tokens.append(
                torch.cat(
                    [
                        grid[:, 2 * r, 2 * col],
                        grid[:, 2 * r, 2 * col + 1],
                        grid[:, 2 * r + 1, 2 * col],
                        grid[:, 2 * r + 1, 2 * col + 1],
                    ],
                    dim=-1,
                )
            )
    shuffled = torch.stack(tokens, dim=1)
    h = F.layer_norm(shuffled, (4 * c,), w["mlp1.0.weight"], w["mlp1.0.bias"], 1e-5)
    h = F.gelu(h @ w["mlp1.1.weight"].T + w["mlp1.1.bias"])
    return h @ w["mlp1.3.weight"].T + w["mlp1.3.bias"]


def pixel_values(tiles: list) -> torch.Tensor:  # type: ignore[type-arg]
    """ToTensor + Normalize(ImageNet) written out: (uint8 / 255 - mean) / std in float32."""
    import numpy as np

    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    out = []
    for tile in tiles:
        t = torch.from_numpy(np.array(tile, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
        out.append(t.sub(mean).div(std))
    return torch.stack(out)


def best_grid(width: int, height: int, min_n: int, max_n: int, size: int = 448) -> tuple[int, int]:
    """The tiling rule exactly as BEHAVIOUR.md words it (independent of the package)."""
    return _closest(width, height, _grids(min_n, max_n), size)


def _grids(min_n: int, max_n: int) -> list[tuple[int, int]]:
    """Candidate grids (cols, rows), ascending in tile count, in the set's iteration order."""
    return sorted(
        {
            (i, j)
            for n in range(min_n, max_n + 1)
            for i in range(1, n + 1)
            for j in range(1, n + 1)
            if min_n <= i * j <= max_n
        },
        key=lambda g: g[0] * g[1],
    )


def _closest(width: int, height: int, grids: list[tuple[int, int]], size: int) -> tuple[int, int]:
    best, best_diff = (1, 1), math.inf
    for i, j in grids:
        diff = abs(width / height - i / j)
        if diff < best_diff or (diff == best_diff and width * height > 0.5 * size * size * i * j):
            if diff < best_diff:
                best_diff = diff
            best = (i, j)
    return best


def _one_pass(image: Image.Image, grid: tuple[int, int], size: int) -> list[Image.Image]:
    """One dynamic-preprocess pass: the grid's tiles row-major, then a thumbnail if > 1 tile."""
    cols, rows = grid
    resized = image.resize((size * cols, size * rows), Image.Resampling.BICUBIC)
    tiles = [
        resized.crop(
            ((k % cols) * size, (k // cols) * size, (k % cols + 1) * size, (k // cols + 1) * size)
        )
        for k in range(cols * rows)
    ]
    if len(tiles) != 1:
        tiles.append(image.resize((size, size), Image.Resampling.BICUBIC))
    return tiles


def msac_tiles(
    image: Image.Image, max_n: int, size: int = 448
) -> tuple[list[tuple[int, int]], list[Image.Image]]:
    """MSAC as BEHAVIOUR.md words it: the two passes' grids and the tiles in the model's order.

    Pass 1 over grids of 1..max_n tiles; pass 2 over grids of 3..max_n tiles (i, j) with
    ``cols1 % i != 0 and rows1 % j != 0`` (a 1 x 1 grid when none is left); the tiles are
    pass2[:-1] + pass1[:-1] + pass2[-1:].
    """
    width, height = image.size
    first = _closest(width, height, _grids(1, max_n), size)
    candidates = [(i, j) for i, j in _grids(3, max_n) if first[0] % i != 0 and first[1] % j != 0]
    second = _closest(width, height, candidates, size)
    pass1, pass2 = _one_pass(image, first, size), _one_pass(image, second, size)
    return [second, first], pass2[:-1] + pass1[:-1] + pass2[-1:]
