"""Where a decode step's time goes: inside the native matmul kernels versus everything else.

`profile_decode` runs greedy decode steps twice: once plain, reading the native library's own
clock (quant.kernels.native.kernel_seconds: wall time inside ggr_gemv*, ggr_attend, ggr_dequant
and the one-call steps ggr_block_step / ggr_experts_step, which hold a block's norms, rope and
attention besides its matmuls), and once under torch.profiler for the torch ops outside them
(their self CPU time; the profiler adds its own overhead, so these are shares, not exact costs). What is neither is Python and
ctypes call overhead. `gguf-runtime bench --profile` prints it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from quant.kernels import native
from quant.kernels.registry import torch_on_one_thread

from ..generate import decode_one
from ..kv_cache import KVCache
from ..transformer import Transformer

TOP_OPS = 8


@dataclass
class DecodeProfile:
    tokens: int
    step_ms: float                  # wall time per decode step (plain run)
    kernel_ms: float                # of which inside the native kernels
    torch_ops: list[tuple[str, float, float]] = field(default_factory=list)  # name, ms/step, calls/step

    @property
    def outside_share(self) -> float:
        return 1.0 - self.kernel_ms / self.step_ms if self.step_ms else 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        rows = [f"decode step {self.step_ms:.2f} ms over {self.tokens} tokens: "
                f"{self.kernel_ms:.2f} ms in native kernels, "
                f"{self.step_ms - self.kernel_ms:.2f} ms ({self.outside_share:.0%}) outside them"]
        if self.torch_ops:
            rows.append("top torch ops outside the kernels (self CPU under torch.profiler, per step):")
            rows += [f"  {name:40s} {ms:7.3f} ms  {calls:5.0f} calls" for name, ms, calls in self.torch_ops]
        return "\n".join(rows)


def _decode(model: Transformer, token: int, cache: KVCache, n: int) -> int:
    for _ in range(n):
        logits = decode_one(model, token, cache)
        with torch_on_one_thread():               # as generate_tokens samples
            token = int(logits.argmax())
    return token


@torch.inference_mode()
def profile_decode(model: Transformer, cache: KVCache, token: int, n_tokens: int = 32,
                   torch_ops: bool = True) -> DecodeProfile:
    """Profile 2 * n_tokens greedy decode steps after `token` (the cache needs that much room)."""
    token = _decode(model, token, cache, 2)                      # warm up
    k0, t0 = native.kernel_seconds(), time.perf_counter()
    token = _decode(model, token, cache, n_tokens)
    wall, kern = time.perf_counter() - t0, native.kernel_seconds() - k0
    prof = DecodeProfile(n_tokens, wall / n_tokens * 1e3, kern / n_tokens * 1e3)
    if torch_ops:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
            _decode(model, token, cache, n_tokens - 2)
        events = sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)[:TOP_OPS]
        steps = n_tokens - 2
        prof.torch_ops = [(e.key, e.self_cpu_time_total / 1e3 / steps, e.count / steps) for e in events]
    return prof
