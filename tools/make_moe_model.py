"""Make the MoE benchmark model: a random transformers Qwen3-MoE, converted by our converter.

    python tools/make_moe_model.py [--out-dir /tmp/moe_bench] [--layers 26] [--type Q4_K_M]

1. `Qwen3MoeForCausalLM` built from a config with `torch.manual_seed(seed)`, its weights drawn
   by transformers' own initialiser (normal, std 0.02; norms 1) directly in bfloat16, saved
   with `save_pretrained(max_shard_size="2GB")` into OUT_DIR/hf (skipped when
   OUT_DIR/hf/config.json exists). Shape (Qwen3-30B-A3B's proportions, smaller): 26 blocks,
   width 1024, 16 query / 4 kv heads of 128 with Q/K norms, 64 experts of width 512 with 4 used
   per token, vocab 32000, untied output: 2.82 B weights (0.37 B active per token), 5.6 GB of
   bf16 safetensors in 3 shards. Measured: 134 s, peak RSS 9.3 GB (the bf16 model, plus
   save_pretrained's per-expert copies of transformers' fused expert tensors).
2. `tools/convert.py OUT_DIR/hf -o OUT_DIR/qwen3moe-random-26L-Q4_K_M.gguf --type Q4_K_M` in a
   child process, timed, with the child's peak RSS (getrusage of children). The converter
   streams one tensor at a time (an expert stack is assembled from its 64 experts:
   64 x 512 x 1024 float32 = 128 MiB), so its peak RSS stays near 450 MB; the time is the
   reference K-quant quantizers on 2.8 B weights. Measured: 1405 s wall on 2 cores shared with
   other jobs (it got 30-45% of the CPU), peak RSS 444 MiB, output 1 715 486 880 bytes
   (Q4_K; Q6_K for output and llama.cpp's "more bits" attn_v / ffn_down_exps layers; attn_k /
   attn_v would be Q8_0 only with 8 experts). No tokenizer (`tokenizer.ggml.model` "none"):
   run it on token ids (tools/moe_traffic.py).

Writes OUT_DIR/make_moe_model.json with the numbers. `--layers 2` makes a quick small one.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = dict(vocab_size=32000, hidden_size=1024, intermediate_size=3072,
              moe_intermediate_size=512, num_attention_heads=16, num_key_value_heads=4,
              head_dim=128, num_experts=64, num_experts_per_tok=4, norm_topk_prob=True,
              max_position_embeddings=4096, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
              tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def build_hf(folder: Path, n_layer: int, seed: int) -> int:
    """Save the random bf16 model into `folder`; returns its number of weights."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.Qwen3MoeConfig(**CONFIG, num_hidden_layers=n_layer)
    model = transformers.Qwen3MoeForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder, max_shard_size="2GB")
    return n


def convert(folder: Path, out: Path, out_type: str) -> dict:
    """Run our converter in a child process; wall time, peak RSS of the child, output size."""
    cmd = [sys.executable, str(ROOT / "tools" / "convert.py"), str(folder), "-o", str(out),
           "--type", out_type, "--force"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss     # Linux: KiB
    return {"convert_wall_s": round(wall, 1), "convert_peak_rss_mib": round(peak_kib / 1024),
            "gguf_bytes": out.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/moe_bench"))
    ap.add_argument("--layers", type=int, default=26)
    ap.add_argument("--type", default="Q4_K_M")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    hf = args.out_dir / "hf"
    report: dict = {"layers": args.layers, "type": args.type}
    if not (hf / "config.json").is_file():
        t0 = time.perf_counter()
        report["weights"] = build_hf(hf, args.layers, args.seed)
        report["build_hf_wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"{hf}: {report['weights'] / 1e9:.2f} B weights "
              f"({report['build_hf_wall_s']} s)", flush=True)
    out = args.out_dir / f"qwen3moe-random-{args.layers}L-{args.type}.gguf"
    report.update(convert(hf, out, args.type))
    print(json.dumps(report))
    (args.out_dir / "make_moe_model.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
