"""quant block formats against the independent oracle, gguf-py's numpy `gguf.quants.dequantize`.

Equality is bit-for-bit (float32 bit patterns compared as int32, so even -0.0 vs 0.0 counts).
Random blocks are random bytes whose f16/f32 scale fields are overwritten with finite values,
so no NaN can make equal results compare unequal.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T

import quant
from quant import qtensor
from quant.formats import row_nbytes

FLOAT_FIELDS = ("d", "dmin", "m")  # f16 scale fields, by the names the layouts give them


def _finite_f16_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random f16 bit patterns over the whole finite range (subnormals included)."""
    bits = rng.integers(0, 1 << 16, n, dtype=np.uint16)
    inf_or_nan = (bits & 0x7C00) == 0x7C00
    return np.where(inf_or_nan, bits & 0xBFFF, bits).astype(np.uint16)


def _value_bytes(qtype: T, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, type_size) bytes of n finite F32 / F16 / BF16 values."""
    if qtype == T.F32:
        return (rng.standard_normal(n) * 1e3).astype(np.float32).view(np.uint8).reshape(n, 4)
    if qtype == T.BF16:
        f32 = (rng.standard_normal(n) * 1e3).astype(np.float32)
        return (f32.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(n, 2)
    return _finite_f16_bits(rng, n).view(np.uint8).reshape(n, 2)


def random_blocks(qtype: T, n_blocks: int, seed: int = 0) -> np.ndarray:
    """(n_blocks, type_size) uint8: random bytes with finite float fields."""
    fmt = quant.get_format(qtype)
    rng = np.random.default_rng([seed, int(qtype), n_blocks])
    blocks = rng.integers(0, 256, (n_blocks, fmt.type_size), dtype=np.uint8)
    offset = 0
    for name, size in fmt.fields:
        if name == "value":
            blocks[:, offset:offset + size] = _value_bytes(qtype, rng, n_blocks)
        elif name in FLOAT_FIELDS:
            blocks[:, offset:offset + size] = _finite_f16_bits(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
        elif qtype == T.MXFP4 and name == "e":          # 2^-18 .. 2^11: finite products
            blocks[:, offset] = rng.integers(110, 140, n_blocks)
        elif qtype == T.IQ1_M and name == "scales":     # d's f16 nibbles in bits 12-15 of 4 u16
            d = _finite_f16_bits(rng, n_blocks).astype(np.uint16)
            sc = blocks[:, offset:offset + size].copy().view(np.uint16)
            for j in range(4):
                sc[:, j] = (sc[:, j] & 0x0FFF) | (((d >> (4 * j)) & 0xF) << 12)
            blocks[:, offset:offset + size] = sc.view(np.uint8)
        offset += size
    return blocks


def reference(raw: np.ndarray, qtype: T, shape: tuple[int, ...]) -> torch.Tensor:
    """gguf.quants.dequantize of raw bytes for a PyTorch-order `shape`, as a torch tensor."""
    rows = raw.reshape(math.prod(shape[:-1]), row_nbytes(qtype, shape[-1]))
    return torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(rows, qtype))).reshape(shape)


def assert_bit_exact(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.dtype == torch.float32 and ours.shape == ref.shape
    mismatch = ours.view(torch.int32) != ref.view(torch.int32)
    assert not mismatch.any(), f"{int(mismatch.sum())} of {ours.numel()} differ, e.g. {ours[mismatch][:4]} vs {ref[mismatch][:4]}"


def shapes_for(qtype: T) -> list[tuple[int, ...]]:
    b = quant.get_format(qtype).block_size
    return [(b,), (3, 2 * b), (2, 3, b), (64, 4 * b)]


CASES = [(t, s) for t in quant.SUPPORTED_TYPES for s in shapes_for(t)]


@pytest.mark.parametrize("qtype, shape", CASES, ids=[f"{t.name}-{'x'.join(map(str, s))}" for t, s in CASES])
def test_dequantize_matches_gguf_bit_exact(qtype, shape):
    fmt = quant.get_format(qtype)
    raw = random_blocks(qtype, math.prod(shape) // fmt.block_size)
    ours = quant.dequantize(raw.tobytes(), qtype, shape)
    assert_bit_exact(ours, reference(raw, qtype, shape))


@pytest.mark.parametrize("qtype", quant.SUPPORTED_TYPES, ids=lambda t: t.name)
def test_sizes_match_gguf_constants(qtype):
    fmt = quant.get_format(qtype)
    assert (fmt.block_size, fmt.type_size) == gguf.GGML_QUANT_SIZES[qtype]
    assert fmt.type_size == sum(size for _, size in fmt.fields)


@pytest.mark.parametrize("qtype, dtype", [(T.F16, np.float16), (T.BF16, np.uint16)], ids=["F16", "BF16"])
def test_16_bit_floats_exhaustive(qtype, dtype):
    """Every one of the 65536 bit patterns, inf and subnormals included; NaNs must stay NaN."""
    raw = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.uint8)
    ours = quant.dequantize(raw, qtype, (1 << 16,))
    ref = reference(raw, qtype, (1 << 16,))
    nan = torch.isnan(ref)
    assert torch.equal(torch.isnan(ours), nan)
    assert_bit_exact(ours[~nan], ref[~nan])


def test_input_kinds_agree():
    qtype, shape = T.Q4_K, (4, 512)
    raw = random_blocks(qtype, 8)
    expected = quant.dequantize(raw.tobytes(), qtype, shape)
    read_only = raw.reshape(-1).copy()
    read_only.setflags(write=False)
    for data in (raw, read_only, bytearray(raw.tobytes()), memoryview(raw.tobytes()), torch.from_numpy(raw)):
        assert torch.equal(quant.dequantize(data, int(qtype), shape), expected)
    info = SimpleNamespace(data=raw, qtype=int(qtype), shape=shape)
    assert torch.equal(quant.dequantize(info), expected)
    assert torch.equal(quant.dequantize(quant.QTensor(raw, qtype, shape)), expected)


def test_qtensor_is_zero_copy_and_rows_slice():
    qtype, shape = T.Q6_K, (2, 5, 512)
    raw = torch.from_numpy(random_blocks(qtype, 20).reshape(-1))
    qt = quant.QTensor(raw, qtype, shape)
    full = qt.dequantize().reshape(10, 512)
    assert qt.data.data_ptr() == raw.data_ptr() and qt.nbytes == raw.numel()
    assert qt.row_bytes(3, 7).data_ptr() == raw.data_ptr() + 3 * qt.row_nbytes
    for start, stop in [(0, 10), (3, 7), (9, 10), (4, 4)]:
        assert torch.equal(qt.dequantize_rows(start, stop), full[start:stop])
    with pytest.raises(quant.QuantError):
        qt.dequantize_rows(8, 11)
    assert repr(qt) == "QTensor(Q6_K, shape=(2, 5, 512), 4200 B)"


def test_chunked_dequantize_equals_one_shot(monkeypatch):
    qtype, shape = T.Q4_0, (7, 3, 64)
    raw = random_blocks(qtype, 42)
    one_shot = quant.dequantize(raw, qtype, shape)
    monkeypatch.setattr(qtensor, "CHUNK_WEIGHTS", 200)  # 3 rows per chunk, a ragged last chunk
    assert torch.equal(quant.dequantize(raw, qtype, shape), one_shot)


@pytest.mark.parametrize("qtype", [T.NVFP4, 999, 10_000], ids=["NVFP4", "id999", "id10000"])
def test_get_format_rejects_unsupported(qtype):
    with pytest.raises(quant.QuantError, match=r"(NVFP4 \(id 40\)|unknown GGML type id).*supported: F32, .*Q4_K"):
        quant.get_format(qtype)


def test_bad_byte_count_and_row_length():
    raw = random_blocks(T.Q8_0, 4)
    with pytest.raises(quant.QuantError, match="Q8_0 tensor of shape \\(2, 32\\) needs 68 bytes, got 136"):
        quant.QTensor(raw, T.Q8_0, (2, 32))
    with pytest.raises(quant.QuantError, match="multiple of 32"):
        quant.dequantize(raw, T.Q8_0, (4, 33))
    with pytest.raises(quant.QuantError, match="needs qtype and shape"):
        quant.dequantize(raw)


# --- every tensor of the real models -------------------------------------------------------

REAL_MODELS = ["gemma3", "smollm2"]


@pytest.fixture(scope="module", params=REAL_MODELS)
def real_reader(request):
    realmodels = pytest.importorskip("tests.realmodels")  # a Path, or pytest.skip when absent
    path = {"gemma3": realmodels.gemma3_path, "smollm2": realmodels.smollm2_path}[request.param]()
    return gguf.GGUFReader(path)


@pytest.mark.realmodel
def test_real_model_tensors_bit_exact(real_reader):
    """Each tensor, compared in row chunks of about 4M weights to bound memory."""
    for t in real_reader.tensors:
        qtype = T(int(t.tensor_type))
        shape = tuple(int(n) for n in reversed(t.shape))  # GGUF ne order -> PyTorch order
        rows = t.data.reshape(math.prod(shape[:-1]), -1)
        step = max(1, (1 << 22) // shape[-1])
        for start in range(0, rows.shape[0], step):
            chunk = rows[start:start + step]
            ours = quant.dequantize(chunk, qtype, (chunk.shape[0], shape[-1]))
            ref = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(chunk, qtype)))
            assert_bit_exact(ours, ref.reshape(ours.shape))
