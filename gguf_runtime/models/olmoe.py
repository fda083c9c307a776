"""OLMoE: softmax-routed experts without renormalising the top k, and Q/K RMSNorms over the
whole projection (H*Dk, before the split into heads), not per head."""

from __future__ import annotations

from .hparams import base_keys
from .spec import MOE_BLOCK, ArchSpec, ConvertSpec, Family

FAMILIES = [
    Family(ArchSpec("olmoe", rope_style="neox", moe=True, expert_weights_norm=False, qk_norm="whole"),
           ConvertSpec("olmoe", base_keys, MOE_BLOCK, qk_norm_full=True), hf_classes=("OlmoeForCausalLM",)),
]
