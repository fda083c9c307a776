"""Attention of one new query position over a key/value cache (the decode step's attention).

`attend_one(q, k, v, scale, cap)` runs the native kernel (csrc/attend.h: one call for every
head, no copy of the cache slice, float32 or float16 cache, chunks of the cache split over the
kernel threads) and returns None where it cannot: native backend unavailable or not allowed by
GGUF_RUNTIME_KERNELS, tensors not on the CPU, other dtypes, rows not contiguous. The caller
then runs torch's attention, which is also the oracle the native kernel is tested against.

Legend: H query heads, Hkv key/value heads (H % Hkv == 0), S cached positions, Dk/Dv head dims.
"""

from __future__ import annotations

import ctypes

import torch

from ..errors import QuantError
from . import native
from .registry import backend_enabled, threads

KV_TYPES = {torch.float32: 0, torch.float16: 1}


class AttendJob(ctypes.Structure):
    """attend_job of csrc/attend.h (strides in elements)."""

    _fields_ = [("q", ctypes.c_void_p), ("k", ctypes.c_void_p), ("v", ctypes.c_void_p),
                *[(name, ctypes.c_int64) for name in
                  ("n_head", "n_kv", "dk", "dv", "s", "k_head", "k_row", "v_head", "v_row")],
                ("kv_type", ctypes.c_int), ("scale", ctypes.c_float), ("cap", ctypes.c_float)]


def _fits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    return (q.device.type == k.device.type == v.device.type == "cpu" and q.dtype == torch.float32
            and k.dtype == v.dtype and k.dtype in KV_TYPES and q.is_contiguous()
            and k.stride(-1) == 1 and v.stride(-1) == 1 and k.shape[1] == v.shape[1] > 0)


def attend_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
               cap: float = 0.0) -> torch.Tensor | None:
    """softmax(c(scale * q K^T)) V for q (H, Dk), k (Hkv, S, Dk), v (Hkv, S, Dv) -> (H, Dv)
    float32, c = cap * tanh(./cap) when cap > 0; None when the native kernel cannot run it."""
    if not (backend_enabled("native") and _fits(q, k, v)):
        return None
    (n_head, dk), (n_kv, s, dv) = q.shape, v.shape
    out = torch.empty(n_head, dv)
    job = AttendJob(q.data_ptr(), k.data_ptr(), v.data_ptr(), n_head, n_kv, dk, dv, s,
                    k.stride(0), k.stride(1), v.stride(0), v.stride(1), KV_TYPES[k.dtype], scale, cap)
    rc = native.load().ggr_attend(ctypes.byref(job), out.data_ptr(), threads())
    if rc:
        raise QuantError(f"native attention rejected q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)} (code {rc})")
    return out
