"""Decode-step helpers shared by the tests of the one-call block step (quant.kernels.block_step)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gguf_runtime
from gguf_runtime.generate import decode_one, prefill
from quant.kernels import native

# (one-call step, every decode op from Python: no "block" backend), by default and with the
# opt-in Q8_K rows named
PAIRS = (("", "native,reference"), ("q8k,native,block,reference", "q8k,native,reference"))


def decode_logits(path: Path, ids: list[int], n_prompt: int, kernels: str,
                  monkeypatch: pytest.MonkeyPatch, kv_type: str = "f32") -> tuple[torch.Tensor, int]:
    """Prefill ids[:n_prompt], then feed the rest one token at a time with GGUF_RUNTIME_KERNELS
    = `kernels`: the decode steps' logits (len(ids) - n_prompt, V) and how many blocks took
    the one-call step."""
    monkeypatch.setenv("GGUF_RUNTIME_KERNELS", kernels)
    model = gguf_runtime.load(path, n_ctx=len(ids) + 1, kv_type=kv_type)
    with torch.inference_mode():
        cache = model._new_cache(len(ids) + 1)
        prefill(model.transformer, ids[:n_prompt], cache)
        steps = [decode_one(model.transformer, t, cache).clone() for t in ids[n_prompt:]]
    fused = sum(model.transformer._decode_step(b) is not None for b in model.transformer.blk)
    return torch.stack(steps), fused


def assert_block_step_is_op_by_op(path: Path, ids: list[int], n_prompt: int, n_fused: int,
                                  monkeypatch: pytest.MonkeyPatch, kv_type: str = "f32") -> None:
    """The one-call step on `n_fused` blocks gives exactly the logits of the op-by-op decode
    (with a `kv_type` cache: "f16" also checks the step's rounding of keys and values)."""
    if native.load() is None:
        pytest.skip("native kernels unavailable")
    for with_step, op_by_op in PAIRS:
        fused, n = decode_logits(path, ids, n_prompt, with_step, monkeypatch, kv_type)
        ops, none = decode_logits(path, ids, n_prompt, op_by_op, monkeypatch, kv_type)
        assert (n, none) == (n_fused, 0)
        assert torch.equal(fused, ops), \
            f"{with_step or 'default'}: max difference {(fused - ops).abs().max().item():.3g}"
