"""Qwen 1 (`qwen`), a family with no transformers class: a file made by hand from a tiny random
transformers Qwen 2 model with as many kv heads as heads (Qwen 1's math, written as Qwen 2), with
llama.cpp's qwen layout (attn_q / attn_k / attn_v and their biases fused into attn_qkv,
`qwen.*` keys, feed_forward_length doubled as llama.cpp's QwenModel writes it). The float
reference is transformers' Qwen 2 forward on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gguf_runtime
from gguf_runtime.convert import convert
from gguf_runtime.sampling import SamplingParams
from tests.gguf_rewrite import renamed_prefix, rewrite_gguf
from tests.stepping import assert_block_step_is_op_by_op
from tests.test_architectures import IDS, PROMPT_LEN, relative_error
from tests.tiny_models import CASES, HEADS

pytest.importorskip("transformers")


def qwen1_file(qwen2_f32, out):
    """Rewrite our converter's qwen2 file in llama.cpp's qwen layout."""
    def keys(name, value):
        name, value = renamed_prefix("qwen2", "qwen")(name, value)
        return name, value * 2 if name == "qwen.feed_forward_length" else value

    def tensors(src):
        out = {}
        for name, t in src.items():
            stem, _, kind = name.rpartition(".")
            if stem.endswith(".attn_q"):
                block = stem[:-len(".attn_q")]
                fused = np.concatenate([src[f"{block}.attn_{p}.{kind}"].data for p in "qkv"])
                out[f"{block}.attn_qkv.{kind}"] = (fused, t.tensor_type)
            elif not stem.endswith((".attn_k", ".attn_v")):
                out[name] = (t.data, t.tensor_type)
        return out

    return rewrite_gguf(qwen2_f32, out, "qwen", keys, tensors)


@pytest.fixture(scope="module")
def qwen1(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen1")
    model = CASES["qwen2"].build(num_key_value_heads=HEADS, tie_word_embeddings=False)   # qwen: an output.weight
    with torch.no_grad():
        ref = model(torch.tensor([IDS])).logits[0].float()
    src = CASES["qwen2"].save(model, root / "hf")
    files = {t: qwen1_file(convert(src, root / f"qwen2-{t}.gguf", t, progress=False), root / f"qwen1-{t}.gguf")
             for t in ("F32", "F16")}
    return ref, files


def test_qwen1_logits_match_the_float_reference(qwen1):
    ref, files = qwen1
    model = gguf_runtime.load(files["F32"], n_ctx=64, kv_type="f32")
    assert model.architecture == "qwen" and model.config.feed_forward_length[0] == 2 * 128
    assert model.transformer.blk[0].attn_qkv.bias is not None
    err = relative_error(model.logits(IDS), ref)
    assert err < 2e-6, f"relative error {err:.2e}"


def test_qwen1_decode_equals_full_forward_on_both_engines(qwen1, monkeypatch):
    """Greedy steps through the cache equal fresh full forwards; its plan (RMSNorm, sequential,
    gated, a biased fused QKV) takes the native one-call step, bit-identical to op by op."""
    _, files = qwen1
    model = gguf_runtime.load(files["F32"], n_ctx=64)
    seq = IDS[:PROMPT_LEN]
    for step in model.generate_ids(seq, max_tokens=6, params=SamplingParams(temperature=0.0)):
        full = model.logits(seq)[-1]
        assert step.token == int(full.argmax())
        assert step.logprob == pytest.approx(float(torch.log_softmax(full, -1)[step.token]), abs=1e-4)
        seq = seq + [step.token]
    assert len(seq) == PROMPT_LEN + 6
    assert_block_step_is_op_by_op(files["F16"], IDS, PROMPT_LEN, 2, monkeypatch)
