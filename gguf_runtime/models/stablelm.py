"""StableLM (StableLM 2, StableLM-3B-4E1T, StableCode): LayerNorm with biases, partial RoPE over
halves, SwiGLU FFN, Q/K/V biases when the model has them. The residual is parallel where the
file has no ffn_norm (use_parallel_residual: one norm feeds attention and FFN,
x + attn(n) + ffn(n)), sequential otherwise: llama.cpp decides by the tensor's presence.
"""

from __future__ import annotations

from ..errors import UnsupportedError
from .hparams import KV, HParams
from .spec import PER_BLOCK, ArchSpec, ConvertSpec, Family


def stablelm_keys(h: HParams, kv: KV) -> None:
    """StableLMModel.set_gguf_parameters; rope_theta added where it is not 10000 (llama.cpp
    writes none and assumes 10000, the released models' value)."""
    if h.cfg.get("qk_layernorm"):
        raise UnsupportedError(f"{h.source}: StableLM's per-head Q/K LayerNorm (qk_layernorm) is "
                               f"not supported yet")
    rot = float(h.rope.get("partial_rotary_factor", h.find("rope_pct", default=0.25)))
    kv.update(add_context_length=int(h.find("max_position_embeddings")),
              add_embedding_length=h.n_embd, add_block_count=h.n_layer,
              add_feed_forward_length=h.n_ff,
              add_rope_dimension_count=int(rot * (h.n_embd // h.n_head)),
              add_head_count=h.n_head, add_head_count_kv=h.n_kv,
              add_parallel_residual=bool(h.cfg.get("use_parallel_residual", True)),
              add_layer_norm_eps=float(h.find("layer_norm_eps", "norm_eps")))
    if (theta := float(h.global_rope.get("rope_theta", 10000.0))) != 10000.0:
        kv["add_rope_freq_base"] = theta


FAMILIES = [
    Family(ArchSpec("stablelm", rope_style="neox", norm="layer", residual="parallel_without_ffn_norm"),
           ConvertSpec("stablelm", stablelm_keys, PER_BLOCK), hf_classes=("StableLmForCausalLM",)),
]
