"""A block's weights (Block) and its plan: the block's topology, explicit, built at load from its family's ArchSpec
and the tensors its file has, never guessed from shapes. Both engines obey it: the op-by-op
decoder (transformer.py) runs every plan; the native one-call step (quant.kernels.block_step)
accepts only the plans it implements and refuses the rest (fail closed), so a new family is
correct the moment it loads and fast once the native step learns its plan.

    norm       "rms" | "layer"          the block's norms (attn_norm, ffn_norm, post-norms)
    pre_norm   True | False             norms before the sub-layers; False: post-norms only
    residual   "sequential"             x += attn(norm(x)); x += ffn(ffn_norm(x))
               "parallel"               x += attn(n) + ffn(n), n = attn_norm(x) (phi2, stablelm)
    attention  "gqa" | "mla"            multi-/grouped-/multi-query | DeepSeek's latent attention
    qk_norm    None | "head" | "whole"  Q/K RMSNorm per head of Dk | over the whole projection
    sinks      True | False             attention sinks: a learnt logit per head in the softmax
    ffn        "gated"                  down(act(gate(x)) * up(x))
               "gated_fused"            the same with ffn_up = [gate; up] (phi3)
               "plain"                  down(act(up(x))) (phi2, starcoder2)
               "moe"                    routed experts (moe.py)
    activation "silu" | "gelu"          gelu: the tanh approximation, as ggml_gelu
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch

from quant.qlinear import QLinear, QLinearGroup

from .errors import UnsupportedError
from .layers import Norm, Rope
from .models.spec import ArchSpec

if TYPE_CHECKING:
    from .models.deepseek2 import MLA
    from .moe import MoE


@dataclass(frozen=True)
class BlockPlan:
    norm: str
    pre_norm: bool
    residual: str
    attention: str
    qk_norm: str | None
    sinks: bool
    ffn: str
    activation: str

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def plan_block(spec: ArchSpec, *, mla: bool, sparse: bool, has_ffn_norm: bool, has_qk_norm: bool,
               where: str, has_sinks: bool = False) -> BlockPlan:
    """The plan of one block of a `spec.name` file. `where` names the file and block in the
    error raised for a tensor the family's graph does not use (Q/K norms where it has none)."""
    if has_qk_norm and spec.qk_norm is None:
        raise UnsupportedError(f"{where}: attn_q_norm / attn_k_norm are present, but "
                               f"{spec.name}'s graph has no Q/K norm (as llama.cpp's); not supported")
    residual = spec.residual
    if residual == "parallel_without_ffn_norm":
        residual = "sequential" if has_ffn_norm else "parallel"
    return BlockPlan(norm=spec.norm, pre_norm=spec.pre_norm, residual=residual, attention="mla" if mla else "gqa",
                     qk_norm=spec.qk_norm if has_qk_norm else None, sinks=has_sinks,
                     ffn="moe" if sparse else spec.ffn, activation=spec.activation)


@dataclass
class Block:
    """One transformer block's weights, named as in the GGUF file (None when absent)."""

    index: int
    plan: BlockPlan | None = None
    attn_norm: Norm | None = None
    attn_q: QLinear | None = None
    attn_k: QLinear | None = None
    attn_v: QLinear | None = None
    attn_qkv: QLinear | QLinearGroup | None = None   # file's fused QKV, or Q, K, V grouped
    attn_output: QLinear | None = None
    attn_sinks: torch.Tensor | None = None   # (H,) gpt-oss
    attn_q_norm: Norm | None = None
    attn_k_norm: Norm | None = None
    post_attention_norm: Norm | None = None
    ffn_norm: Norm | None = None
    ffn_gate: QLinear | None = None
    ffn_up: QLinear | None = None
    ffn_down: QLinear | None = None
    post_ffw_norm: Norm | None = None
    ffn_gate_up: QLinearGroup | None = None   # ffn_gate and ffn_up as one call (built, not read)
    moe: MoE | None = None             # sparse FFN (ffn_gate_inp, ffn_*_exps, ffn_*_shexp)
    mla: MLA | None = None             # latent attention (attn_q_a, attn_kv_a_mqa, attn_k_b, ...)
    rope: Rope | None = field(default=None, repr=False)
    window: int = 0
