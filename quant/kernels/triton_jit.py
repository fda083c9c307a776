"""The Triton kernels of quant.kernels.triton_kernels (imported on first use: importing triton
costs about 80 MB of memory and 0.2 s, which a CPU run should not pay).

One kernel body serves every format: `_decode` turns a tile of BN rows x one block of raw
GGML bytes into float32 weights, each weight j of the block gathering
its own bytes (quant bits, high bits, sub-block scale), the format a compile-time constant:

    Q4_0  d:f16 | qs[16]                 w_j = d * (nib_j - 8)          nib_j: byte j%16, half j//16
    Q4_1  d:f16 | m:f16 | qs[16]         w_j = d * nib_j + m
    Q5_0  d:f16 | qh:u32 | qs[16]        w_j = d * ((nib_j | bit_j(qh) << 4) - 16)
    Q8_0  d:f16 | qs:i8[32]              w_j = d * qs_j
    Q4_K  d, dmin:f16 | scales[12] | qs[128]           sub-block s = j//32 (6-bit sc_s, m_s):
                                          w_j = d sc_s q_j - dmin m_s, q_j = nibble (j%64)//32 of qs[32 (j//64) + j%32]
    Q5_K  as Q4_K with qh[32] before qs: q_j += 16 * bit s of qh[j%32]
    Q6_K  ql[128] | qh[64] | sc:i8[16] | d:f16         within half n = j//128, quarter u, l = j%32:
                                          q = (nibble u//2 of ql[64n + l + 32 (u%2)]) | (2 bits u of qh[32n + l]) << 4
                                          w_j = d * sc[8n + l//16 + 2u] * (q - 32)
"""

import triton
import triton.language as tl


@triton.jit
def _bytes(base, off):
    """(BN, QK) int32: the byte at offset off[j] of each row's block (base: (BN,) pointers)."""
    return tl.load(base[:, None] + off[None, :]).to(tl.int32)


@triton.jit
def _half(base, off):
    """(BN,) float32: the little-endian IEEE half at byte `off` of each row's block."""
    lo = tl.load(base + off).to(tl.uint16)
    hi = tl.load(base + off + 1).to(tl.uint16)
    return (lo | (hi << 8)).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _k_scales(base, s, SCALES: tl.constexpr):
    """Q4_K / Q5_K 6-bit sub-block scale and min for sub-block s[j] ((BN, QK) int32 each)."""
    low = s < 4
    a = _bytes(base, SCALES + s)                        # scales[s]
    b = _bytes(base, SCALES + s + 4)                    # scales[s + 4]
    c = _bytes(base, SCALES + tl.where(low, s, s - 4))  # scales[s - 4] (s >= 4)
    sc = tl.where(low[None, :], a & 63, (b & 15) | ((c >> 6) << 4))
    m = tl.where(low[None, :], b & 63, (b >> 4) | ((a >> 6) << 4))
    return sc, m


@triton.jit
def _nibbles(base, at, j, HALF: tl.constexpr):
    """Weight j's 4 bits: byte at + (j % HALF) + 32 (j // 64) [K-quants], nibble by position."""
    if HALF == 16:                                      # 32-weight blocks: low half, high half
        return (_bytes(base, at + j % 16) >> (4 * (j // 16))[None, :]) & 15
    return (_bytes(base, at + 32 * (j // 64) + j % 32) >> (4 * ((j // 32) % 2))[None, :]) & 15


@triton.jit
def _signed(b):
    return tl.where(b >= 128, b - 256, b)


@triton.jit
def _decode(base, FMT: tl.constexpr, QK: tl.constexpr):
    """(BN, QK) float32 weights of one block per row (layouts: the module docstring)."""
    j = tl.arange(0, QK)
    if FMT == 2:                                        # Q4_0
        w = _half(base, 0)[:, None] * (_nibbles(base, 2, j, 16) - 8).to(tl.float32)
    elif FMT == 3:                                      # Q4_1
        w = _half(base, 0)[:, None] * _nibbles(base, 4, j, 16).to(tl.float32) + _half(base, 2)[:, None]
    elif FMT == 6:                                      # Q5_0
        high = (_bytes(base, 2 + j // 8) >> (j % 8)[None, :]) & 1
        w = _half(base, 0)[:, None] * ((_nibbles(base, 6, j, 16) | (high << 4)) - 16).to(tl.float32)
    elif FMT == 8:                                      # Q8_0
        w = _half(base, 0)[:, None] * _signed(_bytes(base, 2 + j)).to(tl.float32)
    elif FMT == 12 or FMT == 13:                        # Q4_K, Q5_K
        s = j // 32
        if FMT == 12:
            q = _nibbles(base, 16, j, 32)
        else:
            q = _nibbles(base, 48, j, 32) | (((_bytes(base, 16 + j % 32) >> s[None, :]) & 1) << 4)
        sc, m = _k_scales(base, s, 4)
        w = (_half(base, 0)[:, None] * sc.to(tl.float32)) * q.to(tl.float32) \
            - _half(base, 2)[:, None] * m.to(tl.float32)
    else:                                               # Q6_K
        n, u, l = j // 128, (j % 128) // 32, j % 32
        nib = (_bytes(base, 64 * n + l + 32 * (u % 2)) >> (4 * (u // 2))[None, :]) & 15
        hi = (_bytes(base, 128 + 32 * n + l) >> (2 * u)[None, :]) & 3
        sc = _signed(_bytes(base, 192 + 8 * n + l // 16 + 2 * u))
        w = (_half(base, 208)[:, None] * sc.to(tl.float32)) * ((nib | (hi << 4)) - 32).to(tl.float32)
    return w


@triton.jit
def _gemv_kernel(w_ptr, x_ptr, y_ptr, n_rows, k, row_bytes, ldy,
                 FMT: tl.constexpr, QK: tl.constexpr, TS: tl.constexpr, BN: tl.constexpr):
    """y[m, rows] = W[rows] . x[m] for BN rows and x row m = program_id(1)."""
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    m = tl.program_id(1).to(tl.int64)
    first = w_ptr + tl.minimum(rows, n_rows - 1).to(tl.int64) * row_bytes   # rows past N: reread the last
    acc = tl.zeros((BN,), dtype=tl.float32)
    for b in range(0, k // QK):
        w = _decode(first + b * TS, FMT, QK)
        x = tl.load(x_ptr + m * k + b * QK + tl.arange(0, QK))
        acc += tl.sum(w * x[None, :], axis=1)
    tl.store(y_ptr + m * ldy + rows, acc, mask=rows < n_rows)


@triton.jit
def _dequant_kernel(w_ptr, out_ptr, n_rows, k, row_bytes,
                    FMT: tl.constexpr, QK: tl.constexpr, TS: tl.constexpr, BN: tl.constexpr):
    """out[rows, block b = program_id(1)] = the weights of W's rows, float32 (n_rows, k)."""
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    b = tl.program_id(1)
    safe = tl.minimum(rows, n_rows - 1).to(tl.int64)
    w = _decode(w_ptr + safe * row_bytes + b * TS, FMT, QK)
    cols = b * QK + tl.arange(0, QK)
    tl.store(out_ptr + safe[:, None] * k + cols[None, :], w, mask=(rows < n_rows)[:, None])
