"""Generation API on the real SmolLM2 model: cache paths, sampling, stop strings, streaming, chat,
and every bad input the issue lists."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

import gguf_runtime
from gguf_runtime.errors import GGUFError, ModelInputError, UnsupportedError
from gguf_runtime.sampling import SamplingParams, apply_penalties, filter_logits, sample
from quant import QuantError
from tests.realmodels import gemma3_path, smollm2_path
from tests.stepping import assert_block_step_is_op_by_op


@pytest.fixture(scope="module")
def smol():
    return gguf_runtime.load(smollm2_path(), n_ctx=256)


# ---------------------------------------------------------------- sampling (pure functions)
def test_greedy_is_argmax():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert sample(logits, [], SamplingParams(temperature=0)) == 1


def test_top_k_top_p_min_p_filters():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = lambda p: torch.isfinite(filter_logits(logits, p)).nonzero().flatten().tolist()
    assert kept(SamplingParams(top_k=2, top_p=1.0, min_p=0.0)) == [0, 1]
    assert kept(SamplingParams(top_k=0, top_p=0.7, min_p=0.0)) == [0, 1]
    assert kept(SamplingParams(top_k=0, top_p=1.0, min_p=0.2)) == [0, 1, 2]


def test_repeat_presence_frequency_penalties():
    logits = torch.tensor([2.0, -2.0, 1.0])
    p = SamplingParams(repeat_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25)
    out = apply_penalties(logits, [0, 1, 1], p)
    assert torch.allclose(out, torch.tensor([2.0 / 2 - 0.25 - 0.5, -2.0 * 2 - 0.5 - 0.5, 1.0]))


def test_seeded_sampling_is_reproducible(smol):
    kw = dict(max_tokens=12, temperature=0.9, top_k=50, seed=1234)
    a = smol.generate("Tell me a story:", **kw)
    b = smol.generate("Tell me a story:", **kw)
    assert a == b and a


# ---------------------------------------------------------------- decode path == full forward
def test_prefill_plus_decode_equals_full_forward(smol):
    ids = smol.tokenize("The quick brown fox jumps over the lazy dog because")
    got = [s.token for s in smol.generate_ids(ids, max_tokens=8, stop_ids=set())]
    full = smol.logits(ids + got)
    expected = full[len(ids) - 1:-1].argmax(-1).tolist()
    assert got == expected


def test_cache_reuse_between_calls_gives_same_tokens(smol):
    ids = smol.tokenize("Once upon a time")
    first = [s.token for s in smol.generate_ids(ids, max_tokens=6, stop_ids=set())]
    longer = ids + first[:3]
    reused = [s.token for s in smol.generate_ids(longer, max_tokens=3, stop_ids=set())]
    assert smol._cache is not None and reused == first[3:6]


def test_logprobs_are_log_softmax_of_logits(smol):
    ids = smol.tokenize("Hello")
    step = next(iter(smol.generate_ids(ids, max_tokens=1)))
    expected = torch.log_softmax(smol.logits(ids)[-1], -1)[step.token]
    assert abs(step.logprob - float(expected)) < 1e-4


# ---------------------------------------------------------------- text, stop strings, streaming
def test_stop_string_cuts_text(smol):
    full = smol.generate("1, 2, 3, 4,", max_tokens=12)
    assert "," in full
    cut = smol.generate("1, 2, 3, 4,", max_tokens=12, stop=",")
    assert cut == full[:full.index(",")]
    assert smol._last_completion.finish_reason == "stop"


def test_stream_equals_non_stream(smol):
    prompt = "Write the word 'naïve' and an emoji:"
    whole = smol.generate(prompt, max_tokens=16)
    pieces = list(smol.generate(prompt, max_tokens=16, stream=True))
    assert "".join(pieces) == whole and len(pieces) > 1


def test_chat_template_and_eos(smol):
    reply = smol.chat([{"role": "user", "content": "What is the capital of France?"}],
                      max_tokens=32, details=True)
    assert "Paris" in reply.text
    assert reply.finish_reason == "eos"


# ---------------------------------------------------------------- bad input
def test_prompt_longer_than_context(smol):
    with pytest.raises(ModelInputError, match="longer than the context"):
        smol.generate("word " * 400, max_tokens=4)


def test_empty_prompt_without_bos(smol):
    assert smol.tokenize("") == []          # SmolLM2 adds no BOS
    with pytest.raises(ModelInputError, match="empty prompt"):
        smol.generate("", max_tokens=4)


def test_token_ids_outside_vocabulary(smol):
    with pytest.raises(ModelInputError, match="outside the vocabulary"):
        smol.logits([1, 2, 10**6])


@pytest.mark.parametrize("messages, match", [
    ([{"role": "wizard", "content": "hi"}], "role 'wizard'"),
    ([{"role": "user"}], "string 'content'"),
    ([], "non-empty list"),
    ("hello", "non-empty list"),
])
def test_chat_bad_messages(smol, messages, match):
    with pytest.raises(ModelInputError, match=match):
        smol.chat(messages, max_tokens=1)


def test_bad_sampling_values(smol):
    with pytest.raises(ModelInputError, match="top_p"):
        smol.generate("hi", max_tokens=1, top_p=1.5)


def _tiny_gguf(path, arch: str) -> None:
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_block_count(1)
    w.add_head_count(2)
    w.add_feed_forward_length(64)
    w.add_tensor("token_embd.weight", np.zeros((16, 32), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file()
    w.close()


def test_registered_but_not_runnable_architecture(tmp_path, monkeypatch):
    # Every registered family runs today; a spec marked not runnable must still be refused.
    from gguf_runtime import registry
    spec = registry.ArchSpec("deepseek2", runnable=False,
                             not_runnable_reason="latent attention is not implemented yet")
    monkeypatch.setitem(registry.ARCHITECTURES, "deepseek2", spec)
    path = tmp_path / "mla.gguf"
    _tiny_gguf(path, "deepseek2")
    with pytest.raises(UnsupportedError, match="deepseek2.*not implemented") as e:
        gguf_runtime.load(path)
    assert "\n" not in str(e.value)


def test_unknown_architecture_lists_supported(tmp_path):
    path = tmp_path / "mamba.gguf"
    _tiny_gguf(path, "mamba")
    with pytest.raises(UnsupportedError, match="unknown architecture 'mamba'.*llama") as e:
        gguf_runtime.load(path)
    assert "\n" not in str(e.value)


def test_missing_file_is_gguf_error(tmp_path):
    with pytest.raises(GGUFError, match="cannot open"):
        gguf_runtime.load(tmp_path / "nope.gguf")


def test_decode_profile_splits_a_step_into_kernels_and_the_rest(smol):
    """`gguf-runtime bench --profile`'s numbers: the kernel share is part of the step."""
    from gguf_runtime.generate import prefill
    from gguf_runtime.bench.profiling import profile_decode

    with torch.inference_mode():
        cache = smol._new_cache(64)
        token = int(prefill(smol.transformer, smol.tokenize("Hello there"), cache).argmax())
    prof = profile_decode(smol.transformer, cache, token, n_tokens=4)
    assert 0 < prof.step_ms and 0 <= prof.kernel_ms <= prof.step_ms
    assert prof.torch_ops and "outside them" in prof.format()


@pytest.mark.parametrize("find, kv_type", [(smollm2_path, "f32"), (gemma3_path, "f32"), (gemma3_path, "f16")],
                         ids=["smollm2", "gemma3", "gemma3-f16-cache"])
def test_one_call_block_step_is_bit_identical_on_real_models(find, kv_type, monkeypatch):
    """Q4_1 (float rows) and Q4_K_M (integer rows on Q8_K x), sliding windows, Q/K norms:
    the decode logits of the one-call step equal the op-by-op decode's, bit for bit."""
    path = find()
    n_blocks = gguf_runtime.load(path, n_ctx=8).config.block_count
    ids = list(range(1000, 1024))
    assert_block_step_is_op_by_op(path, ids, 12, n_blocks, monkeypatch, kv_type)


def test_block_step_outside_the_cache_is_an_error(smol):
    block = smol.transformer.blk[0]
    step = smol.transformer._decode_step(block)
    if step is None:
        pytest.skip("native kernels unavailable")
    cache = smol._new_cache(4)
    x = torch.zeros(1, smol.config.embedding_length)
    cos, sin = block.rope.cos_sin(torch.tensor([0]))
    with pytest.raises(QuantError, match="position 4 of a cache of 4"):
        step(x, cos, sin, cache.k[0], cache.v[0], 4)
    with pytest.raises(QuantError, match="torch.bfloat16 keys"):
        step(x, cos, sin, cache.k[0].bfloat16(), cache.v[0].bfloat16(), 0)
    with pytest.raises(QuantError, match="do not fit a block of width 576"):   # another model's cache
        step(x, cos, sin, cache.k[0][:1], cache.v[0][:1], 0)
    with pytest.raises(QuantError, match="do not fit"):
        step(x[:, :100], cos, sin, cache.k[0], cache.v[0], 0)
    rows = torch.zeros(2, smol.config.embedding_length)
    cos2, sin2 = block.rope.cos_sin(torch.tensor([0, 1]))
    with pytest.raises(QuantError, match="one cache of one dtype per row"):    # caches of two dtypes
        step.rows(rows, cos2, sin2, [cache.k[0], cache.k[0].half()], [cache.v[0], cache.v[0].half()], [0, 1])
    with pytest.raises(QuantError, match="position 0, 4 of a cache of 4"):
        step.rows(rows, cos2, sin2, [cache.k[0]] * 2, [cache.v[0]] * 2, [0, 4])


def test_unknown_kv_cache_type_lists_supported():
    with pytest.raises(ModelInputError, match="unknown KV cache type 'q8_0'; supported: f16, f32"):
        gguf_runtime.load(smollm2_path(), kv_type="q8_0")
