"""The K-quants' per-sub-block scale searches from llama.cpp's ggml-quants.c, vectorised.

Each function runs the C routine of the same name on M sub-blocks at once: x is (n, M), one
sub-block per column. Branches become masks; a data-dependent C loop becomes the same loop
over the n rows (see quantize_core for the float32 rules that make this bit-exact).

Legend: n = weights per sub-block, M = sub-blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .quantize_core import f32, nearest_int, rdiv, seq_sum, signed_absmax

GROUP_MAX_EPS = f32(1e-15)  # below this |max| a sub-block is "all zero"


@dataclass(frozen=True)
class Qkx2Search:
    """make_qkx2_quants' knobs: levels 0..nmax, scale steps (rmin + rdelta*i + nmax), i <= nstep."""

    nmax: int
    rmin: float
    rdelta: float
    nstep: int
    use_mad: bool  # weigh |error| instead of error**2


def _weighted_error(scale: torch.Tensor, mn: torch.Tensor, q: torch.Tensor, x: torch.Tensor,
                    w: torch.Tensor, use_mad: bool) -> torch.Tensor:
    """sum_i w * |scale*q + min - x|  (or squared), summed in C order: (M,)."""
    diff = scale * q + mn - x
    diff = diff.abs() if use_mad else diff * diff
    return seq_sum(w * diff)


def make_qkx2_quants(x: torch.Tensor, w: torch.Tensor, p: Qkx2Search):
    """Affine levels x ~ scale*L - the_min with weights w: (n, M) -> scale (M,), the_min (M,), L (n, M).

    L is float32 holding integers 0..nmax. A sub-block whose min (capped at 0) equals its max
    gets L = 0, scale 0, as in C.
    """
    mn = x.amin(0).clamp(max=0)  # C: running min, then `if (min > 0) min = 0`
    mx = x.amax(0)
    flat = mx == mn
    sum_w = seq_sum(w, from_zero=False)
    sum_x = seq_sum(w * x, from_zero=False)
    iscale = rdiv(p.nmax, mx - mn)
    scale = rdiv(1, iscale)
    L = nearest_int(iscale * (x - mn)).clamp(0, p.nmax).float()
    best = _weighted_error(scale, mn, L, x, w, p.use_mad)
    for step in range(p.nstep + 1):
        # min moves when a step wins, and later steps start from it, as in C
        iscale = rdiv(f32(p.rmin) + f32(p.rdelta) * f32(step) + f32(p.nmax), mx - mn)
        laux = nearest_int(iscale * (x - mn)).clamp(0, p.nmax).float()
        wl = w * laux
        sum_l, sum_l2, sum_xl = seq_sum(torch.stack([wl, wl * laux, wl * x], dim=1)).unbind(0)
        det = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
        positive = this_min > 0
        this_min = torch.where(positive, torch.zeros_like(this_min), this_min)
        this_scale = torch.where(positive, sum_xl / sum_l2, this_scale)
        cur = _weighted_error(this_scale, this_min, laux, x, w, p.use_mad)
        better = (det > 0) & (cur < best)
        L = torch.where(better, laux, L)
        best = torch.where(better, cur, best)
        scale = torch.where(better, this_scale, scale)
        mn = torch.where(better, this_min, mn)
    zero = torch.zeros_like(scale)
    return torch.where(flat, zero, scale), -mn, torch.where(flat, torch.zeros_like(L), L)


def _clamped(v: torch.Tensor, nmax: int) -> torch.Tensor:
    """C's `MAX(-nmax, MIN(nmax-1, nearest_int(v)))` as float32 integers."""
    return nearest_int(v).clamp(-nmax, nmax - 1).float()


def _rmse1_sums(x: torch.Tensor, l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum w*x*l, sum w*l*l) with w = x*x (rmse_type 1), each C-ordered: (M,), (M,)."""
    w = x * x
    sums = seq_sum(torch.stack([w * x * l, w * l * l], dim=1))
    return sums[0], sums[1]


def make_qx_quants_rmse1(x: torch.Tensor, nmax: int):
    """make_qx_quants(rmse_type=1, no weights): symmetric levels with a 19-step scale search.

    (n, M) -> scale (M,), L (n, M) float32 in 0..2*nmax-1 (0 for an all-zero sub-block).
    """
    mx, amax = signed_absmax(x, 0)
    zero = amax < GROUP_MAX_EPS
    l = _clamped(rdiv(-nmax, mx) * x, nmax)
    L = l + nmax
    sumlx, suml2 = _rmse1_sums(x, l)
    scale = torch.where(suml2 != 0, sumlx / suml2, torch.zeros_like(suml2))
    best = scale * sumlx
    for step in [s for s in range(-9, 10) if s]:
        l = _clamped(rdiv(-(f32(nmax) + f32(0.1) * f32(step)), mx) * x, nmax)
        sumlx, suml2 = _rmse1_sums(x, l)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        L = torch.where(better, l + nmax, L)
        scale = torch.where(better, sumlx / suml2, scale)
        best = torch.where(better, scale * sumlx, best)
    return torch.where(zero, torch.zeros_like(scale), scale), torch.where(zero, torch.zeros_like(L), L)


def make_q3_quants_rmse(x: torch.Tensor, nmax: int, max_tries: int = 5):
    """make_q3_quants(do_rmse=true): symmetric levels, then up to 5 passes of per-weight moves
    that keep the weighted least-squares fit improving.

    (n, M) -> scale (M,), L (n, M) float32 in 0..2*nmax-1 (0 for an all-zero sub-block).
    Passes run for all sub-blocks until none changes: a pass that changes nothing in a
    sub-block leaves its state as it was, so the further passes C skips change nothing either.
    """
    mx, amax = signed_absmax(x, 0)
    zero = amax < GROUP_MAX_EPS
    L = _clamped(rdiv(-nmax, mx) * x, nmax)  # (n, M), updated row by row below
    w = x * x
    wx = w * x
    sumlx, suml2 = _rmse1_sums(x, L)
    for _ in range(max_tries):
        changed = torch.zeros_like(zero)
        for i in range(x.shape[0]):
            li, wi, wxi = L[i], w[i], wx[i]
            slx0 = sumlx - wxi * li
            sl2 = suml2 - wi * li * li
            new_l = _clamped(x[i] * sl2 / slx0, nmax)
            slx = slx0 + wxi * new_l
            sl2 = sl2 + wi * new_l * new_l
            take = (slx0 > 0) & (new_l != li) & (sl2 > 0) & (slx * slx * suml2 > sumlx * sumlx * sl2)
            L[i] = torch.where(take, new_l, li)
            sumlx = torch.where(take, slx, sumlx)
            suml2 = torch.where(take, sl2, suml2)
            changed |= take
        if not bool(changed.any()):
            break
    scale = torch.where(suml2 > 0, sumlx / suml2, torch.zeros_like(suml2))
    return torch.where(zero, torch.zeros_like(scale), scale), torch.where(zero, torch.zeros_like(L), L + nmax)
