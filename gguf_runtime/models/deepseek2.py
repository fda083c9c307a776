"""DeepSeek-V2/V3 multi-head latent attention (MLA), in llama.cpp's absorbed form.

Per position the cache holds one shared "head": the normed latent c (R = kv_lora_rank) and the
roped k_pe (P = n_rot), which is exactly what the file's keys describe (head_count_kv = 1,
key_length = R + P, value_length = R). Each query head's no-rope part is absorbed into the latent
space through attn_k_b, so attention is multi-query attention of width R + P; its per-head
output (R) is decompressed to Dv through attn_v_b. attn_k_b / attn_v_b are 3-D stacks of
per-head matrices, sliced per head without copies as expert stacks are (ExpertStack). The rest
of the block (norms, residuals, dense or sparse FFN) is the generic decoder's.

Legend: T tokens, D model width, H heads, N = no-rope width of a query head, P rope width,
R kv_lora_rank, Q q_lora_rank, Dv value width per head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from gguf import ExpertGatingFuncType

from quant.qlinear import ExpertStack, QLinear

from ..config import ModelConfig, RopeScaling
from ..errors import GGUFFormatError
from ..gguf_file import GGUFFile
from ..layers import Rope, rms_norm
from ..tensors import BlockTensors
from .hparams import KV, HParams, base_keys
from .spec import MOE_BLOCK, ArchSpec, ConvertSpec, Family


@dataclass
class MLA:
    """One block's latent attention; attributes are the GGUF tensor names (None when absent)."""

    n_head: int
    n_nope: int
    n_rot: int
    kv_lora_rank: int
    eps: float
    attn_kv_a_mqa: QLinear                    # (R + P, D)
    attn_kv_a_norm: torch.Tensor              # (R,)
    attn_k_b: ExpertStack                     # (H, R, N): per head, no-rope query -> latent
    attn_v_b: ExpertStack                     # (H, Dv, R): per head, latent -> value
    attn_q: QLinear | None = None             # (H * (N + P), D) without a query LoRA (Lite)
    attn_q_a: QLinear | None = None           # (Q, D)
    attn_q_a_norm: torch.Tensor | None = None
    attn_q_b: QLinear | None = None           # (H * (N + P), Q)

    def qkv(self, x: torch.Tensor, rope: Rope, pos: torch.Tensor):
        """x (T, D) -> q (T, H, R + P), k (T, 1, R + P), v (T, 1, R), rope applied."""
        n_tok, r = x.shape[0], self.kv_lora_rank
        if self.attn_q is not None:
            q = self.attn_q(x)
        else:
            q = self.attn_q_b(rms_norm(self.attn_q_a(x), self.attn_q_a_norm, self.eps))
        q_nope, q_pe = q.view(n_tok, self.n_head, -1).split([self.n_nope, self.n_rot], -1)
        c, k_pe = self.attn_kv_a_mqa(x).split([r, self.n_rot], -1)   # (T, R), (T, P)
        c = rms_norm(c, self.attn_kv_a_norm, self.eps)
        cos, sin = rope.cos_sin(pos)
        q_pe = rope.apply(q_pe, cos, sin)                             # (T, H, P)
        k_pe = rope.apply(k_pe[:, None, :], cos, sin)                 # (T, 1, P)
        q_lat = torch.stack([self.attn_k_b.expert(h)(q_nope[:, h])
                             for h in range(self.n_head)], dim=1)    # (T, H, R)
        q = torch.cat([q_lat, q_pe], dim=-1)
        k = torch.cat([c[:, None, :], k_pe], dim=-1)
        return q, k, c[:, None, :]

    def values(self, out: torch.Tensor) -> torch.Tensor:
        """Attention output in latent space (T, H * R) -> (T, H * Dv)."""
        o = out.view(out.shape[0], self.n_head, self.kv_lora_rank)
        return torch.cat([self.attn_v_b.expert(h)(o[:, h]) for h in range(self.n_head)], -1)


def build_mla(gf: GGUFFile, i: int, c: ModelConfig) -> MLA:
    """Block i's latent attention, every tensor checked against the config's widths."""
    h, d, r, p = c.head_count[i], c.embedding_length, c.kv_lora_rank, c.rope_dimension_count
    dk = c.key_length_mla or c.key_length
    dv = c.value_length_mla or c.value_length
    if c.key_length != r + p or c.value_length != r:
        raise GGUFFormatError(f"{gf.path}: {c.architecture} key_length {c.key_length} / "
                              f"value_length {c.value_length} are not kv_lora_rank + rope "
                              f"dims ({r + p}) / kv_lora_rank ({r}): a file from before "
                              f"attn_kv_b was split into attn_k_b/attn_v_b; re-convert it")
    t = BlockTensors(gf, i, f"{c.architecture} latent attention of {h} heads, "
                            f"kv_lora_rank {r}, head width {dk}")
    mla = MLA(h, dk - p, p, r, c.norm_epsilon,
              attn_kv_a_mqa=t.linear("attn_kv_a_mqa.weight", (r + p, d)),
              attn_kv_a_norm=t.vector("attn_kv_a_norm.weight", r, required=True),
              attn_k_b=t.stack("attn_k_b.weight", (h, r, dk - p)),
              attn_v_b=t.stack("attn_v_b.weight", (h, dv, r)))
    if c.q_lora_rank > 0:
        q = c.q_lora_rank
        mla.attn_q_a = t.linear("attn_q_a.weight", (q, d))
        mla.attn_q_a_norm = t.vector("attn_q_a_norm.weight", q, required=True)
        mla.attn_q_b = t.linear("attn_q_b.weight", (h * dk, q))
    else:
        mla.attn_q = t.linear("attn_q.weight", (h * dk, d))
    return mla


def _yarn_log_mul(c: ModelConfig) -> float:
    # The converter writes 0.1 * mscale_all_dim; llama.cpp divides it back.
    return c.rope_scaling.yarn_log_mul / 0.1


def mla_rope_scaling(c: ModelConfig) -> RopeScaling:
    """The rope scaling llama.cpp applies to q_pe / k_pe: with YaRN and mscale_all_dim, the
    rotation is not magnified (llama_context's yarn_attn_factor for deepseek2); the magnitude
    goes into the attention scale instead (`mla_attention_scale`)."""
    sc = c.rope_scaling
    if sc.kind != "yarn" or not _yarn_log_mul(c):
        return sc
    return replace(sc, attn_factor=sc.attn_factor / (1.0 + 0.1 * math.log(sc.factor)))


def mla_attention_scale(c: ModelConfig) -> float:
    """llama.cpp deepseek2's kq_scale: mscale^2 / sqrt(key_length_mla)."""
    sc, dk = c.rope_scaling, c.key_length_mla or c.key_length
    ln_factor = math.log(sc.factor) if sc.kind in ("yarn", "linear") else 0.0
    rope_factor = mla_rope_scaling(c).attn_factor if sc.kind == "yarn" else 1.0
    mscale = rope_factor * (1.0 + 0.1 * ln_factor) * (1.0 + 0.1 * _yarn_log_mul(c) * ln_factor)
    return mscale * mscale / math.sqrt(dk)


# ---------------------------------------------------------------- the converter's keys
def deepseek2_keys(h: HParams, kv: KV) -> None:
    """DeepseekV2Model: latent attention written as one shared kv head of width R + P."""
    base_keys(HParams({**h.cfg, "num_key_value_heads": 1,
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


FAMILIES = [
    Family(ArchSpec("deepseek2", moe=True, expert_weights_norm=None, expert_gating="file"),
           ConvertSpec("deepseek2", deepseek2_keys, MOE_BLOCK, drop_extra_layers=True),
           hf_classes=("DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM",
                       "Glm4MoeLiteForCausalLM")),      # GLM-4.7-Flash: written as deepseek2
]
