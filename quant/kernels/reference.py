"""The reference kernels: pure torch, always available, the oracle for every fast kernel.

W is dequantized tile by tile (at most TILE_BYTES of float32 at a time, through the block
formats of quant.formats, bit-exact with gguf-py) and each tile meets x in one torch matmul
writing straight into its output columns. On many x rows this is also the fast prefill path
whenever no native dequantizer exists: the dequantization is paid once per call, not per row.

F32 weights are not copied at all: the raw bytes are viewed as floats.

Legend: M = x rows, K = row length, N = W rows, n = rows of one tile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType as T

from ..formats import SUPPORTED_TYPES
from ..qtensor import QTensor
from .registry import register, register_backend

TILE_BYTES = 8 << 20   # float32 bytes of dequantized W per tile

register_backend("reference", priority=0, available=lambda: True, cpu_only=False)

# Gated activations of an FFN (SwiGLU, GeGLU); ggml_gelu is the tanh approximation.
ACTIVATIONS = {"silu": F.silu, "gelu": lambda g: F.gelu(g, approximate="tanh")}


def gated_reference(gate: torch.Tensor, up: torch.Tensor, act: str) -> torch.Tensor:
    """act(gate) * up, act one of ACTIVATIONS (the oracle of the fused native gated kernel), or
    "swiglu_oai" (gpt-oss, llama.cpp's SWIGLU_OAI: g = min(gate, 7), u = clamp(up, -7, 7),
    g * sigmoid(1.702 g) * (u + 1))."""
    if act == "swiglu_oai":
        g, u = gate.clamp(max=SWIGLU_OAI_LIMIT), up.clamp(-SWIGLU_OAI_LIMIT, SWIGLU_OAI_LIMIT)
        return g * torch.sigmoid(g * SWIGLU_OAI_ALPHA) * (u + 1)
    return ACTIVATIONS[act](gate) * up


SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT = 1.702, 7.0
GATED_ACTIVATIONS = (*ACTIVATIONS, "swiglu_oai")


def q8k_round(x: torch.Tensor) -> torch.Tensor:
    """x (..., K), K % 256 == 0, rounded through Q8_K and back: the x that the "q8k" integer
    decode kernels (csrc/q8k_avx2.h) effectively multiply, as llama.cpp's quantize_row_q8_K_ref.

    Q8_K block (x only, 292 B): d: f32 | qs: 256 x int8 | bsums: 16 x int16 (sums of 16 qs).
    Per 256 values: max = the value of largest |x| (the first such), iscale = -127 / max (f32),
    qs = min(127, round_half_even(iscale * x)), d = 1 / iscale; an all-zero block stays 0.
    Returns float32 d * qs in x's shape.
    """
    blocks = x.to(torch.float32).reshape(-1, 256)                       # (B, 256)
    top = blocks.gather(1, blocks.abs().argmax(dim=1, keepdim=True))    # (B, 1) signed max
    # true float32 divisions (a Python scalar / tensor is reciprocal-then-multiply in torch)
    iscale = torch.where(top == 0, 0.0, torch.full_like(top, -127.0).div(top))
    qs = torch.round(iscale * blocks).clamp(max=127)
    d = torch.where(top == 0, 0.0, torch.ones_like(top).div(iscale))
    return (d * qs).reshape(x.shape)


def q8_0_round(x: torch.Tensor) -> torch.Tensor:
    """x (..., K), K % 32 == 0, rounded through Q8_0 and back: the x that the "q8k" integer rows
    of the 32-weight formats (csrc/q80_avx2.h) multiply, as llama.cpp's AVX2 quantize_row_q8_0.

    Per 32 values: amax = max |x|, d = f16(amax / 127), id = 127 / amax (0 for an all-zero
    block), qs = round_half_even(x * id); returns float32 d * qs in x's shape.
    """
    blocks = x.to(torch.float32).reshape(-1, 32)                        # (B, 32)
    amax = blocks.abs().amax(dim=1, keepdim=True)                       # (B, 1)
    inv = torch.where(amax == 0, 0.0, torch.full_like(amax, 127.0).div(amax))
    d = amax.div(torch.full_like(amax, 127.0)).half().float()
    return (d * torch.round(blocks * inv)).reshape(x.shape)


def tile_rows(k: int, tile_bytes: int = TILE_BYTES) -> int:
    """W rows per tile so that a (rows, k) float32 tile stays within tile_bytes (at least 1)."""
    return max(1, tile_bytes // (4 * max(1, k)))


@register("reference", [t for t in SUPPORTED_TYPES if t != T.F32])
def matmul_tiles(x: torch.Tensor, w: QTensor, out: torch.Tensor) -> None:
    """out (M, N) = x (M, K) @ W.T, W dequantized by quant.formats one bounded tile at a time."""
    n, k = w.shape
    step = tile_rows(k)
    for start in range(0, n, step):
        stop = min(n, start + step)
        tile = w.dequantize_rows(start, stop)                      # (n, K)
        torch.mm(x, tile.T, out=out[:, start:stop])


@register("reference", [T.F32])
def matmul_f32(x: torch.Tensor, w: QTensor, out: torch.Tensor) -> None:
    """out = x @ W.T on the raw bytes viewed as float32 (no copy); tiles if they are misaligned."""
    if w.data.storage_offset() % 4 or w.data.data_ptr() % 4:
        matmul_tiles(x, w, out)
        return
    torch.mm(x, w.data.view(torch.float32).view(w.shape).T, out=out)
