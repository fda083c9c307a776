"""Row-wise ops of a decode step in one native call each: RMSNorm and rotary embedding.

Each returns None where the native kernel cannot run it (native backend unavailable or not
allowed by GGUF_RUNTIME_KERNELS, not float32 on the CPU, rows not contiguous); the caller then
runs its torch form (gguf_runtime.layers), which is also the oracle these are tested against.
On one token a torch RMSNorm is several small ops of a few microseconds each; this is one.

Legend: R rows (tokens x heads), D row length, n_rot rotated dims per row.
"""

from __future__ import annotations

import torch

from ..errors import QuantError
from . import native
from .registry import backend_enabled


def _cpu_f32(x: torch.Tensor, *more: torch.Tensor | None) -> bool:
    """x and every non-None tensor of `more` float32 on the CPU (a loop: this runs per token)."""
    if x.dtype != torch.float32 or x.device.type != "cpu":
        return False
    for t in more:
        if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu"):
            return False
    return True


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor | None:
    """x (..., D) / sqrt(mean(x^2) + eps) * weight (D,) or None (no weight); None if not native."""
    if not (backend_enabled("native") and _cpu_f32(x, weight) and x.dim() and x.stride(-1) == 1
            and (weight is None or weight.is_contiguous())):
        return None
    d = x.shape[-1]
    if weight is not None and weight.numel() != d:                          # fail closed
        raise QuantError(f"rms_norm weight of {weight.numel()} values for rows of {d}")
    x2 = x.reshape(-1, d)                                                   # (R, D)
    y = torch.empty(x.shape)
    ldx = x2.stride(0) if x2.shape[0] > 1 else d
    if native.load().ggr_rms_norm(x2.data_ptr(), x2.shape[0], d, ldx,
                                  weight.data_ptr() if weight is not None else None, eps, y.data_ptr()):
        raise QuantError(f"native rms_norm rejected x {tuple(x.shape)}")
    return y


def rope_one(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_rot: int,
             neox: bool) -> torch.Tensor | None:
    """x (..., D) of one position, first n_rot dims rotated by cos/sin (1, n_rot/2): pairs
    (2i, 2i+1), or (i, i + n_rot/2) when neox; None where the native kernel cannot run it."""
    if not (backend_enabled("native") and _cpu_f32(x, cos, sin) and x.is_contiguous()
            and cos.is_contiguous() and sin.is_contiguous() and cos.numel() == sin.numel() == n_rot // 2):
        return None
    d = x.shape[-1]
    if n_rot > d or n_rot % 2:                                              # fail closed
        raise QuantError(f"rope of {n_rot} dims on rows of {d}")
    y = torch.empty(x.shape)
    if native.load().ggr_rope(x.data_ptr(), x.numel() // d, d, n_rot, cos.data_ptr(), sin.data_ptr(),
                              int(neox), y.data_ptr()):
        raise QuantError(f"native rope rejected x {tuple(x.shape)} with n_rot {n_rot}")
    return y
