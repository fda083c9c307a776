"""Building blocks shared by every architecture: RMSNorm / LayerNorm, RoPE, attention, FFN.

Legend: T new tokens, S cached positions attended to, D model width, H query heads,
Hkv key/value heads, Dk/Dv head dims, F feed-forward width.
All activations are float32; weights are QLinear (quantized blocks) or small float vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from quant.kernels.attention import attend_one
from quant.kernels.registry import DECODE_MAX_ROWS
from quant.kernels.reference import ACTIVATIONS, gated_reference
from quant.kernels.rowops import rms_norm as native_rms_norm
from quant.kernels.rowops import rope_one

from .config import RopeScaling


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """y = x / sqrt(mean(x^2) + eps) * w over the last dim (Gemma files store w already as 1+w).
    One native call where it can run (quant.kernels.rowops), else torch's fused op."""
    y = native_rms_norm(x, weight, eps)
    return y if y is not None else F.rms_norm(x, (x.shape[-1],), weight, eps)


@dataclass(frozen=True)
class Norm:
    """A block's norm, built at load: "rms" y = x / sqrt(mean(x^2) + eps) * w (+ b);
    "layer" y = (x - mean(x)) / sqrt(var(x) + eps) * w + b (ggml_norm, then weight and bias),
    over the last dim. The kind is the family's (ArchSpec.norm), the bias the file's."""

    kind: str
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layer":
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        y = rms_norm(x, self.weight, self.eps)
        return y if self.bias is None else y + self.bias


def per_row(fn, x: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
    """fn applied row by row for the few rows of a decode step (x (N, ...), N <= the decode
    path's rows), else at once. torch's elementwise exp / tanh / sigmoid take vector code for
    the bulk of a tensor and scalar code for its tail, which round differently, so the same row
    could get other bits in a batch of other size; row by row, each row is computed as alone."""
    if x.dim() < 2 or not 1 < x.shape[0] <= DECODE_MAX_ROWS:
        return fn(x, *more)
    return torch.cat([fn(x[i:i + 1], *(m[i:i + 1] for m in more)) for i in range(x.shape[0])])


def softcap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """cap * tanh(x / cap) (Gemma 2 attention and final logits); identity when cap == 0."""
    return torch.tanh(x / cap) * cap if cap else x


@dataclass(frozen=True)
class RopeParams:
    """Everything ggml_rope_ext needs for one layer kind (global or sliding-window)."""

    n_rot: int
    base: float
    style: str                       # "norm" (adjacent pairs) | "neox" (halves)
    scaling: RopeScaling
    freq_factors: torch.Tensor | None = None   # rope_freqs.weight (llama3, longrope): theta /= f


class Rope:
    """Rotary embedding as ggml computes it, including linear and YaRN scaling.

    theta_i(p) = p * base^(-2i/n_rot) / freq_factor_i, i < n_rot/2; with YaRN the
    interpolated (theta * 1/factor) and extrapolated thetas are mixed by a ramp over i, and
    cos/sin are multiplied by mscale = attn_factor * (1 + 0.1 ln(factor)).
    """

    def __init__(self, p: RopeParams):
        self.p = p
        half = p.n_rot // 2
        inv_freq = p.base ** (-torch.arange(0, half, dtype=torch.float64) * 2 / p.n_rot)
        if p.freq_factors is not None:
            inv_freq = inv_freq / p.freq_factors.double()[:half]
        self.inv_freq = inv_freq                              # (n_rot/2,)
        self.freq_scale, self.mscale, self.ramp = 1.0, 1.0, None
        self._memo_pos, self._memo = None, None
        sc = p.scaling
        if sc.kind in ("linear", "yarn"):
            self.freq_scale = 1.0 / sc.factor
        if sc.kind == "yarn":
            self.ramp = _yarn_ramp(p.n_rot, sc, p.base)
            self.mscale = sc.attn_factor * (1.0 + 0.1 * math.log(sc.factor))

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (T, n_rot/2) for integer positions (T,).

        Memoised on the positions tensor: the layers sharing this Rope in one forward pass
        pass the same tensor, so the trigonometry runs once per step, not once per layer.
        """
        if positions is self._memo_pos:
            return self._memo
        self._memo_pos, self._memo = positions, self._cos_sin(positions)
        return self._memo

    def _cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        extrap = positions.double()[:, None] * self.inv_freq[None, :]
        theta = extrap * self.freq_scale
        if self.ramp is not None:
            theta = theta * (1 - self.ramp) + extrap * self.ramp
        return ((torch.cos(theta) * self.mscale).float(), (torch.sin(theta) * self.mscale).float())

    def apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate the first n_rot dims of x (T, heads, Dk); the rest pass through. One token
        takes one native call where it can run (quant.kernels.rowops), else the torch form."""
        n = self.p.n_rot
        if x.shape[0] == 1:
            y = rope_one(x, cos, sin, n, self.p.style == "neox")
            if y is not None:
                return y
        rot, rest = x[..., :n], x[..., n:]
        c, s = cos[:, None, :], sin[:, None, :]                # (T, 1, n_rot/2)
        if self.p.style == "neox":
            a, b = rot[..., : n // 2], rot[..., n // 2:]
            out = torch.cat([a * c - b * s, a * s + b * c], dim=-1)
        else:  # adjacent pairs (x0, x1) as complex x0 + i x1, rotated by e^(i theta)
            z = torch.view_as_complex(rot.contiguous().view(*rot.shape[:-1], n // 2, 2))
            out = torch.view_as_real(z * torch.complex(c, s)).flatten(-2)
        return torch.cat([out, rest], dim=-1) if rest.numel() else out


def _yarn_ramp(n_rot: int, sc: RopeScaling, base: float) -> torch.Tensor:
    """ggml_rope_yarn_corr_dims + rope_yarn_ramp: extrapolation weight per rotary pair."""
    def corr_dim(n_rotations: float) -> float:
        return n_rot * math.log(sc.original_context / (n_rotations * 2 * math.pi)) / (2 * math.log(base))
    low = max(0.0, math.floor(corr_dim(sc.yarn_beta_fast)))
    high = min(n_rot - 1.0, math.ceil(corr_dim(sc.yarn_beta_slow)))
    i = torch.arange(0, n_rot // 2, dtype=torch.float64)       # i0 / 2
    y = (i - low) / max(0.001, high - low)
    return 1 - y.clamp(0, 1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              scale: float, cap: float = 0.0, sinks: torch.Tensor | None = None) -> torch.Tensor:
    """Grouped-query attention. q (H, T, Dk) float32, k (Hkv, S, Dk), v (Hkv, S, Dv) float32 or
    float16 (a half cache: its values widened exactly), mask (T, S) bool (True = may attend;
    None = every key). Returns (T, H * Dv). One unmasked query (decode) takes the native kernel
    when it can run (quant.kernels.attention), else torch. `sinks` (H,) (gpt-oss): one more
    logit per head in the softmax, whose probability is dropped (ggml_soft_max_ext's sinks)."""
    n_head, n_tok = q.shape[0], q.shape[1]
    if n_tok == 1 and mask is None and sinks is None:
        out = attend_one(q.reshape(n_head, -1), k, v, scale, cap)     # (H, Dv)
        if out is not None:
            return out.view(1, -1)
    k, v = k.to(q.dtype), v.to(q.dtype)
    if cap or sinks is not None:
        out = _manual_attention(q, k, v, mask, scale, cap, sinks)      # (H, T, Dv)
    else:
        out = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask,
                                             scale=scale, enable_gqa=True)[0]
    return out.transpose(0, 1).reshape(n_tok, -1)


def _manual_attention(q, k, v, mask, scale: float, cap: float, sinks: torch.Tensor | None) -> torch.Tensor:
    """softmax(softcap(q k^T * scale) masked [, sinks]) v, written out: what SDPA cannot do.
    Returns (H, T, Dv)."""
    n_head, n_tok = q.shape[0], q.shape[1]
    rep = n_head // k.shape[0]
    k, v = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
    scores = q @ k.transpose(1, 2) * scale                     # (H, T, S)
    if cap:
        scores = softcap(scores, cap)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if sinks is None:
        return torch.softmax(scores, dim=-1) @ v
    scores = torch.cat([scores, sinks.view(n_head, 1, 1).expand(n_head, n_tok, 1)], dim=-1)
    return torch.softmax(scores, dim=-1)[..., :-1] @ v        # the sink's probability dropped


def causal_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """(T, S) bool: key position <= query position and, with a window, q - k < window."""
    diff = q_pos[:, None] - k_pos[None, :]
    allowed = diff >= 0
    if window > 0:
        allowed &= diff < window
    return allowed


def activation(x: torch.Tensor, kind: str) -> torch.Tensor:
    """silu(x) or gelu_tanh(x): a plain (ungated) FFN's activation, row by row in a decode step."""
    return per_row(ACTIVATIONS[kind], x)


def gated_activation(gate: torch.Tensor, up: torch.Tensor, kind: str) -> torch.Tensor:
    """SwiGLU silu(g)*u or GeGLU gelu_tanh(g)*u (ggml_gelu is the tanh approximation)."""
    return per_row(lambda g, u: gated_reference(g, u, kind), gate, up)
