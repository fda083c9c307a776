"""config.json -> the `{arch}.*` hyperparameter keys llama.cpp's convert_hf_to_gguf.py writes.

`HParams` is config.json with llama.cpp's lookups (`find_hparam`, `text_config` merged, rope
parameters normalised); each writer fills `kv` (GGUFWriter method name -> value) for one
family, so a family can override a key its base wrote. Facts follow llama.cpp's
conversion/base.py (TextModel.set_gguf_parameters, including the expert keys every model
with them gets), llama.py, qwen.py, gemma.py, phi.py, granite.py, olmo.py, deepseek.py, glm.py.

Where Hugging Face says more than llama.cpp's converter writes, the runtime (and llama.cpp's
runtime) needs it and the value is the model's own, a key is added: `vocab_size` for every
family (written in convert.py), `attention.scale` for Gemma 2/3 when query_pre_attn_scalar is
not the head dim, a per-layer `attention.sliding_window_pattern` when `layer_types` is not the
family's default period, Gemma 1/2's rope bases, DeepSeek's `attention.q_lora_rank` = 0
without a query LoRA and sigmoid gating for DeepseekV3ForCausalLM configs that do not name
their scoring function (transformers' DeepSeek-V3 always uses sigmoid). OLMoE keeps its
config's rms_norm_eps (llama.cpp writes 1e-5, which is what the released OLMoE uses).
"""

from __future__ import annotations

import copy
from typing import Any

from gguf import ExpertGatingFuncType, RopeScalingType

from .convert_source import ConvertError
from .errors import UnsupportedError

_REQUIRED = object()


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
    def n_expert(self) -> int:
        """Routed experts per sparse layer (0: a dense model)."""
        return int(self.find("num_local_experts", "num_experts", "n_routed_experts", default=0))

    @property
    def n_ff_exp(self) -> int:
        """Width of one routed expert (Mixtral, OLMoE, Granite: intermediate_size)."""
        return int(self.find("moe_intermediate_size", "intermediate_size"))

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
    _experts(h, kv)
    if h.cfg.get("head_dim") is not None:
        kv["add_key_length"] = kv["add_value_length"] = h.head_dim


_GATING = {"sigmoid": ExpertGatingFuncType.SIGMOID, "softmax": ExpertGatingFuncType.SOFTMAX}


def _experts(h: HParams, kv: KV) -> None:
    """The expert keys TextModel.set_gguf_parameters writes for any config that has them."""
    if h.n_expert:
        kv["add_expert_count"] = h.n_expert
    used = h.find("num_experts_per_tok", "num_experts_per_token", "top_k_experts", default=None)
    if used is not None:
        kv["add_expert_used_count"] = int(used)
    if h.cfg.get("n_group") is not None:
        kv["add_expert_group_count"] = int(h.cfg["n_group"])
    if h.cfg.get("topk_group") is not None:
        kv["add_expert_group_used_count"] = int(h.cfg["topk_group"])
    score = h.find("score_function", "scoring_func", "score_func", "moe_router_activation",
                   "moe_router_activation_func", "expert_selection_fn", default=None)
    if score is not None:
        if score not in _GATING:
            raise UnsupportedError(f"{h.source}: expert scoring function {score!r} is not "
                                   f"supported; supported: {', '.join(_GATING)}")
        kv["add_expert_gating_func"] = _GATING[score]


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


# ---------------------------------------------------------------- Mixture-of-Experts families
def _qwen_moe(h: HParams, kv: KV) -> None:
    """Qwen2MoeModel (also Qwen3MoeModel): the base keys plus the expert widths."""
    sparse_step = h.cfg.get("decoder_sparse_step", 1)
    if h.cfg.get("mlp_only_layers") or sparse_step not in (None, 1):
        raise UnsupportedError(f"{h.source}: dense layers between sparse ones (mlp_only_layers, "
                               f"decoder_sparse_step) are not supported; every layer must be "
                               f"sparse")
    _base(h, kv)
    kv["add_expert_feed_forward_length"] = h.n_ff_exp
    if (shared := h.cfg.get("shared_expert_intermediate_size")) is not None:
        kv["add_expert_shared_feed_forward_length"] = int(shared)


_GRANITE_SCALES = (("attention_multiplier", "add_attention_scale"),
                   ("embedding_multiplier", "add_embedding_scale"),
                   ("residual_multiplier", "add_residual_scale"),
                   ("logits_scaling", "add_logit_scale"))


def _granite(h: HParams, kv: KV) -> None:
    """GraniteModel (a LlamaModel without head_dim) and GraniteMoeModel: the multipliers."""
    _llama(HParams({k: v for k, v in h.cfg.items() if k != "head_dim"}, h.source), kv)
    for hf_key, method in _GRANITE_SCALES:
        if h.cfg.get(hf_key):
            kv[method] = float(h.cfg[hf_key])
    if shared := h.cfg.get("shared_intermediate_size"):
        kv["add_expert_shared_feed_forward_length"] = int(shared)


def _deepseek2(h: HParams, kv: KV) -> None:
    """DeepseekV2Model: latent attention written as one shared kv head of width R + P."""
    _base(HParams({**h.cfg, "num_key_value_heads": 1,
                   "rms_norm_eps": h.cfg.get("rms_norm_eps", 1e-6)}, h.source), kv)
    r, p = int(h.cfg.get("kv_lora_rank") or 512), int(h.find("qk_rope_head_dim"))
    dense = h.cfg.get("first_k_dense_replace")
    if dense is None and isinstance(h.cfg.get("mlp_layer_types"), list):    # GLM-4.7-Flash's form
        kinds = h.cfg["mlp_layer_types"]
        dense = next((i for i, kind in enumerate(kinds) if kind != "dense"), len(kinds))
    if dense is None:                       # no key: a dense model is all leading dense layers
        dense = 0 if h.n_expert else h.n_layer
    kv.update(add_leading_dense_block_count=int(dense),
              add_q_lora_rank=int(h.cfg.get("q_lora_rank") or 0),
              add_kv_lora_rank=r, add_key_length=r + p, add_value_length=r,
              add_key_length_mla=int(h.find("qk_nope_head_dim")) + p,
              add_value_length_mla=int(h.find("v_head_dim")),
              add_expert_feed_forward_length=h.n_ff_exp,
              add_expert_shared_count=int(h.cfg.get("n_shared_experts") or 0),
              add_rope_dimension_count=p)
    if (scale := h.cfg.get("routed_scaling_factor")) is not None:
        kv["add_expert_weights_scale"] = float(scale)
    if h.cfg.get("norm_topk_prob"):
        kv["add_expert_weights_norm"] = True
    if (mscale_all := h.rope.get("mscale_all_dim")) is not None:
        kv["add_rope_scaling_yarn_log_mul"] = 0.1 * float(mscale_all)   # llama.cpp's legacy 0.1
    # Sigmoid routers: DeepSeek-V3's; GLM-4.7-Flash's too, which llama.cpp's converter leaves
    # unset (its loader then guesses sigmoid only for the real model's 47 layers and 154,880
    # tokens): written here, so any file of the family routes as its model does.
    if "add_expert_gating_func" not in kv and h.cfg.get("architectures") in (
            ["DeepseekV3ForCausalLM"], ["Glm4MoeLiteForCausalLM"]):
        kv["add_expert_gating_func"] = ExpertGatingFuncType.SIGMOID


def _glm4moe(h: HParams, kv: KV) -> None:
    """Glm4MoeModel as llama.cpp's `--no-mtp` writes it: RoPE over partial_rotary_factor (0.5
    unset) of the head, sigmoid router, and neither the MTP blocks nor nextn_predict_layers
    (the runtime skips such blocks in files that have them)."""
    _base(h, kv)
    rot = float(h.rope.get("partial_rotary_factor", 0.5))
    kv.update(add_rope_dimension_count=int(h.head_dim * rot),
              add_expert_feed_forward_length=h.n_ff_exp,
              add_expert_shared_count=int(h.cfg.get("n_shared_experts") or 0),
              add_expert_gating_func=ExpertGatingFuncType.SIGMOID)
    if (dense := h.cfg.get("first_k_dense_replace")) is not None:
        kv["add_leading_dense_block_count"] = int(dense)
    if (scale := h.cfg.get("routed_scaling_factor")) is not None:
        kv["add_expert_weights_scale"] = float(scale)
    if (norm := h.cfg.get("norm_topk_prob")) is not None:
        kv["add_expert_weights_norm"] = bool(norm)
