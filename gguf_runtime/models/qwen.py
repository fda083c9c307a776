"""Qwen 1 / 2 / 3 and their Mixture-of-Experts versions: llama blocks with RoPE over halves
(neox), Qwen 2's Q/K/V biases (read from the file), Qwen 3's per-head Q/K RMSNorm, and
(qwen2moe) a shared expert gated by sigmoid(x . ffn_gate_inp_shexp) beside unnormalised top-k
experts. Qwen 1 (`qwen`): fused, biased attn_qkv, and a feed_forward_length twice the FFN's
width (as llama.cpp's QwenModel writes it); it runs from files (its Hugging Face model is
remote code, which the converter does not read).
"""

from __future__ import annotations

from ..errors import UnsupportedError
from .hparams import KV, HParams, base_keys
from .spec import MOE_BLOCK, PER_BLOCK, ArchSpec, ConvertSpec, Family


def qwen_moe_keys(h: HParams, kv: KV) -> None:
    """Qwen2MoeModel (also Qwen3MoeModel): the base keys plus the expert widths."""
    sparse_step = h.cfg.get("decoder_sparse_step", 1)
    if h.cfg.get("mlp_only_layers") or sparse_step not in (None, 1):
        raise UnsupportedError(f"{h.source}: dense layers between sparse ones (mlp_only_layers, "
                               f"decoder_sparse_step) are not supported; every layer must be "
                               f"sparse")
    base_keys(h, kv)
    kv["add_expert_feed_forward_length"] = h.n_ff_exp
    if (shared := h.cfg.get("shared_expert_intermediate_size")) is not None:
        kv["add_expert_shared_feed_forward_length"] = int(shared)


FAMILIES = [
    Family(ArchSpec("qwen", rope_style="neox", ffn_length_halved=True)),
    Family(ArchSpec("qwen2", rope_style="neox"), ConvertSpec("qwen2", base_keys, PER_BLOCK),
           hf_classes=("Qwen2ForCausalLM",)),
    Family(ArchSpec("qwen3", rope_style="neox", qk_norm="head"), ConvertSpec("qwen3", base_keys, PER_BLOCK),
           hf_classes=("Qwen3ForCausalLM",)),
    Family(ArchSpec("qwen2moe", rope_style="neox", moe=True, expert_weights_norm=False),
           ConvertSpec("qwen2moe", qwen_moe_keys, MOE_BLOCK), hf_classes=("Qwen2MoeForCausalLM",)),
    Family(ArchSpec("qwen3moe", rope_style="neox", moe=True, qk_norm="head"),
           ConvertSpec("qwen3moe", qwen_moe_keys, MOE_BLOCK), hf_classes=("Qwen3MoeForCausalLM",)),
]
