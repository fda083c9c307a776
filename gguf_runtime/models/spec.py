"""What a family module declares: its ArchSpec (runtime), its ConvertSpec (converter), and the
Family that bundles them with the Hugging Face class names. One Family per GGUF architecture;
gguf_runtime/models/__init__.py builds every registry (runtime, `inspect`, converter) from them.

Everything a file states (head counts, norms present, biases present, tied output) is read from
the file; an ArchSpec only carries what llama.cpp hard-codes per architecture: RoPE ordering
("norm" rotates adjacent pairs, "neox" rotates the two halves), Gemma's sqrt(n_embd) embedding
scale, the FFN activation, the default sliding-window period, how a Mixture-of-Experts router
weighs its experts, and the block's topology (norm kind, residual, FFN kind, Q/K norm kind),
which the block plan (block_plan.py) is built from, never guessed from tensor shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

NORM_KINDS = ("rms", "layer")                  # RMSNorm (weight) | LayerNorm (weight + bias)
RESIDUALS = ("sequential", "parallel", "parallel_without_ffn_norm")
FFN_KINDS = ("gated", "gated_fused", "plain")  # gate & up | ffn_up = [gate; up] | up, act, down
QK_NORMS = (None, "head", "whole")             # per head of Dk | over the whole projection


@dataclass(frozen=True)
class ArchSpec:
    name: str
    rope_style: str = "norm"          # "norm" (llama: interleaved pairs) | "neox" (halves)
    activation: str = "silu"          # silu (SwiGLU when gated) | gelu (tanh approximation)
    embed_scale_sqrt: bool = False    # gemma family: x = embd(tok) * sqrt(n_embd)
    # llama.cpp's default sliding-window period. 0: the family's graph has no sliding window and
    # runs full attention whatever `{arch}.attention.sliding_window` says (llama.cpp reads the
    # key for phi3 only to disable it: "Phi SWA is currently disabled", its PR 13676); so do we.
    swa_pattern: int = 0
    # Non-empty: a file of this family with a sliding window is refused with this reason
    # (llama.cpp applies a window the runtime does not implement for the family yet).
    window_unsupported: str = ""
    moe: bool = False                 # may have sparse (expert) FFN layers
    # llama.cpp hard-codes these per family in build_moe_ffn's call, ignoring the file's keys;
    # None / "file": read `{arch}.expert_weights_norm` / `{arch}.expert_gating_func` (deepseek2).
    expert_weights_norm: bool | None = True
    expert_gating: str = "softmax"    # "softmax" | "sigmoid" | "file"
    expert_gating_unset: str = "softmax"   # "file" with the key absent or 0 (glm4moe: sigmoid)
    # The tensor that norms the FFN's input. GLM-4.5's HF "post_attention_layernorm" is stored
    # as post_attention_norm but is the pre-FFN norm (llama.cpp's glm4-moe graph), no post-norm.
    ffn_norm: str = "ffn_norm"
    # falcon: a file's attn_norm_2 norms the attention input and attn_norm the FFN's (Falcon
    # 40B/180B's ln_attn / ln_mlp); without attn_norm_2 one norm feeds both (Falcon 7B).
    attn_norm_2: bool = False
    # qwen (Qwen 1): the file's feed_forward_length is twice the FFN's width (llama.cpp's qwen
    # reads n_ff / 2 for ffn_gate / ffn_up / ffn_down)
    ffn_length_halved: bool = False
    # How sliding-window layers rotate: "own" (llama.cpp's default: rope.freq_base_swa, no
    # scaling), "own_base" (gemma2: freq_base_swa with the global scaling), "global" (gpt-oss:
    # the global base, unless the file has freq_base_swa, and scaling)
    swa_rope: str = "own"
    sinks: bool = False               # gpt-oss: attn_sinks, one extra softmax logit per head
    # Block topology (see block_plan.py). "parallel_without_ffn_norm": parallel where the file
    # has no ffn_norm (stablelm: llama.cpp decides by the tensor's presence).
    norm: str = "rms"
    pre_norm: bool = True             # False: no attn_norm / ffn_norm, post-norms only (olmo2)
    residual: str = "sequential"
    ffn: str = "gated"
    qk_norm: str | None = None        # the kind of attn_q_norm / attn_k_norm; None: the family
                                      # has none, and a file that has them is refused
    runnable: bool = True
    not_runnable_reason: str = ""

    def __post_init__(self):
        for value, allowed in ((self.norm, NORM_KINDS), (self.residual, RESIDUALS),
                               (self.ffn, FFN_KINDS), (self.qk_norm, QK_NORMS)):
            if value not in allowed:
                raise ValueError(f"ArchSpec {self.name}: {value!r} is not one of {allowed}")


@dataclass(frozen=True)
class ConvertSpec:
    """What converting one GGUF architecture needs beyond the generic pipeline."""

    arch: str
    hparams: Callable[[Any, dict], None]      # (HParams, kv) -> None: fills the {arch}.* keys
    block_names: dict[str, str]               # HF block-relative stem -> GGUF tensor name
    top_names: dict[str, str] = field(default_factory=lambda: dict(TOP_LEVEL))
    permute_qk: bool = False          # llama: HF half-rotation -> GGML adjacent-pair rotation
    norm_shift: float = 0.0           # gemma: RMSNorm multiplies by (1 + w); store 1 + w
    swa_period: int = 0               # llama.cpp's default sliding-window period
    qk_norm_full: bool = False        # olmoe: Q/K norms span all heads (H*Dk, Hkv*Dk wide)
    drop_extra_layers: bool = False   # deepseek, glm4moe: layers past num_hidden_layers (MTP)
                                      # dropped (glm4moe: as llama.cpp's --no-mtp)
    plain_ffn: bool = False           # up / down only (no gate): expected shapes
    block_prefix: str = "model.layers"    # HF names of block i: "{block_prefix}.{i}.*"
    # config.json rewritten into the standard keys before anything reads it (falcon's names)
    config_fix: Callable[[dict], dict] | None = None
    # a tensor's data changed after the rename (falcon's grouped QKV rows reordered)
    tensor_fix: Callable[[str, Any, Any], Any] | None = None
    # block-relative HF name -> ((GGUF name, part), ...): tensors made of parts of one HF tensor,
    # over convert/plan.py's SPLITS (gpt-oss's interleaved, transposed expert stacks)
    splits: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    """One GGUF architecture: its runtime spec, its converter facts (None: not convertible from
    Hugging Face here), the HF `architectures` names that convert to it, and other names
    converters write for the same graph."""

    spec: ArchSpec
    convert: ConvertSpec | None = None
    hf_classes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name


# ---------------------------------------------------------------- the shared rename tables
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
# Sparse (Mixture-of-Experts) blocks and DeepSeek's latent attention. Per-expert tensors
# (`mlp.experts.{e}.*`) and fused ones split in two are convert/plan.py's.
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
