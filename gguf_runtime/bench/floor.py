"""The memory-bandwidth floor of decoding: weight bytes one token must read / read bandwidth.

    floor = bandwidth_floor(gguf_file, threads)     # Floor(active_bytes, gb_per_s, tok_per_s)

A decoded token multiplies its activation by every weight matrix once, so on a CPU (where the
weights do not fit in cache) a step cannot take less than active_bytes / bandwidth:
- every tensor of the file counts, except the token embedding (one row is gathered per token)
  unless it is also the output matrix (tied embeddings, no `output.weight`);
- a 3-D expert stack (`*_exps`) counts `expert_used_count / expert_count` of its bytes, the
  share a token routes to.
Bandwidth is measured, not assumed: the best of a few integer sums over a buffer far larger
than the caches, with the given torch thread count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

BUFFER_BYTES = 1 << 30


@dataclass
class Floor:
    active_bytes: int
    gb_per_s: float

    @property
    def tok_per_s(self) -> float:
        return self.gb_per_s * 1e9 / self.active_bytes


def dense_weight_bytes(gguf) -> int:
    """Bytes of every tensor but the expert stacks that one decoded token reads."""
    tied = "output.weight" not in gguf.tensors
    return sum(info.nbytes for name, info in gguf.tensors.items()
               if "_exps." not in name and (tied or name != "token_embd.weight"))


def active_weight_bytes(gguf) -> int:
    """Bytes of weights one decoded token reads (see the module docstring)."""
    meta, arch = gguf.metadata, gguf.architecture
    used = meta.get(f"{arch}.expert_used_count", 0)
    count = meta.get(f"{arch}.expert_count", 0)
    experts = sum(int(info.nbytes * used / count) for name, info in gguf.tensors.items()
                  if "_exps." in name and count)
    return dense_weight_bytes(gguf) + experts


def read_bandwidth_gb_s(threads: int, repeats: int = 5) -> float:
    """Best-of-`repeats` sequential read bandwidth of this machine, in GB/s."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        buf = torch.ones(BUFFER_BYTES // 8, dtype=torch.int64)     # touched: really resident
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            buf.sum()
            best = min(best, time.perf_counter() - t0)
        return BUFFER_BYTES / best / 1e9
    finally:
        torch.set_num_threads(old)


def bandwidth_floor(gguf, threads: int) -> Floor:
    return Floor(active_weight_bytes(gguf), read_bandwidth_gb_s(threads))
