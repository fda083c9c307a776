"""Write a random Qwen3-MoE-shaped GGUF for benchmarks, at Q4_K_M-like types.

    python tools/make_moe_model.py OUT.gguf [--scale 1.0] [--seed 0]

At scale 1: 26 blocks, width 1024, 16 query / 4 kv heads of 128 (Q/K norms), 64 experts of
width 512 with 4 used per token, vocab 32000: about 2.8 B weights in ~1.7 GB, of which ~0.37 B
are active per token. `--scale s` multiplies the block and expert counts (at least 2 blocks
and 8 experts), e.g. --scale 0.05 writes a ~70 MB file in seconds.

Types follow llama.cpp's Q4_K_M: Q4_K everywhere, Q6_K for `output` and for `attn_v` /
`ffn_down_exps` on llama.cpp's "more bits" layers; router, norms F32. No tokenizer is written:
`tokenizer.ggml.model` is "none" (llama.cpp then reads `vocab_size`); run it on token ids.

Speed: quantizing 2.7 B weights with the reference quantizers would take about 15 minutes, so
each (type, row length) gets a pool of random rows quantized once by `quant.quantize`
(llama.cpp's reference quantizers), and every tensor is rows drawn at random from its pool:
valid blocks with real quantization statistics, at the speed of a numpy gather. Tensors are
written one at a time, so memory stays at about one tensor.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from quant import quantize, row_nbytes  # noqa: E402

ARCH = "qwen3moe"
POOL_ROWS = 2048
WEIGHT_STD = 0.02


@dataclass(frozen=True)
class Shape:
    n_layer: int = 26
    n_embd: int = 1024
    n_head: int = 16
    n_head_kv: int = 4
    head_dim: int = 128
    n_expert: int = 64
    n_expert_used: int = 4
    n_ff_exp: int = 512
    n_vocab: int = 32000
    n_ctx: int = 4096

    def scaled(self, s: float) -> "Shape":
        return Shape(n_layer=max(2, round(self.n_layer * s)),
                     n_expert=max(8, round(self.n_expert * s)))


def more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits: Q4_K_M's Q6_K layers for attn_v and ffn_down."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_plan(s: Shape) -> list[tuple[str, tuple[int, ...], T]]:
    """(GGUF name, PyTorch-order shape, type) of every tensor, in file order."""
    q, kv, d = s.n_head * s.head_dim, s.n_head_kv * s.head_dim, s.n_embd
    plan = [("token_embd.weight", (s.n_vocab, d), T.Q4_K)]
    for i in range(s.n_layer):
        big = T.Q6_K if more_bits(i, s.n_layer) else T.Q4_K
        b = f"blk.{i}."
        plan += [(b + "attn_norm.weight", (d,), T.F32),
                 (b + "attn_q.weight", (q, d), T.Q4_K),
                 (b + "attn_k.weight", (kv, d), T.Q4_K),
                 (b + "attn_v.weight", (kv, d), big),
                 (b + "attn_output.weight", (d, q), T.Q4_K),
                 (b + "attn_q_norm.weight", (s.head_dim,), T.F32),
                 (b + "attn_k_norm.weight", (s.head_dim,), T.F32),
                 (b + "ffn_norm.weight", (d,), T.F32),
                 (b + "ffn_gate_inp.weight", (s.n_expert, d), T.F32),
                 (b + "ffn_gate_exps.weight", (s.n_expert, s.n_ff_exp, d), T.Q4_K),
                 (b + "ffn_up_exps.weight", (s.n_expert, s.n_ff_exp, d), T.Q4_K),
                 (b + "ffn_down_exps.weight", (s.n_expert, d, s.n_ff_exp), big)]
    plan += [("output_norm.weight", (d,), T.F32), ("output.weight", (s.n_vocab, d), T.Q6_K)]
    return plan


def nbytes(shape: tuple[int, ...], qtype: T) -> int:
    return int(np.prod(shape[:-1], dtype=np.int64)) * row_nbytes(qtype, shape[-1])


class RowPool:
    """Per (type, row length): POOL_ROWS random rows quantized once; tensors gather from it."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.pools = rng, {}

    def tensor(self, shape: tuple[int, ...], qtype: T) -> np.ndarray:
        n_rows, n_cols = int(np.prod(shape[:-1], dtype=np.int64)), shape[-1]
        if qtype == T.F32:
            if len(shape) == 1:                      # norms: around 1
                return (1 + 0.1 * self.rng.standard_normal(n_cols)).astype(np.float32)
            return (WEIGHT_STD * self.rng.standard_normal(shape)).astype(np.float32)
        key = (qtype, n_cols)
        if key not in self.pools:
            x = torch.from_numpy(WEIGHT_STD * self.rng.standard_normal((POOL_ROWS, n_cols),
                                                                       dtype=np.float32))
            self.pools[key] = quantize(x, qtype).numpy().reshape(POOL_ROWS, -1)   # (P, row B)
        pick = self.rng.integers(0, POOL_ROWS, n_rows)
        return self.pools[key][pick].reshape(-1)                                  # (R * row B,)


def write_metadata(w: GGUFWriter, s: Shape) -> None:
    w.add_name(f"random-qwen3moe-{s.n_layer}L-{s.n_expert}E")
    w.add_context_length(s.n_ctx)
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(s.n_ff_exp * s.n_expert_used)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_key_length(s.head_dim)
    w.add_value_length(s.head_dim)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_expert_count(s.n_expert)
    w.add_expert_used_count(s.n_expert_used)
    w.add_expert_feed_forward_length(s.n_ff_exp)
    w.add_vocab_size(s.n_vocab)
    w.add_file_type(15)                              # LLAMA_FTYPE_MOSTLY_Q4_K_M
    w.add_string("tokenizer.ggml.model", "none")


def make(out: Path, shape: Shape, seed: int = 0, log=print) -> int:
    """Write the model to `out`; returns its tensor bytes."""
    plan, pool = tensor_plan(shape), RowPool(np.random.default_rng(seed))
    w = GGUFWriter(str(out), ARCH)
    write_metadata(w, shape)
    for name, shp, qtype in plan:
        if qtype == T.F32:
            w.add_tensor_info(name, shp, np.dtype(np.float32), nbytes(shp, qtype))
        else:                                        # gguf-py takes quantized shapes in bytes
            byte_shape = (*shp[:-1], row_nbytes(qtype, shp[-1]))
            w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes(shp, qtype), qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    t0, total = time.perf_counter(), 0
    for k, (name, shp, qtype) in enumerate(plan):
        w.write_tensor_data(pool.tensor(shp, qtype))
        total += nbytes(shp, qtype)
        if name.endswith("ffn_down_exps.weight"):
            log(f"  block {name.split('.')[1]:>3}: {total / 2**20:9.1f} MiB "
                f"({time.perf_counter() - t0:.1f} s)")
    w.close()
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply block and expert counts (default 1: ~1.7 GB)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    shape = Shape().scaled(args.scale)
    print(f"{args.out}: {shape}")
    total = make(args.out, shape, args.seed)
    print(f"wrote {total / 1e9:.2f} GB of tensors ({total / 2**30:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
