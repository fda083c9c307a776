"""Mixture-of-Experts models (tests/tiny_moe.py), run by our runtime.

For each family: logits from an F32 file agree with transformers' float forward (relative
error < 1e-3); a Q8_0 file's greedy continuation equals that of a float file holding the
dequantized Q8_0 weights; prefill + decode equals full forwards. Plus: ExpertStack slices are
the stack's experts, a decode step reads only the routed experts, each expert runs once per
step (grouped dispatch), and malformed files fail at load with one-line errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T

import gguf_runtime
from gguf_runtime.errors import GGUFError
from gguf_runtime.generate import decode_one, prefill
from gguf_runtime.sampling import SamplingParams
from quant import QTensor, QuantError, quantize_tensor
from quant.qlinear import ExpertStack

pytest.importorskip("transformers")
from tests.tiny_moe import (CASES, IDS, Case, dequantized, gguf_meta,  # noqa: E402
                            gguf_tensors, write_gguf, writer)

PROMPT, N_NEW = IDS[:8], 8


@dataclass
class Built:
    case: Case
    reference: torch.Tensor           # (len(IDS), VOCAB) transformers logits
    meta: dict
    tensors: dict[str, np.ndarray]
    files: dict[str, Path]            # "F32" | "Q8_0" | "Q8_0-dequantized" -> .gguf


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    done: dict[str, Built] = {}

    def get(name: str) -> Built:
        if name not in done:
            case, root = CASES[name], tmp_path_factory.mktemp(name)
            model = case.build()
            with torch.no_grad():
                ref = model(torch.tensor([IDS])).logits[0].float()
            meta, tensors = gguf_meta(model, case), gguf_tensors(model, case)
            files = {"F32": write_gguf(root / "f32.gguf", case.arch, meta, tensors),
                     "Q8_0": write_gguf(root / "q8_0.gguf", case.arch, meta, tensors, T.Q8_0),
                     "Q8_0-dequantized": write_gguf(root / "deq.gguf", case.arch, meta,
                                                    dequantized(tensors, T.Q8_0))}
            done[name] = Built(case, ref, meta, tensors, files)
        return done[name]

    return get


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


def greedy(model, prompt: list[int], n: int) -> list[int]:
    steps = model.generate_ids(prompt, max_tokens=n, params=SamplingParams(temperature=0.0))
    return [s.token for s in steps]


# --------------------------------------------------------------------------- per family
@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_transformers(built, name):
    b = built(name)
    model = gguf_runtime.load(b.files["F32"], n_ctx=64)
    assert model.tokenizer is None and model.architecture == b.case.arch
    dense = model.config.leading_dense_block_count
    assert [blk.moe is not None for blk in model.transformer.blk] == \
        [i >= dense for i in range(model.config.block_count)]
    err = relative_error(model.logits(IDS), b.reference)
    assert err < 1e-3, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("name", list(CASES))
def test_q8_0_greedy_equals_dequantized_float(built, name):
    b = built(name)
    quant = gguf_runtime.load(b.files["Q8_0"], n_ctx=64)
    assert quant.transformer.blk[-1].moe.ffn_up_exps.weight.qtype == T.Q8_0
    ref = gguf_runtime.load(b.files["Q8_0-dequantized"], n_ctx=64)
    assert relative_error(quant.logits(IDS), ref.logits(IDS)) < 1e-4
    assert greedy(quant, PROMPT, N_NEW) == greedy(ref, PROMPT, N_NEW)


@pytest.mark.parametrize("name", list(CASES))
def test_prefill_decode_equals_full_forward(built, name):
    model = gguf_runtime.load(built(name).files["Q8_0"], n_ctx=64)
    seq = list(PROMPT)
    for token in greedy(model, PROMPT, 4):
        assert token == int(model.logits(seq)[-1].argmax())     # fresh full forward
        seq.append(token)


# --------------------------------------------------------------------------- experts
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K"])
def test_expert_slices_are_the_stack(qtype):
    x = torch.randn(4, 8, 256, generator=torch.Generator().manual_seed(1))    # (E, F, D)
    stack = ExpertStack(quantize_tensor(x, qtype), "blk.0.ffn_up_exps.weight")
    whole = stack.weight.dequantize()
    for e in range(4):
        w = stack.expert(e).weight
        assert w.shape == (8, 256)
        assert w.data.data_ptr() == stack.weight.data.data_ptr() + e * stack.expert_nbytes
        assert torch.equal(w.dequantize(), whole[e])


def test_expert_stack_rejects_bad_shapes():
    q = quantize_tensor(torch.randn(4, 64), "Q8_0")
    with pytest.raises(QuantError, match="must be 3-D"):
        ExpertStack(q, "blk.0.ffn_up_exps.weight")
    with pytest.raises(QuantError, match="multiple of 32"):        # rows not whole blocks
        QTensor(torch.zeros(4 * 8 * 51, dtype=torch.uint8), T.Q8_0, (4, 8, 48))
    with pytest.raises(QuantError, match="needs .* bytes"):
        QTensor(torch.zeros(100, dtype=torch.uint8), T.Q8_0, (4, 8, 64))


def _stacks(model):
    return [[s for s in (blk.moe.ffn_gate_exps, blk.moe.ffn_up_exps, blk.moe.ffn_down_exps)
             if s is not None] for blk in model.transformer.blk]


def test_decode_step_touches_only_routed_experts(built):
    model = gguf_runtime.load(built("qwen3moe").files["Q8_0"], n_ctx=64)
    t, k = model.transformer, model.config.expert_used_count
    cache = model._new_cache(32)
    logits = prefill(t, PROMPT, cache)
    for layer in _stacks(model):
        for s in layer:
            s.touched = set()
    decode_one(t, int(logits.argmax()), cache)
    for layer in _stacks(model):
        touched = [s.touched for s in layer]
        assert len(touched[0]) == k and all(x == touched[0] for x in touched)
        assert touched[0] < set(range(model.config.expert_count))


def test_each_expert_runs_once_per_step(built, monkeypatch):
    model = gguf_runtime.load(built("qwen3moe").files["Q8_0"], n_ctx=64)
    calls: list[tuple[str, int]] = []
    original = ExpertStack.expert
    monkeypatch.setattr(ExpertStack, "expert",
                        lambda self, e: calls.append((self.name, e)) or original(self, e))
    model.logits(IDS)                 # 16 tokens x 2 experts each, over 8 experts per layer
    assert len(calls) == len(set(calls)) > 0


# --------------------------------------------------------------------------- bad files
def _bad_file(built, tmp_path, drop=(), meta=None, tensors=None) -> Path:
    b = built("qwen3moe")
    t = {n: a for n, a in b.tensors.items() if n not in drop}
    t.update(tensors or {})
    return write_gguf(tmp_path / "bad.gguf", "qwen3moe", {**b.meta, **(meta or {})}, t)


def _load_error(path: Path, match: str) -> None:
    with pytest.raises(GGUFError, match=match) as e:
        gguf_runtime.load(path)
    assert "\n" not in str(e.value)


def test_missing_router(built, tmp_path):
    _load_error(_bad_file(built, tmp_path, drop=["blk.1.ffn_gate_inp.weight"]),
                r"'blk\.1\.ffn_gate_inp\.weight' is missing")


def test_missing_expert_stack(built, tmp_path):
    _load_error(_bad_file(built, tmp_path, drop=["blk.0.ffn_down_exps.weight"]),
                r"'blk\.0\.ffn_down_exps\.weight' is missing")


def test_expert_count_disagrees_with_tensors(built, tmp_path):
    _load_error(_bad_file(built, tmp_path, meta={"expert_count": 6}),
                r"'blk\.0\.ffn_gate_inp\.weight' has shape \(8, 64\), expected \(6, 64\) "
                r"\(qwen3moe with 6 experts")
    up = built("qwen3moe").tensors["blk.1.ffn_up_exps.weight"]
    _load_error(_bad_file(built, tmp_path, tensors={"blk.1.ffn_up_exps.weight": up[:7]}),
                r"'blk\.1\.ffn_up_exps\.weight' has shape \(7, 32, 64\), expected \(8, \*, 64\)")


def test_expert_used_count_above_expert_count(built, tmp_path):
    _load_error(_bad_file(built, tmp_path, meta={"expert_used_count": 9}),
                r"expert_used_count is 9; it must be between 1 and .*expert_count \(8\)")


def test_expert_rows_not_whole_blocks(tmp_path, built):
    path = tmp_path / "bad.gguf"
    b = built("qwen3moe")
    w = writer(path, "qwen3moe", b.meta)
    for n, a in b.tensors.items():
        if n == "blk.0.ffn_down_exps.weight":   # (8, 64, 32) at Q8_0, declared with rows of 48
            raw = np.zeros(8 * 64 * 48 // 32 * 34, dtype=np.int8)
            w.add_tensor(n, raw, raw_shape=(8, 64, 48), raw_dtype=T.Q8_0)
        else:
            w.add_tensor(n, a)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file()
    w.close()
    _load_error(path, r"ffn_down_exps\.weight.*row length 48 is not a multiple of .*32")
