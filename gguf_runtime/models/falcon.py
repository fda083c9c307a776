"""Falcon (7B / 40B / 180B): LayerNorm with biases, a parallel block (x + attn(n) + ffn(m)),
fused QKV without biases, multi-query (7B) or grouped-query (40B+) attention, RoPE over halves,
a plain GELU FFN. Falcon 7B norms once (input_layernorm, n = m); the "new decoder
architecture" (40B+) norms the attention input with ln_attn (attn_norm_2) and the FFN's with
ln_mlp (attn_norm), as llama.cpp's graph.

Hugging Face groups the fused QKV rows per kv head ([q_1 .. q_g, k, v] for each of the Hkv
groups); llama.cpp's converter reorders them to [Q; K; V] ("jploski" layout), and so does ours.
"""

from __future__ import annotations

import torch

from ..errors import UnsupportedError
from .hparams import KV, HParams
from .spec import ArchSpec, ConvertSpec, Family

FALCON_TOP = {"transformer.word_embeddings": "token_embd", "transformer.ln_f": "output_norm",
              "lm_head": "output"}
FALCON_BLOCK = {"input_layernorm": "attn_norm", "ln_mlp": "attn_norm", "ln_attn": "attn_norm_2",
                "self_attention.query_key_value": "attn_qkv", "self_attention.dense": "attn_output",
                "mlp.dense_h_to_4h": "ffn_up", "mlp.dense_4h_to_h": "ffn_down"}


def falcon_config(cfg: dict) -> dict:
    """Falcon's config.json in the standard keys: its kv heads (1 for the multi-query 7B
    layout, whatever num_kv_heads says), FFN width and layer count; unsupported variants
    refused."""
    for key, why in (("alibi", "ALiBi positions"), ("bias", "biased projections")):
        if cfg.get(key):
            raise UnsupportedError(f"Falcon with {why} ({key}: true) is not supported (nor by llama.cpp)")
    if cfg.get("parallel_attn") is False:
        raise UnsupportedError("Falcon with parallel_attn false is not supported (nor by llama.cpp)")
    n_head = cfg.get("num_attention_heads", cfg.get("n_head"))
    new_arch = bool(cfg.get("new_decoder_architecture"))
    kv = cfg.get("num_kv_heads", cfg.get("n_head_kv")) if new_arch else (1 if cfg.get("multi_query", True) else n_head)
    hidden = cfg["hidden_size"]
    return {**cfg, "num_attention_heads": n_head, "num_key_value_heads": kv or 1,
            "num_hidden_layers": cfg.get("num_hidden_layers", cfg.get("n_layer")),
            "intermediate_size": cfg.get("ffn_hidden_size") or 4 * hidden}


def falcon_keys(h: HParams, kv: KV) -> None:
    """FalconModel.set_gguf_parameters. llama.cpp writes context 2048 ("not in config.json")
    and feed_forward_length 4 * n_embd; the config's values are written where it has them."""
    kv.update(add_context_length=int(h.find("max_position_embeddings", default=2048)),
              add_tensor_data_layout="jploski", add_embedding_length=h.n_embd,
              add_feed_forward_length=h.n_ff, add_block_count=h.n_layer,
              add_head_count=h.n_head, add_head_count_kv=h.n_kv,
              add_layer_norm_eps=float(h.find("layer_norm_epsilon")))
    if (theta := float(h.global_rope.get("rope_theta", 10000.0))) != 10000.0:
        kv["add_rope_freq_base"] = theta


def falcon_qkv(name: str, t: torch.Tensor, h: HParams) -> torch.Tensor:
    """FalconModel.modify_tensors: per kv group [q_1 .. q_g, k, v] rows -> [Q; K; V]."""
    if not name.endswith(".attn_qkv.weight"):
        return t
    n_head, n_kv, dk = h.n_head, h.n_kv, h.n_embd // h.n_head
    qkv = t.view(n_kv, n_head // n_kv + 2, dk, t.shape[-1])
    q = qkv[:, :-2].reshape(n_head * dk, -1)
    k = qkv[:, [-2]].reshape(n_kv * dk, -1)
    v = qkv[:, [-1]].reshape(n_kv * dk, -1)
    return torch.cat((q, k, v))


FAMILIES = [
    Family(ArchSpec("falcon", rope_style="neox", activation="gelu", norm="layer", residual="parallel",
                    ffn="plain", attn_norm_2=True),
           ConvertSpec("falcon", falcon_keys, FALCON_BLOCK, top_names=FALCON_TOP, plain_ffn=True,
                       block_prefix="transformer.h", config_fix=falcon_config, tensor_fix=falcon_qkv),
           hf_classes=("FalconForCausalLM", "RWForCausalLM")),
]
