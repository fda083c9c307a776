"""Logits and greedy continuations of both real models against llama.cpp.

The oracle is tests/fixtures/fidelity_<model>.json, written by tools/gen_fidelity_fixtures.py
with llama-cpp-python. llama.cpp's quantized matmuls and ours round differently (its CPU kernels
quantize activations), so logits differ by a few tenths; the bars are the issue's:
- last prompt position: same top-1, top-5 sets share at least 4;
- greedy continuation, teacher-forced on llama.cpp's 32 tokens, through our batched (prefill)
  and our one-token (decode) kernels: at every step our argmax is
  llama.cpp's token, or llama.cpp itself had a near-tie there: our pick is in its top 5 with a
  logit within NEAR_TIE of its top 1;
- llama.cpp does not agree with itself either, two ways the fixture records: evaluating prompt +
  continuation as one batch ("batched_top1": its batched kernels round differently), and running
  a copy of the file whose F32 norm weights each moved one float32 ulp ("nudged_*": a relative
  change of 6e-8). Activations rounded to 8 bits in every matmul turn a last-bit difference into
  0.16 (SmolLM2) to 0.26 (Gemma 3) logits on average within 30 layers, so llama.cpp on the
  nudged file changes its argmax at 13 and 8 of the 288 steps and keeps only 2/9 of its own
  free-running continuations on both models. Our teacher-forced mismatches must stay within
  twice llama.cpp's own, our mean logit difference from llama.cpp within LOGIT_GAP_FACTOR of the
  nudged llama.cpp's, and the count of
  identical free-running continuations is reported next to llama.cpp's against itself: which
  prompts survive 32 free-running steps is decided by the last bit of arithmetic, not by
  whether the model is computed right. What the free-running test asserts is that every
  divergence is at a near-tie, and, as a gross-failure check (a broken cache shares a few
  tokens per prompt), that the tokens shared before the first divergence, summed over prompts,
  reach SHARED_PREFIX_FLOOR of what llama.cpp one ulp off shares with itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gguf_runtime
from gguf_runtime.generate import decode_one, prefill
from tests.realmodels import gemma3_path, smollm2_path

FIXTURES = Path(__file__).parent / "fixtures"
NEAR_TIE = 0.5      # logits; the measured mean |ours - llama.cpp| is about 0.2
LOGIT_GAP_FACTOR = 1.5     # our mean |logit - llama.cpp's| against llama.cpp one ulp off's
SHARED_PREFIX_FLOOR = 0.4   # of the tokens llama.cpp one ulp off shares with itself, summed over
                            # prompts: a gross-failure check only. Each prompt's prefix ends at a
                            # coin toss at a near-tie, so the sum moves a lot with any last-bit
                            # change (ours: 213 with float x, 117 with Q8-rounded x, both with the
                            # same 0.17 logit gap; a RoPE base x2 bug still shares 181)
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


def _forced_rows(model, ids: list[int], tokens: list[int], path: str) -> torch.Tensor:
    """Our next-token logits after ids + tokens[:k], for each k, one row per step: "prefill" runs
    everything as one sequence (the batched kernels), "decode" feeds the tokens one at a time
    through the KV cache (the one-token kernels, as the fixture's llama.cpp run did)."""
    fed = ids + tokens[:-1]
    if path == "prefill":
        return model.logits(fed)[len(ids) - 1:]
    with torch.inference_mode():
        cache = model._new_cache(len(fed))
        rows = [prefill(model.transformer, ids, cache)]
        rows += [decode_one(model.transformer, t, cache) for t in tokens[:-1]]
    return torch.stack(rows)


@pytest.mark.parametrize("path", ["prefill", "decode"])
def test_greedy_teacher_forced(model_and_cases, path):
    model, cases = model_and_cases
    exact_steps = total_steps = 0
    ours_gap, nudged_gap = [], []          # |logit - llama.cpp's| on llama.cpp's top-5 ids
    for case in cases:
        steps = case["greedy"]
        logits = _forced_rows(model, case["ids"], [s["token"] for s in steps], path)
        for row, step, nudged_row in zip(logits, steps, case["nudged_top5_logits"]):
            ours_gap += [abs(float(row[i]) - v) for i, v in step["top5"]]
            nudged_gap += [abs(a - v) for (_, v), a in zip(step["top5"], nudged_row)]
            ours = int(row.argmax())
            total_steps += 1
            if ours == step["token"]:
                exact_steps += 1
                continue
            assert _near_tie(step, ours), (case["text"], ours, step)
    batched = _self_mismatches(cases, "batched_top1")
    nudged = _self_mismatches(cases, "nudged_top1")
    ours_mean, nudged_mean = (sum(g) / len(g) for g in (ours_gap, nudged_gap))
    print(f"teacher-forced ({path}) mismatches: ours {total_steps - exact_steps}/{total_steps}, "
          f"llama.cpp against itself: batched {batched}/{total_steps}, "
          f"one ulp off {nudged}/{total_steps}; mean |logit difference| on the top 5: "
          f"ours {ours_mean:.3f}, llama.cpp one ulp off {nudged_mean:.3f}")
    assert total_steps - exact_steps <= 2 * max(batched, nudged, 1)
    assert ours_mean <= LOGIT_GAP_FACTOR * nudged_mean


def _self_mismatches(cases: list[dict], field: str) -> int:
    """Steps where llama.cpp's argmax in the fixture's `field` run is not its decode's token."""
    return sum(a != s["token"] for case in cases for a, s in zip(case[field], case["greedy"]))


def test_greedy_free_running_diverges_only_at_near_ties(model_and_cases):
    """Our own greedy decode (decode path, KV cache) against llama.cpp's continuation."""
    model, cases = model_and_cases
    wants = [[s["token"] for s in c["greedy"]] for c in cases]
    ours = []
    for case, want in zip(cases, wants):
        got = [s.token for s in model.generate_ids(case["ids"], max_tokens=len(want),
                                                   stop_ids=set())]
        ours.append(_agreed(got, want))
        if ours[-1] < len(want):
            n = ours[-1]
            assert _near_tie(case["greedy"][n], got[n]), (case["text"], n, got[n], case["greedy"][n])
    nudged = [_agreed(c["nudged_greedy"], w) for c, w in zip(cases, wants)]
    batched = sum(c["batched_top1"] == w for c, w in zip(cases, wants))
    whole = [len(w) for w in wants]
    print(f"identical greedy continuations: ours {sum(map(int.__eq__, ours, whole))}/{len(cases)}, "
          f"llama.cpp against itself: batched {batched}/{len(cases)}, "
          f"one ulp off {sum(map(int.__eq__, nudged, whole))}/{len(cases)}; tokens before the "
          f"first divergence: ours {sum(ours)}/{sum(whole)}, llama.cpp one ulp off {sum(nudged)}")
    assert sum(ours) >= SHARED_PREFIX_FLOOR * sum(nudged)


def _agreed(got: list[int], want: list[int]) -> int:
    """How many tokens `got` shares with `want` before the first difference."""
    return next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
