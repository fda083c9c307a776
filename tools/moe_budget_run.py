"""Decode speed of a (MoE) GGUF fed random token ids, with or without a memory budget.

    tools/memlimit_run.sh 380M M.gguf -- .venv/bin/python tools/moe_budget_run.py M.gguf [--budget 380M]

Prefills 8 random ids, decodes 8 more to warm up, then times `--steps` decode steps of random
ids (teacher-forced: each token's route follows its own embedding, not a degenerate greedy
loop). With `--budget`, gguf_runtime.load(memory_budget=...) plans the memory and advises the
streaming experts' pages (gguf_runtime/memory.py); without, the kernel pages the map as it likes.
BENCHMARKS.md section 2 ("memory budget").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gguf_runtime  # noqa: E402
from gguf_runtime.generate import decode_one, prefill  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--budget", default=None)
    ap.add_argument("--steps", type=int, default=88)
    args = ap.parse_args()
    model = gguf_runtime.load(args.model, n_ctx=256, memory_budget=args.budget)
    cache = model._new_cache(256)
    ids = np.random.default_rng(0).integers(1, model.config.vocab_size, 16 + args.steps).tolist()
    with torch.inference_mode():
        prefill(model.transformer, ids[:8], cache)
        for t in ids[8:16]:
            decode_one(model.transformer, t, cache)
        t0 = time.perf_counter()
        for t in ids[16:]:
            decode_one(model.transformer, t, cache)
        dt = time.perf_counter() - t0
    plan = model.memory_plan
    print(f"budget {args.budget}: {args.steps} random-token decode steps at {args.steps / dt:.2f} tok/s"
          + (f"; plan: resident {plan.resident >> 20} MiB, experts cached {plan.expert_cache >> 20} MiB, "
             f"streamed {plan.streamed >> 20} MiB" if plan else ""), flush=True)


if __name__ == "__main__":
    main()
