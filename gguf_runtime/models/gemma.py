"""Gemma 1 / 2 / 3: GeGLU FFN, embeddings scaled by sqrt(n_embd), RMSNorm weights stored as
1 + w (the converter adds the 1), RoPE over halves. Gemma 2 and 3 norm both sides of each
sub-layer (post_attention_norm, post_ffw_norm) and alternate sliding-window layers (periods 2
and 6, llama.cpp's defaults); Gemma 2 soft-caps attention and final logits; Gemma 3 has per-head
Q/K norms and its own rope base for the sliding layers.
"""

from __future__ import annotations

from ..errors import ConvertError
from .hparams import KV, HParams, base_keys
from .spec import PER_BLOCK, ArchSpec, ConvertSpec, Family

# Gemma 2/3 norm both sides of each sub-layer; the HF "post_attention" norm is a real post-norm.
PER_BLOCK_POST_NORMS = {**PER_BLOCK,
                        "post_attention_layernorm": "post_attention_norm",
                        "pre_feedforward_layernorm": "ffn_norm",
                        "post_feedforward_layernorm": "post_ffw_norm"}


def gemma_keys(h: HParams, kv: KV) -> None:
    """GemmaModel / Gemma2Model list their keys instead of calling the base."""
    kv.update(add_context_length=int(h.find("max_position_embeddings")),
              add_embedding_length=h.n_embd, add_block_count=h.n_layer,
              add_feed_forward_length=h.n_ff, add_head_count=h.n_head,
              add_head_count_kv=h.n_kv, add_layer_norm_rms_eps=float(h.find("rms_norm_eps")),
              add_key_length=h.head_dim, add_value_length=h.head_dim)
    # Not written by llama.cpp (which assumes 10000 for both); same value for the usual models.
    theta = float(h.global_rope.get("rope_theta", 10000.0))
    kv["add_rope_freq_base"] = theta


def gemma2_keys(h: HParams, kv: KV) -> None:
    gemma_keys(h, kv)
    kv["add_rope_freq_base_swa"] = kv["add_rope_freq_base"]   # llama.cpp's gemma2 default
    kv["add_attn_logit_softcapping"] = float(h.find("attn_logit_softcapping"))
    kv["add_final_logit_softcapping"] = float(h.find("final_logit_softcapping"))
    kv["add_sliding_window"] = int(h.find("sliding_window"))


def gemma3_keys(h: HParams, kv: KV) -> None:
    base_keys(h, kv)
    kv.update(add_context_length=int(h.find("max_position_embeddings", default=131072)),
              add_layer_norm_rms_eps=float(h.find("rms_norm_eps", default=1e-6)),
              add_key_length=int(h.find("head_dim", default=256)),
              add_value_length=int(h.find("head_dim", default=256)),
              add_rope_freq_base=float(h.global_rope.get("rope_theta", 1_000_000.0)),
              add_head_count_kv=int(h.find("num_key_value_heads", default=4)))
    if h.cfg.get("attn_logit_softcapping") is not None:
        raise ConvertError(f"{h.source}: Gemma 3 has no attention soft-capping")
    if cap := h.cfg.get("final_logit_softcapping"):
        kv["add_final_logit_softcapping"] = float(cap)
    if h.cfg.get("sliding_window_pattern") != 1:
        kv["add_sliding_window"] = int(h.find("sliding_window"))


_GEMMA = dict(rope_style="neox", activation="gelu", embed_scale_sqrt=True)
FAMILIES = [
    Family(ArchSpec("gemma", **_GEMMA), ConvertSpec("gemma", gemma_keys, PER_BLOCK, norm_shift=1.0),
           hf_classes=("GemmaForCausalLM",)),
    Family(ArchSpec("gemma2", **_GEMMA, swa_pattern=2, swa_rope="own_base"),
           ConvertSpec("gemma2", gemma2_keys, PER_BLOCK_POST_NORMS, norm_shift=1.0, swa_period=2),
           hf_classes=("Gemma2ForCausalLM",)),
    Family(ArchSpec("gemma3", **_GEMMA, swa_pattern=6, qk_norm="head"),
           ConvertSpec("gemma3", gemma3_keys, PER_BLOCK_POST_NORMS, norm_shift=1.0, swa_period=6),
           hf_classes=("Gemma3ForCausalLM",)),
]
