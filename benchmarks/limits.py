"""The machine's limits: memory read bandwidth and matmul throughput per dtype."""

from __future__ import annotations

import time
from typing import Any

import torch


def _best(fn: Any, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def memory_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Read bandwidth in GB/s: a full pass over a float32 array much larger than the caches."""
    data = torch.ones(int(gib * 2**30 / 4), dtype=torch.float32)
    seconds = _best(lambda: data.sum(), repeats)
    return data.numel() * 4 / seconds / 1e9


def matmul_throughput(
    dtype: torch.dtype, m: int = 1025, k: int = 1024, n: int = 4096, repeats: int = 5
) -> float:
    """GFLOP/s of a linear layer ``[m, k] -> [m, n]`` with bias (the vision MLP's shape).

    ``F.linear`` is what the models run; on some CPUs it takes a faster path than ``a @ b``.
    """
    x = torch.randn(m, k).to(dtype)
    weight = torch.randn(n, k).to(dtype)
    bias = torch.zeros(n).to(dtype)
    seconds = _best(lambda: torch.nn.functional.linear(x, weight, bias), repeats)
    return 2 * m * k * n / seconds / 1e9


def gemv_bandwidth(
    dtype: torch.dtype, rows: int = 8192, cols: int = 8192, repeats: int = 10
) -> float:
    """Effective weight bandwidth (GB/s) of a matrix-vector product: what decoding needs."""
    weight = torch.randn(rows, cols).to(dtype)
    vector = torch.randn(1, cols).to(dtype)
    seconds = _best(lambda: vector @ weight.T, repeats)
    return rows * cols * weight.element_size() / seconds / 1e9


def machine_limits(quick: bool = False) -> dict[str, Any]:
    """Every limit the report compares against."""
    repeats = 2 if quick else 5
    shape = {"m": 128, "k": 512, "n": 512} if quick else {}
    return {
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_read_gbps": memory_bandwidth(0.5 if quick else 1.0, repeats),
        "matmul_gflops": {
            str(dtype).removeprefix("torch."): matmul_throughput(dtype, repeats=repeats, **shape)
            for dtype in (torch.float32, torch.bfloat16)
        },
        "gemv_weight_gbps": {
            str(dtype).removeprefix("torch."): gemv_bandwidth(dtype, repeats=repeats)
            for dtype in (torch.float32, torch.bfloat16)
        },
    }
