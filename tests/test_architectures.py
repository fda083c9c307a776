"""One runner for every architecture: a tiny random transformers model, converted by our
converter, run by our runtime.

For each case in tests/tiny_models.py:
- logits of a fixed sequence (longer than any sliding window) agree with transformers' float32
  eager forward: relative error (max |ours - ref| / max |ref|) < 2e-6 from an F32 file,
  < 2e-2 from an F16 file;
- prefill + decode through the KV cache == full forwards: greedy tokens from `generate_ids`
  equal the argmax of `logits()` over the growing sequence, and each step's log-probability
  equals the full forward's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import gguf_runtime
from gguf_runtime.convert import convert
from gguf_runtime.sampling import SamplingParams
from tests.stepping import assert_block_step_is_op_by_op
from tests.tiny_models import CASES, VOCAB

pytest.importorskip("transformers")

SEQ_LEN, PROMPT_LEN = 20, 12
IDS = torch.randint(0, VOCAB, (SEQ_LEN,), generator=torch.Generator().manual_seed(0)).tolist()
TOLERANCE = {"F32": 2e-6, "F16": 2e-2}   # F32: 7.2e-7 at most measured (AMD EPYC, AVX-512)


@dataclass
class Converted:
    reference: torch.Tensor           # (SEQ_LEN, VOCAB) transformers logits
    files: dict[str, Path]            # out type -> .gguf


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> Converted, built once per module and only for the cases a test asks for."""
    done: dict[str, Converted] = {}

    def get(name: str) -> Converted:
        if name not in done:
            case, root = CASES[name], tmp_path_factory.mktemp(name)
            model = case.build()
            assert SEQ_LEN > 2 * case.window          # the window must actually slide
            with torch.no_grad():
                ref = model(torch.tensor([IDS])).logits[0].float()
            src = case.save(model, root / "hf")
            files = {t: convert(src, root / f"{name}-{t}.gguf", t, progress=False)
                     for t in TOLERANCE}
            done[name] = Converted(ref, files)
        return done[name]

    return get


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("out_type", list(TOLERANCE))
@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_transformers(converted, name, out_type):
    case = converted(name)
    # F32: weights and cache as transformers holds them; F16: llama.cpp's half cache as well
    model = gguf_runtime.load(case.files[out_type], n_ctx=64, kv_type=out_type.lower())
    assert model.tokenizer is None and model.architecture == CASES[name].gguf_arch
    got = model.logits(IDS)
    assert got.shape == case.reference.shape
    err = relative_error(got, case.reference)
    assert err < TOLERANCE[out_type], f"{name} {out_type}: relative error {err:.2e}"


@pytest.mark.parametrize("name", list(CASES))
def test_prefill_decode_equals_full_forward(converted, name):
    model = gguf_runtime.load(converted(name).files["F32"], n_ctx=64)
    steps = list(model.generate_ids(IDS[:PROMPT_LEN], max_tokens=SEQ_LEN - PROMPT_LEN,
                                    params=SamplingParams(temperature=0.0)))
    seq = IDS[:PROMPT_LEN]
    for step in steps:
        full = model.logits(seq)[-1]                 # a fresh full forward, no cache reuse
        assert step.token == int(full.argmax())
        assert step.logprob == pytest.approx(float(torch.log_softmax(full, -1)[step.token]),
                                             abs=1e-4)
        seq = seq + [step.token]
    assert len(steps) == SEQ_LEN - PROMPT_LEN


# Block plans the native step does not implement (LayerNorm, parallel residual, no pre-norms):
# their blocks must run op by op (the step fails closed), every other family's take the step.
NOT_NATIVE = {"phi2", "stablelm", "stablelm-parallel", "starcoder2", "olmo2", "falcon", "falcon-7b"}


@pytest.mark.parametrize("kv_type", ["f32", "f16"])
@pytest.mark.parametrize("name", list(CASES))
def test_one_call_block_step_is_bit_identical(converted, name, kv_type, monkeypatch):
    """F16 weights take the native decode kernels, so every block of a plan the step
    implements takes it (norms, Q/K norms, biases, rope kinds, windows, soft-caps, GeGLU,
    granite's scales), with either cache type; the others take none."""
    path = converted(name).files["F16"]
    n_blocks = gguf_runtime.load(path, n_ctx=8).config.block_count
    n_fused = 0 if name in NOT_NATIVE else n_blocks
    assert_block_step_is_op_by_op(path, IDS, PROMPT_LEN, n_fused, monkeypatch, kv_type)


def test_native_step_refuses_a_plan_it_does_not_implement(converted):
    """Fail closed: a llama block binds, the same block under a plan of another norm,
    residual or attention kind, or with a plan key the step does not know, does not."""
    import dataclasses

    from quant.kernels import block_step

    if block_step.native.load() is None:
        pytest.skip("native kernels unavailable")
    t = gguf_runtime.load(converted("llama").files["F16"], n_ctx=8).transformer
    b = t.blk[0]
    assert t._bind_step(b) is not None
    plan = b.plan
    for change in (dict(norm="layer"), dict(residual="parallel"), dict(attention="mla"),
                   dict(qk_norm="per_head_layer"), dict(activation="relu")):
        b.plan = dataclasses.replace(plan, **change)
        assert t._bind_step(b) is None, change
    b.plan = plan
    assert not block_step.plan_supported({**plan.as_dict(), "attention_sinks": True})
    assert block_step.plan_supported(plan.as_dict())


@pytest.mark.parametrize("name", ["llama", "gemma3", "phi2", "stablelm-parallel", "starcoder2"])
def test_inspect_shows_the_block_plan(converted, name):
    """`inspect` prints block 0's plan, from the family module's spec and the file's tensors."""
    from gguf_runtime.describe import describe

    plan = describe(gguf_runtime.open_gguf(converted(name).files["F16"]))["block_plan"]
    want = {"llama": ("rms", "sequential", "gated"), "gemma3": ("rms", "sequential", "gated"),
            "phi2": ("layer", "parallel", "plain"), "stablelm-parallel": ("layer", "parallel", "gated"),
            "starcoder2": ("layer", "sequential", "plain")}[name]
    assert (plan["norm"], plan["residual"], plan["ffn"]) == want
    assert plan["native_step"] == (name not in NOT_NATIVE)


def test_phi3_sliding_window_is_not_applied_as_in_llama_cpp(converted, tmp_path):
    """llama.cpp runs phi3 with full attention whatever phi3.attention.sliding_window says:
    a file with a window of 4 gives the windowless model's logits, with a warning."""
    import dataclasses

    case = dataclasses.replace(CASES["phi3"], config={**CASES["phi3"].config, "sliding_window": 4})
    src = case.save(case.build(), tmp_path / "hf")
    path = convert(src, tmp_path / "phi3-swa.gguf", "F32", progress=False)
    with pytest.warns(RuntimeWarning, match=r"sliding window \(4\) is not applied"):
        model = gguf_runtime.load(path, n_ctx=64, kv_type="f32")
    assert model.config.sliding_window == 4
    err = relative_error(model.logits(IDS), converted("phi3").reference)     # the windowless model
    assert err < TOLERANCE["F32"], f"relative error {err:.2e}"
