"""GGML block formats: one definition per type, each with its byte layout and its dequantizer.

A GGML tensor row is a run of blocks; one block of `type_size` bytes holds `block_size`
weights. Each format below is declared by `_block_format(qtype, block_size, field=bytes, ...)`
over a function that receives the block's fields, in byte order, as named uint8 slices and
returns the block's weights. Adding a type is adding one such definition.

Bit-exactness contract: every dequantizer performs the same float32 operations, in the same
order, as gguf-py's numpy reference (`gguf.quants`), so results are bit-identical, e.g.
Q4_K is `(d*sc)*q - dmin*m`, never `d*(sc*q)` or a fused multiply-add. Integer steps
(nibble unpacking, `q - 8`) are exact in either integers or float32, so they may be done in
whichever is shorter.

Legend: N = blocks in the batch, S = sub-blocks per block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from gguf import GGMLQuantizationType as T

from .errors import QuantError

QK_K = 256  # weights per K-quant / IQ4_XS super-block


@dataclass(frozen=True)
class BlockFormat:
    """One GGML type: `block_size` weights stored in `type_size` bytes laid out as `fields`.

    `fields` is ((name, n_bytes), ...) in byte order; `unpack(*slices)` maps the named
    (N, n_bytes) uint8 slices to the weights.
    """

    qtype: T
    block_size: int
    type_size: int
    fields: tuple[tuple[str, int], ...]
    unpack: Callable[..., torch.Tensor]

    def dequantize_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        """(N, type_size) uint8 -> (N, block_size) float32, a fresh tensor on the same device.

        Raises QuantError when `blocks` is not a 2-D uint8 tensor of `type_size` columns.
        """
        if blocks.dtype != torch.uint8 or blocks.dim() != 2 or blocks.shape[1] != self.type_size:
            raise QuantError(
                f"{self.qtype.name} blocks must be uint8 of shape (N, {self.type_size}), "
                f"got {blocks.dtype} {tuple(blocks.shape)}"
            )
        slices = torch.split(blocks, [size for _, size in self.fields], dim=1)
        return self.unpack(*slices).reshape(blocks.shape[0], self.block_size)


_REGISTRY: dict[T, BlockFormat] = {}


def _block_format(qtype: T, block_size: int, **fields: int):
    """Register the decorated function as `qtype`'s unpacker; `fields` = name=bytes in byte order."""

    def register(unpack: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        _REGISTRY[qtype] = BlockFormat(qtype, block_size, sum(fields.values()), tuple(fields.items()), unpack)
        return unpack

    return register


def get_format(qtype: T | int) -> BlockFormat:
    """The BlockFormat of `qtype` (a GGMLQuantizationType or its integer id).

    Raises QuantError naming the type and listing the supported ones when it has no definition.
    """
    try:
        qtype = T(qtype)
    except ValueError:
        raise QuantError(f"unknown GGML type id {qtype!r}; supported: {_supported_names()}") from None
    if qtype not in _REGISTRY:
        raise QuantError(f"unsupported GGML type {qtype.name} (id {int(qtype)}); supported: {_supported_names()}")
    return _REGISTRY[qtype]


def row_nbytes(qtype: T | int, n_cols: int) -> int:
    """Bytes of one row of `n_cols` weights; QuantError when n_cols is not a whole number of blocks."""
    fmt = get_format(qtype)
    if n_cols < 0 or n_cols % fmt.block_size:
        raise QuantError(f"{fmt.qtype.name} rows need a multiple of {fmt.block_size} weights, got {n_cols}")
    return n_cols // fmt.block_size * fmt.type_size


def _supported_names() -> str:
    return ", ".join(t.name for t in _REGISTRY)


# --- unpacking helpers ----------------------------------------------------------------------

def _view(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Reinterpret (N, k) uint8 as `dtype`: (N, k / itemsize). Copies only if x is strided or misaligned."""
    if not x.is_contiguous() or x.storage_offset() % dtype.itemsize:
        x = x.clone(memory_format=torch.contiguous_format)
    return x.view(dtype)


def _f16(x: torch.Tensor) -> torch.Tensor:
    """A (N, 2) little-endian f16 field -> (N, 1) float32 (exact, like numpy's astype)."""
    return _view(x, torch.float16).float()


def _unpack(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Split every byte of (..., K) uint8 into 8/bits fields, lowest bits first: (..., 8/bits, K)."""
    # A stack of scalar shifts: 3-5x faster on CPU than one broadcast shift by a tensor.
    return torch.stack([(x >> shift) & ((1 << bits) - 1) for shift in range(0, 8, bits)], dim=-2)


def _bits_lsb_first(x: torch.Tensor) -> torch.Tensor:
    """(N, k) uint8 -> (N, 8k): bit i of the little-endian bit string (byte i//8, bit i%8)."""
    return _unpack(x.unsqueeze(-1), 1).reshape(x.shape[0], 8 * x.shape[1])


def _k_scales_mins(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K: 12 bytes -> 8 six-bit scales and 8 six-bit mins, each (N, 8) uint8.

    byte  0-3: EEAAAAAA FFBBBBBB GGCCCCCC HHDDDDDD   scale 0-3 low 6 bits, scale 4-7 high 2 bits
    byte  4-7: eeaaaaaa ffbbbbbb ggcccccc hhdddddd   min   0-3 low 6 bits, min   4-7 high 2 bits
    byte 8-11: eeeeEEEE ffffFFFF ggggGGGG hhhhHHHH   scale 4-7 low 4 bits, min   4-7 low 4 bits
    """
    s = scales.reshape(scales.shape[0], 3, 4)
    d, m, m_d = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], dim=1)
    mn = torch.cat([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], dim=1)
    return sc, mn


def _lookup(table: tuple[int, ...], idx: torch.Tensor) -> torch.Tensor:
    """Map each index of `idx` to float32 `table[idx]`."""
    return torch.tensor(table, dtype=torch.float32, device=idx.device)[idx.long()]


# --- float formats (one weight per "block") -------------------------------------------------

# F32: value: f32   (copied, so the result never aliases the raw bytes)
@_block_format(T.F32, 1, value=4)
def _f32(value):
    return value.clone(memory_format=torch.contiguous_format).view(torch.float32)


# F16: value: f16
@_block_format(T.F16, 1, value=2)
def _f16_values(value):
    return _f16(value)


# BF16: value: bf16 = the high half of an f32
@_block_format(T.BF16, 1, value=2)
def _bf16(value):
    return (_view(value, torch.int16).to(torch.int32) << 16).view(torch.float32)


# --- legacy 32-weight blocks ----------------------------------------------------------------
# qs nibbles: byte j holds weight j (low nibble) and weight j + 16 (high nibble).

# Q4_0 (18 B): d: f16 | qs: 16 B (4-bit)                    w = d * (q - 8)
@_block_format(T.Q4_0, 32, d=2, qs=16)
def _q4_0(d, qs):
    q = _unpack(qs, 4).reshape(qs.shape[0], 32).float() - 8
    return _f16(d) * q


# Q4_1 (20 B): d: f16 | m: f16 | qs: 16 B (4-bit)            w = d * q + m
@_block_format(T.Q4_1, 32, d=2, m=2, qs=16)
def _q4_1(d, m, qs):
    q = _unpack(qs, 4).reshape(qs.shape[0], 32).float()
    return _f16(d) * q + _f16(m)


# Q5_0 (22 B): d: f16 | qh: 4 B (bit i = 5th bit of weight i) | qs: 16 B (low 4 bits)
#                                                             w = d * (q - 16)
@_block_format(T.Q5_0, 32, d=2, qh=4, qs=16)
def _q5_0(d, qh, qs):
    q = _unpack(qs, 4).reshape(qs.shape[0], 32) | (_bits_lsb_first(qh) << 4)
    return _f16(d) * (q.float() - 16)


# Q5_1 (24 B): d: f16 | m: f16 | qh: 4 B (5th bits) | qs: 16 B (low 4 bits)   w = d * q + m
@_block_format(T.Q5_1, 32, d=2, m=2, qh=4, qs=16)
def _q5_1(d, m, qh, qs):
    q = _unpack(qs, 4).reshape(qs.shape[0], 32) | (_bits_lsb_first(qh) << 4)
    return _f16(d) * q.float() + _f16(m)


# Q8_0 (34 B): d: f16 | qs: 32 B (int8)                      w = q * d
@_block_format(T.Q8_0, 32, d=2, qs=32)
def _q8_0(d, qs):
    return _view(qs, torch.int8).float() * _f16(d)


# IQ4_NL (18 B): d: f16 | qs: 16 B (4-bit indices into a non-linear table)   w = d * table[q]
IQ4_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


@_block_format(T.IQ4_NL, 32, d=2, qs=16)
def _iq4_nl(d, qs):
    q = _unpack(qs, 4).reshape(qs.shape[0], 32)
    return _f16(d) * _lookup(IQ4_VALUES, q)


# --- 256-weight super-blocks ----------------------------------------------------------------
# Packed low bits: a 32-byte group holds 8/bits runs of 32 weights, the run in bits [b*r, b*r+b).

# Q2_K (84 B): scales: 16 B (per 16 weights: low nibble scale, high nibble min)
#            | qs: 64 B (2-bit) | d: f16 | dmin: f16      w = (d*sc) * q - (dmin*m)
@_block_format(T.Q2_K, QK_K, scales=16, qs=64, d=2, dmin=2)
def _q2_k(scales, qs, d, dmin):
    n = qs.shape[0]
    dl = (_f16(d) * (scales & 0x0F).float()).view(n, 16, 1)
    ml = (_f16(dmin) * (scales >> 4).float()).view(n, 16, 1)
    q = _unpack(qs.reshape(n, 2, 32), 2).reshape(n, 16, 16).float()
    return dl * q - ml


# Q3_K (110 B): hmask: 32 B (3rd bit, set = no offset) | qs: 64 B (low 2 bits)
#             | scales: 12 B (16 six-bit, see below) | d: f16      w = (d*(sc-32)) * q
@_block_format(T.Q3_K, QK_K, hmask=32, qs=64, scales=12, d=2)
def _q3_k(hmask, qs, scales, d):
    n = qs.shape[0]
    # scales byte b < 8: low 4 bits of scale b (low nibble) and of scale b + 8 (high nibble);
    # bytes 8-11: high 2 bits, crumb c of byte 8 + b belongs to scale 4*c + b.
    low = _unpack(scales[:, :8], 4).reshape(n, 16)
    high = _unpack(scales[:, 8:], 2).reshape(n, 16)
    sc = (low | (high << 4)).float() - 32
    dl = (_f16(d) * sc).view(n, 16, 1)
    ql = _unpack(qs.reshape(n, 2, 32), 2).reshape(n, 16, 16)
    hbit = _unpack(hmask.reshape(n, 1, 32), 1).reshape(n, 16, 16)
    q = ql.float() - ((hbit ^ 1) << 2).float()  # 3-bit signed: clear hmask bit subtracts 4
    return dl * q


# Q4_K (144 B): d: f16 | dmin: f16 | scales: 12 B (8 six-bit scales + 8 mins)
#             | qs: 128 B (4-bit)                        w = (d*sc) * q - (dmin*m)
@_block_format(T.Q4_K, QK_K, d=2, dmin=2, scales=12, qs=128)
def _q4_k(d, dmin, scales, qs):
    n = qs.shape[0]
    sc, mn = _k_scales_mins(scales)
    dl = (_f16(d) * sc.float()).view(n, 8, 1)
    ml = (_f16(dmin) * mn.float()).view(n, 8, 1)
    q = _unpack(qs.reshape(n, 4, 32), 4).reshape(n, 8, 32).float()
    return dl * q - ml


# Q5_K (176 B): d: f16 | dmin: f16 | scales: 12 B (as Q4_K) | qh: 32 B (5th bits)
#             | qs: 128 B (low 4 bits)                   w = (d*sc) * q - (dmin*m)
@_block_format(T.Q5_K, QK_K, d=2, dmin=2, scales=12, qh=32, qs=128)
def _q5_k(d, dmin, scales, qh, qs):
    n = qs.shape[0]
    sc, mn = _k_scales_mins(scales)
    dl = (_f16(d) * sc.float()).view(n, 8, 1)
    ml = (_f16(dmin) * mn.float()).view(n, 8, 1)
    ql = _unpack(qs.reshape(n, 4, 32), 4).reshape(n, 8, 32)
    qh = _unpack(qh.reshape(n, 1, 32), 1).reshape(n, 8, 32)
    return dl * (ql | (qh << 4)).float() - ml


# Q6_K (210 B): ql: 128 B (low 4 bits) | qh: 64 B (high 2 bits) | scales: 16 B (int8)
#             | d: f16                                    w = (d*sc) * (q - 32)
@_block_format(T.Q6_K, QK_K, ql=128, qh=64, scales=16, d=2)
def _q6_k(ql, qh, scales, d):
    n = ql.shape[0]
    dl = (_f16(d) * _view(scales, torch.int8).float()).view(n, 16, 1)
    low = _unpack(ql.reshape(n, 2, 64), 4).reshape(n, 8, 32)
    high = _unpack(qh.reshape(n, 2, 32), 2).reshape(n, 8, 32)
    q = ((low | (high << 4)).float() - 32).view(n, 16, 16)
    return dl * q


# IQ4_XS (136 B): d: f16 | scales_h: 2 B (2-bit high parts, LSB first) | scales_l: 4 B (nibbles)
#               | qs: 128 B (4-bit table indices)         w = (d*(sc-32)) * table[q]
@_block_format(T.IQ4_XS, QK_K, d=2, scales_h=2, scales_l=4, qs=128)
def _iq4_xs(d, scales_h, scales_l, qs):
    n = qs.shape[0]
    low = _unpack(scales_l.reshape(n, 4, 1), 4).reshape(n, 8)
    high = _unpack(scales_h.reshape(n, 2, 1), 2).reshape(n, 8)
    dl = (_f16(d) * ((low | (high << 4)).float() - 32)).view(n, 8, 1)
    q = _unpack(qs.reshape(n, 8, 16), 4).reshape(n, 8, 32)
    return dl * _lookup(IQ4_VALUES, q)


# --- ternary and microscaling formats ------------------------------------------------------

# TQ1_0 (54 B): qs: 48 B | qh: 4 B | d: f16         w = d * (t - 1), t in {0, 1, 2}
#   Each byte holds 5 (qs) or 4 (qh) base-3 digits as a fixed-point fraction: digit k of
#   byte q is ((q * 3^k mod 256) * 3) >> 8. qs[0:32] digit k -> weight 32k + j, qs[32:48]
#   digit k -> 160 + 16k + j, qh digit k -> 240 + 4k + j.
_POW3 = (1, 3, 9, 27, 81)


def _trits(x: torch.Tensor, digits: int) -> torch.Tensor:
    """(N, k) uint8 -> (N, digits * k) int: digit-major base-3 digits as TQ1_0 packs them."""
    q = torch.stack([x * p for p in _POW3[:digits]], dim=1)        # uint8 products wrap, as C
    return ((q.to(torch.int32) * 3) >> 8).reshape(x.shape[0], -1)


@_block_format(T.TQ1_0, QK_K, qs=48, qh=4, d=2)
def _tq1_0(qs, qh, d):
    t = torch.cat([_trits(qs[:, :32], 5), _trits(qs[:, 32:], 5), _trits(qh, 4)], dim=1)
    return _f16(d) * (t - 1).float()


# TQ2_0 (66 B): qs: 64 B (2-bit, runs of 32 as Q2_K) | d: f16      w = d * (q - 1)
@_block_format(T.TQ2_0, QK_K, qs=64, d=2)
def _tq2_0(qs, d):
    q = _unpack(qs.reshape(qs.shape[0], 2, 32), 2).reshape(qs.shape[0], QK_K)
    return _f16(d) * (q.to(torch.int32) - 1).float()


# MXFP4 (17 B, 32 weights): e: u8 (E8M0 shared exponent) | qs: 16 B (4-bit E2M1 codes)
#   w = half(e) * MXFP4_VALUES[q], half(e) = 2^(e - 128) (ggml_e8m0_to_fp32_half)
MXFP4_VALUES = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)     # E2M1 doubled


def e8m0_half(e: torch.Tensor) -> torch.Tensor:
    """(N, 1) uint8 E8M0 exponents -> float32 2^(e - 128); e < 2 gives the subnormals."""
    e = e.to(torch.int32)
    bits = torch.where(e < 2, 0x00200000 << e, (e - 1) << 23)
    return bits.view(torch.float32)


@_block_format(T.MXFP4, 32, e=1, qs=16)
def _mxfp4(e, qs):
    q = _unpack(qs, 4).reshape(qs.shape[0], 32)
    return e8m0_half(e) * _lookup(MXFP4_VALUES, q)


from . import formats_iq  # noqa: E402,F401  (registers the codebook formats IQ1_S ... IQ3_S)

SUPPORTED_TYPES: tuple[T, ...] = tuple(_REGISTRY)
