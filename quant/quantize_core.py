"""The quantizer table and the float32 steps that make quantizers bit-exact with llama.cpp's C.

A quantizer maps float32 blocks (N, block_size) to the named fields of its type's layout in
`formats.py`, each an (N, bytes) uint8 tensor; `quantize._encode` lays them out in that order, so
the layout is defined once, next to the dequantizer.

Bit-exactness rules (llama.cpp's `quantize_row_*_ref` is plain C on SSE floats, no FMA):
  * every float op is float32 and done in C's order: `w*x*l` is `(w*x)*l`;
  * a C loop `acc += t[i]` is summed left to right (`seq_sum`): torch.sum reorders and
    torch.cumsum accumulates in double;
  * `a / b` with a Python scalar `a` must be `rdiv(a, b)`: torch's `scalar / tensor` is
    `reciprocal(b) * a`, which is not the correctly rounded quotient;
  * sqrt goes through double (`sqrtf`): torch's float32 sqrt is not correctly rounded;
  * C's `nearest_int` (round half to even through 1.5 * 2**23) and `roundf` (half away from
    zero) are emulated bit for bit, wrap-around of huge values included.

Legend: N = blocks, n = weights per sub-block, M = sub-blocks (all blocks' together).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from gguf import GGMLQuantizationType as T

Fields = dict[str, torch.Tensor]
Quantizer = Callable[[torch.Tensor], Fields]

QUANTIZERS: dict[T, Quantizer] = {}


def quantizer(qtype: T) -> Callable[[Quantizer], Quantizer]:
    """Register the decorated function as `qtype`'s quantizer: (N, block_size) f32 -> Fields."""

    def register(fn: Quantizer) -> Quantizer:
        QUANTIZERS[qtype] = fn
        return fn

    return register


# --- C float semantics ----------------------------------------------------------------------

def f32(v: float) -> np.float32:
    """A C `float` constant or scalar expression result (numpy float32 scalars round like C)."""
    return np.float32(v)


def rdiv(a: float | np.float32, b: torch.Tensor) -> torch.Tensor:
    """C's `a / b` for a scalar a: a correctly rounded float32 division (not reciprocal * a)."""
    return torch.div(torch.tensor(float(f32(a)), dtype=torch.float32, device=b.device), b)


def nearest_int(v: torch.Tensor) -> torch.Tensor:
    """ggml's nearest_int: int32 of (v + 1.5 * 2**23)'s low 23 mantissa bits - 2**22.

    Round half to even for |v| <= 2**22 - 1; beyond that the same wrap-around as the C code.
    """
    return ((v + 12582912.0).view(torch.int32) & 0x7FFFFF) - 0x400000


def roundf(v: torch.Tensor) -> torch.Tensor:
    """C roundf: nearest integer, halves away from zero (exact: a - trunc(a) is exact in f32)."""
    a = v.abs()
    t = a.trunc()
    return (t + (a - t >= 0.5).float()).copysign(v)


def sqrtf(v: torch.Tensor) -> torch.Tensor:
    """C sqrtf, correctly rounded: torch's float32 CPU sqrt is not (off by an ulp in ~15% of
    cases); a double sqrt rounded to float is, as double has more than 2*24+2 bits."""
    return torch.sqrt(v.double()).float()


def fp16_round(v: torch.Tensor) -> torch.Tensor:
    """GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(v)): round to nearest even f16, back to f32."""
    return v.half().float()


def f16_bytes(v: torch.Tensor) -> torch.Tensor:
    """(N,) or (N, 1) float32 -> (N, 2) uint8: the little-endian f16 field."""
    return v.reshape(-1).half().view(torch.uint8).reshape(-1, 2)


def max_above_zero(v: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """C's `m = 0; for (...) if (v > m) m = v;` along `dim` (+0.0 when none is positive)."""
    m = v.amax(dim)
    return torch.where(m > 0, m, torch.zeros_like(m))


def signed_absmax(v: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """C's `amax = 0; if (fabsf(v) > amax) { amax = fabsf(v); max = v; }`: (max, amax) along dim.

    The first element of largest magnitude wins ties, as torch.argmax guarantees; max is +0.0
    when every element is zero.
    """
    av = v.abs()
    idx = av.argmax(dim, keepdim=True)
    amax = av.gather(dim, idx).squeeze(dim)
    mx = v.gather(dim, idx).squeeze(dim)
    return torch.where(amax > 0, mx, torch.zeros_like(mx)), amax


def seq_sum(terms: torch.Tensor, from_zero: bool = True) -> torch.Tensor:
    """C's `acc += terms[i]` over dim 0 in order, in float32: (n, ...) -> (...).

    from_zero: the C accumulator starts at 0 (`0 + t0` turns -0.0 into +0.0); otherwise it
    starts at terms[0] itself.
    """
    acc = terms[0] + 0.0 if from_zero else terms[0].clone()
    for t in terms[1:]:
        acc += t
    return acc


def wrap_int8(v: torch.Tensor) -> torch.Tensor:
    """C's conversion of an int to int8_t (two's complement wrap)."""
    return ((v + 128) & 0xFF) - 128


# --- bit packing: the inverse of formats._unpack ---------------------------------------------

def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """(..., 8/bits, K) small ints -> (..., K) uint8; field r goes to bits [bits*r, bits*r+bits)."""
    q = q.to(torch.uint8)
    out = q[..., 0, :].clone()
    for r in range(1, 8 // bits):
        out |= q[..., r, :] << (bits * r)
    return out


def pack_bits_lsb_first(bits: torch.Tensor) -> torch.Tensor:
    """(N, 8k) of 0/1 -> (N, k) uint8: bit i lands in byte i//8, bit i%8 (a little-endian word)."""
    n, width = bits.shape
    return pack(bits.reshape(n, width // 8, 8).transpose(1, 2), 1)


# --- layout ---------------------------------------------------------------------------------

def sub_blocks(x: torch.Tensor, n: int) -> torch.Tensor:
    """(N, B) blocks -> (n, M = N*B/n) sub-blocks, one per column, so a C loop over a
    sub-block's weights is a loop over contiguous rows."""
    return x.reshape(-1, n).t().contiguous()
