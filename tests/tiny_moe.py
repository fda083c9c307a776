"""Tiny random Mixture-of-Experts transformers models, written to GGUF without the converter.

Each `Case` builds a float32 transformers MoE model (hidden 64, 2 blocks, 4-8 experts, top-2,
vocab 256; every parameter redrawn as in tiny_models.randomize) and names the GGUF metadata it
implies. `gguf_tensors` maps its parameters to GGUF names with a table, stacking experts into
3-D tensors (E, F, D) / (E, D, F), applying llama.cpp's Q/K permutation for "norm"-rope families
and DeepSeek's kv_b -> attn_k_b / attn_v_b split; `write_gguf` writes them (optionally quantized
with gguf.quants) with no tokenizer, so the runtime runs on token ids.

Legend: E experts, F expert width, D model width, H heads, N/P no-rope/rope query widths,
R kv_lora_rank, Dv value width.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import torch
import transformers
from gguf import GGMLQuantizationType as T

from tests.tiny_models import randomize

D, VOCAB, CTX = 64, 256, 128
COMMON = dict(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=CTX, rms_norm_eps=1e-6,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)
IDS = torch.randint(0, VOCAB, (16,), generator=torch.Generator().manual_seed(0)).tolist()


@dataclass(frozen=True)
class Case:
    arch: str                       # general.architecture
    config_class: str
    config: dict
    permute_qk: bool = False        # llama.cpp's "norm" rope: HF Q/K rows are permuted
    meta: dict = field(default_factory=dict)   # extra {arch}.* keys

    def build(self) -> torch.nn.Module:
        torch.manual_seed(0)
        cfg = getattr(transformers, self.config_class)(**{**COMMON, **self.config})
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
        model = model.float().eval()
        randomize(model, 0)           # norms and biases off their init values too
        with torch.no_grad():         # DeepSeek-V3's selection bias is a buffer
            for name, buf in model.named_buffers():
                if name.endswith("e_score_correction_bias"):
                    buf.copy_(0.05 * torch.randn(buf.shape))
        return model


MLA = dict(intermediate_size=96, moe_intermediate_size=32, num_key_value_heads=4,
           kv_lora_rank=32, qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=24,
           n_shared_experts=1, first_k_dense_replace=1)
GRANITE = dict(embedding_multiplier=2.0, logits_scaling=4.0, residual_multiplier=0.5,
               attention_multiplier=0.2)
GRANITE_META = {"embedding_scale": 2.0, "logit_scale": 4.0, "residual_scale": 0.5,
                "attention.scale": 0.2}
CASES = {
    "qwen3moe": Case("qwen3moe", "Qwen3MoeConfig", dict(
        intermediate_size=128, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
        head_dim=16, norm_topk_prob=True)),
    "qwen2moe": Case("qwen2moe", "Qwen2MoeConfig", dict(
        intermediate_size=128, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
        shared_expert_intermediate_size=64, norm_topk_prob=False)),
    "mixtral": Case("llama", "MixtralConfig", dict(
        intermediate_size=96, num_local_experts=4, num_experts_per_tok=2), permute_qk=True),
    # llama.cpp's OLMoE has no GQA: its K norm is n_embd wide
    "olmoe": Case("olmoe", "OlmoeConfig", dict(
        intermediate_size=32, num_experts=8, num_experts_per_tok=2, norm_topk_prob=False,
        num_key_value_heads=4)),
    "granitemoe": Case("granitemoe", "GraniteMoeConfig", dict(
        intermediate_size=32, num_local_experts=4, num_experts_per_tok=2, **GRANITE),
        permute_qk=True, meta=GRANITE_META),
    "granitemoe-shared": Case("granitemoe", "GraniteMoeSharedConfig", dict(
        intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
        shared_intermediate_size=64, **GRANITE), permute_qk=True, meta=GRANITE_META),
    # Latent attention with a query LoRA, sigmoid router with selection bias and groups,
    # weight scale, a shared expert, a leading dense block.
    "deepseek3": Case("deepseek2", "DeepseekV3Config", dict(
        **MLA, q_lora_rank=64, n_routed_experts=8, num_experts_per_tok=2, n_group=4,
        topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True), meta={
        "expert_gating_func": 2, "expert_group_count": 4, "expert_group_used_count": 2,
        "expert_weights_scale": 2.5, "expert_weights_norm": True}),
    # DeepSeek-V2-Lite's shape: no query LoRA, softmax router (gating func unset), YaRN with
    # mscale_all_dim (attention scale and rope magnitude as llama.cpp's deepseek2).
    "deepseek2-lite": Case("deepseek2", "DeepseekV2Config", dict(
        **MLA, q_lora_rank=None, n_routed_experts=8, num_experts_per_tok=2,
        rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                         "original_max_position_embeddings": 32, "mscale": 0.707,
                         "mscale_all_dim": 0.707, "beta_fast": 32.0, "beta_slow": 1.0}),
        meta={"rope.scaling.type": "yarn", "rope.scaling.factor": 4.0,
              "rope.scaling.original_context_length": 32,
              "rope.scaling.yarn_log_multiplier": 0.1 * 0.707}),
}

# --------------------------------------------------------------------------- HF -> GGUF
TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
       "lm_head.weight": "output.weight"}
LAYER = {  # HF name inside model.layers.{i} -> GGUF name(s) inside blk.{i}; pairs split [gate; up]
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",
    "block_sparse_moe.router.weight": "ffn_gate_inp.weight",
    "mlp.experts.gate_up_proj": ("ffn_gate_exps.weight", "ffn_up_exps.weight"),
    "block_sparse_moe.experts.gate_up_proj": ("ffn_gate_exps.weight", "ffn_up_exps.weight"),
    "mlp.experts.down_proj": "ffn_down_exps.weight",
    "block_sparse_moe.experts.down_proj": "ffn_down_exps.weight",
    "mlp.shared_expert.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_expert.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_expert.down_proj.weight": "ffn_down_shexp.weight",
    "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",     # (1, D): ggml's {D}
    "shared_mlp.input_linear.weight": ("ffn_gate_shexp.weight", "ffn_up_shexp.weight"),
    "shared_mlp.output_linear.weight": "ffn_down_shexp.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.shared_experts.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_experts.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_experts.down_proj.weight": "ffn_down_shexp.weight",
    "mlp.gate.e_score_correction_bias": "exp_probs_b.bias",
    "self_attn.q_a_proj.weight": "attn_q_a.weight",
    "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight",
    "self_attn.q_b_proj.weight": "attn_q_b.weight",
    "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
    "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight",
}


def permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's convert_hf_to_gguf Q/K permutation (HF halves -> interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2) \
        .reshape(w.shape)


def gguf_tensors(model: torch.nn.Module, case: Case) -> dict[str, np.ndarray]:
    cfg, out = model.config, {}
    for hf, t in model.state_dict().items():
        t = t.detach().float()
        if hf in TOP:
            out[TOP[hf]] = t.numpy()
            continue
        if "rotary_emb" in hf:
            continue
        i, rest = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf).groups()
        if rest == "self_attn.kv_b_proj.weight":
            out.update({f"blk.{i}.{n}": a for n, a in split_kv_b(t, cfg).items()})
            continue
        name = LAYER[rest]
        if case.permute_qk and rest.startswith(("self_attn.q_proj", "self_attn.k_proj")):
            t = permute(t, cfg.num_attention_heads if "q_proj" in rest else cfg.num_key_value_heads)
        parts = zip(name, t.chunk(2, dim=-2)) if isinstance(name, tuple) else [(name, t)]
        out.update({f"blk.{i}.{n}": p.contiguous().numpy() for n, p in parts})
    return out


def split_kv_b(w: torch.Tensor, c) -> dict[str, np.ndarray]:
    """llama.cpp's MLA split: kv_b (H * (N + Dv), R) -> attn_k_b (H, R, N), attn_v_b (H, Dv, R)."""
    kv = w.view(c.num_attention_heads, c.qk_nope_head_dim + c.v_head_dim, c.kv_lora_rank)
    k_b, v_b = kv.split([c.qk_nope_head_dim, c.v_head_dim], dim=1)
    return {"attn_k_b.weight": k_b.transpose(1, 2).contiguous().numpy(),
            "attn_v_b.weight": v_b.contiguous().numpy()}


def mla_meta(c) -> dict:
    r, p = c.kv_lora_rank, c.qk_rope_head_dim
    meta = {"attention.kv_lora_rank": r, "attention.key_length": r + p,
            "attention.value_length": r, "attention.key_length_mla": c.qk_nope_head_dim + p,
            "attention.value_length_mla": c.v_head_dim, "attention.head_count_kv": 1,
            "rope.dimension_count": p, "leading_dense_block_count": c.first_k_dense_replace,
            "expert_shared_count": c.n_shared_experts,
            # 0: no query LoRA (llama.cpp requires the key unless the block count is a Lite's)
            "attention.q_lora_rank": c.q_lora_rank or 0}
    return meta


def gguf_meta(model: torch.nn.Module, case: Case) -> dict:
    c = model.config
    n_expert = getattr(c, "num_experts", None) or getattr(c, "num_local_experts", None) \
        or c.n_routed_experts
    rope = (getattr(c, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    meta = {"context_length": CTX, "embedding_length": D, "block_count": c.num_hidden_layers,
            "feed_forward_length": c.intermediate_size, "vocab_size": VOCAB,
            "attention.head_count": c.num_attention_heads,
            "attention.head_count_kv": c.num_key_value_heads,
            "attention.layer_norm_rms_epsilon": float(c.rms_norm_eps),
            "rope.freq_base": float(rope), "expert_count": n_expert,
            "expert_used_count": c.num_experts_per_tok,
            "expert_feed_forward_length": getattr(c, "moe_intermediate_size", c.intermediate_size)}
    shared = getattr(c, "shared_expert_intermediate_size", 0) \
        or getattr(c, "shared_intermediate_size", 0)
    if shared:
        meta["expert_shared_feed_forward_length"] = shared
    if getattr(c, "kv_lora_rank", None):
        meta.update(mla_meta(c))
    return {**meta, **case.meta}


def quantizable(name: str, a: np.ndarray) -> bool:
    # llama.cpp keeps norms, biases and the router in float
    return a.ndim >= 2 and a.shape[0] > 1 and "ffn_gate_inp" not in name


def write_gguf(path: Path, arch: str, meta: dict, tensors: dict[str, np.ndarray],
               qtype: T | None = None) -> Path:
    """A GGUF without tokenizer; 2-D+ weights quantized to `qtype` when given. Returns path."""
    w = writer(path, arch, meta)
    for name, a in tensors.items():
        if qtype is not None and quantizable(name, a):
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, a)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file()
    w.close()
    return path


def writer(path: Path, arch: str, meta: dict) -> gguf.GGUFWriter:
    """A GGUFWriter with `meta` ({arch}.* suffix -> value) added; the caller adds tensors."""
    w = gguf.GGUFWriter(str(path), arch)
    for k, v in meta.items():
        add = {bool: w.add_bool, float: w.add_float32, str: w.add_string}.get(type(v), w.add_uint32)
        add(f"{arch}.{k}", v)
    return w


def dequantized(tensors: dict[str, np.ndarray], qtype: T) -> dict[str, np.ndarray]:
    """What a `qtype` file holds, as float32: the float oracle for the quantized run."""
    return {n: gguf.quants.dequantize(gguf.quants.quantize(a, qtype), qtype)
            if quantizable(n, a) else a for n, a in tensors.items()}
