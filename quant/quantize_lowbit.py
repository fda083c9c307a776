"""Quantizers of the ternary formats TQ1_0 / TQ2_0 and of MXFP4 (layouts drawn in formats.py),
the float32 steps of llama.cpp's quantize_row_{tq1_0,tq2_0,mxfp4}_ref in C's order.

Legend: N = blocks.
"""

from __future__ import annotations

import torch
from gguf import GGMLQuantizationType as T

from .formats import MXFP4_VALUES, e8m0_half
from .quantize_core import Fields, f16_bytes, pack, quantizer, rdiv, roundf


def _ternary(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """d = max |x| of the block; t = lroundf(x / d) + 1 in {0, 1, 2} (all 1 for a zero block)."""
    d = x.abs().amax(dim=1, keepdim=True)                                 # (N, 1)
    inv = torch.where(d > 0, rdiv(1.0, d), torch.zeros_like(d))
    return d, (roundf(x * inv) + 1).to(torch.int32)


def _base3_bytes(t: torch.Tensor, digits: int) -> torch.Tensor:
    """(N, digits, k) trits, most significant first -> (N, k) uint8: the trits' base-3 number
    (times 3 for 4 digits, so the first is the top trit) as a fraction of 243, rounded up."""
    q = sum(t[:, i] * 3 ** (4 - i) for i in range(digits))
    return ((q * 256 + 242) // 243).to(torch.uint8)


# TQ1_0: qs[0:32] digit k = weight 32k + j, qs[32:48] digit k = 160 + 16k + j,
#        qh digit k = 240 + 4k + j; w = d * (t - 1)
@quantizer(T.TQ1_0)
def _tq1_0(x: torch.Tensor) -> Fields:
    n = x.shape[0]
    d, t = _ternary(x)
    qs0 = _base3_bytes(t[:, :160].reshape(n, 5, 32), 5)
    qs1 = _base3_bytes(t[:, 160:240].reshape(n, 5, 16), 5)
    qh = _base3_bytes(t[:, 240:].reshape(n, 4, 4), 4)
    return {"qs": torch.cat([qs0, qs1], dim=1), "qh": qh, "d": f16_bytes(d)}


# TQ2_0: 2-bit t in runs of 32 (byte j of a 32-byte group: 4 weights 32r + j, r = 0..3)
@quantizer(T.TQ2_0)
def _tq2_0(x: torch.Tensor) -> Fields:
    n = x.shape[0]
    d, t = _ternary(x)
    return {"qs": pack(t.reshape(n, 2, 4, 32), 2).reshape(n, 64), "d": f16_bytes(d)}


# MXFP4: e = floor(log2 max|x|) - 2 + 127 (0 for a zero block), then per weight the first
# E2M1 code of least |value * half(e) - x|.
@quantizer(T.MXFP4)
def _mxfp4(x: torch.Tensor) -> Fields:
    amax = x.abs().amax(dim=1, keepdim=True)                              # (N, 1)
    # log2f through double, rounded to float (correctly rounded, as glibc's log2f); C's
    # float -> uint8_t conversion of a block below 2^-125 wraps, as on x86.
    log2 = torch.log2(amax.double()).float().floor()
    e = torch.where(amax > 0, (log2.to(torch.int32) - 2 + 127) & 0xFF, 0)
    d = e8m0_half(e.to(torch.uint8))                                      # (N, 1)
    values = torch.tensor(MXFP4_VALUES, dtype=torch.float32, device=x.device)
    err = (values.view(1, 1, 16) * d.unsqueeze(-1) - x.unsqueeze(-1)).abs()   # (N, 32, 16)
    q = err.argmin(dim=-1)                   # torch.argmin: the first minimum, as C's strict <
    return {"e": e.to(torch.uint8), "qs": pack(q.reshape(-1, 2, 16), 4)}
