"""The native kernels: csrc/ggr.c, built on first use (quant/kernels/build.py: the system C
compiler, -march=native, cached by source, flags and CPU), loaded and called via ctypes.

-ffp-contract=off keeps the dequantizers bit-exact with gguf-py (no fused multiply-adds where
the reference rounds twice); the dot products use explicit FMAs. The library binds to the
OpenMP runtime torch already loaded (same soname), so both share one thread pool.

Any failure (no compiler, a compile error, a load error, a size mismatch) disables the native
backend with one warning and leaves the reference kernels in charge; loading never raises.

ctypes releases the GIL during each call; tensors are passed as raw data pointers.

Kernels registered here:
    decode  (few x rows): ggr_gemv, fused dequantize-and-dot, OpenMP over W rows; bound per
                          weight (`bind_gemv`: pointers and sizes converted once) and, for several
                          weights on one x (Q, K, V; gate and up with the activation fused),
                          ggr_gemv_multi: one call, one OpenMP region (`bind_group`).
    decode, backend "q8k" (opt-in, priority above "native", for generated tokens only, never a
                          prompt's rows, see registry.prompt_rows): the same calls with x rounded
                          to Q8_K / Q8_0 where an integer row kernel exists (every legacy, K-quant
                          and IQ4 format where the library was built with AVX2; csrc/q8k_avx2.h,
                          q80_avx2.h), as llama.cpp's CPU backend does; other types as "native". GGUF_RUNTIME_KERNELS=q8k,native,block,
                          reference turns it on.
    prefill (many rows):  ggr_dequant into a reused float32 tile buffer, then one torch matmul
                          per tile (one pass, 3-40x faster than the multi-pass torch dequantizers).
"""

from __future__ import annotations

import ctypes
import os
import threading
import warnings

import torch
from gguf import GGMLQuantizationType as T

from ..errors import QuantError
from ..formats import get_format
from ..qtensor import QTensor
from .build import (ASAN_FLAGS, CFLAGS, ENV_ASAN, ENV_CACHE, ENV_MARCH, FALLBACK_DROPS, SOURCE,  # noqa: F401
                    SOURCE_DIR, _build, _compiler, cache_dir, cflags, library_path)
from .registry import register, register_backend, register_group, threads

ABI_VERSION = 8

DEQUANT_TYPES = (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
                 T.IQ4_NL, T.IQ4_XS, T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS,
                 T.IQ3_S, T.TQ1_0, T.TQ2_0, T.MXFP4)
# Float weights decode natively too (F32: routers; each x row computed as it is alone, which
# torch's matmul does not promise); their prefill is torch's (its conversion is one pass).
DECODE_TYPES = (*DEQUANT_TYPES, T.F32, T.F16, T.BF16)
# float32 weights per prefill tile (4 MiB): measured best of 256 KiB .. 16 MiB for 16 and 512 x rows
PREFILL_TILE_WEIGHTS = 1 << 20


class GGRMatrix(ctypes.Structure):
    """ggr_matrix: one weight of ggr_gemv_multi (GGML type id, raw blocks, bytes per row, rows)."""

    _fields_ = [("type", ctypes.c_int32), ("flags", ctypes.c_int32), ("w", ctypes.c_void_p),
                ("row_bytes", ctypes.c_int64), ("n", ctypes.c_int64)]


def matrix(w: QTensor, flags: int = 0) -> GGRMatrix:
    """W (N, K) as a ggr_matrix (pointer to its blocks; W must outlive it)."""
    return GGRMatrix(int(w.qtype), flags, w.data.data_ptr(), w.row_nbytes, w.shape[0])


ACT_CODES = {None: 0, "silu": 1, "gelu": 2}     # ggr_gemv_multi's act argument
MAX_MATRICES = 8                                # GGR_MAX_MATRICES
FLAG_Q8K = 1                                    # ggr_matrix.flags GGR_Q8K: x rounded to Q8_K
Q8K_BACKEND = "q8k"


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, ptr, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    signatures = {
        "ggr_abi_version": [], "ggr_block_size": [i32], "ggr_type_size": [i32], "ggr_has_dequant": [i32], "ggr_has_q8k": [i32], "ggr_row_kind": [i32], "ggr_x_round": [i32], "ggr_has_vnni": [],
        "ggr_gemv": [i32, ptr, i64, i64, ptr, i64, i64, ptr, i32],
        "ggr_gemv_multi": [ptr, i32, ptr, i64, i64, ptr, i32, i32],
        "ggr_kernel_ns": [],
        "ggr_attend": [ptr, ptr, i32],
        "ggr_rms_norm": [ptr, i64, i64, i64, ptr, ctypes.c_float, ptr],
        "ggr_rope": [ptr, i64, i64, i64, ptr, ptr, i32, ptr],
        "ggr_dequant": [i32, ptr, i64, ptr, i32],
        "ggr_block_step": [ptr, ptr, i64, ptr, ptr, ptr, ptr, i32, i64, ptr, i32],
        "ggr_experts_step": [ptr, ptr, ptr, ptr, i32, ptr, i32],
        "ggr_route": [ptr, i64, i64, ptr, ptr, ptr],
        "ggr_moe_step": [ptr, ptr, ptr, ptr, ptr, ptr, ptr, i32],
        "ggr_set_grids": [ptr] * 7, "ggr_grids_ready": [],
    }
    for name, args in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, i32
    lib.ggr_kernel_ns.restype = i64
    return lib


GRID_ORDER = ("iq2xxs", "iq2xs", "iq2s", "iq3xxs", "iq3s", "iq1s", "ksigns")   # ggr_set_grids'
_GRIDS_KEPT: list = []


def _set_grids(lib: ctypes.CDLL) -> None:
    """Hand the codebooks (quant/data/iq_grids.npz) to the library, which copies them."""
    import numpy as np

    from ..formats_iq import GRIDS_FILE
    with np.load(GRIDS_FILE) as tables:
        arrays = [np.ascontiguousarray(tables[name]) for name in GRID_ORDER]
    _GRIDS_KEPT[:] = arrays
    lib.ggr_set_grids(*(a.ctypes.data for a in arrays))
    if not lib.ggr_grids_ready():
        raise RuntimeError("ggr_set_grids did not take the grids")


def _check(lib: ctypes.CDLL) -> None:
    """The library must speak our ABI and agree with quant.formats on every block geometry."""
    if lib.ggr_abi_version() != ABI_VERSION:
        raise RuntimeError(f"ABI {lib.ggr_abi_version()} != {ABI_VERSION}")
    for qtype in DECODE_TYPES:
        fmt = get_format(qtype)
        if (lib.ggr_block_size(int(qtype)), lib.ggr_type_size(int(qtype))) != (fmt.block_size, fmt.type_size):
            raise RuntimeError(f"{qtype.name} geometry differs from quant.formats")
        if (qtype in DEQUANT_TYPES) != bool(lib.ggr_has_dequant(int(qtype))):
            raise RuntimeError(f"{qtype.name} dequantizer presence differs from DEQUANT_TYPES")


_LIB: list[ctypes.CDLL | None] = []
_LOAD_LOCK = threading.Lock()


def load() -> ctypes.CDLL | None:
    """The native library, built if needed; None (after one warning) when it cannot be had."""
    if _LIB:
        return _LIB[0]
    with _LOAD_LOCK:
        if not _LIB:
            _LIB.append(_build_and_load())
    return _LIB[0]


def _build_and_load() -> ctypes.CDLL | None:
    lib = None
    try:
        cc = _compiler()
        if cc is None:
            raise RuntimeError(f"no C compiler ({os.environ.get('CC', 'cc')}) on PATH")
        path = library_path(cc)
        if not path.exists():
            _build(cc, path)
        lib = _bind(ctypes.CDLL(str(path)))
        _set_grids(lib)
        _check(lib)
    except Exception as exc:  # noqa: BLE001 - any failure means "use the reference kernels"
        warnings.warn(f"gguf-runtime native kernels unavailable ({exc}); using the reference kernels",
                      RuntimeWarning, stacklevel=3)
        lib = None
    return lib


register_backend("native", priority=10, available=lambda: load() is not None)
# q8k rounds x: opt-in, and for generated tokens only; a prompt's rows stay float32
# (registry.prompt_rows). Its error next to llama.cpp's: BENCHMARKS.md section 5.
register_backend(Q8K_BACKEND, priority=20, available=lambda: bool(q8k_types()), rounds_activations=True,
                 opt_in=True, prompt_rows_ok=False)


def q8k_types() -> tuple[T, ...]:
    """The types whose "q8k" decode kernels round x and dot in integers here (none without the
    library or AVX2): the K-quants with x in Q8_K, the 32-weight formats with x in Q8_0."""
    lib = load()
    return tuple(t for t in DECODE_TYPES if lib is not None and lib.ggr_has_q8k(int(t)))


X_ROUNDINGS = {1: "Q8_K", 2: "Q8_0"}     # ggr_x_round's codes


def x_rounding(qtype: T) -> str | None:
    """The block format a type's "q8k" integer rows round x to ("Q8_K", "Q8_0"), None if none."""
    lib = load()
    return None if lib is None else X_ROUNDINGS.get(lib.ggr_x_round(int(qtype)))


def has_vnni() -> bool:
    """Whether the integer rows use VNNI dot products (AVX512-VNNI or AVX-VNNI) in this build."""
    lib = load()
    return lib is not None and bool(lib.ggr_has_vnni())


ROW_KINDS = {1: "C", 2: "AVX2", 3: "AVX-512"}     # ggr_row_kind's codes


def row_kinds() -> dict[T, str]:
    """The float-x decode rows each type takes in this build ("AVX-512", "AVX2" or "C"): fixed
    by the CPU's features at build time (-march=native, or $GGUF_RUNTIME_MARCH); {} without the
    library."""
    lib = load()
    return {} if lib is None else {t: ROW_KINDS[lib.ggr_row_kind(int(t))] for t in DECODE_TYPES}


def _into(out: torch.Tensor, write) -> None:
    """write(target) with target = out when contiguous (the C side writes whole rows of N), else
    a contiguous temporary then copied into out (a column slice of a wider output)."""
    if out.is_contiguous():
        write(out)
        return
    target = torch.empty_like(out, memory_format=torch.contiguous_format)
    write(target)
    out.copy_(target)


def bind_gemv(w: QTensor):
    """run(x, out) = gemv(x, w, out) with W's type, pointer and sizes converted once."""
    fn, qtype, wptr, row_bytes, (n, k) = load().ggr_gemv, int(w.qtype), w.data.data_ptr(), w.row_nbytes, w.shape

    def write(x: torch.Tensor, target: torch.Tensor) -> None:
        rc = fn(qtype, wptr, row_bytes, n, x.data_ptr(), x.shape[0], k, target.data_ptr(), threads())
        if rc:
            raise QuantError(f"native gemv rejected {w!r} with x {tuple(x.shape)} (code {rc})")

    return lambda x, out: _into(out, lambda target: write(x, target))


@register("native", DECODE_TYPES, ["decode"], prepare=bind_gemv)
def gemv(x: torch.Tensor, w: QTensor, out: torch.Tensor) -> None:
    """out (M, N) = x (M, K) @ W.T, fused; a strided `out` is written through a temporary."""
    bind_gemv(w)(x, out)


def kernel_seconds() -> float:
    """Wall-clock seconds spent inside the native kernels so far (0.0 without them)."""
    lib = load()
    return lib.ggr_kernel_ns() / 1e9 if lib is not None else 0.0


def dequantize_rows_into(w: QTensor, start: int, stop: int, buf: torch.Tensor) -> torch.Tensor:
    """Rows [start, stop) of W dequantized into the front of float32 `buf`: a (rows, K) view.

    Bit-exact with QTensor.dequantize_rows (same float32 operations as gguf-py). Raises
    QuantError for rows outside W, a buffer too small or not contiguous float32, or a type
    without a native dequantizer.
    """
    src = w.row_bytes(start, stop)                  # validates the range
    n_weights = (stop - start) * w.n_cols
    if buf.dtype != torch.float32 or not buf.is_contiguous() or buf.numel() < n_weights:
        raise QuantError(f"dequantize buffer must be contiguous float32 of >= {n_weights} values")
    n_blocks = n_weights // w.format.block_size
    if load().ggr_dequant(int(w.qtype), src.data_ptr(), n_blocks, buf.data_ptr(), threads()):
        raise QuantError(f"native dequantize has no {w.qtype.name}")
    return buf[:n_weights].view(stop - start, w.n_cols)


def dequantized_tiles(w: QTensor):
    """Yield (start, stop, tile): W's rows [start, stop) dequantized, float32 (rows, K), about
    PREFILL_TILE_WEIGHTS weights each, all in one reused buffer (a tile is valid until the next)."""
    n, k = w.shape
    step = max(1, PREFILL_TILE_WEIGHTS // k)
    buf = torch.empty(min(n, step) * k, dtype=torch.float32)
    for start in range(0, n, step):
        stop = min(n, start + step)
        yield start, stop, dequantize_rows_into(w, start, stop, buf)


@register("native", DEQUANT_TYPES, ["prefill"])
def dequant_matmul(x: torch.Tensor, w: QTensor, out: torch.Tensor) -> None:
    """out = x @ W.T through PREFILL_TILE_WEIGHTS-sized native-dequantized tiles in one buffer."""
    for start, stop, tile in dequantized_tiles(w):
        torch.mm(x, tile.T, out=out[:, start:stop])


@register_group("native")
def bind_group(weights: tuple[QTensor, ...], flags: int = 0):
    """run(x, out, act) over several W of one K in one ggr_gemv_multi call (see registry.GroupFn);
    `flags` (FLAG_Q8K) go to every matrix.

    Raises QuantError for more than MAX_MATRICES weights or K's that differ."""
    k = weights[0].shape[1]
    if len(weights) > MAX_MATRICES or any(w.shape[1] != k for w in weights):
        raise QuantError(f"a native group takes up to {MAX_MATRICES} weights of one K, got {weights!r}")
    mats = (GGRMatrix * len(weights))(*[matrix(w, flags) for w in weights])
    fn, count, keep = load().ggr_gemv_multi, len(weights), weights   # keep: the blocks outlive mats

    def run(x: torch.Tensor, out: torch.Tensor, act: str | None) -> None:
        if fn(mats, count, x.data_ptr(), x.shape[0], k, out.data_ptr(), ACT_CODES[act], threads()):
            raise QuantError(f"native group gemv rejected {keep!r} with x {tuple(x.shape)}, act {act}")
    return run


@register_group(Q8K_BACKEND)
def bind_group_q8k(weights: tuple[QTensor, ...]):
    """bind_group with x rounded to Q8_K for the weights whose type has integer rows."""
    return bind_group(weights, FLAG_Q8K)


def bind_gemv_q8k(w: QTensor):
    """run(x, out) = gemv_q8k(x, w, out), bound once (a one-matrix group)."""
    group = bind_group_q8k((w,))
    return lambda x, out: _into(out, lambda target: group(x, target, None))


@register(Q8K_BACKEND, DECODE_TYPES, ["decode"], prepare=bind_gemv_q8k)
def gemv_q8k(x: torch.Tensor, w: QTensor, out: torch.Tensor) -> None:
    """out = x @ W.T as `gemv`, with x rounded first (x_rounding) for the types in q8k_types()."""
    bind_gemv_q8k(w)(x, out)
