"""Preallocated key/value cache, passed into forward; layers hold no state.

Per layer: k (Hkv, n_ctx, Dk) and v (Hkv, n_ctx, Dv), float32. Positions [0, length) are
filled. Sliding-window layers read only the last `window` positions a query can see.
"""

from __future__ import annotations

import torch

from .errors import ModelInputError


class KVCache:
    def __init__(self, n_ctx: int, n_kv_heads: tuple[int, ...], key_length: int,
                 value_length: int):
        self.n_ctx, self.length = n_ctx, 0
        self.k = [torch.zeros(h, n_ctx, key_length) for h in n_kv_heads]    # (Hkv, n_ctx, Dk)
        self.v = [torch.zeros(h, n_ctx, value_length) for h in n_kv_heads]  # (Hkv, n_ctx, Dv)

    @property
    def space(self) -> int:
        return self.n_ctx - self.length

    def check_room(self, n_tokens: int) -> None:
        if n_tokens > self.space:
            raise ModelInputError(f"{self.length + n_tokens} tokens do not fit in the context of "
                                  f"{self.n_ctx}; shorten the prompt or raise n_ctx")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, window: int = 0):
        """Store k, v (T, Hkv, D) at positions length..length+T-1 of `layer`; return the keys,
        values (Hkv, S, D) and positions (S,) that the T new queries may attend to."""
        n_tok, start = k.shape[0], self.length
        end = start + n_tok
        self.k[layer][:, start:end] = k.transpose(0, 1)
        self.v[layer][:, start:end] = v.transpose(0, 1)
        lo = max(0, start - window + 1) if window > 0 else 0
        return self.k[layer][:, lo:end], self.v[layer][:, lo:end], torch.arange(lo, end)

    def advance(self, n_tokens: int) -> None:
        self.length += n_tokens

    def truncate(self, length: int) -> None:
        """Forget positions >= length (their slots are overwritten by the next tokens)."""
        self.length = max(0, min(length, self.length))
