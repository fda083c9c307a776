"""Granite and Granite-MoE: llama blocks with four multipliers (embedding, attention, residual,
logits), read from the file; Granite-MoE's routed experts (and optional shared ones)."""

from __future__ import annotations

from .hparams import KV, HParams
from .llama import llama_keys
from .spec import MOE_BLOCK, PER_BLOCK, ArchSpec, ConvertSpec, Family

_GRANITE_SCALES = (("attention_multiplier", "add_attention_scale"),
                   ("embedding_multiplier", "add_embedding_scale"),
                   ("residual_multiplier", "add_residual_scale"),
                   ("logits_scaling", "add_logit_scale"))


def granite_keys(h: HParams, kv: KV) -> None:
    """GraniteModel (a LlamaModel without head_dim) and GraniteMoeModel: the multipliers."""
    llama_keys(HParams({k: v for k, v in h.cfg.items() if k != "head_dim"}, h.source), kv)
    for hf_key, method in _GRANITE_SCALES:
        if h.cfg.get(hf_key):
            kv[method] = float(h.cfg[hf_key])
    if shared := h.cfg.get("shared_intermediate_size"):
        kv["add_expert_shared_feed_forward_length"] = int(shared)


FAMILIES = [
    Family(ArchSpec("granite", moe=True), ConvertSpec("granite", granite_keys, PER_BLOCK, permute_qk=True),
           hf_classes=("GraniteForCausalLM",)),
    Family(ArchSpec("granitemoe", moe=True),
           ConvertSpec("granitemoe", granite_keys, MOE_BLOCK, permute_qk=True),
           hf_classes=("GraniteMoeForCausalLM", "GraniteMoeSharedForCausalLM")),
]
