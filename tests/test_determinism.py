"""Same input, same output: kernel choice and numerics never depend on a timing, on what ran
before, on chunk boundaries or on cache reuse beyond float32 summation order.

The bound: a prompt's rows are computed with float32 activations on every path (one chunk,
many, one token at a time, a reused cache; quant.kernels.registry.prompt_rows), so its logits
differ between those by float32 summation order only: measured at most 1.5e-4 on both real
models (logits of magnitude 10-30); PROMPT_BOUND = 1e-3 gives about 7x room. That holds by
default and with the opt-in Q8_K rows for generated tokens (q8k: x rounded as llama.cpp does,
which turns a last-bit difference into a few tenths of a logit, hence never on a prompt's rows,
and a chat turn prefills the previous answer again rather than reuse its decoded cache rows).
Two fresh runs give bit-identical logits and tokens.
"""

from __future__ import annotations

import pytest
import torch

import gguf_runtime
from gguf_runtime.generate import prefill
from quant.kernels import cpu, registry
from quant.kernels import kernel_for
from tests.realmodels import gemma3_path, smollm2_path

PROMPT_BOUND = 1e-3
MODELS = {"gemma3": gemma3_path, "smollm2": smollm2_path}
TEXT = ("The history of the Roman Empire spans many centuries, from the founding of the city to "
        "the fall of Constantinople in 1453. Historians divide it into")
OTHERS = ["Once upon a time", "def fibonacci(n):\n    if n < 2:\n        return n\n",
          "The capital of France is"]


@pytest.fixture(scope="module", params=sorted(MODELS))
def path(request):
    return MODELS[request.param]()


@pytest.fixture(params=[None, "q8k,native,block,reference"], ids=["default", "q8k"])
def kernels(request, monkeypatch):
    """The default kernels, and the opt-in Q8_K rows for generated tokens."""
    if request.param:
        monkeypatch.setenv(registry.ENV_BACKENDS, request.param)
    else:
        monkeypatch.delenv(registry.ENV_BACKENDS, raising=False)
    return request.param


def chunked_logits(model, ids: list[int], chunks: list[int]) -> torch.Tensor:
    """All-position logits of one fresh sequence fed in chunks of the given sizes."""
    assert sum(chunks) == len(ids)
    cache, outs, start = model._new_cache(len(ids)), [], 0
    for n in chunks:
        outs.append(prefill(model.transformer, ids[start:start + n], cache, all_logits=True))
        start += n
    return torch.cat(outs)


def assert_within_bound(got: torch.Tensor, want: torch.Tensor) -> None:
    gap = (got - want).abs().max().item()
    assert gap <= PROMPT_BOUND, f"logits moved by {gap:.2e} > {PROMPT_BOUND}"
    top2 = want.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 2 * PROMPT_BOUND      # no near-tie at the position
    assert torch.equal(got.argmax(-1)[clear], want.argmax(-1)[clear])


@pytest.mark.realmodel
@torch.inference_mode()
def test_prompt_logits_do_not_depend_on_chunking(path):
    model = gguf_runtime.load(path, n_ctx=256)
    ids = model.tokenize(TEXT)
    n = len(ids)
    one = chunked_logits(model, ids, [n])
    assert torch.equal(chunked_logits(model, ids, [n]), one)          # the same call: bit-identical
    for chunks in ([7] * (n // 7) + [n % 7], [20, n - 20], [1, n - 1], [1] * n):
        assert_within_bound(chunked_logits(model, ids, [c for c in chunks if c]), one)


@pytest.mark.realmodel
def test_logits_and_tokens_do_not_depend_on_what_ran_before(path, kernels):
    fresh = gguf_runtime.load(path, n_ctx=256)
    used = gguf_runtime.load(path, n_ctx=256)
    for text in OTHERS:                                   # the same Model ran other prompts first
        list(used.generate_ids(used.tokenize(text), max_tokens=6))
    ids = fresh.tokenize(TEXT)
    with torch.inference_mode():
        reused = used._prefill_reusing_cache(ids)
    assert_within_bound(reused, fresh.logits(ids)[-1])
    assert used.timings.reused_tokens >= 1                # the BOS came from the earlier prompts
    a = [s.token for s in gguf_runtime.load(path, n_ctx=256).generate_ids(ids, max_tokens=12)]
    b = [s.token for s in fresh.generate_ids(ids, max_tokens=12)]
    assert a == b                                         # two fresh runs: the same tokens


@pytest.mark.realmodel
def test_chat_turn_reusing_the_cache_equals_a_fresh_prefill_of_the_history(path, kernels):
    model = gguf_runtime.load(path, n_ctx=512)
    turn1 = model.tokenize("Question: what is the capital of France? Answer:")
    answer = [s.token for s in model.generate_ids(turn1, max_tokens=8)]
    turn2 = turn1 + answer + model.tokenize(" Question: and of Italy? Answer:", add_bos=False)
    with torch.inference_mode():
        reused = model._prefill_reusing_cache(turn2)
    # the first turn's prompt is reused; its answer, decoded with Q8_K-rounded x, is prefilled again
    assert model.timings.reused_tokens == len(turn1)
    assert_within_bound(reused, gguf_runtime.load(path, n_ctx=512).logits(turn2)[-1])


def test_no_rounding_by_default_and_never_on_prompt_rows(kernels):
    """By default no kernel rounds x; with q8k named, generated tokens take it, a prompt's rows
    never, whatever their count (only a named bf16 may round a prompt)."""
    from gguf import GGMLQuantizationType as T
    from quant.qtensor import QTensor

    w = QTensor(torch.zeros(4 * 144, dtype=torch.uint8), T.Q4_K, (4, 256))
    with registry.prompt_rows():
        for rows in (1, 2, 16, 17, 512):
            backend = registry.declared_backend(kernel_for(w, rows).backend)
            assert not backend.rounds_activations, (rows, backend.name)
    assert registry.in_prompt_rows() is False
    generated = registry.declared_backend(kernel_for(w, 1).backend)
    if kernels is None:
        assert not generated.rounds_activations
    elif registry.backend_available("q8k"):
        assert generated.name == "q8k"                     # generated tokens: llama.cpp's rounding


def test_bf16_is_opt_in_and_decided_by_cpu_flags(monkeypatch):
    import quant.kernels.bf16 as bf16

    assert "bf16" not in registry.allowed_backends()      # not named: never runs
    monkeypatch.setenv(registry.ENV_BACKENDS, "bf16,native,reference")
    assert "bf16" in registry.allowed_backends()
    with registry.prompt_rows():
        assert "bf16" in registry.allowed_backends()      # named: a prompt may take it
    for flags, want in (({"avx2"}, False), ({"avx2", "avx512_bf16"}, True), ({"amx_bf16"}, True)):
        monkeypatch.setattr(cpu, "model_and_flags", lambda f=flags: ("test CPU", frozenset(f)))
        assert cpu.bf16_native() is want
        assert bf16._available() is (want and bf16.native.load() is not None)


def test_no_backend_is_chosen_by_a_stopwatch():
    """Availability checks read flags, never time a kernel (the old bf16 probe did)."""
    import inspect

    import quant.kernels as kernels

    for module in (kernels.bf16, kernels.native, kernels.block_step, kernels.registry, kernels.cpu):
        source = inspect.getsource(module)
        assert "perf_counter" not in source and "time.time" not in source, module.__name__
