"""Hugging Face architectures -> GGUF: names, expected shapes and per-tensor fixes, over the
families' converter facts (rename tables, hparams writers: gguf_runtime/models/, one module
per family).

Facts follow llama.cpp's convert_hf_to_gguf.py (conversion/base.py, llama.py, qwen.py,
gemma.py, phi.py, granite.py, olmo.py, deepseek.py, glm.py): tensor names, llama's Q/K row permutation
(Hugging Face rotates the two halves of a head, GGML's "norm" RoPE adjacent pairs), Gemma's
RMSNorm weight stored as 1 + w, the llama3 `rope_freqs` tensor. Expert stacks and tensors
split in two are planned in plan.py; the `{arch}.*` keys are the family modules' writers'.

Legend: V vocabulary, D hidden size, H/Hkv query/kv heads, Dk head dim, F feed-forward width,
E experts, Fe / Fs routed / shared expert width, N/P no-rope/rope query widths (MLA),
R kv_lora_rank, Q q_lora_rank, Dv value width per head.
"""

from __future__ import annotations

import math
import re
import torch

from ..errors import UnsupportedError
from ..models import CONVERTERS, HF_ARCHITECTURES
from ..models.hparams import KV, HParams
from ..models.spec import ConvertSpec

__all__ = ["Family", "FAMILIES", "HF_ARCHITECTURES", "HParams", "detect_family",
           "hyperparameters", "gguf_name", "expected_shape", "transform", "permute",
           "llama3_rope_freqs"]

# Whole block-relative names whose last part is not .weight / .bias.
BLOCK_EXACT = {"mlp.gate.e_score_correction_bias": "exp_probs_b.bias",     # DeepSeek-V3
               "mlp.experts.down_proj": "ffn_down_exps.weight",            # fused (E, D, Fe)
               "self_attn.sinks": "attn_sinks.weight"}                     # gpt-oss (H,)
_BLOCK_RES: dict[str, re.Pattern] = {}


def _block_re(family: ConvertSpec) -> re.Pattern:
    """HF names of a block's tensors: {block_prefix}.{i}.{rest}."""
    if family.block_prefix not in _BLOCK_RES:
        _BLOCK_RES[family.block_prefix] = re.compile(re.escape(family.block_prefix) + r"\.(\d+)\.(.+)")
    return _BLOCK_RES[family.block_prefix]
_SKIPPED = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")

# The families' converter facts (declared in gguf_runtime/models/, one module per family).
Family = ConvertSpec
FAMILIES: dict[str, ConvertSpec] = CONVERTERS


def detect_family(cfg: dict, source: str) -> tuple[Family, HParams]:
    """The Family of config.json's `architectures[0]` and the model's HParams, read after the
    family's config_fix (its own keys -> the standard ones); UnsupportedError listing the known
    architectures."""
    archs = cfg.get("architectures")
    name = archs[0] if isinstance(archs, list) and archs else None
    if name not in HF_ARCHITECTURES:
        raise UnsupportedError(f"{source}: architecture {name!r} is not supported; supported: "
                               f"{', '.join(HF_ARCHITECTURES)}")
    family = FAMILIES[HF_ARCHITECTURES[name]]
    h = HParams(family.config_fix(cfg) if family.config_fix is not None else cfg, source)
    kind = str(h.global_rope.get("rope_type", "")).lower()
    if kind == "llama3" and family.arch != "llama":
        raise UnsupportedError(f"{h.source}: llama3 rope scaling is supported for llama only")
    return family, h


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
    if stem in family.top_names:
        return f"{family.top_names[stem]}.{suffix}"
    m = _block_re(family).fullmatch(hf_name)
    if m and int(m[1]) >= h.n_layer and family.drop_extra_layers:
        return None                                          # multi-token prediction layers
    if m and int(m[1]) < h.n_layer and m[2] in BLOCK_EXACT:
        return f"blk.{m[1]}.{BLOCK_EXACT[m[2]]}"
    m = _block_re(family).fullmatch(stem)
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
    if family.plain_ffn:
        shapes.pop("ffn_gate")
    if h.n_expert:
        shapes.update(_expert_shapes(h))
    if h.cfg.get("kv_lora_rank"):
        shapes.update(_mla_shapes(h))
    shapes["attn_sinks"] = (h.n_head,)
    shape = shapes.get(name.split(".")[-2], (d,))           # every other tensor is a norm
    return shape[:-1] if name.endswith(".bias") and len(shape) > 1 else shape


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
    if family.tensor_fix is not None:
        t = family.tensor_fix(name, t, h)
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
