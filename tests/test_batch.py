"""Transformer.forward_batch: N sequences advanced one token each in one step (what the server's
continuous batching runs) give, row for row, bit for bit the logits each sequence gets alone
(decode_one, the native one-call block step included), on every family and on both real models.

Why it can be exact: every decode kernel computes a row as it computes it alone
(tests/test_kernels.py::test_a_decode_row_is_the_same_whatever_the_row_count), the row ops are
per row, and attention runs per sequence on its own cache.
"""

from __future__ import annotations

import pytest
import torch

import gguf_runtime
from gguf_runtime.generate import decode_one, prefill
from quant.kernels import DECODE_MAX_ROWS
from tests.realmodels import gemma3_path, smollm2_path

# distinct lengths, so the rows sit at different positions of their caches
PROMPTS = [[1, 5, 9, 200, 31], [1, 77, 3], [1, 4, 8, 15, 16, 23, 42, 99, 100], [1, 2]]


def assert_batch_equals_alone(path, prompts=PROMPTS, steps=3) -> None:
    model = gguf_runtime.load(str(path), n_ctx=64)
    t = model.transformer
    with torch.inference_mode():
        batch = [model._new_cache(64) for _ in prompts]
        alone = [model._new_cache(64) for _ in prompts]
        logits = [prefill(t, p, c) for p, c in zip(prompts, batch)]
        for p, c in zip(prompts, alone):
            prefill(t, p, c)
        for step in range(steps):
            tokens = [int(row.argmax()) for row in logits]
            together = t.forward_batch(torch.tensor(tokens), batch)
            each = torch.stack([decode_one(t, tok, c) for tok, c in zip(tokens, alone)])
            assert torch.equal(together, each), f"step {step}: {(together - each).abs().max():.3g}"
            logits = list(together)
    assert [c.length for c in batch] == [len(p) + steps for p in prompts]


def family_cases():
    from tests import precision_cases as pc
    return list(pc.CASES)


@pytest.mark.parametrize("name", family_cases())
def test_every_family_batches_as_each_alone(name, tmp_path_factory):
    pytest.importorskip("transformers")
    from tests import precision_cases as pc
    folder = tmp_path_factory.getbasetemp() / f"precision-{name}"     # shared with test_precision
    assert_batch_equals_alone(pc.convert_case(name, folder, "Q4_K_M"))


@pytest.mark.realmodel
@pytest.mark.parametrize("path", [smollm2_path, gemma3_path], ids=["smollm2", "gemma3"])
def test_real_models_batch_as_each_alone(path):
    assert_batch_equals_alone(path())


@pytest.mark.realmodel
def test_a_full_batch_and_bad_batches():
    model = gguf_runtime.load(str(smollm2_path()), n_ctx=8)
    t = model.transformer
    prompts = [[1, 2 + i] for i in range(DECODE_MAX_ROWS)]
    assert_batch_equals_alone(smollm2_path(), prompts, steps=1)
    caches = [model._new_cache(8) for _ in range(DECODE_MAX_ROWS + 1)]
    with pytest.raises(ValueError, match=f"1..{DECODE_MAX_ROWS} sequences"):
        t.forward_batch(torch.ones(DECODE_MAX_ROWS + 1, dtype=torch.long), caches)
    with pytest.raises(ValueError, match="2 tokens for 1 caches"):
        t.forward_batch(torch.ones(2, dtype=torch.long), caches[:1])
    full = caches[0]
    full.advance(8)
    with pytest.raises(gguf_runtime.errors.ModelInputError, match="do not fit in the context of 8"):
        t.forward_batch(torch.ones(2, dtype=torch.long), [caches[1], full])
    assert caches[1].length == 0                        # nothing half-run
