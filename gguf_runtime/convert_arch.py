"""Hugging Face architectures -> GGUF: the rename tables, the families and per-tensor fixes.

Facts follow llama.cpp's convert_hf_to_gguf.py (conversion/base.py, llama.py, qwen.py,
gemma.py, phi.py, granite.py, olmo.py, deepseek.py, glm.py): tensor names, llama's Q/K row permutation
(Hugging Face rotates the two halves of a head, GGML's "norm" RoPE adjacent pairs), Gemma's
RMSNorm weight stored as 1 + w, the llama3 `rope_freqs` tensor. Expert stacks and tensors
split in two are planned in convert_plan.py; the `{arch}.*` keys are convert_hparams.py's.

Legend: V vocabulary, D hidden size, H/Hkv query/kv heads, Dk head dim, F feed-forward width,
E experts, Fe / Fs routed / shared expert width, N/P no-rope/rope query widths (MLA),
R kv_lora_rank, Q q_lora_rank, Dv value width per head.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import torch

from .convert_hparams import (KV, HParams, _base, _deepseek2, _gemma, _gemma2, _gemma3,
                              _glm4moe, _granite, _llama, _phi3, _qwen_moe)
from .errors import UnsupportedError

__all__ = ["Family", "FAMILIES", "HF_ARCHITECTURES", "HParams", "detect_family",
           "hyperparameters", "gguf_name", "expected_shape", "transform", "permute",
           "llama3_rope_freqs"]

# ---------------------------------------------------------------- the rename table
TOP_LEVEL = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
PER_BLOCK = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.qkv_proj": "attn_qkv",                   # phi3: fused [q; k; v]
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.gate_up_proj": "ffn_up",                       # phi3: fused [gate; up]
    "mlp.down_proj": "ffn_down",
}
# Gemma 2/3 norm both sides of each sub-layer; the HF "post_attention" norm is a real post-norm.
PER_BLOCK_POST_NORMS = {**PER_BLOCK,
                        "post_attention_layernorm": "post_attention_norm",
                        "pre_feedforward_layernorm": "ffn_norm",
                        "post_feedforward_layernorm": "post_ffw_norm"}
# Sparse (Mixture-of-Experts) blocks and DeepSeek's latent attention. Per-expert tensors
# (`mlp.experts.{e}.*`) and fused ones split in two are convert_plan.py's.
MOE_BLOCK = {**PER_BLOCK,
             "mlp.gate": "ffn_gate_inp",                        # router: qwen, olmoe, deepseek
             "block_sparse_moe.gate": "ffn_gate_inp",           # mixtral
             "block_sparse_moe.router.layer": "ffn_gate_inp",   # granitemoe
             "block_sparse_moe.output_linear": "ffn_down_exps",  # granitemoe: (E, D, Fe)
             "mlp.shared_expert.gate_proj": "ffn_gate_shexp",   # qwen2moe
             "mlp.shared_expert.up_proj": "ffn_up_shexp",
             "mlp.shared_expert.down_proj": "ffn_down_shexp",
             "mlp.shared_expert_gate": "ffn_gate_inp_shexp",    # (1, D) sigmoid gate
             "mlp.shared_experts.gate_proj": "ffn_gate_shexp",  # deepseek
             "mlp.shared_experts.up_proj": "ffn_up_shexp",
             "mlp.shared_experts.down_proj": "ffn_down_shexp",
             "shared_mlp.output_linear": "ffn_down_shexp",      # granitemoe shared
             "self_attn.q_a_proj": "attn_q_a",                  # deepseek MLA
             "self_attn.q_a_layernorm": "attn_q_a_norm",
             "self_attn.q_b_proj": "attn_q_b",
             "self_attn.kv_a_proj_with_mqa": "attn_kv_a_mqa",
             "self_attn.kv_a_layernorm": "attn_kv_a_norm"}
# GLM-4.5: llama.cpp's tensor map resolves post_attention_layernorm to ATTN_POST_NORM for
# glm4moe (no FFN_NORM in its tensor list), though the graph uses it as the pre-FFN norm.
GLM4MOE_BLOCK = {**MOE_BLOCK, "post_attention_layernorm": "post_attention_norm"}
# Whole block-relative names whose last part is not .weight / .bias.
BLOCK_EXACT = {"mlp.gate.e_score_correction_bias": "exp_probs_b.bias",     # DeepSeek-V3
               "mlp.experts.down_proj": "ffn_down_exps.weight"}            # fused (E, D, Fe)
_BLOCK_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")
_SKIPPED = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")


# ---------------------------------------------------------------- families
@dataclass(frozen=True)
class Family:
    """What converting one GGUF architecture needs beyond the generic pipeline."""

    arch: str
    hparams: Callable[[HParams, KV], None]
    block_names: dict[str, str]
    permute_qk: bool = False          # llama: HF half-rotation -> GGML adjacent-pair rotation
    norm_shift: float = 0.0           # gemma: RMSNorm multiplies by (1 + w); store 1 + w
    swa_period: int = 0               # llama.cpp's default sliding-window period
    qk_norm_full: bool = False        # olmoe: Q/K norms span all heads (H*Dk, Hkv*Dk wide)
    drop_extra_layers: bool = False   # deepseek, glm4moe: layers past num_hidden_layers (MTP)
                                      # dropped (glm4moe: as llama.cpp's --no-mtp)


FAMILIES = {f.arch: f for f in [
    Family("llama", _llama, MOE_BLOCK, permute_qk=True),         # also Mixtral
    Family("qwen2", _base, PER_BLOCK),
    Family("qwen3", _base, PER_BLOCK),
    Family("phi3", _phi3, PER_BLOCK),
    Family("gemma", _gemma, PER_BLOCK, norm_shift=1.0),
    Family("gemma2", _gemma2, PER_BLOCK_POST_NORMS, norm_shift=1.0, swa_period=2),
    Family("gemma3", _gemma3, PER_BLOCK_POST_NORMS, norm_shift=1.0, swa_period=6),
    Family("granite", _granite, PER_BLOCK, permute_qk=True),
    Family("granitemoe", _granite, MOE_BLOCK, permute_qk=True),
    Family("qwen2moe", _qwen_moe, MOE_BLOCK),
    Family("qwen3moe", _qwen_moe, MOE_BLOCK),
    Family("olmoe", _base, MOE_BLOCK, qk_norm_full=True),
    Family("deepseek2", _deepseek2, MOE_BLOCK, drop_extra_layers=True),
    Family("glm4moe", _glm4moe, GLM4MOE_BLOCK, drop_extra_layers=True),
]}
HF_ARCHITECTURES = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "MixtralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "Phi3ForCausalLM": "phi3",
    "GemmaForCausalLM": "gemma", "Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3",
    "GraniteForCausalLM": "granite", "GraniteMoeForCausalLM": "granitemoe",
    "GraniteMoeSharedForCausalLM": "granitemoe", "Qwen2MoeForCausalLM": "qwen2moe",
    "Qwen3MoeForCausalLM": "qwen3moe", "OlmoeForCausalLM": "olmoe",
    "DeepseekV2ForCausalLM": "deepseek2", "DeepseekV3ForCausalLM": "deepseek2",
    "Glm4MoeLiteForCausalLM": "deepseek2",                 # GLM-4.7-Flash: written as deepseek2
    "Glm4MoeForCausalLM": "glm4moe",
}


def detect_family(h: HParams) -> Family:
    """The Family of config.json's `architectures[0]`; UnsupportedError listing the known ones."""
    archs = h.cfg.get("architectures")
    name = archs[0] if isinstance(archs, list) and archs else None
    if name not in HF_ARCHITECTURES:
        raise UnsupportedError(f"{h.source}: architecture {name!r} is not supported; supported: "
                               f"{', '.join(HF_ARCHITECTURES)}")
    family = FAMILIES[HF_ARCHITECTURES[name]]
    kind = str(h.global_rope.get("rope_type", "")).lower()
    if kind == "llama3" and family.arch != "llama":
        raise UnsupportedError(f"{h.source}: llama3 rope scaling is supported for llama only")
    return family


def hyperparameters(family: Family, h: HParams) -> KV:
    """GGUFWriter method name -> value, for every `{arch}.*` key of this model."""
    kv: KV = {}
    family.hparams(h, kv)
    query_scalar = h.cfg.get("query_pre_attn_scalar")
    if family.swa_period and query_scalar and query_scalar != h.head_dim:
        kv["add_attention_scale"] = 1.0 / math.sqrt(query_scalar)
    types = h.cfg.get("layer_types")
    if family.swa_period and kv.get("add_sliding_window") and isinstance(types, list):
        swa = [t == "sliding_attention" for t in types]
        n = family.swa_period
        if swa != [il % n < n - 1 for il in range(len(swa))]:
            kv["add_sliding_window_pattern"] = swa
    return kv


# ---------------------------------------------------------------- tensors
def gguf_name(family: Family, h: HParams, hf_name: str) -> str | None:
    """GGUF name of a Hugging Face tensor; None for tensors llama.cpp drops."""
    if hf_name.endswith(_SKIPPED):
        return None
    stem, _, suffix = hf_name.rpartition(".")
    if stem == "lm_head" and h.cfg.get("tie_word_embeddings", False):
        return None                                          # tied: the runtime reuses token_embd
    if stem in TOP_LEVEL:
        return f"{TOP_LEVEL[stem]}.{suffix}"
    m = _BLOCK_RE.fullmatch(hf_name)
    if m and int(m[1]) >= h.n_layer and family.drop_extra_layers:
        return None                                          # multi-token prediction layers
    if m and int(m[1]) < h.n_layer and m[2] in BLOCK_EXACT:
        return f"blk.{m[1]}.{BLOCK_EXACT[m[2]]}"
    m = _BLOCK_RE.fullmatch(stem)
    if m and m[2] in family.block_names and int(m[1]) < h.n_layer:
        return f"blk.{m[1]}.{family.block_names[m[2]]}.{suffix}"
    raise UnsupportedError(f"{h.source}: tensor {hf_name!r} has no GGUF name for "
                           f"{family.arch}")


def expected_shape(family: Family, h: HParams, hf_name: str, name: str) -> tuple[int, ...]:
    """The shape config.json implies for a tensor (weights in PyTorch order (out, in))."""
    d, dk, v, f = h.n_embd, h.head_dim, h.n_vocab, h.n_ff
    nq, nkv = h.n_head * dk, h.n_kv * dk
    fused_up = hf_name.rpartition(".")[0].endswith("gate_up_proj")
    shapes = {"token_embd": (v, d), "output": (v, d), "attn_q": (nq, d), "attn_k": (nkv, d),
              "attn_v": (nkv, d), "attn_qkv": (nq + 2 * nkv, d), "attn_output": (d, nq),
              "attn_q_norm": (nq,) if family.qk_norm_full else (dk,),
              "attn_k_norm": (nkv,) if family.qk_norm_full else (dk,), "ffn_gate": (f, d),
              "ffn_up": (2 * f if fused_up else f, d), "ffn_down": (d, f)}
    if h.n_expert:
        shapes.update(_expert_shapes(h))
    if h.cfg.get("kv_lora_rank"):
        shapes.update(_mla_shapes(h))
    shape = shapes.get(name.split(".")[-2], (d,))           # every other tensor is a norm
    return shape[:1] if name.endswith(".bias") else shape


def _expert_shapes(h: HParams) -> dict[str, tuple[int, ...]]:
    d, e, fe = h.n_embd, h.n_expert, h.n_ff_exp
    fs = h.find("shared_expert_intermediate_size", "shared_intermediate_size", default=None)
    fs = int(fs if fs is not None else int(h.cfg.get("n_shared_experts") or 0) * fe)
    return {"ffn_gate_inp": (e, d), "exp_probs_b": (e,), "ffn_gate_exps": (e, fe, d),
            "ffn_up_exps": (e, fe, d), "ffn_down_exps": (e, d, fe), "ffn_gate_shexp": (fs, d),
            "ffn_up_shexp": (fs, d), "ffn_down_shexp": (d, fs), "ffn_gate_inp_shexp": (1, d)}


def _mla_shapes(h: HParams) -> dict[str, tuple[int, ...]]:
    """DeepSeek's latent attention, after llama.cpp's kv_b split (attn_k_b, attn_v_b)."""
    d, nh, r = h.n_embd, h.n_head, int(h.find("kv_lora_rank"))
    n, p, dv = (int(h.find(k)) for k in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"))
    q = int(h.cfg.get("q_lora_rank") or 0)
    return {"attn_q": (nh * (n + p), d), "attn_q_a": (q, d), "attn_q_a_norm": (q,),
            "attn_q_b": (nh * (n + p), q), "attn_kv_a_mqa": (r + p, d), "attn_kv_a_norm": (r,),
            "attn_k_b": (nh, r, n), "attn_v_b": (nh, dv, r), "attn_output": (d, nh * dv)}


def transform(family: Family, h: HParams, name: str, t: torch.Tensor) -> torch.Tensor:
    """Apply llama.cpp's per-family changes to one float32 tensor."""
    if family.permute_qk and name.endswith((".attn_q.weight", ".attn_q.bias")):
        t = permute(t, h.n_head)
    elif family.permute_qk and name.endswith((".attn_k.weight", ".attn_k.bias")):
        t = permute(t, h.n_kv)
    if family.norm_shift and name.endswith("norm.weight"):
        t = t + family.norm_shift
    return t


def permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """LlamaModel.permute: within each of n_heads heads, rows [x0 .. x(d/2-1), y0 .. y(d/2-1)]
    (HF rotates the two halves) -> [x0, y0, x1, y1, ..] (GGML rotates adjacent pairs)."""
    return (w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_freqs(h: HParams) -> torch.Tensor | None:
    """LlamaModel.generate_extra_tensors: (Dk/2,) frequency divisors for llama3 rope scaling."""
    rope = h.global_rope
    if str(rope.get("rope_type", "")).lower() != "llama3":
        return None
    base, dim = float(rope.get("rope_theta", 10000.0)), h.head_dim
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    # float32 throughout, as llama.cpp computes it, so the tensor is bit-identical.
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))   # (Dk/2,)
    wavelen = 2 * math.pi / freqs
    smooth = (old_ctx / wavelen - low) / (high - low)
    mixed = 1 / ((1 - smooth) / factor + smooth)
    return torch.where(wavelen < old_ctx / high, torch.ones_like(freqs),
                       torch.where(wavelen > old_ctx / low, torch.full_like(freqs, factor), mixed))
