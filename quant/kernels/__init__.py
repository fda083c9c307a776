"""Dequantize-on-matmul kernels (placeholder: the reference path only, until the fast kernels land)."""

from __future__ import annotations

import torch

from ..qtensor import QTensor

TILE_BYTES = 8 << 20   # float32 bytes of dequantized weight per tile


def qmatmul(x: torch.Tensor, w: QTensor) -> torch.Tensor:
    """x (..., K) float32 @ W.T for W (N, K) as raw blocks -> (..., N); W dequantized tile by tile."""
    n, k = w.shape
    x2 = x.reshape(-1, k)                                   # (M, K)
    out = torch.empty(x2.shape[0], n, dtype=torch.float32)  # (M, N)
    step = max(1, TILE_BYTES // (4 * k))
    for s in range(0, n, step):
        e = min(n, s + step)
        out[:, s:e] = x2 @ w.dequantize_rows(s, e).T
    return out.reshape(*x.shape[:-1], n)


def set_num_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)
