"""Tiny random Mixture-of-Experts transformers models, and GGUF helpers for their tests.

Each `Case` builds a float32 transformers MoE model (2 blocks, top-2 of 4 experts, of 8 for
qwen3moe and DeepSeek-V3's groups; vocab 256; every parameter redrawn as in
tiny_models.randomize). Widths are 256 (model width, 4 heads of 64, routed and shared expert
widths), so their rows are whole K-quant blocks and a K-quant file really holds K-quant
experts; only DeepSeek's latent-attention matrices with rows of 32 (attn_k_b, attn_v_b), 128
(attn_q_b) or 96 (attn_output) fall back as llama.cpp does (Q4_K -> Q5_0, Q5_K -> Q5_1). tests/test_moe.py saves each model with save_pretrained and converts it
with our converter; `read_gguf` / `write_gguf` take files apart and write variants (a
dequantized float copy, broken files) without a tokenizer, so the runtime runs on token ids.

Legend: E experts, F expert width, D model width.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
import transformers

from gguf_runtime.gguf_file import open_gguf
from tests.tiny_models import randomize

D, VOCAB, CTX = 256, 256, 128
COMMON = dict(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=64, max_position_embeddings=CTX,
              rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0)
IDS = torch.randint(0, VOCAB, (16,), generator=torch.Generator().manual_seed(0)).tolist()


@dataclass(frozen=True)
class Case:
    arch: str                       # general.architecture the converter writes
    config_class: str
    config: dict

    def build(self) -> torch.nn.Module:
        torch.manual_seed(0)
        cfg = getattr(transformers, self.config_class)(**{**COMMON, **self.config})
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
        model = model.float().eval()
        randomize(model, 0)           # norms and biases off their init values too
        with torch.no_grad():         # DeepSeek-V3's selection bias is a buffer
            gen = np.random.default_rng(0)   # numpy's draws: the same on every CPU
            for name, buf in sorted(model.named_buffers()):
                if name.endswith("e_score_correction_bias"):
                    noise = gen.standard_normal(tuple(buf.shape), dtype=np.float32)
                    buf.copy_(0.05 * torch.from_numpy(noise))
        return model


MLA = dict(intermediate_size=256, moe_intermediate_size=256, num_key_value_heads=4,
           kv_lora_rank=32, qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=24,
           head_dim=16, n_shared_experts=1, first_k_dense_replace=1)
GRANITE = dict(embedding_multiplier=2.0, logits_scaling=4.0, residual_multiplier=0.5,
               attention_multiplier=0.2)
CASES = {
    "qwen3moe": Case("qwen3moe", "Qwen3MoeConfig", dict(
        intermediate_size=512, moe_intermediate_size=256, num_experts=8, num_experts_per_tok=2,
        norm_topk_prob=True)),
    "qwen2moe": Case("qwen2moe", "Qwen2MoeConfig", dict(
        intermediate_size=512, moe_intermediate_size=256, num_experts=4, num_experts_per_tok=2,
        shared_expert_intermediate_size=256, norm_topk_prob=False)),
    "mixtral": Case("llama", "MixtralConfig", dict(
        intermediate_size=256, num_local_experts=4, num_experts_per_tok=2)),
    # llama.cpp's OLMoE has no GQA: its K norm is n_embd wide
    "olmoe": Case("olmoe", "OlmoeConfig", dict(
        intermediate_size=256, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
        num_key_value_heads=4)),
    # sinks, a window on layer 0 (period 2), biased router and experts, SWIGLU_OAI
    "gpt-oss": Case("gpt-oss", "GptOssConfig", dict(
        intermediate_size=256, num_local_experts=4, num_experts_per_tok=2, sliding_window=4,
        rope_parameters={"rope_type": "default", "rope_theta": 150000.0})),
    "granitemoe": Case("granitemoe", "GraniteMoeConfig", dict(
        intermediate_size=256, num_local_experts=4, num_experts_per_tok=2, **GRANITE)),
    "granitemoe-shared": Case("granitemoe", "GraniteMoeSharedConfig", dict(
        intermediate_size=256, num_local_experts=4, num_experts_per_tok=2,
        shared_intermediate_size=256, **GRANITE)),
    # Latent attention with a query LoRA, sigmoid router with selection bias and groups,
    # weight scale, a shared expert, a leading dense block.
    "deepseek3": Case("deepseek2", "DeepseekV3Config", dict(
        **MLA, q_lora_rank=128, n_routed_experts=8, num_experts_per_tok=2, n_group=4,
        topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True)),
    # DeepSeek-V2-Lite's shape: no query LoRA, softmax router (gating func unset), YaRN with
    # mscale_all_dim (attention scale and rope magnitude as llama.cpp's deepseek2).
    "deepseek2-lite": Case("deepseek2", "DeepseekV2Config", dict(
        **MLA, q_lora_rank=None, n_routed_experts=4, num_experts_per_tok=2,
        rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                         "original_max_position_embeddings": 32, "mscale": 0.707,
                         "mscale_all_dim": 0.707, "beta_fast": 32.0, "beta_slow": 1.0})),
    # GLM-4.7-Flash (Glm4MoeLiteForCausalLM, written as deepseek2): latent attention with a
    # query LoRA, sigmoid router with selection bias, weight scale, a shared expert, leading
    # dense block given as mlp_layer_types.
    "glm4moelite": Case("deepseek2", "Glm4MoeLiteConfig", dict(
        **MLA, q_lora_rank=128, n_routed_experts=8, num_experts_per_tok=2, n_group=1,
        topk_group=1, routed_scaling_factor=1.8, norm_topk_prob=True)),
    # GLM-4.5: Q/K/V biases, per-head Q/K norms, NeoX RoPE over half of each head, a leading
    # dense block, sigmoid router with selection bias and weight scale, one shared expert.
    "glm4moe": Case("glm4moe", "Glm4MoeConfig", dict(
        num_hidden_layers=3, intermediate_size=512, moe_intermediate_size=256,
        n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
        n_group=1, topk_group=1, routed_scaling_factor=2.5, norm_topk_prob=True,
        attention_bias=True, use_qk_norm=True, partial_rotary_factor=0.5)),
}


# --------------------------------------------------------------------------- GGUF files
def read_gguf(path: Path) -> tuple[str, dict, dict[str, np.ndarray]]:
    """(architecture, {arch}.* keys without the prefix, tensors dequantized to float32)."""
    gf = open_gguf(path)
    arch = gf.metadata["general.architecture"]
    meta = {k[len(arch) + 1:]: v for k, v in gf.metadata.items() if k.startswith(arch + ".")}
    tensors = {n: t.qtensor().dequantize().numpy() for n, t in gf.tensors.items()}
    return arch, meta, tensors


def write_gguf(path: Path, arch: str, meta: dict, tensors: dict[str, np.ndarray]) -> Path:
    """A float32 GGUF with `meta` ({arch}.* suffix -> value) and no tokenizer. Returns path."""
    w = writer(path, arch, meta)
    for name, a in tensors.items():
        w.add_tensor(name, a)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file()
    w.close()
    return path


def writer(path: Path, arch: str, meta: dict) -> gguf.GGUFWriter:
    """A GGUFWriter with `meta` added (bool, float32, string or uint32, as the converter
    writes these keys); the caller adds tensors."""
    w = gguf.GGUFWriter(str(path), arch)
    for k, v in meta.items():
        add = {bool: w.add_bool, float: w.add_float32, str: w.add_string}.get(type(v), w.add_uint32)
        add(f"{arch}.{k}", v)
    return w


def dequantized_copy(path: Path, out: Path) -> Path:
    """The float oracle of a quantized file: every tensor dequantized, the same keys."""
    return write_gguf(out, *read_gguf(path))
