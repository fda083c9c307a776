"""Hugging Face architectures -> GGUF: the rename table, hyperparameter keys and tensor fixes.

Facts follow llama.cpp's convert_hf_to_gguf.py (conversion/base.py, llama.py, qwen.py,
gemma.py, phi.py): which `{arch}.*` keys each family writes, llama's Q/K row permutation
(Hugging Face rotates the two halves of a head, GGML's "norm" RoPE adjacent pairs), Gemma's
RMSNorm weight stored as 1 + w, the llama3 `rope_freqs` tensor. A few keys llama.cpp's
converter leaves out but its runtime reads are added where Hugging Face says more than the
family default: `vocab_size` for every family (files without a tokenizer), `attention.scale`
for Gemma 2/3 when query_pre_attn_scalar is not the head dim, a per-layer
`attention.sliding_window_pattern` when `layer_types` is not the family's default period, and
Gemma 1/2's rope bases.

Legend: V vocabulary, D hidden size, H/Hkv query/kv heads, Dk head dim, F feed-forward width.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
from gguf import RopeScalingType

from .convert_source import ConvertError
from .errors import UnsupportedError

_REQUIRED = object()

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
_BLOCK_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")
_SKIPPED = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")


class HParams:
    """config.json with llama.cpp's lookups (`find_hparam`) and its normalised rope parameters."""

    def __init__(self, config: dict, source: str):
        cfg = dict(config)
        if isinstance(cfg.get("text_config"), dict):
            cfg = {**cfg, **cfg["text_config"]}
        self.cfg, self.source = cfg, source
        self.rope = _rope_parameters(self)

    def find(self, *keys: str, default: Any = _REQUIRED) -> Any:
        for k in keys:
            if self.cfg.get(k) is not None:
                return self.cfg[k]
        if default is _REQUIRED:
            raise ConvertError(f"{self.source}: config.json lacks {' / '.join(keys)}")
        return default

    @property
    def n_layer(self) -> int:
        return int(self.find("num_hidden_layers", "n_layers", "n_layer", "num_layers"))

    @property
    def n_embd(self) -> int:
        return int(self.find("hidden_size", "n_embd", "dim"))

    @property
    def n_head(self) -> int:
        return int(self.find("num_attention_heads", "n_head", "n_heads"))

    @property
    def n_kv(self) -> int:
        return int(self.find("num_key_value_heads", "n_kv_heads", default=self.n_head))

    @property
    def head_dim(self) -> int:
        return int(self.find("head_dim", default=self.n_embd // self.n_head))

    @property
    def n_ff(self) -> int:
        return int(self.find("intermediate_size", "n_inner", "hidden_dim"))

    @property
    def n_vocab(self) -> int:
        return int(self.find("vocab_size"))

    @property
    def global_rope(self) -> dict:
        return self.rope.get("full_attention", self.rope)


def _rope_parameters(h: HParams) -> dict:
    """llama.cpp's TextModel.__init__: rope_parameters (or rope_scaling) with the top-level
    rope_theta / local theta / partial_rotary_factor / original context mirrored into it."""
    rope = copy.deepcopy(h.cfg.get("rope_parameters") or h.cfg.get("rope_scaling") or {})
    if "full_attention" in rope or "sliding_attention" in rope:
        return rope
    theta = h.find("global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta",
                   "rotary_emb_base", default=None)
    local = h.find("local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta",
                   "rope_local_base_freq", default=None)
    if local is not None:
        rope["sliding_attention"] = {"rope_theta": local}
    if theta is not None:
        rope.setdefault("rope_theta", theta)
    if "rope_type" not in rope and "type" in rope:
        rope["rope_type"] = rope["type"]
    for key in ("partial_rotary_factor", "original_max_position_embeddings"):
        if key not in rope and h.cfg.get(key) is not None:
            rope[key] = h.cfg[key]
    return rope


# ---------------------------------------------------------------- hyperparameters
# Each writer fills `kv`: GGUFWriter method name -> value, so a family can override a key.
KV = dict[str, Any]


def _base(h: HParams, kv: KV) -> None:
    """TextModel.set_gguf_parameters, for the keys these families have."""
    kv["add_block_count"] = h.n_layer
    n_ctx = h.find("max_position_embeddings", "n_ctx", "n_positions", "max_length", default=None)
    if n_ctx is not None:
        kv["add_context_length"] = int(n_ctx)
    kv["add_embedding_length"] = h.n_embd
    kv["add_feed_forward_length"] = h.n_ff
    kv["add_head_count"] = h.n_head
    if h.find("num_key_value_heads", "n_kv_heads", default=None) is not None:
        kv["add_head_count_kv"] = h.n_kv
    _rope_scaling(h, kv)
    if (theta := h.global_rope.get("rope_theta")) is not None:
        kv["add_rope_freq_base"] = float(theta)
    if (local := h.rope.get("sliding_attention", {}).get("rope_theta")) is not None:
        kv["add_rope_freq_base_swa"] = float(local)
    if (eps := h.find("rms_norm_eps", "norm_eps", default=None)) is not None:
        kv["add_layer_norm_rms_eps"] = float(eps)
    if h.cfg.get("head_dim") is not None:
        kv["add_key_length"] = kv["add_value_length"] = h.head_dim


def _rope_scaling(h: HParams, kv: KV) -> None:
    rope = h.global_rope
    kind, factor = str(rope.get("rope_type", "default")).lower(), rope.get("factor")
    if kind in ("default", "dynamic", "llama3"):
        return  # dynamic: as llama.cpp, nothing; llama3: the rope_freqs tensor (llama only)
    if kind in ("linear", "yarn") and factor is None:
        return  # llama.cpp writes nothing without a factor
    if kind == "linear":
        kv["add_rope_scaling_type"] = RopeScalingType.LINEAR
        kv["add_rope_scaling_factor"] = float(factor)
    elif kind == "yarn":
        kv["add_rope_scaling_type"] = RopeScalingType.YARN
        kv["add_rope_scaling_factor"] = float(factor)
        if "original_max_position_embeddings" not in rope:
            raise ConvertError(f"{h.source}: yarn rope scaling without "
                               f"original_max_position_embeddings")
        kv["add_rope_scaling_orig_ctx_len"] = int(rope["original_max_position_embeddings"])
        for hf_key, method in (("extrapolation_factor", "add_rope_scaling_yarn_ext_factor"),
                               ("attention_factor", "add_rope_scaling_yarn_attn_factor"),
                               ("attn_factor", "add_rope_scaling_yarn_attn_factor"),
                               ("beta_fast", "add_rope_scaling_yarn_beta_fast"),
                               ("beta_slow", "add_rope_scaling_yarn_beta_slow")):
            if rope.get(hf_key) is not None:
                kv.setdefault(method, float(rope[hf_key]))
    else:
        raise UnsupportedError(f"{h.source}: rope_type {kind!r} is not supported; supported: "
                               f"default, linear, yarn, llama3 (llama only)")


def _llama(h: HParams, kv: KV) -> None:
    _base(h, kv)
    kv["add_rope_dimension_count"] = h.head_dim


def _gemma(h: HParams, kv: KV) -> None:
    """GemmaModel / Gemma2Model list their keys instead of calling the base."""
    kv.update(add_context_length=int(h.find("max_position_embeddings")),
              add_embedding_length=h.n_embd, add_block_count=h.n_layer,
              add_feed_forward_length=h.n_ff, add_head_count=h.n_head,
              add_head_count_kv=h.n_kv, add_layer_norm_rms_eps=float(h.find("rms_norm_eps")),
              add_key_length=h.head_dim, add_value_length=h.head_dim)
    # Not written by llama.cpp (which assumes 10000 for both); same value for the usual models.
    theta = float(h.global_rope.get("rope_theta", 10000.0))
    kv["add_rope_freq_base"] = theta


def _gemma2(h: HParams, kv: KV) -> None:
    _gemma(h, kv)
    kv["add_rope_freq_base_swa"] = kv["add_rope_freq_base"]   # llama.cpp's gemma2 default
    kv["add_attn_logit_softcapping"] = float(h.find("attn_logit_softcapping"))
    kv["add_final_logit_softcapping"] = float(h.find("final_logit_softcapping"))
    kv["add_sliding_window"] = int(h.find("sliding_window"))


def _gemma3(h: HParams, kv: KV) -> None:
    _base(h, kv)
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


def _phi3(h: HParams, kv: KV) -> None:
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


FAMILIES = {f.arch: f for f in [
    Family("llama", _llama, PER_BLOCK, permute_qk=True),
    Family("qwen2", _base, PER_BLOCK),
    Family("qwen3", _base, PER_BLOCK),
    Family("phi3", _phi3, PER_BLOCK),
    Family("gemma", _gemma, PER_BLOCK, norm_shift=1.0),
    Family("gemma2", _gemma2, PER_BLOCK_POST_NORMS, norm_shift=1.0, swa_period=2),
    Family("gemma3", _gemma3, PER_BLOCK_POST_NORMS, norm_shift=1.0, swa_period=6),
]}
HF_ARCHITECTURES = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "Phi3ForCausalLM": "phi3",
    "GemmaForCausalLM": "gemma", "Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3",
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
    m = _BLOCK_RE.fullmatch(stem)
    if m and m[2] in family.block_names and int(m[1]) < h.n_layer:
        return f"blk.{m[1]}.{family.block_names[m[2]]}.{suffix}"
    raise UnsupportedError(f"{h.source}: tensor {hf_name!r} has no GGUF name for "
                           f"{family.arch}")


def expected_shape(h: HParams, hf_name: str, name: str) -> tuple[int, ...]:
    """The shape config.json implies for a tensor (weights in PyTorch order (out, in))."""
    d, dk, v, f = h.n_embd, h.head_dim, h.n_vocab, h.n_ff
    nq, nkv = h.n_head * dk, h.n_kv * dk
    fused_up = hf_name.rpartition(".")[0].endswith("gate_up_proj")
    shapes = {"token_embd": (v, d), "output": (v, d), "attn_q": (nq, d), "attn_k": (nkv, d),
              "attn_v": (nkv, d), "attn_qkv": (nq + 2 * nkv, d), "attn_output": (d, nq),
              "attn_q_norm": (dk,), "attn_k_norm": (dk,), "ffn_gate": (f, d),
              "ffn_up": (2 * f if fused_up else f, d), "ffn_down": (d, f)}
    shape = shapes.get(name.split(".")[-2], (d,))           # every other tensor is a norm
    return shape[:1] if name.endswith(".bias") else shape


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
