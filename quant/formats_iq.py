"""The codebook ("i-quant") formats IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S.

Each group of 8 (IQ1/IQ2) or 4 (IQ3) weights is one index into a grid of fixed value vectors
(E8-lattice points), times a scale, with signs from a separate field. The grids and the IQ2
sign table are data, `quant/data/iq_grids.npz`, written by tools/gen_iq_grids.py from
llama.cpp's ggml-common.h (tests/test_formats_iq.py checks them against their checksums and
against gguf-py's copy). Same bit-exactness contract as quant/formats.py: gguf-py's float32
operations in gguf-py's order.

All seven are 256-weight super-blocks. Legend: N = blocks, G = weight groups per block.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType as T

from .formats import QK_K, _block_format, _bits_lsb_first, _f16, _unpack, _view

GRIDS_FILE = Path(__file__).resolve().parent / "data" / "iq_grids.npz"
IQ1_DELTA = 0.125      # IQ1S_DELTA / IQ1M_DELTA of ggml-common.h


@lru_cache(maxsize=None)
def grid_table(name: str) -> torch.Tensor:
    """One table of iq_grids.npz as a tensor: the grids as float32 (entries, 8 or 4) values,
    `ksigns` (128 sign bytes: 7 stored bits + an even-parity 8th) as uint8."""
    with np.load(GRIDS_FILE) as tables:
        values = tables[name]
    return torch.from_numpy(values.astype(np.uint8 if name == "ksigns" else np.float32))


def _grid(name: str, idx: torch.Tensor) -> torch.Tensor:
    """(..., ) grid indices -> (..., values per entry) float32 grid vectors."""
    return grid_table(name).to(idx.device)[idx.long()]


def _signs(sign_bytes: torch.Tensor) -> torch.Tensor:
    """(...,) uint8 sign bytes -> (..., 8) float32 +1 / -1, bit j set = weight j negative."""
    bits = _unpack(sign_bytes.unsqueeze(-1), 1).squeeze(-1)              # (..., 8)
    return 1.0 - 2.0 * bits.float()


def _ksigns(idx7: torch.Tensor) -> torch.Tensor:
    """7-bit indices into ksigns_iq2xs -> (..., 8) float32 signs."""
    return _signs(grid_table("ksigns").to(idx7.device)[idx7.long()])


def _u16(x: torch.Tensor) -> torch.Tensor:
    """(N, 2k) uint8 little-endian -> (N, k) int32 holding the unsigned 16-bit values."""
    return _view(x, torch.int16).to(torch.int32) & 0xFFFF


def _u32_fields(x: torch.Tensor, shift: int, bits: int) -> torch.Tensor:
    """(N, 4k) uint8 little-endian u32s -> (N, k) int32: bits [shift, shift + bits) of each."""
    return (_view(x, torch.int32) >> shift) & ((1 << bits) - 1)


def _nibbles(x: torch.Tensor) -> torch.Tensor:
    """(N, k) uint8 -> (N, 2k): low nibble of byte i at 2i, high at 2i + 1."""
    return _unpack(x.unsqueeze(-1), 4).reshape(x.shape[0], -1)


# IQ2_XXS (66 B): d: f16 | qs: 8 x (u32 grid, u32 meta) per 32 weights
#   grid u32: 4 bytes, each an index into iq2xxs (8 values);
#   meta u32: bits 0-27 four 7-bit ksigns indices, bits 28-31 scale s
#                                            w = (d * (0.5 + s) * 0.25) * grid * sign
@_block_format(T.IQ2_XXS, QK_K, d=2, qs=64)
def _iq2_xxs(d, qs):
    n = qs.shape[0]
    pairs = qs.reshape(n, 8, 2, 4)                                        # (N, 8, grid|meta, 4)
    grid_idx, meta = pairs[:, :, 0], pairs[:, :, 1].reshape(n, 32)
    db = (_f16(d) * (0.5 + _u32_fields(meta, 28, 4).float()) * 0.25).view(n, 8, 1, 1)
    signs = torch.stack([_u32_fields(meta, 7 * j, 7) for j in range(4)], dim=-1)   # (N, 8, 4)
    return (db * _grid("iq2xxs", grid_idx) * _ksigns(signs)).reshape(n, QK_K)


# IQ2_XS (74 B): d: f16 | qs: 32 x u16 (bits 0-8 iq2xs index, bits 9-15 ksigns index)
#              | scales: 8 B (per 16 weights a nibble s, low nibble first)
#                                            w = (d * (0.5 + s) * 0.25) * grid * sign
@_block_format(T.IQ2_XS, QK_K, d=2, qs=64, scales=8)
def _iq2_xs(d, qs, scales):
    n = qs.shape[0]
    q = _u16(qs)                                                          # (N, 32)
    db = (_f16(d) * (0.5 + _nibbles(scales).float()) * 0.25).view(n, 16, 1, 1)
    grid = _grid("iq2xs", q & 511).view(n, 16, 2, 8)
    return (db * grid * _ksigns(q >> 9).view(n, 16, 2, 8)).reshape(n, QK_K)


# IQ2_S (82 B): d: f16 | qs: 32 B (index bits 0-7) | signs: 32 B (one bit per weight)
#             | qh: 8 B (index bits 8-9, 4 crumbs per byte) | scales: 8 B (nibbles per 16)
#                                            w = (d * (0.5 + s) * 0.25) * grid * sign
@_block_format(T.IQ2_S, QK_K, d=2, qs=32, signs=32, qh=8, scales=8)
def _iq2_s(d, qs, signs, qh, scales):
    n = qs.shape[0]
    high = _unpack(qh.unsqueeze(-1), 2).reshape(n, 32)                    # crumb c of byte b: 4b + c
    idx = qs.to(torch.int32) | (high.to(torch.int32) << 8)
    db = (_f16(d) * (0.5 + _nibbles(scales).float()) * 0.25).view(n, 16, 1, 1)
    grid = _grid("iq2s", idx).view(n, 16, 2, 8)
    return (db * grid * _signs(signs).view(n, 16, 2, 8)).reshape(n, QK_K)


# IQ3_XXS (98 B): d: f16 | qs: 64 B (iq3xxs indices, 4 values each)
#               | scales_signs: 8 x u32 (bits 0-27 four 7-bit ksigns indices, 28-31 scale s)
#                                            w = (d * (0.5 + s) * 0.5) * grid * sign
@_block_format(T.IQ3_XXS, QK_K, d=2, qs=64, scales_signs=32)
def _iq3_xxs(d, qs, scales_signs):
    n = qs.shape[0]
    db = (_f16(d) * (0.5 + _u32_fields(scales_signs, 28, 4).float()) * 0.5).view(n, 8, 1, 1)
    signs = torch.stack([_u32_fields(scales_signs, 7 * j, 7) for j in range(4)], dim=-1)
    grid = _grid("iq3xxs", qs).view(n, 8, 4, 8)                           # 8 indices per 32
    return (db * grid * _ksigns(signs)).reshape(n, QK_K)


# IQ3_S (110 B): d: f16 | qs: 64 B (index bits 0-7) | qh: 8 B (index bit 8, LSB first)
#              | signs: 32 B (one bit per weight) | scales: 4 B (nibbles per 32)
#                                            w = (d * (1 + 2s)) * grid * sign
@_block_format(T.IQ3_S, QK_K, d=2, qs=64, qh=8, signs=32, scales=4)
def _iq3_s(d, qs, qh, signs, scales):
    n = qs.shape[0]
    idx = qs.to(torch.int32) | (_bits_lsb_first(qh).to(torch.int32) << 8)
    db = (_f16(d) * (1 + 2 * _nibbles(scales)).float()).view(n, 8, 1, 1)
    grid = _grid("iq3s", idx).view(n, 8, 4, 8)
    return (db * grid * _signs(signs).view(n, 8, 4, 8)).reshape(n, QK_K)


# IQ1_S (50 B): d: f16 | qs: 32 B (index bits 0-7) | qh: 8 x u16 per 32 weights:
#   bits 3j..3j+2 index bits 8-10 of group j, bits 12-14 scale s, bit 15 delta sign
#                                            w = (d * (2s + 1)) * (grid + delta)
@_block_format(T.IQ1_S, QK_K, d=2, qs=32, qh=16)
def _iq1_s(d, qs, qh):
    n = qs.shape[0]
    h = _u16(qh)                                                          # (N, 8)
    dl = (_f16(d) * (2 * ((h >> 12) & 7) + 1).float()).view(n, 8, 1, 1)
    delta = torch.where((h & 0x8000) == 0, IQ1_DELTA, -IQ1_DELTA).view(n, 8, 1, 1)
    high = torch.stack([(h >> (3 * j)) & 7 for j in range(4)], dim=-1).reshape(n, 32)
    grid = _grid("iq1s", qs.to(torch.int32) | (high << 8)).view(n, 8, 4, 8)
    return (dl * (grid + delta)).reshape(n, QK_K)


# IQ1_M (56 B): qs: 32 B (index bits 0-7) | qh: 16 B (per group of 8 a nibble: bits 0-2 index
#   bits 8-10, bit 3 delta sign) | scales: 4 x u16: bits 3j..3j+2 scale s of 16 weights,
#   bits 12-15 of the four u16s the f16 d, low nibble first
#                                            w = (d * (2s + 1)) * (grid + delta)
@_block_format(T.IQ1_M, QK_K, qs=32, qh=16, scales=8)
def _iq1_m(qs, qh, scales):
    n = qs.shape[0]
    sc = _u16(scales)                                                     # (N, 4)
    d_bits = sum(((sc[:, j] >> 12) & 0xF) << (4 * j) for j in range(4))  # (N,)
    d = _f16(d_bits.to(torch.int16).view(torch.uint8).view(n, 2))
    s = torch.stack([(sc >> (3 * j)) & 7 for j in range(4)], dim=-1).reshape(n, 16)
    dl = (d * (2 * s + 1).float()).view(n, 8, 2, 1, 1)
    nib = _nibbles(qh).to(torch.int32)                                    # (N, 32)
    delta = torch.where((nib & 8) == 0, IQ1_DELTA, -IQ1_DELTA).view(n, 8, 2, 2, 1)
    grid = _grid("iq1s", qs.to(torch.int32) | ((nib & 7) << 8)).view(n, 8, 2, 2, 8)
    return (dl * (grid + delta)).reshape(n, QK_K)
