"""Mixture-of-Experts models (tests/tiny_moe.py), converted by our converter, run by our runtime.

For each family the transformers model is saved with save_pretrained and converted to F32 and
to Q4_K_M (llama.cpp's mix: expert stacks Q4_K, ffn_down_exps Q6_K on its "more bits" layer):
F32 logits agree with transformers' float forward (relative error < 1e-3); the K-quant file's
greedy continuation equals that of a float file holding its dequantized weights; prefill + decode equals full forwards (F32). Plus: ExpertStack
slices are the stack's experts, a decode step reads only the routed experts, each expert runs
once per step (grouped dispatch), the converter's expert stacks and its errors, and malformed
files fail at load with one-line errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from safetensors.torch import load_file, save_file

import gguf_runtime
from gguf_runtime.convert import ConvertError, ShapeMismatchError, convert
from gguf_runtime.errors import GGUFError, UnsupportedError
from gguf_runtime.generate import decode_one, prefill
from gguf_runtime.gguf_file import open_gguf
from gguf_runtime.sampling import SamplingParams
from quant import QTensor, QuantError, quantize_tensor
from quant.kernels import native
from quant.qlinear import ExpertStack

from tests.stepping import assert_block_step_is_op_by_op

pytest.importorskip("transformers")
from tests.tiny_moe import (CASES, IDS, Case, dequantized_copy, read_gguf,  # noqa: E402
                            write_gguf, writer)

PROMPT, N_NEW = IDS[:8], 8


@dataclass
class Built:
    case: Case
    reference: torch.Tensor           # (len(IDS), VOCAB) transformers logits
    hf: Path                          # the save_pretrained folder
    files: dict[str, Path]            # "F32" | "Q4_K_M" | "Q4_K_M-dequantized" -> .gguf


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    done: dict[str, Built] = {}

    def get(name: str) -> Built:
        if name not in done:
            case, root = CASES[name], tmp_path_factory.mktemp(name)
            model = case.build()
            with torch.no_grad():
                ref = model(torch.tensor([IDS])).logits[0].float()
            model.save_pretrained(root / "hf")
            files = {t: convert(root / "hf", root / f"{t}.gguf", t, progress=False)
                     for t in ("F32", "Q4_K_M")}
            files["Q4_K_M-dequantized"] = dequantized_copy(files["Q4_K_M"], root / "deq.gguf")
            done[name] = Built(case, ref, root / "hf", files)
        return done[name]

    return get


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


def greedy(model, prompt: list[int], n: int) -> list[int]:
    steps = model.generate_ids(prompt, max_tokens=n, params=SamplingParams(temperature=0.0))
    return [s.token for s in steps]


def _stacks(model):
    return [[s for s in (blk.moe.ffn_gate_exps, blk.moe.ffn_up_exps, blk.moe.ffn_down_exps)
             if s is not None] for blk in model.transformer.blk if blk.moe is not None]


# --------------------------------------------------------------------------- per family
@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_transformers(built, name):
    b = built(name)
    model = gguf_runtime.load(b.files["F32"], n_ctx=64, kv_type="f32")   # all float32, as transformers
    assert model.tokenizer is None and model.architecture == b.case.arch
    dense = model.config.leading_dense_block_count
    assert [blk.moe is not None for blk in model.transformer.blk] == \
        [i >= dense for i in range(model.config.block_count)]
    err = relative_error(model.logits(IDS), b.reference)
    assert err < 1e-3, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("name", list(CASES))
def test_k_quant_greedy_equals_dequantized_float(built, name, monkeypatch):
    """Float-x kernels (the "q8k" decode rows round x to Q8_K, so greedy may part at near ties:
    their decode logits are only checked to stay close)."""
    b = built(name)
    quant = gguf_runtime.load(b.files["Q4_K_M"], n_ctx=64)
    stacks = _stacks(quant)
    assert {s.weight.qtype for layer in stacks for s in layer} <= {T.Q4_K, T.Q6_K}
    assert stacks[-1][0].weight.qtype == T.Q4_K and stacks[-1][-1].weight.qtype == T.Q6_K
    ref = gguf_runtime.load(b.files["Q4_K_M-dequantized"], n_ctx=64)
    # one token: the decode path (q8k rows where available); up to 3% seen through the layers
    # of these random tiny models, a wrong kernel gives ~100%
    assert relative_error(quant.logits(IDS[:1]), ref.logits(IDS[:1])) < 1e-1
    monkeypatch.setenv("GGUF_RUNTIME_KERNELS", "native,reference")
    assert relative_error(quant.logits(IDS), ref.logits(IDS)) < 1e-3
    assert greedy(quant, PROMPT, N_NEW) == greedy(ref, PROMPT, N_NEW)


@pytest.mark.parametrize("name", list(CASES))
def test_one_call_attention_step_is_bit_identical(built, name, monkeypatch):
    """Sparse blocks take the one-call step for their attention and one call for their routed
    experts (the router and shared experts stay in Python); DeepSeek's latent attention (MLA)
    and gpt-oss (attention sinks, biased experts with SWIGLU_OAI: plans and experts the native
    steps do not implement) keep the op-by-op path. Both give the op-by-op logits exactly."""
    path = built(name).files["Q4_K_M"]
    model = gguf_runtime.load(path, n_ctx=8)
    op_by_op = model.config.kv_lora_rank or name == "gpt-oss"
    n_fused = 0 if op_by_op else model.config.trunk_block_count
    if native.load() is not None:
        sparse = [b.moe for b in model.transformer.blk if b.moe is not None]
        native_experts = name != "gpt-oss"
        assert sparse and all((m._experts_step() is not None) == (native_experts and m.ffn_gate_exps is not None)
                              for m in sparse)
        # router + routing + experts as one call where the routing is native (no group limit)
        assert all((m._moe_step() is not None) == (m._experts_step() is not None and m.routing.n_group <= 1
                                                   and m.ffn_gate_inp.bias is None)
                   for m in sparse)
    assert_block_step_is_op_by_op(path, IDS, len(PROMPT), n_fused, monkeypatch)


@pytest.mark.parametrize("gating", ["softmax", "sigmoid"])
@pytest.mark.parametrize("norm, scale, biased", [(False, 1.0, False), (True, 1.0, False), (True, 2.5, True)])
def test_native_routing_is_torchs_routing(gating, norm, scale, biased):
    """moe.route's native form (what prompts and the one-call decode step use) picks the experts
    torch's form picks, best first, with the same weights to float32 rounding."""
    from gguf_runtime.moe import Routing, native_routing_job, route
    if native.load() is None:
        pytest.skip("no native library")
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(33, 64, generator=gen) * 3
    bias = torch.rand(64, generator=gen) * 0.5 if biased else None
    r = Routing(64, 6, gating, norm, scale)
    job = native_routing_job(r, bias)
    assert job is not None
    w_native, ids_native = route(logits, r, bias, job)
    w_torch, ids_torch = route(logits, r, bias)
    assert torch.equal(ids_native, ids_torch)
    torch.testing.assert_close(w_native, w_torch, rtol=1e-6, atol=1e-7)
    assert native_routing_job(Routing(64, 6, gating, norm, scale, n_group=8, n_group_used=3), bias) is None


@pytest.mark.parametrize("name", list(CASES))
def test_prefill_decode_equals_full_forward(built, name):
    model = gguf_runtime.load(built(name).files["F32"], n_ctx=64)
    seq = list(PROMPT)
    for token in greedy(model, PROMPT, 4):
        assert token == int(model.logits(seq)[-1].argmax())     # fresh full forward
        seq.append(token)


def test_glm4moe_mtp_blocks_are_skipped(built, tmp_path):
    """As llama.cpp's default conversion writes GLM-4.5: block_count counts a trailing MTP block
    (nextn_predict_layers 1, with its nextn.* tensors), which inference skips. Without the
    expert_gating_func key glm4moe routes by sigmoid (llama.cpp's default for it)."""
    b = built("glm4moe")
    arch, meta, tensors = read_gguf(b.files["F32"])
    n, d = meta["block_count"], meta["embedding_length"]
    last = f"blk.{n - 1}."
    mtp = {f"blk.{n}.{k[len(last):]}": a for k, a in tensors.items() if k.startswith(last)}
    mtp.update({f"blk.{n}.nextn.eh_proj.weight": np.ones((d, 2 * d), np.float32),
                f"blk.{n}.nextn.enorm.weight": np.ones(d, np.float32),
                f"blk.{n}.nextn.hnorm.weight": np.ones(d, np.float32)})
    meta = {k: v for k, v in meta.items() if k != "expert_gating_func"}
    path = write_gguf(tmp_path / "mtp.gguf", arch,
                      {**meta, "block_count": n + 1, "nextn_predict_layers": 1}, tensors | mtp)
    model, ref = gguf_runtime.load(path, n_ctx=64), gguf_runtime.load(b.files["F32"], n_ctx=64)
    assert len(model.transformer.blk) == model.config.trunk_block_count == n
    assert torch.equal(model.logits(IDS), ref.logits(IDS))
    bad = write_gguf(tmp_path / "bad.gguf", arch,
                     {**meta, "block_count": n + 1, "nextn_predict_layers": n + 1}, tensors | mtp)
    _load_error(bad, rf"glm4moe\.nextn_predict_layers is {n + 1}; it must be below "
                     rf"glm4moe\.block_count \({n + 1}\)")


def test_deepseek2_without_a_gating_key_routes_as_llama_cpp_guesses(built):
    """llama.cpp's converter writes GLM-4.7-Flash as deepseek2 without expert_gating_func; its
    loader then routes by sigmoid for that model's shape (47 or 48 trunk blocks, 154,880 tokens)
    and by softmax otherwise (DeepSeek-V2 / V2.5 files). Ours writes the key (sigmoid)."""
    import dataclasses

    from gguf_runtime.moe import Routing
    b = built("glm4moelite")
    model = gguf_runtime.load(b.files["F32"], n_ctx=64)
    c, spec = model.config, model.spec
    assert c.expert_gating_func == 2 and Routing.from_config(c, spec).gating == "sigmoid"
    unset = dataclasses.replace(c, expert_gating_func=0)
    assert Routing.from_config(unset, spec).gating == "softmax"
    for blocks in (47, 48):
        glm = dataclasses.replace(unset, block_count=blocks, vocab_size=154880)
        assert Routing.from_config(glm, spec).gating == "sigmoid"
    mtp = dataclasses.replace(unset, block_count=48, nextn_predict_layers=1, vocab_size=154880)
    assert Routing.from_config(mtp, spec).gating == "sigmoid"            # trunk of 47
    other = dataclasses.replace(unset, block_count=47, vocab_size=128256)
    assert Routing.from_config(other, spec).gating == "softmax"


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


def test_decode_step_touches_only_routed_experts(built):
    model = gguf_runtime.load(built("qwen3moe").files["Q4_K_M"], n_ctx=64)
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
    model = gguf_runtime.load(built("qwen3moe").files["Q4_K_M"], n_ctx=64)
    calls: list[tuple[str, int]] = []
    original = ExpertStack.expert
    monkeypatch.setattr(ExpertStack, "expert",
                        lambda self, e: calls.append((self.name, e)) or original(self, e))
    model.logits(IDS)                 # 16 tokens x 2 experts each, over 8 experts per layer
    assert len(calls) == len(set(calls)) > 0


# --------------------------------------------------------------------------- the converter
def test_expert_stacks_hold_each_expert_in_order(built):
    """blk.i.ffn_{gate,up,down}_exps[e] == the saved model.layers.i.mlp.experts.e.*_proj."""
    b = built("mixtral")
    saved = load_file(b.hf / "model.safetensors")
    gf = open_gguf(b.files["F32"])
    for proj, name in (("w1", "ffn_gate_exps"), ("w3", "ffn_up_exps"), ("w2", "ffn_down_exps")):
        stack = gf.tensors[f"blk.1.{name}.weight"].qtensor().dequantize()         # (E, ., .)
        assert stack.shape[0] == 4
        for e in range(4):
            want = saved[f"model.layers.1.block_sparse_moe.experts.{e}.{proj}.weight"]
            assert torch.equal(stack[e], want), (name, e)
    assert gf.tensors["blk.1.ffn_gate_inp.weight"].qtype == T.F32
    m = gf.metadata
    assert (m["llama.expert_count"], m["llama.expert_used_count"]) == (4, 2)


def test_k_quant_mix_of_an_moe_file(built):
    """llama-quantize's Q4_K_M on 8 experts: attn_v / attn_k Q8_0, attn_output Q5_K,
    ffn_down_exps Q6_K on "more bits" layers (layer 1 of 2), gate/up Q4_K, router F32."""
    gf = open_gguf(built("qwen3moe").files["Q4_K_M"])
    got = {n.split(".", 2)[-1]: t.qtype for n, t in gf.tensors.items() if n.startswith("blk.1.")}
    assert {k: got[k] for k in ("attn_v.weight", "attn_k.weight", "attn_output.weight",
                                "ffn_down_exps.weight", "ffn_gate_exps.weight",
                                "ffn_up_exps.weight", "ffn_gate_inp.weight")} == {
        "attn_v.weight": T.Q8_0, "attn_k.weight": T.Q8_0, "attn_output.weight": T.Q5_K,
        "ffn_down_exps.weight": T.Q6_K, "ffn_gate_exps.weight": T.Q4_K,
        "ffn_up_exps.weight": T.Q4_K, "ffn_gate_inp.weight": T.F32}


def test_fused_expert_checkpoint_converts_to_the_same_file(built, tmp_path):
    """A checkpoint of transformers' in-memory layout (mlp.experts.gate_up_proj (E, 2F, D),
    down_proj (E, D, F)) gives the same tensors as the per-expert one."""
    b = built("qwen3moe")
    src = tmp_path / "fused"
    src.mkdir()
    model = b.case.build()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              src / "model.safetensors")
    (src / "config.json").write_text((b.hf / "config.json").read_text())
    assert any(k.endswith("mlp.experts.gate_up_proj") for k in model.state_dict())
    _, _, want = read_gguf(b.files["F32"])
    _, _, got = read_gguf(convert(src, tmp_path / "m.gguf", "F32", progress=False))
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[n], want[n]) for n in want)


def _edited_folder(built, tmp_path, edit) -> Path:
    """qwen3moe's folder with its tensors changed by edit(dict of tensors)."""
    b = built("qwen3moe")
    tensors = load_file(b.hf / "model.safetensors")
    edit(tensors)
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((b.hf / "config.json").read_text())
    return tmp_path


def test_missing_expert_is_an_error(built, tmp_path):
    src = _edited_folder(built, tmp_path,
                         lambda t: t.pop("model.layers.1.mlp.experts.5.up_proj.weight"))
    with pytest.raises(ConvertError, match=r"layer 1 has ffn_up_exps weights for experts "
                                           r"\[0, 1, 2, 3, 4, 6, 7\].* 8 experts "
                                           r"\(missing \[5\]\)") as e:
        convert(src, tmp_path / "m.gguf", progress=False)
    assert "\n" not in str(e.value)


def test_expert_of_another_shape_is_an_error(built, tmp_path):
    name = "model.layers.0.mlp.experts.3.down_proj.weight"
    src = _edited_folder(built, tmp_path, lambda t: t.update({name: t[name][:, :128].contiguous()}))
    with pytest.raises(ShapeMismatchError, match=rf"{name}' has shape \[256, 128\], "
                                                 r"expert 0 has \[256, 256\]"):
        convert(src, tmp_path / "m.gguf", progress=False)


def test_experts_disagreeing_with_config_is_an_error(built, tmp_path):
    src = _edited_folder(built, tmp_path, lambda t: None)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "moe_intermediate_size": 128}))
    with pytest.raises(ShapeMismatchError, match=r"experts\.\*\.down_proj\.weight \(8 experts\)"
                                                 r"' has shape \[8, 256, 256\], config\.json "
                                                 r"implies \[8, 256, 128\]"):
        convert(src, tmp_path / "m.gguf", progress=False)


def test_dense_layers_between_sparse_ones_are_refused(built, tmp_path):
    src = _edited_folder(built, tmp_path, lambda t: None)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "mlp_only_layers": [1]}))
    with pytest.raises(UnsupportedError, match="mlp_only_layers"):
        convert(src, tmp_path / "m.gguf", progress=False)


# --------------------------------------------------------------------------- bad files
def _bad_file(built, tmp_path, drop=(), meta=None, tensors=None) -> Path:
    arch, good_meta, good = read_gguf(built("qwen3moe").files["F32"])
    t = {n: a for n, a in good.items() if n not in drop}
    t.update(tensors or {})
    return write_gguf(tmp_path / "bad.gguf", arch, {**good_meta, **(meta or {})}, t)


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
                r"'blk\.0\.ffn_gate_inp\.weight' has shape \(8, 256\), expected \(6, 256\) "
                r"\(qwen3moe with 6 experts")
    up = read_gguf(built("qwen3moe").files["F32"])[2]["blk.1.ffn_up_exps.weight"]
    _load_error(_bad_file(built, tmp_path, tensors={"blk.1.ffn_up_exps.weight": up[:7]}),
                r"'blk\.1\.ffn_up_exps\.weight' has shape \(7, 256, 256\), "
                r"expected \(8, \*, 256\)")


def test_expert_used_count_above_expert_count(built, tmp_path):
    _load_error(_bad_file(built, tmp_path, meta={"expert_used_count": 9}),
                r"expert_used_count is 9; it must be between 1 and .*expert_count \(8\)")


def test_expert_rows_not_whole_blocks(tmp_path, built):
    path = tmp_path / "bad.gguf"
    arch, meta, tensors = read_gguf(built("qwen3moe").files["F32"])
    w = writer(path, arch, meta)
    for n, a in tensors.items():
        if n == "blk.0.ffn_down_exps.weight":   # (8, 256, 256) at Q8_0, declared with rows of 48
            raw = np.zeros(8 * 256 * 48 // 32 * 34, dtype=np.int8)
            w.add_tensor(n, raw, raw_shape=(8, 256, 48), raw_dtype=T.Q8_0)
        else:
            w.add_tensor(n, a)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file()
    w.close()
    _load_error(path, r"ffn_down_exps\.weight.*row length 48 is not a multiple of .*32")


def test_bandwidth_floor_counts_routed_share_of_expert_stacks(built):
    """bench.floor: dense tensors count whole, `*_exps` stacks count used/count of their bytes."""
    from gguf_runtime.bench.floor import active_weight_bytes

    gf = open_gguf(built("qwen3moe").files["Q4_K_M"])
    used, count = (gf.metadata[f"qwen3moe.expert_{k}"] for k in ("used_count", "count"))
    experts = sum(i.nbytes for n, i in gf.tensors.items() if "_exps." in n)
    dense = sum(i.nbytes for n, i in gf.tensors.items()
                if "_exps." not in n and n != "token_embd.weight")
    assert "output.weight" in gf.tensors and 0 < used < count
    assert active_weight_bytes(gf) == pytest.approx(dense + experts * used / count, abs=64)


def test_experts_step_rejects_an_expert_outside_the_stack(built):
    model = gguf_runtime.load(built("qwen3moe").files["Q4_K_M"], n_ctx=8)
    moe = next(b.moe for b in model.transformer.blk if b.moe is not None)
    step = moe._experts_step()
    if step is None:
        pytest.skip("native kernels unavailable")
    n = model.config.expert_count
    with pytest.raises(QuantError, match=rf"rejected experts \[0, {n}\] of {n}"):
        step(torch.zeros(1, model.config.embedding_length), [0, n], [0.5, 0.5])
    with pytest.raises(QuantError, match="one contiguous float32 row"):
        step(torch.zeros(1, 7), [0, 1], [0.5, 0.5])


def test_gpt_oss_runs_its_experts_in_mxfp4(tmp_path):
    """gpt-oss as released: its expert stacks in MXFP4 (one E8M0 scale byte + 16 nibble bytes
    per 32 weights), the rest as converted. Logits equal, within float32 summation order, those
    of the same file with those stacks dequantized back to F32 (the very weights), so the MXFP4
    blocks are sliced per expert and run by their kernels, not approximated."""
    import numpy as np
    from gguf import GGMLQuantizationType as T

    import quant
    from gguf_runtime.convert import convert
    from tests.gguf_rewrite import rewrite_gguf
    from tests.tiny_moe import CASES as MOE_CASES

    MOE_CASES["gpt-oss"].build().save_pretrained(tmp_path / "hf")
    f32 = convert(tmp_path / "hf", tmp_path / "f32.gguf", "F32", progress=False)

    def experts(to_mxfp4: bool):
        def tensors(src):
            out = {}
            for name, t in src.items():
                data = np.array(t.data)
                if "_exps.weight" in name:                     # (E, rows, cols)
                    q = quant.quantize(torch.from_numpy(data), "MXFP4")
                    data = (q.numpy().reshape(data.shape[0], data.shape[1], -1) if to_mxfp4 else
                            quant.dequantize(q, T.MXFP4, data.shape).numpy())
                    out[name] = (data, T.MXFP4 if to_mxfp4 else t.tensor_type)
                else:
                    out[name] = (data, t.tensor_type)
            return out
        return tensors

    mx = rewrite_gguf(f32, tmp_path / "mxfp4.gguf", "gpt-oss", lambda n, v: (n, v), experts(True))
    exact = rewrite_gguf(f32, tmp_path / "exact.gguf", "gpt-oss", lambda n, v: (n, v), experts(False))
    model = gguf_runtime.load(mx, n_ctx=64, kv_type="f32")
    assert model.transformer.blk[0].moe.ffn_up_exps.weight.qtype == T.MXFP4
    from gguf_runtime.describe import describe
    plan = describe(gguf_runtime.open_gguf(mx))["block_plan"]
    assert plan["sinks"] and plan["ffn"] == "moe" and plan["activation"] == "swiglu_oai" and not plan["native_step"]
    ref = gguf_runtime.load(exact, n_ctx=64, kv_type="f32").logits(IDS)
    assert relative_error(model.logits(IDS), ref) < 1e-5
    assert greedy(model, PROMPT, N_NEW) == greedy(gguf_runtime.load(exact, n_ctx=64, kv_type="f32"), PROMPT, N_NEW)
