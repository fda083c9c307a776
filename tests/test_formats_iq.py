"""The codebook (IQ1/IQ2/IQ3), ternary (TQ1_0/TQ2_0) and MXFP4 formats.

Oracles: the grids' checksums as tools/gen_iq_grids.py printed them from llama.cpp's
ggml-common.h, and gguf-py's own copy of the grids; gguf.quants for dequantization (random
blocks in test_formats.py, here blocks llama.cpp quantized with an importance matrix, from
tests/fixtures/quant_llamacpp.npz); gguf.quants and llama.cpp's bytes for the quantizers.
"""

from __future__ import annotations

import hashlib

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import quant
from quant.formats_iq import GRIDS_FILE

from .test_quantize import FIXTURES

# sha256 of each table's bytes, as tools/gen_iq_grids.py printed them from ggml-common.h
GRID_SHA256 = {
    "iq2xxs": "05826b5d3e472a3a78f196be62ac78acf81df0f909626e12ab9fa2a5d490dd54",
    "iq2xs": "06e47aaca60b4dc1d9b5a3f34540437058a6b142b4d7a59d5ded769b4d1bf1de",
    "iq2s": "e1aa1473412b0552c2174c30ef22ab4073f6a181b85a17056e8249bd2932fd88",
    "iq3xxs": "46e35f5a997efdee6c99ce57854c8a0d4f0ff8ca57e5e8a60c0793ea580acf5d",
    "iq3s": "bd1af4945a1717c65610b0284e4628b9a1ba3b306fae3a06f6e5f597356e349f",
    "iq1s": "07540ffc1aeaf6ad4d97e96b0fcc765aae39671d4ae4a27bbd0e796fde167c6a",
    "ksigns": "a76742a603f8beca5212ecce0f1f02f11a4887fd2f7c8b15aca0ea3eb3380c31",
}
GGUF_PY_GRIDS = {"iq2xxs": gguf.quants.IQ2_XXS, "iq2xs": gguf.quants.IQ2_XS, "iq2s": gguf.quants.IQ2_S,
                 "iq3xxs": gguf.quants.IQ3_XXS, "iq3s": gguf.quants.IQ3_S, "iq1s": gguf.quants.IQ1_S}
IQ_TYPES = (T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ4_NL, T.IQ4_XS)
LOWBIT = (T.TQ1_0, T.TQ2_0, T.MXFP4)


def test_grids_are_ggml_commons_and_gguf_pys():
    with np.load(GRIDS_FILE) as tables:
        assert set(tables.files) == set(GRID_SHA256)
        for name, digest in GRID_SHA256.items():
            assert hashlib.sha256(tables[name].tobytes()).hexdigest() == digest, name
        for name, cls in GGUF_PY_GRIDS.items():
            cls.init_grid()
            assert np.array_equal(cls.grid.reshape(tables[name].shape), tables[name].astype(np.float32)), name
        assert tables["ksigns"].tobytes() == gguf.quants.IQ2_XXS.ksigns
        # ksigns: 7 stored sign bits and an 8th that makes the count of negative signs even
        assert all(bin(int(b)).count("1") % 2 == 0 and int(b) & 0x7F == i for i, b in enumerate(tables["ksigns"]))


@pytest.fixture(scope="module")
def llamacpp_blocks():
    with np.load(FIXTURES / "quant_llamacpp.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("qtype", IQ_TYPES, ids=lambda t: t.name)
def test_llama_cpp_quantized_blocks_dequantize_bit_exact(llamacpp_blocks, qtype):
    x, raw = llamacpp_blocks["x"], llamacpp_blocks[f"imatrix_{qtype.name}"]
    ours = quant.dequantize(raw.reshape(-1), qtype, x.shape)
    ref = np.ascontiguousarray(gguf.quants.dequantize(raw, qtype).reshape(x.shape), dtype=np.float32)
    assert torch.equal(ours.view(torch.int32), torch.from_numpy(ref).view(torch.int32))


def test_llama_cpp_quantized_blocks_approximate_their_rows(llamacpp_blocks):
    """Decoded, llama.cpp's blocks are near the rows it quantized, closer with more bits per
    weight: what a wrong grid, sign or scale unpacking (the same in gguf-py) would not give."""
    x = llamacpp_blocks["x"][:8]                                   # the "normal" rows
    err = {}
    for qtype in IQ_TYPES:
        y = quant.dequantize(llamacpp_blocks[f"imatrix_{qtype.name}"][:8].reshape(-1), qtype, x.shape)
        err[qtype] = float(np.linalg.norm(y.numpy() - x) / np.linalg.norm(x))
    assert err[T.IQ1_S] < 0.6 and err[T.IQ4_XS] < 0.1, err
    by_bits = sorted(IQ_TYPES, key=lambda t: gguf.GGML_QUANT_SIZES[t][1] / gguf.GGML_QUANT_SIZES[t][0])
    assert [err[t] for t in by_bits] == sorted((err[t] for t in by_bits), reverse=True), err


def _tiny_amax(x: np.ndarray, block: int) -> bool:
    """A block whose largest |x| is a float32 subnormal: TQ1_0 / TQ2_0's reference divides by
    it (1 / amax overflows to inf, inf * x to NaN, and NaN's cast to int8 is undefined in C and
    platform-dependent in numpy), so there is no reference byte to match."""
    amax = np.abs(x.reshape(-1, block)).max(axis=1)
    return bool(((amax > 0) & (amax < np.finfo(np.float32).tiny)).any())


@settings(max_examples=30, deadline=None)
@given(qtype=st.sampled_from(LOWBIT), data=st.data())
def test_low_bit_quantizers_match_gguf_py(qtype, data):
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    n_blocks = data.draw(st.integers(1, 3))
    x = data.draw(arrays(np.float32, (2, n_blocks * block), elements=st.floats(-1e3, 1e3, width=32)))
    assume(qtype == T.MXFP4 or not _tiny_amax(x, block))
    ours = quant.quantize(x, qtype).numpy()
    assert ours.tobytes() == gguf.quants.quantize(x, qtype).tobytes()


@pytest.mark.parametrize("qtype", [T.TQ1_0, T.TQ2_0], ids=lambda t: t.name)
def test_ternary_blocks_of_subnormals_quantize_to_zero(qtype):
    """Where the reference has no defined bytes (see _tiny_amax), ours are a block of scale 0:
    it dequantizes to zeros, never to NaN or to the garbage of an undefined cast."""
    x = np.full((2, 256), 1e-45, dtype=np.float32)
    x[1, ::3] = -3e-39
    y = quant.dequantize(quant.quantize(x, qtype), qtype, x.shape)
    assert torch.equal(y, torch.zeros(2, 256))


@pytest.mark.parametrize("qtype", LOWBIT, ids=lambda t: t.name)
def test_low_bit_round_trips(qtype):
    """Ternary weights (BitNet's {-d, 0, d}) survive TQ1_0 / TQ2_0 exactly up to the f16 scale;
    MXFP4 keeps E2M1 values times a power of two exactly, and other values within half a step."""
    rng = np.random.default_rng(1)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if qtype == T.MXFP4:
        e2m1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float32)
        step = np.float32(2.0 ** rng.integers(-8, 8))
        x = rng.choice(np.concatenate([e2m1, -e2m1]), (4, 4 * block)).astype(np.float32) * step
        x[:, ::block] = 6 * step                          # one max per block fixes the exponent
    else:
        x = (rng.integers(-1, 2, (4, 4 * block)) * np.float32(0.0371)).astype(np.float32)
        x[:, ::block] = np.float32(0.0371)
    y = quant.quantize_tensor(x, qtype).dequantize().numpy()
    scale = np.float32(np.float16(0.0371)) / np.float32(0.0371) if qtype != T.MXFP4 else 1
    assert np.allclose(y, x * scale, rtol=0, atol=1e-7)
    noisy = rng.standard_normal((4, 4 * block)).astype(np.float32)
    y = quant.quantize_tensor(noisy, qtype).dequantize().numpy()
    amax = np.abs(noisy).reshape(-1, block).max(axis=1, keepdims=True)
    # ternary: error <= d / 2 per weight; MXFP4: <= half the largest step (2 in 12 units of d/12 * 6)
    limit = amax * (0.5 if qtype != T.MXFP4 else 2 / 6) * 1.01
    assert (np.abs(y - noisy).reshape(-1, block) <= limit).all()


@pytest.mark.parametrize("qtype", [T.MXFP4, T.IQ1_M], ids=lambda t: t.name)
def test_scales_over_their_whole_range(qtype):
    """Every E8M0 exponent (MXFP4), and IQ1_M's scattered f16 scale with any bits (inf, NaN,
    subnormal): the same bits as gguf-py, NaN where it gives NaN."""
    rng = np.random.default_rng(3)
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    raw = rng.integers(0, 256, (4096, size), dtype=np.uint8)
    if qtype == T.MXFP4:
        raw[:256, 0] = np.arange(256)
    ours = quant.dequantize(raw.reshape(-1), qtype, (raw.shape[0] * gguf.GGML_QUANT_SIZES[qtype][0],))
    with np.errstate(all="ignore"):
        ref = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(raw, qtype).reshape(-1), dtype=np.float32))
    nan = torch.isnan(ref)
    assert torch.equal(torch.isnan(ours), nan) and bool(nan.any()) == (qtype == T.IQ1_M)
    assert torch.equal(ours[~nan].view(torch.int32), ref[~nan].view(torch.int32))
