"""Write a random Llama-shaped Hugging Face folder of about 1.8 B weights for benchmarks.

    python tools/make_dense_model.py OUT_DIR [--layers 28] [--seed 0]
    gguf-runtime convert OUT_DIR -o dense-Q4_K_M.gguf --type Q4_K_M    # about 1.1 GB

Shape (per block): width 2048, 16 query / 4 kv heads of 128, SwiGLU width 8192; 28 blocks,
untied output, vocabulary 49152. Weights are transformers' own random initialisation
(`LlamaForCausalLM(config)` under `torch.manual_seed`), stored as bfloat16 in 2 GB shards.
The tokenizer is SmolLM2's byte-level BPE (vocabulary and merges read from the SmolLM2 GGUF
the test extras install), written as tokenizer.json with the `tokenizers` library, so the
converted file carries a real vocabulary that llama.cpp and gguf-runtime both load.

Memory: the model is built in bfloat16 (about 3.6 GB); writing takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gguf_runtime  # noqa: E402
from gguf_runtime.default_models import smollm2_135m_path  # noqa: E402


def smollm2_tokenizer(out_dir: Path) -> int:
    """tokenizer.json (+ tokenizer_config.json) holding SmolLM2's vocabulary; returns its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    meta = gguf_runtime.open_gguf(smollm2_135m_path()).metadata
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.save(str(out_dir / "tokenizer.json"))
    eos = tokens[meta["tokenizer.ggml.eos_token_id"]]
    (out_dir / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": tokens[meta["tokenizer.ggml.bos_token_id"]], "eos_token": eos,
         "add_bos_token": False, "model_max_length": 4096}))
    return len(tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    args.out_dir.mkdir(parents=True, exist_ok=True)
    n_vocab = smollm2_tokenizer(args.out_dir)
    config = LlamaConfig(vocab_size=n_vocab, hidden_size=2048, intermediate_size=8192,
                         num_hidden_layers=args.layers, num_attention_heads=16,
                         num_key_value_heads=4, head_dim=128, max_position_embeddings=4096,
                         rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=False,
                         torch_dtype="bfloat16")
    t0 = time.time()
    torch.manual_seed(args.seed)
    torch.set_default_dtype(torch.bfloat16)
    model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(args.out_dir, max_shard_size="2GB")
    print(f"{args.out_dir}: {n / 1e9:.2f} B weights, bfloat16, {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
