"""GLM-4.5 (glm4moe): a sigmoid router with exp_probs_b, shared experts, leading dense layers,
per-head Q/K norms, partial RoPE over halves. Hugging Face's "post_attention_layernorm" is
stored as post_attention_norm but is the pre-FFN norm (llama.cpp's glm4-moe graph), so the
block reads its FFN norm under that name and has no post-norm. The trailing multi-token
prediction (nextn) blocks are not converted and, in files that have them, not run.
"""

from __future__ import annotations

from gguf import ExpertGatingFuncType

from .hparams import KV, HParams, base_keys
from .spec import MOE_BLOCK, ArchSpec, ConvertSpec, Family

# llama.cpp's tensor map resolves post_attention_layernorm to ATTN_POST_NORM for glm4moe (no
# FFN_NORM in its tensor list), though the graph uses it as the pre-FFN norm.
GLM4MOE_BLOCK = {**MOE_BLOCK, "post_attention_layernorm": "post_attention_norm"}


def glm4moe_keys(h: HParams, kv: KV) -> None:
    """Glm4MoeModel as llama.cpp's `--no-mtp` writes it: RoPE over partial_rotary_factor (0.5
    unset) of the head, sigmoid router, and neither the MTP blocks nor nextn_predict_layers
    (the runtime skips such blocks in files that have them)."""
    base_keys(h, kv)
    rot = float(h.rope.get("partial_rotary_factor", 0.5))
    kv.update(add_rope_dimension_count=int(h.head_dim * rot),
              add_expert_feed_forward_length=h.n_ff_exp,
              add_expert_shared_count=int(h.cfg.get("n_shared_experts") or 0),
              add_expert_gating_func=ExpertGatingFuncType.SIGMOID)
    if (dense := h.cfg.get("first_k_dense_replace")) is not None:
        kv["add_leading_dense_block_count"] = int(dense)
    if (scale := h.cfg.get("routed_scaling_factor")) is not None:
        kv["add_expert_weights_scale"] = float(scale)
    if (norm := h.cfg.get("norm_topk_prob")) is not None:
        kv["add_expert_weights_norm"] = bool(norm)


FAMILIES = [
    Family(ArchSpec("glm4moe", rope_style="neox", moe=True, expert_weights_norm=None,
                    expert_gating="file", expert_gating_unset="sigmoid",
                    ffn_norm="post_attention_norm", qk_norm="head"),
           ConvertSpec("glm4moe", glm4moe_keys, GLM4MOE_BLOCK, drop_extra_layers=True),
           hf_classes=("Glm4MoeForCausalLM",)),
]
