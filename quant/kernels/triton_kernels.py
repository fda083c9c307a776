"""GPU kernels in Triton: fused dequantize-and-dot for decode, dequantized tiles for prefill.

Backend "triton" (priority above the CPU ones, GPU tensors only), available when the `triton`
package imports and CUDA is there; CUDA builds of torch ship it. Formats: Q4_0, Q4_1, Q5_0,
Q8_0, Q4_K, Q5_K, Q6_K. The kernels and the block layouts they decode are in .triton_jit,
imported on first use (importing triton costs about 80 MB and 0.2 s, which CPU runs should
not pay).

Decode (M <= DECODE_MAX_ROWS x rows): one program per (BLOCK_N W rows, x row); prefill:
`dequantize` (a tile of W into float32 on the device) then torch's matmul. Without a GPU the
kernels run under Triton's interpreter (TRITON_INTERPRET=1, CPU tensors): tests/test_triton.py
checks them there against quant's reference; no GPU has run them yet (see BENCHMARKS.md).
"""

from __future__ import annotations

import importlib.util
import os

import torch
from gguf import GGMLQuantizationType as T

from ..qtensor import QTensor
from .registry import register, register_backend

BACKEND = "triton"
FORMATS = {T.Q4_0: (32, 18), T.Q4_1: (32, 20), T.Q5_0: (32, 22), T.Q8_0: (32, 34),
           T.Q4_K: (256, 144), T.Q5_K: (256, 176), T.Q6_K: (256, 210)}    # block size, type size
BLOCK_N = 16                                        # W rows per program


# Triton's interpreter (TRITON_INTERPRET=1, set before this import) runs the kernels on CPU
# tensors: then the backend takes CPU tensors, so a whole model can run through it in tests.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _available() -> bool:
    return importlib.util.find_spec("triton") is not None and (torch.cuda.is_available() or INTERPRETED)


def _jit():
    from . import triton_jit
    return triton_jit


register_backend(BACKEND, priority=30, available=_available, cpu_only=False, gpu_only=not INTERPRETED)


def _geometry(w: QTensor) -> tuple[int, int, int, int]:
    qk, ts = FORMATS[w.qtype]
    n, k = w.shape
    return n, k, qk, ts


@register(BACKEND, FORMATS, ["decode"])
def gemv(x: torch.Tensor, w: QTensor, out: torch.Tensor) -> None:
    """out (M, N) = x (M, K) @ W.T, the blocks decoded in registers; out may be a column slice."""
    n, k, qk, ts = _geometry(w)
    target = out if out.stride(1) == 1 else torch.empty_like(out, memory_format=torch.contiguous_format)
    _jit()._gemv_kernel[(-(-n // BLOCK_N), x.shape[0])](
        w.data, x, target, n, k, w.row_nbytes, target.stride(0),
        FMT=int(w.qtype), QK=qk, TS=ts, BN=BLOCK_N)
    if target is not out:
        out.copy_(target)


def dequantize(w: QTensor) -> torch.Tensor:
    """W (N, K) as float32 on its device."""
    n, k, qk, ts = _geometry(w)
    out = torch.empty(n, k, dtype=torch.float32, device=w.data.device)
    _jit()._dequant_kernel[(-(-n // BLOCK_N), k // qk)](
        w.data, out, n, k, w.row_nbytes, FMT=int(w.qtype), QK=qk, TS=ts, BN=BLOCK_N)
    return out


@register(BACKEND, FORMATS, ["prefill"])
def dequant_matmul(x: torch.Tensor, w: QTensor, out: torch.Tensor) -> None:
    """out = x @ dequantize(W).T: many x rows amortise one dequantization (GPU memory holds it)."""
    torch.mm(x, dequantize(w).T, out=out)
