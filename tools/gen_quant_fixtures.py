"""Generate tests/fixtures/quant_llamacpp.{npz,json}: float rows and llama.cpp's blocks for them.

The oracle is llama.cpp's own C quantizer, `ggml_quantize_chunk` (no importance matrix, so the
`quantize_row_*_ref` reference path), called through ctypes in the libggml-base.so bundled with
llama-cpp-python. Tests never load it: they read the committed npz.

    pip install llama-cpp-python      # provides llama_cpp/lib/libggml-base.so
    python tools/gen_quant_fixtures.py

npz contents: `x` float32 (R, C) input rows; one uint8 (R, row bytes) array per type name
(Q2_K ... Q6_K, and the legacy Q4_0 ... Q8_0 as a second oracle next to gguf-py; TQ1_0, TQ2_0,
MXFP4); `imatrix_<type>` for the codebook types IQ1_S ... IQ4_XS, quantized by llama.cpp with
an importance matrix (blocks as real files hold them, for the dequantizers' tests).
json: seed, shape, the llama.cpp build, and the distribution behind each group of rows.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
SEED = 20240611
ROWS_PER_KIND = 4
N_COLS = 512  # two super-blocks per row
TYPES = (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
         T.TQ1_0, T.TQ2_0, T.MXFP4)
# The codebook types: llama.cpp quantizes them with an importance matrix (we only dequantize
# them); an imatrix of squared activations drawn once per column, as llama-imatrix collects.
IQ_TYPES = (T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ4_NL, T.IQ4_XS)


def _blockwise_scale(rng: np.random.Generator, shape: tuple[int, int], lo: float, hi: float) -> np.ndarray:
    """A factor 10**U(lo, hi) per 16 weights: sub-blocks of very different magnitudes."""
    r, c = shape
    return np.repeat(10.0 ** rng.uniform(lo, hi, (r, c // 16)), 16, axis=1)


def _one_zero_subblock(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    x = rng.standard_normal(shape)
    x[:, 32:64] = 0  # one whole 32-weight sub-block of zeros in the first super-block
    x[:, 256 + 16:256 + 32] = 0  # one 16-weight sub-block in the second
    return x


def _outlier(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    x = rng.standard_normal(shape) * 0.02
    x[:, ::97] = rng.standard_normal(x[:, ::97].shape) * 3  # rare large weights
    return x


def _signed_zeros(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Non-negative rows whose zeros are +0.0 or -0.0: the min's sign is C's first zero's."""
    signed_zero = np.copysign(0.0, rng.standard_normal(shape))
    x = np.where(rng.random(shape) < 0.5, np.abs(rng.standard_normal(shape)), signed_zero)
    x[-1] = np.copysign(0.0, rng.standard_normal(shape[1]))  # all-zero blocks of mixed signs
    return x


# name -> rows generator; every kind gets ROWS_PER_KIND rows of N_COLS weights.
KINDS = {
    "normal": lambda rng, s: rng.standard_normal(s),
    "weights_0.02": lambda rng, s: rng.standard_normal(s) * 0.02,
    "uniform_sym": lambda rng, s: rng.uniform(-1, 1, s),
    "uniform_pos": lambda rng, s: rng.uniform(0.5, 2.0, s),  # min > 0 branches
    "uniform_neg": lambda rng, s: -rng.uniform(0.5, 2.0, s),
    "student_t2": lambda rng, s: rng.standard_t(2, s),  # heavy tails
    "laplace": lambda rng, s: rng.laplace(0, 1, s),
    "half_zeros": lambda rng, s: rng.standard_normal(s) * (rng.random(s) < 0.5),
    "zeros": lambda rng, s: np.zeros(s),
    "constant": lambda rng, s: np.full(s, 0.75) * np.array([1, -1, 3e-3, 2e2])[:, None],
    "zero_subblock": _one_zero_subblock,
    "outliers": _outlier,
    "block_scales": lambda rng, s: rng.standard_normal(s) * _blockwise_scale(rng, s, -3, 3),
    "small_ints": lambda rng, s: rng.integers(-8, 8, s).astype(np.float64),  # exact rounding ties
    "half_ints": lambda rng, s: rng.integers(-16, 16, s) / 2.0,
    "tiny_1e-5": lambda rng, s: rng.standard_normal(s) * 1e-5,  # f16 subnormal scales
    "tiny_1e-9": lambda rng, s: rng.standard_normal(s) * 1e-9,  # scales flush to f16 zero
    "tiny_1e-20": lambda rng, s: rng.standard_normal(s) * 1e-20,  # below GROUP_MAX_EPS
    "huge_1e3": lambda rng, s: rng.standard_normal(s) * 1e3,
    "huge_3e4": lambda rng, s: rng.uniform(-6e4, 6e4, s),  # near the f16 limit of the scales
    "signed_zeros": _signed_zeros,
}


def make_rows() -> tuple[np.ndarray, list[dict]]:
    rng = np.random.default_rng(SEED)
    parts, groups = [], []
    for name, gen in KINDS.items():
        groups.append({"kind": name, "rows": [len(parts) * ROWS_PER_KIND, (len(parts) + 1) * ROWS_PER_KIND]})
        parts.append(np.asarray(gen(rng, (ROWS_PER_KIND, N_COLS)), dtype=np.float32))
    return np.ascontiguousarray(np.concatenate(parts)), groups


def load_ggml() -> ctypes.CDLL:
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    return lib


def ggml_quantize(lib: ctypes.CDLL, x: np.ndarray, qtype: T, imatrix: np.ndarray | None = None) -> np.ndarray:
    """llama.cpp's blocks for float32 rows x (R, C): uint8 (R, row bytes). GGML type ids = gguf's."""
    from gguf.constants import GGML_QUANT_SIZES

    assert imatrix is not None or not lib.ggml_quantize_requires_imatrix(int(qtype))
    x = np.ascontiguousarray(x, dtype=np.float32)
    block, size = GGML_QUANT_SIZES[qtype]
    out = np.zeros((x.shape[0], x.shape[1] // block * size), dtype=np.uint8)
    weights = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32).ctypes.data
    n = lib.ggml_quantize_chunk(int(qtype), x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1], weights)
    assert n == out.nbytes, (qtype.name, n, out.nbytes)
    return out


def main() -> None:
    import llama_cpp

    lib = load_ggml()
    x, groups = make_rows()
    arrays = {"x": x} | {t.name: ggml_quantize(lib, x, t) for t in TYPES}
    imatrix = np.random.default_rng(SEED + 1).standard_normal((64, N_COLS)).astype(np.float32)
    imatrix = (imatrix ** 2).mean(axis=0)                                # (C,) mean x^2
    arrays |= {f"imatrix_{t.name}": ggml_quantize(lib, x, t, imatrix) for t in IQ_TYPES}
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "quant_llamacpp.npz", **arrays)
    meta = {
        "generator": "tools/gen_quant_fixtures.py",
        "oracle": f"ggml_quantize_chunk (imatrix=NULL) from llama-cpp-python {llama_cpp.__version__}",
        "seed": SEED, "shape": list(x.shape), "types": [t.name for t in TYPES],
        "imatrix_types": [t.name for t in IQ_TYPES], "groups": groups,
    }
    (OUT / "quant_llamacpp.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {OUT / 'quant_llamacpp.npz'}: {x.shape} rows, {len(TYPES)} types")


if __name__ == "__main__":
    main()
