"""Quantize float32 tensors into GGML blocks, byte-identical to llama.cpp's reference quantizers.

    blocks = quantize(x, GGMLQuantizationType.Q4_K)    # 1-D uint8: R rows of row_nbytes each
    qt = quantize_tensor(x, "Q4_K")                     # the same bytes as a QTensor of x's shape

One definition per type, registered by type in `quantize_core.QUANTIZERS`: the legacy 32-weight
formats and the float formats below, the K-quants in `quantize_k`. Each performs the float32
operations of llama.cpp's `quantize_row_*_ref` (no importance matrix) in C's order; the legacy
ones are also what gguf-py's `gguf.quants.quantize` computes.

Legend: R = rows (all dims but the last), C = weights per row, N = blocks.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from gguf import GGMLQuantizationType as T

from . import quantize_k, quantize_lowbit  # noqa: F401  (register the K-quants, TQ1_0, TQ2_0, MXFP4)
from .errors import QuantError
from .formats import BlockFormat, get_format
from .qtensor import QTensor
from .quantize_core import (QUANTIZERS, Fields, f16_bytes, pack, pack_bits_lsb_first, quantizer, rdiv,
                            roundf)

# Weights quantized per step: bounds the float temporaries (the K-quant searches hold about
# a dozen chunk-sized tensors) and amortises Python's per-op cost (the searches are ~10^3 ops).
CHUNK_WEIGHTS = 1 << 17

F16_FIELDS = ("d", "dmin", "m")  # the f16 scale fields, by the names formats.py gives them


def quantize(x: torch.Tensor | np.ndarray, qtype: T | int | str) -> torch.Tensor:
    """Quantize `x` (..., C) into GGML blocks of `qtype`, row by row.

    Args:
        x: float32 tensor or array (other real dtypes are converted to float32); its last dim
            C must be a multiple of the type's block size. Computed on x's device.
        qtype: a GGMLQuantizationType, its integer id or its name ("Q4_K").

    Returns a 1-D uint8 tensor of prod(x.shape[:-1]) * row_nbytes(qtype, C) bytes: each row's
    blocks, rows in order (GGUF's layout of a tensor of that shape). Bytes equal llama.cpp's
    `ggml_quantize_chunk` without an importance matrix.

    Raises QuantError for a type without a quantizer, a 0-d input, a row length that is not a
    whole number of blocks, NaN or inf in x, or values whose scale overflows the f16 field.
    """
    fmt = _quantizable_format(qtype)
    rows = _float_rows(x, fmt)
    blocks = rows.reshape(-1, fmt.block_size)  # (N, block_size)
    out = torch.empty((blocks.shape[0], fmt.type_size), dtype=torch.uint8, device=blocks.device)
    step = max(1, CHUNK_WEIGHTS // fmt.block_size)
    with _one_cpu_thread():
        for start in range(0, blocks.shape[0], step):
            out[start:start + step] = _encode(fmt, blocks[start:start + step])
    return out.reshape(-1)


def quantize_tensor(x: torch.Tensor | np.ndarray, qtype: T | int | str) -> QTensor:
    """`quantize(x, qtype)` wrapped as a QTensor of x's shape (1 to 4 dims); same errors."""
    fmt = _quantizable_format(qtype)
    return QTensor(quantize(x, fmt.qtype), fmt.qtype, tuple(x.shape))


@contextmanager
def _one_cpu_thread():
    """torch's intra-op threads set to 1 for the call, then restored. The searches are thousands
    of small ops: an OpenMP hand-off per op costs more than it saves, and on a loaded machine
    (a busy second core) it made quantizing 100x slower."""
    n_threads = torch.get_num_threads()
    if n_threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n_threads)


def _quantizable_format(qtype: T | int | str) -> BlockFormat:
    if isinstance(qtype, str):
        if qtype.upper() not in T.__members__:
            raise QuantError(f"unknown GGML type {qtype!r}; quantizable: {_names()}")
        qtype = T[qtype.upper()]
    fmt = get_format(qtype)
    if fmt.qtype not in QUANTIZERS:
        raise QuantError(f"no quantizer for GGML type {fmt.qtype.name}; quantizable: {_names()}")
    return fmt


def _names() -> str:
    return ", ".join(t.name for t in sorted(QUANTIZERS))


def _float_rows(x: torch.Tensor | np.ndarray, fmt: BlockFormat) -> torch.Tensor:
    """x as a contiguous float32 (R, C) tensor, validated for `fmt`."""
    if not isinstance(x, torch.Tensor):
        with warnings.catch_warnings():  # a read-only array (a memory map) is only read here
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            x = torch.from_numpy(np.ascontiguousarray(x))
    if x.dim() == 0 or x.is_complex() or x.dtype == torch.bool:
        raise QuantError(f"cannot quantize a {x.dtype} tensor of shape {tuple(x.shape)} to {fmt.qtype.name}; "
                         "need real values of shape (..., C)")
    n_cols = x.shape[-1]
    if n_cols % fmt.block_size:
        raise QuantError(f"{fmt.qtype.name} rows need a multiple of {fmt.block_size} weights, "
                         f"got shape {tuple(x.shape)}")
    x = x.to(torch.float32).contiguous()
    if not bool(torch.isfinite(x).all()):
        n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        raise QuantError(f"cannot quantize to {fmt.qtype.name}: input holds {n_nan} NaN and {n_inf} inf values")
    return x.view(math.prod(x.shape[:-1]), n_cols)


def _encode(fmt: BlockFormat, blocks: torch.Tensor) -> torch.Tensor:
    """(N, block_size) f32 -> (N, type_size) uint8: the quantizer's fields in formats.py's order."""
    fields = QUANTIZERS[fmt.qtype](blocks)
    for name in F16_FIELDS:
        if name in fields and bool(((fields[name][:, 1] & 0x7C) == 0x7C).any()):  # f16 exponent all ones
            raise QuantError(f"cannot quantize to {fmt.qtype.name}: |x| up to {float(blocks.abs().max()):.3g} "
                             f"overflows the f16 field '{name}'")
    parts = [fields[name].reshape(blocks.shape[0], size) for name, size in fmt.fields]
    return torch.cat(parts, dim=1)


# --- float formats (one weight per "block") -------------------------------------------------

@quantizer(T.F32)
def _f32(x: torch.Tensor) -> Fields:
    return {"value": x.reshape(-1).view(torch.uint8)}


@quantizer(T.F16)
def _f16(x: torch.Tensor) -> Fields:
    # "value" is not a scale field, so check overflow here: rounding past 65504 gives inf
    if bool((x.abs() >= 65520).any()):
        raise QuantError(f"cannot quantize to F16: |x| up to {float(x.abs().max()):.3g} exceeds the F16 range")
    return {"value": f16_bytes(x)}


@quantizer(T.BF16)
def _bf16(x: torch.Tensor) -> Fields:
    # round to nearest even, as ggml_fp32_to_bf16 for finite values
    return {"value": x.reshape(-1).to(torch.bfloat16).view(torch.uint8)}


# --- legacy 32-weight blocks (layouts drawn in formats.py) ----------------------------------

def _abs_max_signed(x: torch.Tensor) -> torch.Tensor:
    """The first value of largest |x| in each block (C's strict `amax < fabsf(v)` scan), +0.0 if none."""
    idx = x.abs().argmax(1, keepdim=True)
    v = x.gather(1, idx).squeeze(1)
    return torch.where(v != 0, v, torch.zeros_like(v))


def _first_equal(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The first element of each block equal to v: C's running `if (x < min) min = x` keeps the
    first of +0.0 / -0.0, and the sign of a zero d or m is a different f16 byte."""
    return x.gather(1, (x == v.unsqueeze(1)).int().argmax(1, keepdim=True)).squeeze(1)


def _inverse(d: torch.Tensor) -> torch.Tensor:
    """C's `id = d ? 1.0f/d : 0.0f`: (N,) -> (N, 1)."""
    return torch.where(d != 0, rdiv(1, d), torch.zeros_like(d)).unsqueeze(1)


def _nibbles(q: torch.Tensor) -> torch.Tensor:
    """32 levels (N, 32) -> 16 bytes: byte j = q[j] & 0xF | (q[j+16] & 0xF) << 4."""
    return pack((q & 0xF).view(-1, 2, 16), 4)


def _symmetric(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_0/Q5_0: d = max / -levels; q = MIN(2*levels-1, (int)(x*id + levels + 0.5))."""
    d = _abs_max_signed(x) / -levels
    q = (x * _inverse(d) + (levels + 0.5)).trunc().to(torch.int32).clamp(max=2 * levels - 1)
    return d, q


def _affine(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_1/Q5_1: d = (max - min) / levels; q = MIN(levels, (int)((x - min)*id + 0.5)).

    (C's Q5_1 has no MIN; q cannot exceed 31 there anyway, and gguf-py clips too.)
    """
    mn, mx = _first_equal(x, x.amin(1)), _first_equal(x, x.amax(1))
    d = (mx - mn) / levels
    q = ((x - mn.unsqueeze(1)) * _inverse(d) + 0.5).trunc().to(torch.int32).clamp(max=levels)
    return d, mn, q


# Q4_0 (18 B): d: f16 | qs: 16 B, byte j = q[j] | q[j+16] << 4        w = d * (q - 8)
@quantizer(T.Q4_0)
def _q4_0(x: torch.Tensor) -> Fields:
    d, q = _symmetric(x, 8)
    return {"d": f16_bytes(d), "qs": _nibbles(q)}


# Q4_1 (20 B): d: f16 | m: f16 | qs: 16 B as Q4_0                     w = d * q + m
@quantizer(T.Q4_1)
def _q4_1(x: torch.Tensor) -> Fields:
    d, mn, q = _affine(x, 15)
    return {"d": f16_bytes(d), "m": f16_bytes(mn), "qs": _nibbles(q)}


# Q5_0 (22 B): d: f16 | qh: 4 B, bit j = bit 4 of q[j] | qs: 16 B low nibbles as Q4_0
#                                                                     w = d * (q - 16)
@quantizer(T.Q5_0)
def _q5_0(x: torch.Tensor) -> Fields:
    d, q = _symmetric(x, 16)
    return {"d": f16_bytes(d), "qh": pack_bits_lsb_first(q >> 4), "qs": _nibbles(q)}


# Q5_1 (24 B): d: f16 | m: f16 | qh: 4 B | qs: 16 B, as Q5_0         w = d * q + m
@quantizer(T.Q5_1)
def _q5_1(x: torch.Tensor) -> Fields:
    d, mn, q = _affine(x, 31)
    return {"d": f16_bytes(d), "m": f16_bytes(mn), "qh": pack_bits_lsb_first(q >> 4), "qs": _nibbles(q)}


# Q8_0 (34 B): d: f16 | qs: 32 B int8                                 w = d * q
@quantizer(T.Q8_0)
def _q8_0(x: torch.Tensor) -> Fields:
    d = x.abs().amax(1) / 127
    q = roundf(x * _inverse(d)).to(torch.int8)
    return {"d": f16_bytes(d), "qs": q.view(torch.uint8)}


QUANTIZABLE_TYPES: tuple[T, ...] = tuple(sorted(QUANTIZERS))  # every definition is registered by now
