"""Expert bytes a MoE GGUF's decode steps read, decode speed and peak RSS.

    python tools/moe_traffic.py MODEL.gguf [--prompt 32] [--decode 16] [--threads 2] [--json F]

Prefills `--prompt` token ids, then decodes `--decode` greedy tokens. Before each decode step
every ExpertStack's `touched` set is reset (the bookkeeping of
tests/test_moe.py::test_decode_step_touches_only_routed_experts); after it, the bytes of the
experts handed out are summed (an expert's bytes are its rows' blocks, read once per step).
Reported per decoded token: routed-expert bytes read, against all expert bytes in the file
(expected about expert_used_count / expert_count), and the dense bytes every token reads
(bench.floor.dense_weight_bytes: every other weight; the token embedding only when tied).
Plus decode tok/s and the process's peak RSS (ru_maxrss: resident pages, the memory-mapped
file's included). The model's GGUF is only
memory-mapped, so run it inside a memory cgroup below the file size to see it still decode
(tools/memlimit_run.sh). On a 2-core machine that other processes load, decode speed depends
mostly on OpenMP's spin-waiting (torch and the native kernels share torch's libgomp pool, whose
threads spin between parallel regions): time it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import gguf_runtime  # noqa: E402
from gguf_runtime.bench.floor import dense_weight_bytes  # noqa: E402
from gguf_runtime.generate import decode_one, prefill  # noqa: E402


def expert_stacks(model) -> list:
    """Every ExpertStack of the model's sparse blocks."""
    return [s for blk in model.transformer.blk if blk.moe is not None
            for s in (blk.moe.ffn_gate_exps, blk.moe.ffn_up_exps, blk.moe.ffn_down_exps)
            if s is not None]


def measure(path: str, n_prompt: int, n_decode: int, threads: int) -> dict:
    t0 = time.perf_counter()
    model = gguf_runtime.load(path, n_ctx=n_prompt + n_decode + 8, threads=threads)
    load_s = time.perf_counter() - t0
    stacks = expert_stacks(model)
    all_expert = sum(s.weight.nbytes for s in stacks)
    c = model.config
    low = min(300, c.vocab_size // 2)            # past the special ids of a real vocabulary
    ids = [low + (i * 7919) % (c.vocab_size - low) for i in range(n_prompt)]
    touched_bytes, decode_s = [], 0.0
    with torch.inference_mode():
        cache = model._new_cache(model.n_ctx)
        logits = prefill(model.transformer, ids, cache)
        for _ in range(n_decode):
            for s in stacks:
                s.touched = set()
            t0 = time.perf_counter()
            logits = decode_one(model.transformer, int(logits.argmax()), cache)
            decode_s += time.perf_counter() - t0
            touched_bytes.append(sum(len(s.touched) * s.expert_nbytes for s in stacks))
    per_token = sum(touched_bytes) / len(touched_bytes)
    return {"file": str(path), "file_bytes": Path(path).stat().st_size,
            "experts": c.expert_count, "experts_used": c.expert_used_count,
            "expert_bytes_all": all_expert, "expert_bytes_per_token": round(per_token),
            "expert_fraction": round(per_token / all_expert, 4),
            "expected_fraction": round(c.expert_used_count / c.expert_count, 4),
            "dense_bytes_per_token": dense_weight_bytes(model.gguf),
            "load_s": round(load_s, 2), "decode_tokens": n_decode,
            "decode_tok_s": round(n_decode / decode_s, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    report = measure(args.model, args.prompt, args.decode, args.threads)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
