"""What this CPU can do, read once from the operating system: the facts kernel choices rest on.

Kernel choice is a pure function of these facts, the weights' types and the user's settings
(GGUF_RUNTIME_KERNELS), never of a timing: the same file and prompt give the same numbers on
every run of a machine, whatever else it is doing.

Flags are Linux's /proc/cpuinfo names (avx2, avx512f, avx512bw, avx512_vnni, avx_vnni,
avx512_bf16, amx_bf16, amx_int8, ...); elsewhere the set is empty and torch's own probe
(`torch.backends.cpu.get_cpu_capability()`: "DEFAULT", "AVX2", "AVX512") is the only fact.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

# The flags the kernel table below reads, in the order `describe()` prints them.
RELEVANT = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
            "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


@functools.lru_cache(maxsize=1)
def model_and_flags() -> tuple[str, frozenset[str]]:
    """(CPU model name, its feature flags) of the first CPU listed; ("", {}) where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor(), frozenset()
    name, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return name, flags


def has(*flags: str) -> bool:
    """Whether the CPU reports every one of `flags`."""
    return all(f in model_and_flags()[1] for f in flags)


def bf16_native() -> bool:
    """Whether the CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX-BF16): the only CPUs
    where the bfloat16 prefill backend is faster than float32 (BENCHMARKS.md, section 5);
    elsewhere torch emulates bfloat16 and it is slower."""
    return has("avx512_bf16") or has("amx_bf16")


def describe() -> str:
    """One line: model name, torch's capability and the relevant flags present."""
    name, flags = model_and_flags()
    present = [f for f in RELEVANT if f in flags]
    return (f"{name or platform.machine() or 'unknown CPU'}; torch {torch.backends.cpu.get_cpu_capability()}; "
            f"flags: {' '.join(present) or 'none of ' + ', '.join(RELEVANT[:4])}")
