"""Prefill matmuls in bfloat16 (backend "bf16", opt-in: GGUF_RUNTIME_KERNELS=bf16,q8k,native,block,reference).

    out (M, N) = x (M, K) @ W.T: W dequantized natively to float32 one tile of rows at a time,
    the tile and x rounded to bfloat16, one torch bfloat16 matmul per tile (float32 sums
    inside oneDNN), its bfloat16 result widened into out.

Error per element, u = 2^-8 (bfloat16's unit roundoff; 8 significant bits, about what
llama.cpp's 8-bit activations keep): |out - x @ W.T| <= 2u (|x| @ |W|.T) + u |out|. It rounds
the weights as well as x (llama.cpp rounds x only), and only prompt calls of more than
DECODE_MAX_ROWS rows take it, so with it a prompt's logits depend on its chunking by about that
bound: hence opt-in, never the default. Measured error next to llama.cpp's, and the speed it
buys (1.3-3x prefill on AVX512-BF16), in BENCHMARKS.md section 5. Skipped for an exact QLinear
(the output head: logits of 16 to 32 would round to steps of 1/8).

Available only where the CPU multiplies bfloat16 in hardware (cpu.bf16_native(): AVX512-BF16 or
AMX-BF16); elsewhere torch emulates it and it is slower than float32, so naming it there leaves
prefill in float32. Decided from the CPU's flags, never by timing.
"""

from __future__ import annotations

import torch

from . import cpu, native
from .registry import register, register_backend

BACKEND = "bf16"
ROW_BUCKET = 32    # x rows padded to a multiple: oneDNN builds one primitive per shape


def _available() -> bool:
    return native.load() is not None and cpu.bf16_native()


register_backend(BACKEND, priority=15, available=_available, reduced_precision=True,
                 rounds_activations=True, opt_in=True)


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
