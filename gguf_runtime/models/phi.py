"""Phi-3 and Phi-1 / 1.5 / 2.

phi3: llama blocks with fused tensors: attn_qkv = [Q; K; V] and ffn_up = [gate; up] (2F rows,
no ffn_gate), partial RoPE over halves; its sliding window is not applied (as llama.cpp).
phi2: LayerNorm (weight and bias) and a parallel block: one norm feeds both attention and a
plain GELU FFN with biases, x + (attn(n) + ffn(n)); partial RoPE over halves; a biased output
head. Hugging Face's PhiForCausalLM names them self_attn.dense, mlp.fc1 / fc2 and
model.final_layernorm.
"""

from __future__ import annotations

from ..errors import ConvertError, UnsupportedError
from .hparams import KV, HParams
from .spec import PER_BLOCK, TOP_LEVEL, ArchSpec, ConvertSpec, Family


def phi3_keys(h: HParams, kv: KV) -> None:
    rot = float(h.rope.get("partial_rotary_factor", 1.0))
    if h.rope.get("long_factor"):
        raise UnsupportedError(f"{h.source}: Phi-3 long-context rope factors (longrope) are "
                               f"not supported yet")
    if "original_max_position_embeddings" not in h.rope:
        raise ConvertError(f"{h.source}: config.json lacks original_max_position_embeddings")
    kv.update(add_context_length=int(h.find("max_position_embeddings", "n_positions")),
              add_rope_scaling_orig_ctx_len=int(h.rope["original_max_position_embeddings"]),
              add_embedding_length=h.n_embd, add_feed_forward_length=h.n_ff,
              add_block_count=h.n_layer, add_head_count=h.n_head, add_head_count_kv=h.n_kv,
              add_layer_norm_rms_eps=float(h.find("rms_norm_eps")),
              add_rope_dimension_count=int(rot * h.n_embd) // h.n_head,
              add_rope_freq_base=float(h.global_rope["rope_theta"]),
              add_sliding_window=int(h.cfg.get("sliding_window") or 0))


def phi2_keys(h: HParams, kv: KV) -> None:
    """Phi2Model.set_gguf_parameters. llama.cpp writes feed_forward_length = 4 * n_embd and
    head_count_kv = head_count, which the released models have; written here from the config,
    so a model of other widths converts to a file that is still true; rope_theta where it is
    not llama.cpp's assumed 10000."""
    if h.cfg.get("qk_layernorm"):
        raise UnsupportedError(f"{h.source}: Phi's qk_layernorm is not supported (llama.cpp's "
                               f"phi2 graph has no Q/K norm)")
    rot = float(h.rope.get("partial_rotary_factor", 0.5))
    kv.update(add_context_length=int(h.find("n_positions", "max_position_embeddings")),
              add_embedding_length=h.n_embd, add_feed_forward_length=h.n_ff,
              add_block_count=h.n_layer, add_head_count=h.n_head, add_head_count_kv=h.n_kv,
              add_layer_norm_eps=float(h.find("layer_norm_epsilon", "layer_norm_eps")),
              add_rope_dimension_count=int(rot * h.n_embd) // h.n_head)
    if (theta := float(h.global_rope.get("rope_theta", 10000.0))) != 10000.0:
        kv["add_rope_freq_base"] = theta
    kv["add_add_bos_token"] = False          # as llama.cpp (a tokenizer_config.json may override)


PHI2_BLOCK = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
              "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.dense": "attn_output", "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down"}
PHI2_TOP = {**TOP_LEVEL, "model.final_layernorm": "output_norm"}

FAMILIES = [
    Family(ArchSpec("phi3", rope_style="neox", ffn="gated_fused"), ConvertSpec("phi3", phi3_keys, PER_BLOCK),
           hf_classes=("Phi3ForCausalLM",)),
    Family(ArchSpec("phi2", rope_style="neox", activation="gelu", norm="layer", residual="parallel",
                    ffn="plain"),
           ConvertSpec("phi2", phi2_keys, PHI2_BLOCK, top_names=PHI2_TOP, plain_ffn=True),
           hf_classes=("PhiForCausalLM",)),
]
