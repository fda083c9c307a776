"""Prefill matmuls in bfloat16 where this CPU multiplies bfloat16 faster (backend "bf16").

    out (M, N) = x (M, K) @ W.T: W dequantized natively to float32 one tile of rows at a time,
    the tile and x rounded to bfloat16, one torch bfloat16 matmul per tile (float32 sums
    inside oneDNN), its bfloat16 result widened into out.

Error per element, u = 2^-8 (bfloat16's unit roundoff; 8 significant bits, about what
llama.cpp's 8-bit activations keep): |out - x @ W.T| <= 2u (|x| @ |W|.T) + u |out|. Measured on
both real models: the mean logit gap to llama.cpp moves from 0.166 to 0.174 (SmolLM2) and from
0.230 to 0.226 (Gemma 3); prefill runs 1.5x faster (BENCHMARKS.md). Skipped for an exact QLinear (the
output head: logits of 16 to 32 would round to steps of 1/8).

Taken only where it is measured faster: `available()` times one 128 x 1024 x 512 product in
both precisions, once, with the thread count of the time, and needs bfloat16 to win by
MIN_SPEEDUP (CPUs with AVX512-BF16 or AMX: about 2.5x on 2 cores; elsewhere torch emulates it
and it loses). GGUF_RUNTIME_KERNELS=native,reference keeps prefill in float32.
"""

from __future__ import annotations

import time

import torch

from . import native
from .registry import register, register_backend

BACKEND = "bf16"
MIN_SPEEDUP = 1.3
ROW_BUCKET = 32    # x rows padded to a multiple: oneDNN builds one primitive per shape
_PROBE = (128, 1024, 512)             # (M, K, N) of the timing product: about 8 ms here


def _seconds(x: torch.Tensor, w: torch.Tensor, reps: int = 3) -> float:
    """Best wall time of x @ w.T over `reps` runs (after one warm-up)."""
    torch.mm(x, w.T)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(x, w.T)
        best = min(best, time.perf_counter() - t0)
    return best


def measured_speedup() -> float:
    """float32 time / bfloat16 time of the probe product on this CPU, now."""
    m, k, n = _PROBE
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen)
    return _seconds(x, w) / _seconds(x.bfloat16(), w.bfloat16())


def _available() -> bool:
    return native.load() is not None and measured_speedup() >= MIN_SPEEDUP


register_backend(BACKEND, priority=15, available=_available, reduced_precision=True)


@register(BACKEND, native.DEQUANT_TYPES, ["prefill"])
def dequant_matmul_bf16(x: torch.Tensor, w, out: torch.Tensor) -> None:
    """out = x @ W.T as native.dequant_matmul, multiplied in bfloat16 (see the module's bound)."""
    m, k = x.shape
    x16 = torch.zeros(-(-m // ROW_BUCKET) * ROW_BUCKET, k, dtype=torch.bfloat16)  # (M', K)
    x16[:m] = x
    tile16 = None
    for start, stop, tile in native.dequantized_tiles(w):                # (rows, K) float32
        if tile16 is None:                                               # the first is the largest
            tile16 = torch.empty(tile.numel(), dtype=torch.bfloat16)
        w16 = tile16[:tile.numel()].view_as(tile).copy_(tile)            # (rows, K) bfloat16
        out[:, start:stop] = torch.mm(x16, w16.T)[:m]
