"""Decode speed of a (MoE) GGUF fed random token ids, with or without a memory budget.

    tools/memlimit_run.sh 380M M.gguf -- .venv/bin/python tools/moe_budget_run.py M.gguf [--budget 380M]

Prefills 8 random ids, decodes 8 more to warm up, then times `--steps` decode steps of random
ids (teacher-forced: each token's route follows its own embedding, not a degenerate greedy
loop). With `--budget`, gguf_runtime.load(memory_budget=...) plans the memory and advises the
streaming experts' pages (gguf_runtime/memory.py); without, the kernel pages the map as it likes.
BENCHMARKS.md section 2 ("memory budget").

`--hits N`: then N more steps, untimed, each preceded by a snapshot of which experts' pages are
all in the page cache (mincore on every expert slice of every stack) and followed by the experts
the step ran (ExpertStack.touched): a routed expert is a hit when all its pages (gate, up and
down) were resident before the step. Prints the hit rate over all layers and its range per layer.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gguf_runtime  # noqa: E402
from gguf_runtime.generate import decode_one, prefill  # noqa: E402


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def resident(stack, e: int) -> bool:
    """Whether every page of expert e's slice of `stack` is in memory (mincore)."""
    start = stack.weight.data.data_ptr() + e * stack.expert_nbytes
    lo = start // mmap.PAGESIZE * mmap.PAGESIZE
    n = -(-(start + stack.expert_nbytes - lo) // mmap.PAGESIZE)
    vec = (ctypes.c_ubyte * n)()
    if _LIBC.mincore(ctypes.c_void_p(lo), ctypes.c_size_t(n * mmap.PAGESIZE), vec):
        raise OSError(ctypes.get_errno(), "mincore failed")
    return all(v & 1 for v in vec)


def hit_rates(model, cache, ids: list[int]) -> list[float]:
    """Per sparse layer: the fraction of its routed experts fully resident before each step."""
    layers = [b.moe for b in model.transformer.blk if b.moe is not None]
    hits, runs = [0] * len(layers), [0] * len(layers)
    for t in ids:
        stacks = [[s for s in (m.ffn_gate_exps, m.ffn_up_exps, m.ffn_down_exps) if s is not None] for m in layers]
        before = [{e for e in range(m.ffn_up_exps.n_expert) if all(resident(s, e) for s in ss)}
                  for m, ss in zip(layers, stacks)]
        for m in layers:
            m.ffn_up_exps.touched = set()
        decode_one(model.transformer, t, cache)
        for i, m in enumerate(layers):
            hits[i] += len(m.ffn_up_exps.touched & before[i])
            runs[i] += len(m.ffn_up_exps.touched)
    return [h / r if r else 0.0 for h, r in zip(hits, runs)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--budget", default=None)
    ap.add_argument("--steps", type=int, default=88)
    ap.add_argument("--hits", type=int, default=0, help="then this many steps counting page-cache hits")
    args = ap.parse_args()
    model = gguf_runtime.load(args.model, n_ctx=256, memory_budget=args.budget)
    cache = model._new_cache(256)
    ids = np.random.default_rng(0).integers(1, model.config.vocab_size, 16 + args.steps + args.hits).tolist()
    with torch.inference_mode():
        prefill(model.transformer, ids[:8], cache)
        for t in ids[8:16]:
            decode_one(model.transformer, t, cache)
        t0 = time.perf_counter()
        for t in ids[16:16 + args.steps]:
            decode_one(model.transformer, t, cache)
        dt = time.perf_counter() - t0
        rates = hit_rates(model, cache, ids[16 + args.steps:]) if args.hits else []
    plan = model.memory_plan
    print(f"budget {args.budget}: {args.steps} random-token decode steps at {args.steps / dt:.2f} tok/s"
          + (f"; plan: resident {plan.resident >> 20} MiB, experts cached {plan.expert_cache >> 20} MiB, "
             f"streamed {plan.streamed >> 20} MiB" if plan else "")
          + (f"; routed experts resident before their step: {sum(rates) / len(rates):.1%} "
             f"(layers {min(rates):.0%}-{max(rates):.0%}, {args.hits} steps)" if rates else ""), flush=True)


if __name__ == "__main__":
    main()
