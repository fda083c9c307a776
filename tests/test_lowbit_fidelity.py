"""Files whose matrices llama.cpp quantized to IQ1_S ... IQ3_S, TQ1_0, TQ2_0, MXFP4 (dense and
MoE; tests/fixtures/lowbit/, made by tools/gen_lowbit_fixtures.py with llama.cpp's logits on
them) run here as llama.cpp runs them.

Against our exact float32 forward on each file's weights (tests/precision_cases.py):
llama.cpp's logits are close (so the weights we decode are the ones llama.cpp decodes: a wrong
grid, sign or scale would put them at a relative distance near 1), ours are at least as close
as llama.cpp's on both the prompt and the decode path, and our greedy token equals llama.cpp's
wherever its top-2 margin exceeds twice its own distance from the exact forward."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from tests import precision_cases as pc

LOWBIT = pc.FIXTURES / "lowbit"
SUMMARY = json.loads((LOWBIT / "lowbit_llamacpp.json").read_text())
FILES = sorted(SUMMARY["files"])


@pytest.fixture(scope="module")
def llamacpp_logits():
    with np.load(LOWBIT / "lowbit_llamacpp.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("name", FILES)
def test_llama_cpp_quantized_file_runs_as_llama_cpp(name, llamacpp_logits):
    path = LOWBIT / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SUMMARY["files"][name]["sha256"]
    assert pc.IDS == SUMMARY["ids"]
    stem = path.stem
    theirs_prompt, theirs_decode = llamacpp_logits[f"{stem}/prompt"], llamacpp_logits[f"{stem}/decode"]
    exact, _ = pc.our_logits(path, pc.EXACT)
    ours_prompt, ours_decode = pc.our_logits(path, None)
    e = {"llamacpp_prompt": pc.rel_error(theirs_prompt, exact), "ours_prompt": pc.rel_error(ours_prompt, exact),
         "llamacpp_decode": pc.rel_error(theirs_decode, exact), "ours_decode": pc.rel_error(ours_decode, exact)}
    assert e["llamacpp_prompt"] < 0.3 and e["llamacpp_decode"] < 0.3, pc.format_errors(e)
    assert e["ours_prompt"] <= e["llamacpp_prompt"] and e["ours_decode"] <= e["llamacpp_decode"], pc.format_errors(e)
    for theirs, ours in ((theirs_prompt, ours_prompt), (theirs_decode, ours_decode)):
        top2 = np.sort(theirs, axis=1)[:, -2:]
        decisive = (top2[:, 1] - top2[:, 0]) > 2 * np.abs(theirs - exact).max(axis=1)
        assert decisive.sum() >= 4                                   # the check has teeth
        agree = theirs.argmax(1) == ours.argmax(1)
        assert agree[decisive].all(), f"positions {np.nonzero(decisive & ~agree)[0].tolist()}"


def test_every_new_type_is_covered():
    types = {f["type"] for f in SUMMARY["files"].values()}
    assert types == {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "TQ1_0", "TQ2_0", "MXFP4"}
    assert {f["case"] for f in SUMMARY["files"].values()} == {"llama", "qwen3moe"}


@pytest.mark.parametrize("name", ["llama-IQ2_XS.gguf", "llama-TQ1_0.gguf", "qwen3moe-IQ1_M.gguf", "qwen3moe-MXFP4.gguf"])
def test_one_call_block_step_takes_the_new_types(name, monkeypatch):
    """Every block's decode runs as one native call (its routed experts too) and gives exactly
    the op-by-op logits."""
    from tests.stepping import assert_block_step_is_op_by_op
    n_blocks = 2
    assert_block_step_is_op_by_op(LOWBIT / name, pc.IDS[:10], 4, n_blocks, monkeypatch)
