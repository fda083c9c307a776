"""llama: Llama 1-3, Mistral, Mixtral (llama with experts), SmolLM, Falcon 3.

The reference block: RMSNorm, sequential residuals, SwiGLU FFN (or softmax-routed experts),
RoPE over adjacent pairs (so the converter permutes Hugging Face's half-rotated Q/K rows).
"""

from __future__ import annotations

from .hparams import KV, HParams, base_keys
from .spec import MOE_BLOCK, ArchSpec, ConvertSpec, Family


def llama_keys(h: HParams, kv: KV) -> None:
    """LlamaModel.set_gguf_parameters: the base keys and the rope width of a whole head."""
    base_keys(h, kv)
    kv["add_rope_dimension_count"] = h.head_dim


FAMILIES = [
    Family(ArchSpec("llama", moe=True),
           ConvertSpec("llama", llama_keys, MOE_BLOCK, permute_qk=True),
           hf_classes=("LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM"),
           aliases=("mistral", "smollm", "falcon3")),
]
