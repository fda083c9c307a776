"""config.json -> the `{arch}.*` hyperparameter keys llama.cpp's convert_hf_to_gguf.py writes.

`HParams` is config.json with llama.cpp's lookups (`find_hparam`, `text_config` merged, rope
parameters normalised); `base_keys` is llama.cpp's TextModel base. Each family module's writer
fills `kv` (GGUFWriter method name -> value) on top of it, so a family can override a key its
base wrote. Facts follow llama.cpp's
conversion/base.py (TextModel.set_gguf_parameters, including the expert keys every model
with them gets), llama.py, qwen.py, gemma.py, phi.py, granite.py, olmo.py, deepseek.py, glm.py.

Where Hugging Face says more than llama.cpp's converter writes, the runtime (and llama.cpp's
runtime) needs it and the value is the model's own, a key is added: `vocab_size` for every
family (written in convert/pipeline.py), `attention.scale` for Gemma 2/3 when query_pre_attn_scalar is
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

from ..errors import ConvertError, UnsupportedError

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


def base_keys(h: HParams, kv: KV) -> None:
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
    rope_scaling_keys(h, kv)
    if (theta := h.global_rope.get("rope_theta")) is not None:
        kv["add_rope_freq_base"] = float(theta)
    if (local := h.rope.get("sliding_attention", {}).get("rope_theta")) is not None:
        kv["add_rope_freq_base_swa"] = float(local)
    if (eps := h.find("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon", default=None)) is not None:
        kv["add_layer_norm_eps"] = float(eps)
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


def rope_scaling_keys(h: HParams, kv: KV) -> None:
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
