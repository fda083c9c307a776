"""Reduced precision is never less faithful than llama.cpp: on tiny random models of every
supported family (8 dense, 9 MoE) quantized by llama.cpp's own quantizer to Q4_K_M, Q6_K and
Q4_0, the error of our default kernels against the exact float32 forward on the file's own
weights is at most llama.cpp's, on the prompt path and on the generated-token path.

The oracle is tests/fixtures/precision_llamacpp.{json,npz}, written by
tools/gen_precision_fixtures.py with llama-cpp-python: llama.cpp's tensor table of each file it
quantized and its logits of tests.precision_cases.IDS (one batch; one token at a time). Here our
converter writes the same file (every tensor's bytes are checked equal to llama.cpp's, so the
comparison is on the very weights llama.cpp ran), and both errors are measured against our
exact forward (tests/precision_cases.py says how). The random weights depend on the transformers
and torch versions the Makefile pins; with others installed the test is skipped.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests import precision_cases as pc

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

DATA = json.loads(pc.FIXTURE_JSON.read_text(encoding="utf-8"))
ARRAYS = np.load(pc.FIXTURE_NPZ)
PAIRS = [(name, t) for name, by_type in DATA["cases"].items() for t in by_type]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return lambda name: tmp_path_factory.getbasetemp() / f"precision-{name}"


def skip_unless_recorded_versions() -> None:
    for pkg, now in pc.versions().items():
        if DATA["versions"][pkg] != now:
            pytest.skip(f"fixture recorded with {pkg} {DATA['versions'][pkg]}, installed {now}: "
                        f"random weights differ (make test pins them; or rerun the generator)")


def test_fixture_covers_every_family_and_several_types():
    assert set(DATA["cases"]) == set(pc.CASES)
    assert all(len(by_type) >= 3 for by_type in DATA["cases"].values())
    assert pc.IDS == DATA["ids"]
    # the K-quant files really hold K-quant matrices: the rows Q8_K rounding applies to
    assert {"Q4_K", "Q6_K"} <= set(DATA["cases"]["llama"]["Q4_K_M"]["types_present"])


@pytest.mark.parametrize("name,out_type", PAIRS)
def test_ours_is_at_most_llamacpps_error(folders, name, out_type):
    skip_unless_recorded_versions()
    rec = DATA["cases"][name][out_type]
    path = pc.convert_case(name, folders(name), out_type)
    assert pc.weights_table(path) == rec["tensors"], "our file is not the one llama.cpp quantized"
    e = pc.errors_on(path, ARRAYS[f"{name}/{out_type}/prompt"], ARRAYS[f"{name}/{out_type}/decode"])
    assert e["llamacpp_prompt"] > 0                       # llama.cpp rounds: the check can bite
    assert e["ours_prompt"] <= e["llamacpp_prompt"], pc.format_errors(e)
    assert e["ours_decode"] <= e["llamacpp_decode"], pc.format_errors(e)


def test_the_comparison_bites_on_the_opt_in_q8k_rows(folders):
    """Were the Q8_K rows (llama.cpp's own rounding of x) the default for generated tokens,
    the decode check above would fail on this file: why they are opt-in (BENCHMARKS.md 5)."""
    skip_unless_recorded_versions()
    from quant.kernels import native
    if not native.q8k_types():
        pytest.skip("no q8k rows on this CPU / build (they need AVX2)")
    name, out_type = "olmoe", "Q6_K"
    path = pc.convert_case(name, folders(name), out_type)
    llamacpp = DATA["cases"][name][out_type]["errors"]["llamacpp_decode"]
    assert pc.q8k_decode_error(path) > llamacpp > 0
