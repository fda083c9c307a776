"""gpt-oss (`gpt-oss`, OpenAI's gpt-oss-20b / 120b): RMSNorm blocks whose attention has biases
and sinks (a learnt logit per head in the softmax, its probability dropped) and slides a window
on every other layer (layer 0 slides: llama.cpp's period 2, the sliding layers rotate as the
others), and whose FFN is a Mixture of Experts: a biased router whose top k logits are weighted
by their softmax, experts with biases and llama.cpp's SWIGLU_OAI (g = min(gate, 7),
u = clamp(up, -7, 7), g * sigmoid(1.702 g) * (u + 1)). The FFN norm is stored as
post_attention_norm (llama.cpp's attn_post_norm), as glm4moe's.

Hugging Face stores the experts fused and transposed: gate_up_proj (E, D, 2F) with gate and up
interleaved along its last dim, down_proj (E, F, D); llama.cpp's converter (and ours) writes
ffn_{gate,up}_exps (E, F, D), ffn_down_exps (E, D, F) and their biases. MXFP4 checkpoints
(the released ones) are not read here: convert from a float (bf16) checkpoint.
"""

from __future__ import annotations

import torch

from ..errors import UnsupportedError
from .hparams import KV, HParams, base_keys
from .spec import MOE_BLOCK, ArchSpec, ConvertSpec, Family

GPT_OSS_BLOCK = {**MOE_BLOCK, "post_attention_layernorm": "post_attention_norm", "mlp.router": "ffn_gate_inp"}


def _interleaved(i: int, transpose: bool):
    """Part i (0: gate, 1: up) of a gate/up-interleaved last dim, transposed to (E, F, D) for
    the weights."""
    def part(t: torch.Tensor, h: HParams) -> torch.Tensor:
        t = t[..., i::2]
        return t.transpose(-1, -2) if transpose else t
    return part


GPT_OSS_SPLITS = {
    "mlp.experts.gate_up_proj": (("ffn_gate_exps.weight", _interleaved(0, True)),
                                 ("ffn_up_exps.weight", _interleaved(1, True))),
    "mlp.experts.gate_up_proj_bias": (("ffn_gate_exps.bias", _interleaved(0, False)),
                                      ("ffn_up_exps.bias", _interleaved(1, False))),
    "mlp.experts.down_proj": (("ffn_down_exps.weight", lambda t, h: t.transpose(-1, -2)),),
    "mlp.experts.down_proj_bias": (("ffn_down_exps.bias", lambda t, h: t),),
}


def gpt_oss_keys(h: HParams, kv: KV) -> None:
    """GptOssModel.set_gguf_parameters: the base keys, the window and the experts' width."""
    if h.cfg.get("quantization_config"):
        raise UnsupportedError(f"{h.source}: an MXFP4-quantized gpt-oss checkpoint is not read; "
                               f"convert from a float (bf16) one")
    base_keys(h, kv)
    kv["add_sliding_window"] = int(h.find("sliding_window"))
    kv["add_expert_feed_forward_length"] = int(h.find("intermediate_size"))


FAMILIES = [
    Family(ArchSpec("gpt-oss", rope_style="neox", activation="swiglu_oai", moe=True, swa_pattern=2,
                    swa_rope="global", sinks=True, expert_weights_norm=False, expert_gating="softmax_weight",
                    ffn_norm="post_attention_norm"),
           ConvertSpec("gpt-oss", gpt_oss_keys, GPT_OSS_BLOCK, swa_period=2, splits=GPT_OSS_SPLITS),
           hf_classes=("GptOssForCausalLM",)),
]
