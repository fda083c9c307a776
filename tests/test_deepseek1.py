"""DeepSeek-MoE v1 (`deepseek`), a family with no transformers class: a file made by hand, in
llama.cpp's deepseek layout, from the tiny random transformers Qwen2-MoE of tests/tiny_moe.py,
whose math is v1's once its shared-expert gate weights are zero: softmax over all experts,
top-k not renormalised, and a shared expert scaled by sigmoid(0) = 1/2 exactly, folded into
ffn_down_shexp (a power of two: the same bits). Q/K rows are permuted for v1's adjacent-pair
RoPE (Qwen rotates halves). The float reference is transformers' Qwen2-MoE forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gguf_runtime
from gguf_runtime.convert import convert
from gguf_runtime.convert.arch import permute
from gguf_runtime.sampling import SamplingParams
from tests import tiny_moe
from tests.gguf_rewrite import renamed_prefix, rewrite_gguf

pytest.importorskip("transformers")
N_HEAD, N_KV = tiny_moe.COMMON["num_attention_heads"], tiny_moe.COMMON["num_key_value_heads"]


def v1_tensor(name: str, data: np.ndarray) -> np.ndarray | None:
    """The qwen2moe tensor as v1 holds it (None: v1 has no such tensor)."""
    if name.endswith("ffn_gate_inp_shexp.weight"):
        return None
    if name.endswith("ffn_down_shexp.weight"):
        return data * np.float32(0.5)
    for proj, heads in (("attn_q", N_HEAD), ("attn_k", N_KV)):
        if f".{proj}." in name:
            return permute(torch.from_numpy(np.array(data)), heads).numpy()
    return data


def deepseek_v1_file(qwen2moe_f32, out):
    def extra(w):
        w.add_uint32("deepseek.expert_shared_count", 1)
        w.add_uint32("deepseek.leading_dense_block_count", 0)
        w.add_float32("deepseek.expert_weights_scale", 1.0)

    def tensors(src):
        kept = {name: (v1_tensor(name, np.asarray(t.data)), t.tensor_type) for name, t in src.items()}
        return {name: v for name, v in kept.items() if v[0] is not None}

    return rewrite_gguf(qwen2moe_f32, out, "deepseek", renamed_prefix("qwen2moe", "deepseek"), tensors, extra)


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    root = tmp_path_factory.mktemp("deepseek1")
    model = tiny_moe.CASES["qwen2moe"].build()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.shared_expert_gate.weight.zero_()
        ref = model(torch.tensor([tiny_moe.IDS])).logits[0].float()
    model.save_pretrained(root / "hf")
    f32 = convert(root / "hf", root / "qwen2moe.gguf", "F32", progress=False)
    return ref, deepseek_v1_file(f32, root / "deepseek1.gguf")


def test_deepseek_v1_logits_match_the_float_reference(v1):
    ref, path = v1
    model = gguf_runtime.load(path, n_ctx=64, kv_type="f32")
    assert model.architecture == "deepseek"
    moe = model.transformer.blk[0].moe
    assert moe is not None and moe.ffn_gate_inp_shexp is None and not moe.routing.norm
    got = model.logits(tiny_moe.IDS)
    err = ((got - ref).abs().max() / ref.abs().max()).item()
    assert err < 1e-5, f"relative error {err:.2e}"      # 2.5e-6 measured (256 wide, 2 layers)


def test_deepseek_v1_decode_equals_full_forward(v1):
    _, path = v1
    model = gguf_runtime.load(path, n_ctx=64)
    seq = tiny_moe.IDS[:8]
    for step in model.generate_ids(seq, max_tokens=6, params=SamplingParams(temperature=0.0)):
        full = model.logits(seq)[-1]
        assert step.token == int(full.argmax())
        assert step.logprob == pytest.approx(float(torch.log_softmax(full, -1)[step.token]), abs=1e-4)
        seq = seq + [step.token]
    assert len(seq) == 14
