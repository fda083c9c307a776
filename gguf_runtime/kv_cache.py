"""Preallocated key/value cache, passed into forward; layers hold no state.

Per layer: k (Hkv, n_ctx, Dk) and v (Hkv, n_ctx, Dv), float32 by default, or IEEE half
("f16", llama.cpp's default type: half the memory and half the decode-time cache reads; keys
and values rounded to nearest). float32 is our default because rounding the cache alone, without
llama.cpp's other half-precision steps (the query and the softmax weights), moved Gemma 3's
greedy continuations further from llama.cpp's (BENCHMARKS.md, section 4). Positions
[0, length) are filled. Sliding-window layers read only the last `window` positions a query
can see.
"""

from __future__ import annotations

import torch

from .errors import ModelInputError
from .memory import cgroup_limit, meminfo, process_rss


KV_TYPES = {"f16": torch.float16, "f32": torch.float32}


def kv_dtype(kv_type: str) -> torch.dtype:
    """The torch dtype of a cache type name; ModelInputError naming the supported ones."""
    if kv_type not in KV_TYPES:
        raise ModelInputError(f"unknown KV cache type {kv_type!r}; supported: {', '.join(KV_TYPES)}")
    return KV_TYPES[kv_type]


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, capped by its cgroup's limit less
    what the process holds; None where unknown."""
    avail, limit = meminfo("MemAvailable"), cgroup_limit()
    if limit is not None:
        left = limit - process_rss()
        avail = left if avail is None else min(avail, left)
    return avail


def cache_nbytes(n_ctx: int, n_kv_heads: tuple[int, ...], key_length: int, value_length: int,
                 kv_type: str = "f32") -> int:
    """Bytes of a KVCache of these dimensions."""
    return n_ctx * sum(n_kv_heads) * (key_length + value_length) * torch.tensor([], dtype=kv_dtype(kv_type)).element_size()


class KVCache:
    def __init__(self, n_ctx: int, n_kv_heads: tuple[int, ...], key_length: int,
                 value_length: int, kv_type: str = "f32"):
        dtype = kv_dtype(kv_type)
        nbytes = cache_nbytes(n_ctx, n_kv_heads, key_length, value_length, kv_type)
        free = available_memory()
        if free is not None and nbytes > free:
            raise ModelInputError(f"a KV cache of {n_ctx} tokens needs {nbytes / 2**30:.1f} GiB, more "
                                  f"than the {max(free, 0) / 2**30:.1f} GiB of memory available; "
                                  f"lower the context (-c / n_ctx) or use kv_type f16")
        self.n_ctx, self.length = n_ctx, 0
        self.k = [torch.zeros(h, n_ctx, key_length, dtype=dtype) for h in n_kv_heads]    # (Hkv, n_ctx, Dk)
        self.v = [torch.zeros(h, n_ctx, value_length, dtype=dtype) for h in n_kv_heads]  # (Hkv, n_ctx, Dv)

    @property
    def space(self) -> int:
        return self.n_ctx - self.length

    def check_room(self, n_tokens: int) -> None:
        if n_tokens > self.space:
            raise ModelInputError(f"{self.length + n_tokens} tokens do not fit in the context of "
                                  f"{self.n_ctx}; shorten the prompt or raise the context (-c N, n_ctx=N)")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, window: int = 0):
        """Store k, v (T, Hkv, D) at positions length..length+T-1 of `layer`; return the keys,
        values (Hkv, S, D) in the cache's dtype and positions (S,) that the T new queries may
        attend to."""
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
