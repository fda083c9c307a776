"""Hostile files: each a small valid model with one lie in its header (the cases the issue's
fuzzer and hand-made files found). Loading and running each must end in one GGUFError with a
one-line message, never another exception, a crash, a huge allocation or a wrong answer."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

import gguf_runtime
from gguf_runtime.errors import GGUFError
from tests.fuzzing import add_key

D, H, KV, DK, F, V = 32, 4, 2, 8, 64, 40
META = {"context_length": 64, "embedding_length": D, "block_count": 1, "feed_forward_length": F,
        "attention.head_count": H, "attention.head_count_kv": KV,
        "attention.layer_norm_rms_epsilon": 1e-5, "rope.dimension_count": DK, "vocab_size": V}


def tensors() -> dict[str, np.ndarray]:
    """A 1-block llama's float32 tensors, PyTorch order (rows, cols)."""
    rng = np.random.default_rng(0)
    m = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)  # noqa: E731
    return {"token_embd.weight": m(V, D), "output_norm.weight": 1 + m(D), "output.weight": m(V, D),
            "blk.0.attn_norm.weight": 1 + m(D), "blk.0.attn_q.weight": m(H * DK, D),
            "blk.0.attn_k.weight": m(KV * DK, D), "blk.0.attn_v.weight": m(KV * DK, D),
            "blk.0.attn_output.weight": m(D, H * DK), "blk.0.ffn_norm.weight": 1 + m(D),
            "blk.0.ffn_gate.weight": m(F, D), "blk.0.ffn_up.weight": m(F, D),
            "blk.0.ffn_down.weight": m(D, F)}


def write(path: Path, meta: dict, ts: dict[str, np.ndarray]) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    for k, v in meta.items():
        add_key(w, f"llama.{k}", v)
    for name, a in ts.items():
        w.add_tensor(name, a)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file()
    w.close()
    return path


def run(path: Path) -> None:
    model = gguf_runtime.load(path, n_ctx=16)
    model.logits([0, 1, 2])
    list(model.generate_ids([1, 2], max_tokens=2))


def test_the_unmodified_file_runs(tmp_path):
    run(write(tmp_path / "ok.gguf", META, tensors()))


def reshaped(name: str, shape: tuple) -> dict:
    ts = tensors()
    ts[name] = ts[name].reshape(shape)
    return ts


def resized(name: str, shape: tuple) -> dict:
    ts = tensors()
    ts[name] = np.ones(shape, dtype=np.float32)
    return ts


CASES = {
    # lying shapes (the native kernels read past their buffers before)
    "token_embd one long row": (META, reshaped("token_embd.weight", (1, V * D)), "token_embd"),
    "attn_output rows": (META, resized("blk.0.attn_output.weight", (4000, H * DK)), "attn_output"),
    "attn_norm of 1 element": (META, resized("blk.0.attn_norm.weight", (1,)), "attn_norm"),
    "ffn_down rows": (META, resized("blk.0.ffn_down.weight", (1500, F)), "ffn_down"),
    "ffn_up rows": (META, resized("blk.0.ffn_up.weight", (F + 1, D)), "ffn_up"),
    "output rows": (META, resized("output.weight", (V + 3, D)), "output"),
    "vocab larger than the embedding": ({**META, "vocab_size": V * 10}, tensors(), "token_embd"),
    # keys out of range
    "rope.dimension_count 2^20": ({**META, "rope.dimension_count": 1 << 20}, tensors(), "rope.dimension_count"),
    "rope.dimension_count odd": ({**META, "rope.dimension_count": 7}, tensors(), "rope.dimension_count"),
    "rope.dimension_count > head dim": ({**META, "rope.dimension_count": 2 * DK}, tensors(), "rope.dimension_count"),
    "block_count 2^31": ({**META, "block_count": 1 << 31}, tensors(), "block_count"),
    "key_length huge": ({**META, "attention.key_length": 0xbbdb4b31}, tensors(), "key_length"),
    "head_count huge": ({**META, "attention.head_count": 1 << 30}, tensors(), "head_count"),
    "head_count_kv not dividing": ({**META, "attention.head_count_kv": 3}, tensors(), "head_count_kv"),
    "key_length 1e-45": ({**META, "attention.key_length": 1e-45}, tensors(), "key_length"),
    "context_length inf": ({**META, "context_length": float("inf")}, tensors(), "context_length"),
    "norm epsilon nan": ({**META, "attention.layer_norm_rms_epsilon": float("nan")}, tensors(), "epsilon"),
    "embedding_length an array": ({**META, "embedding_length": [D, D]}, tensors(), "embedding_length"),
    "head_count array of the wrong length": ({**META, "attention.head_count": [H, H, H]}, tensors(), "head_count"),
    "context_length 0": ({**META, "context_length": 0}, tensors(), "context_length"),
    "block_count 0": ({**META, "block_count": 0}, tensors(), "block_count"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_lie_is_one_clear_error(tmp_path, case):
    meta, ts, names = CASES[case]
    path = write(tmp_path / "bad.gguf", meta, ts)
    with pytest.raises(GGUFError) as err:
        run(path)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message
    assert names in message, message


def test_a_huge_tensor_name_makes_a_short_message(tmp_path):
    ts = tensors()
    ts["blk.0.attn_norm.weight" + "x" * 100_000] = ts.pop("blk.0.ffn_norm.weight")[:1]
    ts["blk.0.ffn_norm.weight"] = np.ones(3, dtype=np.float32)            # a lie to report
    with pytest.raises(GGUFError) as err:
        run(write(tmp_path / "bad.gguf", META, ts))
    assert len(str(err.value)) < 400 and "\n" not in str(err.value)


def test_a_kv_cache_larger_than_memory_is_refused_before_allocating(tmp_path):
    from gguf_runtime.kv_cache import KVCache, available_memory

    free = available_memory()
    if free is None:
        pytest.skip("available memory unknown here")
    n_ctx = free // (64 * 4) + 1                     # one more token than fits: f32 k + v of 32 each
    with pytest.raises(GGUFError, match="KV cache of .* lower the context"):
        KVCache(n_ctx, (1,), 32, 32)


HOSTILE_TEMPLATES = {
    "range 10**10": "{% for i in range(10**10) %}x{% endfor %}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "include": "{% include 'other.j2' %}",
    "division by zero": "{{ 1 // 0 }}",
    "nested empty loops": "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
    "nested loops writing": "{% for a in range(99999) %}{% for b in range(99999) %}ab{% endfor %}{% endfor %}",
    "lipsum": "{{ lipsum(10**6) }}",
    "padded format": "{{ '{0:>999999999}'.format('a') }}",
    "percent format": "{{ '%999999999s'|format('a') }}",
    "string repeat": "{{ 'a' * 10**9 }}",
    "list repeat": "{{ ([1] * 10**9)|length }}",
    "center": "{{ 'a'|center(999999999) }}",
    "ljust": "{{ 'a'.ljust(999999999) }}",
    "attribute escape": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
}


@pytest.mark.parametrize("name", list(HOSTILE_TEMPLATES))
def test_a_hostile_chat_template_is_one_error_within_2_5_seconds(name):
    import time

    from gguf_runtime.chat import render_chat
    from gguf_runtime.errors import ModelInputError

    t0 = time.monotonic()
    with pytest.raises(ModelInputError, match="chat template failed") as err:
        render_chat(HOSTILE_TEMPLATES[name], [{"role": "user", "content": "hi"}])
    assert time.monotonic() - t0 < 2.5                      # RENDER_SECONDS is 2
    assert "\n" not in str(err.value) and len(str(err.value)) < 700


def test_an_ordinary_template_still_renders_and_the_tracer_is_restored():
    import sys

    from gguf_runtime.chat import render_chat

    before = sys.gettrace()
    text = render_chat("{% for m in messages %}<{{ m.role }}>{{ m.content|center(9) }}{% endfor %}",
                       [{"role": "user", "content": "hi"}])
    assert text == "<user>" + "hi".center(9) and sys.gettrace() is before


def test_a_large_array_stays_a_view_of_the_file(tmp_path):
    """A large numeric array key is a read-only view of the map, not a list of Python objects
    (a hostile 300 MB array cost 2.9 GB and 5.7 s as a list)."""
    from gguf_runtime.gguf_file import LIST_MAX

    w = gguf.GGUFWriter(str(tmp_path / "big.gguf"), "llama")
    w.add_array("llama.junk", [7] * (LIST_MAX + 1))
    w.add_array("llama.small", [7] * 3)
    for name, a in tensors().items():
        w.add_tensor(name, a)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file()
    w.close()
    meta = gguf_runtime.open_gguf(tmp_path / "big.gguf").metadata
    junk = meta["llama.junk"]
    assert isinstance(junk, np.ndarray) and junk.size == LIST_MAX + 1 and not junk.flags.writeable
    assert (junk == 7).all() and meta["llama.small"] == [7, 7, 7]


def test_a_vocabulary_of_millions_of_empty_tokens_is_refused(tmp_path):
    from gguf_runtime.tokenizer import MAX_VOCAB

    w = gguf.GGUFWriter(str(tmp_path / "vocab.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list([""] * (MAX_VOCAB + 1))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFError, match="at most"):
        gguf_runtime.load_tokenizer(tmp_path / "vocab.gguf")


@pytest.mark.parametrize("key,value", [("tokens", [1, 2, 3]), ("scores", ["a", "b", "c"]),
                                       ("token_type", [0.5, 1.5, 2.5])])
def test_vocabulary_arrays_of_the_wrong_kind(tmp_path, key, value):
    w = gguf.GGUFWriter(str(tmp_path / "vocab.gguf"), "llama")
    w.add_tokenizer_model("llama")
    arrays = {"tokens": ["<unk>", "<s>", "</s>"], "scores": [0.0, 0.0, 0.0], "token_type": [2, 3, 3],
              key: value}
    for k, v in arrays.items():
        w.add_array(f"tokenizer.ggml.{k}", v)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFError, match=key):
        gguf_runtime.load_tokenizer(tmp_path / "vocab.gguf")
