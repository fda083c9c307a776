"""K-quant quantizers (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): llama.cpp's `quantize_row_*_ref`, vectorised.

Each definition follows its C function step for step: a scale search per sub-block
(quantize_search), 4/6/8-bit quantization of the sub-block scales against one f16 super-block
scale, then the final levels recomputed from the *stored* (f16-rounded, quantized) scales.
A sub-block whose stored scale is zero keeps the levels of its search, as in C.
Field layouts are drawn in formats.py next to each dequantizer.

Legend: N = super-blocks of 256 weights, S = sub-blocks per super-block, n = weights per sub-block.
"""

from __future__ import annotations

import torch
from gguf import GGMLQuantizationType as T

from .quantize_core import (Fields, f16_bytes, fp16_round, max_above_zero, nearest_int, pack, quantizer, rdiv,
                            seq_sum, sqrtf, signed_absmax, sub_blocks, wrap_int8)
from .quantize_search import (GROUP_MAX_EPS, Qkx2Search, make_q3_quants_rmse, make_qkx2_quants,
                              make_qx_quants_rmse1)

QK_K = 256


def _final_levels(x: torch.Tensor, L: torch.Tensor, d: torch.Tensor, dm: torch.Tensor | None,
                  lo: int, hi: int) -> torch.Tensor:
    """C's second pass: where d != 0, L = clamp(nearest_int((x + dm) / d), lo, hi) - lo; else keep L.

    x, L: (N, S, n); d, dm: (N, S) stored sub-block scale and min (dm = None: x / d).
    Returns int32 levels in 0..hi-lo.
    """
    d = d.unsqueeze(-1)
    num = x if dm is None else x + dm.unsqueeze(-1)
    fresh = nearest_int(num / d).clamp(lo, hi) - lo
    return torch.where(d != 0, fresh, L.to(torch.int32))


def _affine_search(xs: torch.Tensor, ws: torch.Tensor, n_blocks: int, p: Qkx2Search):
    """make_qkx2_quants on sub-blocks xs, weights ws (n, M): scales, mins (N, S), L (N, S, n)."""
    scales, mins, L = make_qkx2_quants(xs, ws, p)
    return scales.view(n_blocks, -1), mins.view(n_blocks, -1), L.t().reshape(n_blocks, -1, xs.shape[0])


def _scale_bytes(values: torch.Tensor, top: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize non-negative sub-block scales against the super-block's largest, `top`:
    (nearest_int(levels/top * v) as int32 (N, S), the super-block scale top/levels (N,))."""
    inv = torch.where(top > 0, rdiv(levels, top), torch.zeros_like(top))
    return nearest_int(inv.unsqueeze(1) * values), top / levels


# Q2_K (84 B): scales: 16 B, byte j = scale j | min j << 4 (4 bits each) | qs: 64 B | d: f16 | dmin: f16
#   qs byte l of 32-byte group g: L[128g+l] | L[128g+32+l] << 2 | L[128g+64+l] << 4 | L[128g+96+l] << 6
@quantizer(T.Q2_K)
def _q2_k(x: torch.Tensor) -> Fields:
    n = x.shape[0]
    xs = sub_blocks(x, 16)
    scales, mins, L = _affine_search(xs, xs.abs(), n, Qkx2Search(3, -0.5, 0.1, 15, use_mad=True))
    ls, d = _scale_bytes(scales, max_above_zero(scales), 15)
    lm, dmin = _scale_bytes(mins, max_above_zero(mins), 15)
    sc = (ls | (lm << 4)) & 0xFF  # C: scales[j] = l; scales[j] |= l_min << 4 (uint8)
    d, dmin = fp16_round(d), fp16_round(dmin)
    dl, ml = d[:, None] * (sc & 0xF).float(), dmin[:, None] * (sc >> 4).float()
    L = _final_levels(x.view(n, 16, 16), L, dl, ml, 0, 3)
    return {"scales": sc.to(torch.uint8), "qs": pack(L.view(n, 2, 4, 32), 2).view(n, 64),
            "d": f16_bytes(d), "dmin": f16_bytes(dmin)}


def _pack_q3_scales(l: torch.Tensor) -> torch.Tensor:
    """16 six-bit scales (N, 16) -> 12 bytes: bytes 0-7 low nibbles of scales j (low) and j+8
    (high); byte 8+b holds the high 2 bits of scales b, b+4, b+8, b+12 (crumbs 0..3)."""
    n = l.shape[0]
    low = pack((l & 0xF).view(n, 2, 8), 4)
    high = pack((l >> 4).view(n, 4, 4), 2)
    return torch.cat([low, high], dim=1)


# Q3_K (110 B): hmask: 32 B, bit k of byte m = bit 2 of L[32k+m] | qs: 64 B, bits 0-1 of L as Q2_K's
#             | scales: 12 B (16 six-bit, see _pack_q3_scales) | d: f16;   L = level + 4 in 0..7
@quantizer(T.Q3_K)
def _q3_k(x: torch.Tensor) -> Fields:
    n = x.shape[0]
    scales, L = make_q3_quants_rmse(sub_blocks(x, 16), 4)
    scales, L = scales.view(n, 16), L.t().reshape(n, 16, 16)
    max_scale, _ = signed_absmax(scales, 1)
    nonzero = (max_scale != 0).unsqueeze(1)
    iscale = rdiv(-32, max_scale)
    l = wrap_int8(nearest_int(iscale.unsqueeze(1) * scales)).clamp(-32, 31) + 32
    l = torch.where(nonzero, l, torch.zeros_like(l))  # C: scales memset to 0
    d = fp16_round(torch.where(nonzero.squeeze(1), rdiv(1, iscale), torch.zeros_like(iscale)))
    L = _final_levels(x.view(n, 16, 16), L, d[:, None] * (l - 32).float(), None, -4, 3)  # 0..7
    return {"hmask": pack((L >> 2).view(n, 1, 8, 32), 1).view(n, 32),
            "qs": pack((L & 3).view(n, 2, 4, 32), 2).view(n, 64), "scales": _pack_q3_scales(l), "d": f16_bytes(d)}


def _pack_k_scales(ls: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    """Q4_K/Q5_K: 8 six-bit scales and 8 six-bit mins (N, 8) -> the 12 bytes drawn in
    formats._k_scales_mins: bytes 0-3 scale 0-3 | high bits of scale 4-7 in bits 6-7,
    bytes 4-7 min 0-3 | high bits of min 4-7, bytes 8-11 low nibbles of scale 4-7 | min 4-7."""
    s_lo, s_hi, m_lo, m_hi = ls[:, :4], ls[:, 4:], lm[:, :4], lm[:, 4:]
    return torch.cat([s_lo | (s_hi >> 4) << 6, m_lo | (m_hi >> 4) << 6, (s_hi & 0xF) | (m_hi & 0xF) << 4], dim=1)


def _q45_k(x: torch.Tensor, p: Qkx2Search) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Q4_K/Q5_K shared part: 8 sub-blocks of 32 with weights rms + |x|.

    Returns the d, dmin, scales fields and the final levels L (N, 8, 32) in 0..p.nmax.
    """
    n = x.shape[0]
    xs = sub_blocks(x, 32)
    av_x = sqrtf(seq_sum(xs * xs) / 32)  # C: sum_x2 += x*x; sqrtf(sum_x2/32)
    scales, mins, L = _affine_search(xs, av_x + xs.abs(), n, p)
    ls, d = _scale_bytes(scales, max_above_zero(scales), 63)
    lm, dmin = _scale_bytes(mins, max_above_zero(mins), 63)
    ls, lm = (ls & 0xFF).clamp(max=63), (lm & 0xFF).clamp(max=63)  # C: uint8_t, then MIN(63, .)
    d, dmin = fp16_round(d), fp16_round(dmin)
    L = _final_levels(x.view(n, 8, 32), L, d[:, None] * ls.float(), dmin[:, None] * lm.float(), 0, p.nmax)
    fields = {"d": f16_bytes(d), "dmin": f16_bytes(dmin), "scales": _pack_k_scales(ls, lm).to(torch.uint8)}
    return fields, L.to(torch.uint8)


# Q4_K (144 B): d: f16 | dmin: f16 | scales: 12 B (_pack_k_scales) | qs: 128 B,
#   qs byte l of 32-byte group g = L[64g+l] | L[64g+32+l] << 4
@quantizer(T.Q4_K)
def _q4_k(x: torch.Tensor) -> Fields:
    fields, L = _q45_k(x, Qkx2Search(15, -1.0, 0.1, 20, use_mad=False))
    return fields | {"qs": pack(L.view(-1, 4, 2, 32), 4).view(-1, 128)}


# Q5_K (176 B): d: f16 | dmin: f16 | scales: 12 B | qh: 32 B, bit k of byte j = bit 4 of L[32k+j]
#             | qs: 128 B, low 4 bits of L as Q4_K's qs
@quantizer(T.Q5_K)
def _q5_k(x: torch.Tensor) -> Fields:
    fields, L = _q45_k(x, Qkx2Search(31, -0.5, 0.1, 15, use_mad=False))
    n = L.shape[0]
    return fields | {"qh": pack((L >> 4).view(n, 1, 8, 32), 1).view(n, 32),
                     "qs": pack((L & 0xF).view(n, 4, 2, 32), 4).view(n, 128)}


# Q6_K (210 B): ql: 128 B | qh: 64 B | scales: 16 B int8 | d: f16;   L = level + 32 in 0..63
#   ql byte b of 64-byte half h: low nibbles of L[128h+b] | L[128h+64+b] << 4
#   qh byte l of 32-byte half h: bits 4-5 of L[128h+32c+l] in crumb c (bits 2c, 2c+1)
@quantizer(T.Q6_K)
def _q6_k(x: torch.Tensor) -> Fields:
    n = x.shape[0]
    scales, L = make_qx_quants_rmse1(sub_blocks(x, 16), 32)
    scales, L = scales.view(n, 16), L.t().reshape(n, 16, 16)
    max_scale, max_abs = signed_absmax(scales, 1)
    iscale = rdiv(-128, max_scale)
    d = fp16_round(rdiv(1, iscale))
    sc = wrap_int8(nearest_int(iscale.unsqueeze(1) * scales).clamp(max=127))
    L = _final_levels(x.view(n, 16, 16), L, d[:, None] * sc.float(), None, -32, 31).view(n, QK_K)  # 0..63
    zero = (max_abs < GROUP_MAX_EPS).unsqueeze(1)  # C: the whole block memset to 0
    fields = {"ql": pack((L & 0xF).view(n, 2, 2, 64), 4).view(n, 128),
              "qh": pack((L >> 4).view(n, 2, 4, 32), 2).view(n, 64),
              "scales": sc.to(torch.int8).view(torch.uint8), "d": f16_bytes(d)}
    return {k: torch.where(zero, torch.zeros_like(v), v) for k, v in fields.items()}
