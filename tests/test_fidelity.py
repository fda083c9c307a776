"""Logits and greedy continuations of both real models against llama.cpp.

The oracle is tests/fixtures/fidelity_<model>.json, written by tools/gen_fidelity_fixtures.py
with llama-cpp-python. llama.cpp's quantized matmuls and ours round differently (its CPU kernels
quantize activations), so logits differ by a few tenths; the bars are the issue's:
- last prompt position: same top-1, top-5 sets share at least 4;
- greedy continuation, teacher-forced on llama.cpp's 32 tokens: at every step our argmax is
  llama.cpp's token, or llama.cpp itself had a near-tie there: our pick is in its top 5 with a
  logit within NEAR_TIE of its top 1;
- llama.cpp does not agree with itself either: evaluating prompt + continuation as one batch
  (the fixture's "batched_top1") picks another argmax at about 6 of 288 steps, and only 3/9
  (gemma3) or 5/9 (smollm2) of its own continuations survive that. So our teacher-forced
  mismatches must stay within twice llama.cpp's self-mismatch, and the count of identical
  free-running continuations is reported next to llama.cpp's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gguf_runtime
from tests.realmodels import gemma3_path, smollm2_path

FIXTURES = Path(__file__).parent / "fixtures"
NEAR_TIE = 0.5      # logits; the measured mean |ours - llama.cpp| is about 0.2
MODELS = {"gemma3": gemma3_path, "smollm2": smollm2_path}

pytestmark = pytest.mark.realmodel


def _near_tie(step: dict, ours: int) -> bool:
    """llama.cpp's logit for our token is within NEAR_TIE of its own top choice."""
    ref = dict((int(i), v) for i, v in step["top5"])
    return ours in ref and step["top5"][0][1] - ref[ours] < NEAR_TIE


@pytest.fixture(scope="module", params=sorted(MODELS))
def model_and_cases(request):
    model = gguf_runtime.load(MODELS[request.param](), n_ctx=512)
    doc = json.loads((FIXTURES / f"fidelity_{request.param}.json").read_text())
    assert doc["model"] == model.path.name
    return model, doc["cases"]


def test_fixture_has_enough_prompts(model_and_cases):
    _, cases = model_and_cases
    assert len(cases) >= 8
    assert any(c["chat"] for c in cases) and any(not c["chat"] for c in cases)


def test_tokenization_matches_fixture(model_and_cases):
    model, cases = model_and_cases
    for case in cases:
        assert model.tokenize(case["text"]) == case["ids"], case["text"]


def test_last_position_top1_and_top5(model_and_cases):
    model, cases = model_and_cases
    for case in cases:
        logits = model.logits(case["ids"])[-1]
        ours = torch.topk(logits, 5).indices.tolist()
        ref = [i for i, _ in case["top10"][:5]]
        assert ours[0] == ref[0], case["text"]
        assert len(set(ours) & set(ref)) >= 4, case["text"]


def test_greedy_teacher_forced(model_and_cases):
    model, cases = model_and_cases
    exact_steps = total_steps = 0
    for case in cases:
        steps = case["greedy"]
        fed = case["ids"] + [s["token"] for s in steps[:-1]]
        logits = model.logits(fed)[len(case["ids"]) - 1:]          # one row per greedy step
        for row, step in zip(logits, steps):
            ours = int(row.argmax())
            total_steps += 1
            if ours == step["token"]:
                exact_steps += 1
                continue
            assert _near_tie(step, ours), (case["text"], ours, step)
    self_mismatch = sum(a != s["token"] for case in cases
                        for a, s in zip(case["batched_top1"], case["greedy"]))
    print(f"teacher-forced mismatches: ours {total_steps - exact_steps}/{total_steps}, "
          f"llama.cpp batched vs its own decode {self_mismatch}/{total_steps}")
    assert total_steps - exact_steps <= 2 * max(self_mismatch, 1)


def test_greedy_free_running_diverges_only_at_near_ties(model_and_cases):
    """Our own greedy decode (decode path, KV cache) against llama.cpp's continuation."""
    model, cases = model_and_cases
    identical = 0
    for case in cases:
        steps = case["greedy"]
        got = [s.token for s in model.generate_ids(case["ids"], max_tokens=len(steps),
                                                   stop_ids=set())]
        want = [s["token"] for s in steps]
        n = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
        if n is None:
            identical += 1
            continue
        assert _near_tie(steps[n], got[n]), (case["text"], n, got[n], steps[n])
    self_identical = sum(c["batched_top1"] == [s["token"] for s in c["greedy"]] for c in cases)
    print(f"identical greedy continuations: ours {identical}/{len(cases)}, llama.cpp batched "
          f"vs its own decode {self_identical}/{len(cases)}")
