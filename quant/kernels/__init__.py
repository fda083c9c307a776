"""Dequantize-on-matmul kernels: `qmatmul(x, W)` = x @ W.T with W kept as raw GGML blocks.

Kernels are chosen through one dispatch table (see .registry), keyed by (GGML type, path):
    path "decode"  (at most DECODE_MAX_ROWS x rows): native fused dequantize-and-dot (csrc/),
    path "prefill" (more rows): dequantize W in bounded tiles, one BLAS matmul per tile.
Backends, best first: "triton" (weights and x on a CUDA device only: Triton kernels for
Q4_0/Q4_1/Q5_0/Q8_0/Q4_K/Q5_K/Q6_K, see .triton_kernels), "q8k" (opt-in, generated tokens only:
the native rows with x rounded to Q8_K and integer dot products for Q4_K / Q6_K, as llama.cpp;
see .native), "bf16" (opt-in, prefill only, on CPUs with bfloat16 hardware: native dequantization,
bfloat16 matmul; see .bf16), "native" (C + OpenMP, built on first use; see .native) and
"reference" (pure torch, always available, the oracle; see .reference). Which one runs is a
function of the CPU's flags (.cpu), the weight's type, the rows' role (a prompt's rows are
never rounded: registry.prompt_rows) and GGUF_RUNTIME_KERNELS, never of a timing;
`describe_choices()` says what was chosen here. By default x stays float32 everywhere;
GGUF_RUNTIME_KERNELS=q8k,native,block,reference turns the Q8_K rows on for generated tokens,
naming bf16 too (bf16,q8k,native,block,reference) the bfloat16 prefill.
F32 weights are a zero-copy float view and a plain torch matmul. GGUF_RUNTIME_KERNELS=reference forces the reference path.

The whole of W is never dequantized at once: at most one tile (a few MB of float32).

Beside the table: group kernels (registry.register_group: several W on one x in one call, for
QLinearGroup) and the decode step's float ops in one native call each, each with a torch
fallback that is also its test oracle: `attention.attend_one` (one query over the KV cache),
`rowops.rms_norm`, `rowops.rope_one`; and a whole block's decode step in one call
(`block_step`, backend "block": the same ops, bit-identical, without the per-op Python).
"""

from __future__ import annotations

import torch

from ..errors import QuantError
from ..qtensor import QTensor
from . import bf16, block_step, cpu, native, reference, triton_kernels  # noqa: F401  (importing registers their kernels)
from .registry import (DECODE_MAX_ROWS, Kernel, allowed_backends, backend_available, env_spec, path_for,
                       prompt_rows, select, set_threads)

__all__ = ["qmatmul", "set_num_threads", "available_backends", "kernel_for", "describe_choices",
           "DECODE_MAX_ROWS"]


def qmatmul(x: torch.Tensor, w: QTensor, backend: str | None = None) -> torch.Tensor:
    """x @ W.T for a 2-D quantized W, without materialising the dequantized W.

    Args:
        x: float tensor (..., K), any leading shape (M = their product, possibly 0); computed in
            float32.
        w: QTensor of shape (N, K), any supported GGML type.
        backend: run this backend's kernel ("native", "reference"), not the dispatch choice.
    Returns:
        a fresh float32 tensor (..., N) on x's device.
    Raises:
        QuantError when W is not 2-D, x is not floating point, the K's differ, or no kernel
        exists for W's type (or for `backend`).
    """
    if len(w.shape) != 2:
        raise QuantError(f"qmatmul needs a 2-D weight, got {w!r}")
    n, k = w.shape
    if not x.is_floating_point() or x.shape[-1:] != (k,):
        raise QuantError(f"qmatmul x must be floating point (..., {k}) for {w!r}, got {x.dtype} {tuple(x.shape)}")
    x2 = x.reshape(-1, k).to(torch.float32).contiguous()                    # (M, K)
    out = torch.empty(x2.shape[0], n, dtype=torch.float32, device=x.device)  # (M, N)
    if out.numel():
        kernel_for(w, x2.shape[0], backend, on_cpu=x.device.type == "cpu").fn(x2, w, out)
    return out.view(*x.shape[:-1], n)


def kernel_for(w: QTensor, n_x_rows: int, backend: str | None = None, on_cpu: bool = True,
               exact: bool = False) -> Kernel:
    """The kernel qmatmul runs for W with `n_x_rows` rows of x (for tests, benchmarks, logs);
    `exact`: none that rounds below float32 (backend "bf16")."""
    return select(w.qtype, path_for(n_x_rows), backend, on_cpu, exact)


def set_num_threads(n: int | None) -> None:
    """Threads for the kernels. An int also sets torch's (BLAS, reference path); None makes the
    native kernels follow torch.get_num_threads() (the default). QuantError if n < 1."""
    set_threads(n)
    if n is not None:
        torch.set_num_threads(n)


def available_backends() -> tuple[str, ...]:
    """Backends qmatmul may use here, best first: available (native built and loaded, which this
    triggers) and allowed by GGUF_RUNTIME_KERNELS."""
    return tuple(name for name in allowed_backends() if backend_available(name))


def describe_choices() -> str:
    """The kernel choice here and why, one line: the CPU's facts, the backends a prompt's rows
    and a generated token's take (best first), which types round x to Q8_K, and bf16's state."""
    with prompt_rows():
        prompt = available_backends()
    generated = available_backends()
    q8k = "q8k" in generated and native.q8k_types()
    if "bf16" in prompt:
        bf16_state = "bf16 on (named in GGUF_RUNTIME_KERNELS)"
    elif cpu.bf16_native():
        bf16_state = "bf16 off (opt-in: name it in GGUF_RUNTIME_KERNELS; this CPU has bfloat16 hardware)"
    else:
        bf16_state = "bf16 off (no AVX512-BF16 / AMX-BF16 here)"
    if q8k:
        by_format: dict[str, list[str]] = {}
        for t in q8k:
            by_format.setdefault(native.x_rounding(t), []).append(t.name)
        vnni = "VNNI" if native.has_vnni() else "no VNNI"
        targets = ", ".join(f"{fmt} for {'/'.join(names)}" for fmt, names in by_format.items())
        rounding = f"x rounded to {targets} (q8k named: llama.cpp's rounding; integer dots, {vnni})"
    elif native.q8k_types():
        rounding = "x float32 (q8k integer rows opt-in: name q8k in GGUF_RUNTIME_KERNELS)"
    else:
        rounding = "x float32 (no q8k integer rows: no AVX2 build)"
    spec = env_spec()
    return (f"CPU {cpu.describe()} | prompt rows: {', '.join(prompt)}, x float32 | generated tokens: "
            f"{', '.join(generated)}, {rounding} | {decode_rows()} | {bf16_state}"
            + (f" | GGUF_RUNTIME_KERNELS={spec}" if spec else ""))


def decode_rows() -> str:
    """Which native decode rows this build runs, grouped: "decode rows: AVX-512 Q4_0/Q8_0, AVX2 the rest"."""
    kinds = native.row_kinds()
    if not kinds:
        return "decode rows: none (no native library)"
    groups: dict[str, list[str]] = {}
    for qtype, kind in kinds.items():
        groups.setdefault(kind, []).append(qtype.name)
    common = max(groups, key=lambda kind: len(groups[kind]))
    parts = [f"{kind} {'/'.join(names)}" for kind, names in groups.items() if kind != common]
    return "decode rows: " + ", ".join(parts + [f"{common} {'the rest' if parts else 'all'}"])


def type_kernels(qtype) -> dict[str, str]:
    """{path: backend} that a weight of `qtype` takes here ("decode", "prefill"); "none" where
    no kernel exists (an unsupported type). For `inspect`: a fast kernel or only "reference"."""
    from ..errors import QuantError
    from .registry import PATHS, select
    out = {}
    for path in PATHS:
        try:
            out[path] = select(qtype, path).backend
        except QuantError:
            out[path] = "none"
    return out
