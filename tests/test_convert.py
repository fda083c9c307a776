"""Converter: metadata and tensors as llama.cpp writes them, tokenizers, output types, sharded
input, every bad input as a one-line GGUFError, and no half-written file on failure.

Oracles: transformers' float forward (logits), transformers' own parameters (tensor bytes,
with llama.cpp's permutation and Gemma's 1 + w written out independently here), the
`tokenizers` / `sentencepiece` libraries (token ids). Model-level agreement for every
architecture is tests/test_architectures.py.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType as T

import gguf_runtime
from gguf_runtime import convert as convert_module
from gguf_runtime.convert import (OutputExistsError, ShapeMismatchError, SourceError,
                                  add_arguments, convert, main, run)
from gguf_runtime.convert_source import HFSource
from gguf_runtime.errors import GGUFError, UnsupportedError
from gguf_runtime.gguf_file import open_gguf
from gguf_runtime.tokenizer import Tokenizer
from tests.tiny_models import (CASES, CHAT_TEMPLATE, SPECIALS, write_bpe_tokenizer, write_json,
                               write_spm_tokenizer)

pytest.importorskip("transformers")

IDS = [5, 17, 200, 3, 99, 42, 7, 128, 64, 250, 1, 33]
_built: dict[tuple, tuple] = {}


def hf_model(name: str = "llama", **config):
    """(case, model) for a tiny case with config overrides, built once per session."""
    key = (name, tuple(sorted(config.items())))
    if key not in _built:
        case = CASES[name]
        case = dataclasses.replace(case, config={**case.config, **config})
        _built[key] = case, case.build()
    return _built[key]


def hf_folder(root: Path, name: str = "llama", **config) -> Path:
    case, model = hf_model(name, **config)
    return case.save(model, root / "model")


def one_line_error(exc_info) -> str:
    msg = str(exc_info.value)
    assert isinstance(exc_info.value, GGUFError) and "\n" not in msg and msg
    return msg


# ------------------------------------------------------------------ metadata and tensors
def test_llama_metadata_and_tensors_as_llama_cpp_writes_them(tmp_path):
    gf = open_gguf(convert(hf_folder(tmp_path), tmp_path / "m.gguf", progress=False))
    m = gf.metadata
    assert m["general.architecture"] == "llama" and m["general.file_type"] == 1
    expected = {"block_count": 2, "context_length": 128, "embedding_length": 64,
                "feed_forward_length": 128, "attention.head_count": 4,
                "attention.head_count_kv": 2, "rope.dimension_count": 16,
                "rope.freq_base": 10000.0, "vocab_size": 256}
    assert {k: m[f"llama.{k}"] for k in expected} == expected
    assert m["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert m["tokenizer.ggml.model"] == "none" and "tokenizer.ggml.tokens" not in m
    per_block = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                 "ffn_gate", "ffn_up", "ffn_down"]
    names = {"token_embd", "output_norm", "output"} | {f"blk.{i}.{n}" for i in range(2)
                                                        for n in per_block}
    assert set(gf.tensors) == {f"{n}.weight" for n in names}
    for t in gf.tensors.values():
        assert t.qtype == (T.F32 if len(t.shape) == 1 else T.F16), t.name
    assert gf.tensors["blk.0.ffn_down.weight"].shape == (64, 128)
    assert list(gf.tensors)[0] == "token_embd.weight"


def test_llama_q_k_rows_interleaved_per_head(tmp_path):
    """llama.cpp's permute: head h row 2i <- HF row i, row 2i+1 <- HF row d/2 + i."""
    _, model = hf_model("mistral")                       # head_dim 32 != hidden / heads
    gf = open_gguf(convert(hf_folder(tmp_path, "mistral"), tmp_path / "m.gguf", "F32",
                           progress=False))
    attn = model.model.layers[1].self_attn
    for hf, ours, heads in ((attn.q_proj, "attn_q", 4), (attn.k_proj, "attn_k", 2)):
        w, d = hf.weight.detach(), 32
        want = torch.empty_like(w)
        for h in range(heads):
            for i in range(d // 2):
                want[h * d + 2 * i] = w[h * d + i]
                want[h * d + 2 * i + 1] = w[h * d + d // 2 + i]
        got = gf.tensors[f"blk.1.{ours}.weight"].qtensor().dequantize()
        assert torch.equal(got, want)
    assert gf.metadata["llama.attention.key_length"] == 32


def test_gemma_norms_stored_as_one_plus_w(tmp_path):
    _, model = hf_model("gemma3")
    gf = open_gguf(convert(hf_folder(tmp_path, "gemma3"), tmp_path / "m.gguf", "F32",
                           progress=False))
    layer = model.model.layers[0]
    for hf, ours in ((model.model.norm, "output_norm"), (layer.input_layernorm, "blk.0.attn_norm"),
                     (layer.post_attention_layernorm, "blk.0.post_attention_norm"),
                     (layer.pre_feedforward_layernorm, "blk.0.ffn_norm"),
                     (layer.post_feedforward_layernorm, "blk.0.post_ffw_norm"),
                     (layer.self_attn.q_norm, "blk.0.attn_q_norm")):
        got = gf.tensors[f"{ours}.weight"].qtensor().dequantize()
        assert torch.equal(got, hf.weight.detach() + 1), ours
    m = gf.metadata
    assert m["gemma3.attention.sliding_window"] == 4 and m["gemma3.rope.freq_base_swa"] == 1e4
    assert m["gemma3.rope.scaling.type"] == "linear" and m["gemma3.rope.scaling.factor"] == 8
    assert "gemma3.attention.sliding_window_pattern" not in m      # llama.cpp's default period


def test_tied_embeddings_write_no_output(tmp_path):
    gf = open_gguf(convert(hf_folder(tmp_path, "qwen2"), tmp_path / "m.gguf", progress=False))
    assert "output.weight" not in gf.tensors and "blk.0.attn_q.bias" in gf.tensors
    assert gf.tensors["blk.0.attn_q.bias"].qtype == T.F32


def test_llama3_rope_freqs_first_and_f32(tmp_path):
    """rope_freqs = the divisors turning plain RoPE frequencies into transformers' llama3 ones."""
    _, model = hf_model("llama3-rope")
    gf = open_gguf(convert(hf_folder(tmp_path, "llama3-rope"), tmp_path / "m.gguf",
                           progress=False))
    freqs = gf.tensors["rope_freqs.weight"]
    assert list(gf.tensors)[0] == "rope_freqs.weight" and freqs.qtype == T.F32
    plain = 500000.0 ** (-torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    want = plain / model.model.rotary_emb.inv_freq.double()
    torch.testing.assert_close(freqs.qtensor().dequantize().double(), want, rtol=1e-5, atol=0)


# ------------------------------------------------------------------ output types
@pytest.mark.parametrize("out_type, weight_type, tol", [
    ("F32", T.F32, 1e-3), ("F16", T.F16, 2e-2), ("BF16", T.BF16, 5e-2), ("Q8_0", T.Q8_0, 5e-2)])
def test_output_types(tmp_path, out_type, weight_type, tol):
    """2-D weights take the type, 1-D stay F32; Q8_0 rows of 48 (not 32k) fall back to F16."""
    _, model = hf_model("llama", intermediate_size=48)
    path = convert(hf_folder(tmp_path, intermediate_size=48), tmp_path / "m.gguf", out_type,
                   progress=False)
    gf = open_gguf(path)
    for t in gf.tensors.values():
        want = T.F32 if len(t.shape) == 1 else weight_type
        if out_type == "Q8_0" and t.shape[-1] % 32:
            want = T.F16
        assert t.qtype == want, t.name
    assert gf.tensors["blk.0.ffn_down.weight"].qtype == (T.F16 if out_type == "Q8_0"
                                                         else weight_type)
    with torch.no_grad():
        ref = model(torch.tensor([IDS])).logits[0]
    got = gguf_runtime.load(path, n_ctx=32).logits(IDS)
    assert ((got - ref).abs().max() / ref.abs().max()).item() < tol


def test_sharded_folder_converts_to_the_same_bytes(tmp_path):
    case, model = hf_model()
    single = case.save(model, tmp_path / "a" / "model")
    sharded = tmp_path / "b" / "model"
    sharded.mkdir(parents=True)
    model.save_pretrained(sharded, max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("*.safetensors"))) > 2
    a = convert(single, tmp_path / "a.gguf", progress=False)
    b = convert(sharded, tmp_path / "b.gguf", progress=False)
    assert a.read_bytes() == b.read_bytes()


def test_bf16_checkpoint_is_widened_exactly(tmp_path):
    _, model = hf_model()
    src = tmp_path / "model"
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(src)
    gf = open_gguf(convert(src, tmp_path / "m.gguf", "F32", progress=False))
    want = model.model.layers[0].mlp.up_proj.weight.detach().to(torch.bfloat16).float()
    assert torch.equal(gf.tensors["blk.0.ffn_up.weight"].qtensor().dequantize(), want)


def test_tensors_are_read_once_each_after_the_header_is_written(tmp_path, monkeypatch):
    src, reads = hf_folder(tmp_path), []
    real_read = HFSource.read

    def spy(self, name):
        part = next(tmp_path.glob(".m.gguf.*.part"))
        assert part.read_bytes()[:4] == b"GGUF"          # header and infos already on disk
        reads.append(name)
        return real_read(self, name)

    monkeypatch.setattr(HFSource, "read", spy)
    gf = open_gguf(convert(src, tmp_path / "m.gguf", progress=False))
    assert sorted(reads) == sorted(set(reads)) and len(reads) == len(gf.tensors)


# ------------------------------------------------------------------ tokenizers
def test_bpe_tokenizer(tmp_path):
    src = hf_folder(tmp_path, vocab_size=328)
    write_bpe_tokenizer(src, 320)
    m = open_gguf(convert(src, tmp_path / "m.gguf", progress=False)).metadata
    assert m["tokenizer.ggml.model"] == "gpt2" and m["tokenizer.ggml.pre"] == "gpt-2"
    tokens, types = m["tokenizer.ggml.tokens"], m["tokenizer.ggml.token_type"]
    assert len(tokens) == 328 and tokens[320:] == [f"[PAD{i}]" for i in range(320, 328)]
    assert types[:3] == [3, 3, 3] and set(types[3:320]) == {1} and set(types[320:]) == {5}
    assert len(m["tokenizer.ggml.merges"]) == 320 - 256 - len(SPECIALS)
    assert (m["tokenizer.ggml.bos_token_id"], m["tokenizer.ggml.eos_token_id"]) == (0, 2)
    assert m["tokenizer.ggml.add_bos_token"] is False
    assert m["tokenizer.chat_template"] == CHAT_TEMPLATE
    assert_same_ids(Tokenizer.from_metadata(m), src)


def test_bpe_split_regex_tokenizer_is_qwen2(tmp_path):
    from gguf_runtime.convert_vocab import _QWEN2_SPLIT

    src = hf_folder(tmp_path, vocab_size=320)
    write_bpe_tokenizer(src, 320, split_regex=_QWEN2_SPLIT)
    m = open_gguf(convert(src, tmp_path / "m.gguf", progress=False)).metadata
    assert m["tokenizer.ggml.pre"] == "qwen2"
    assert_same_ids(Tokenizer.from_metadata(m), src)


def test_unknown_bpe_pre_tokenizer_is_an_error(tmp_path):
    src = hf_folder(tmp_path, vocab_size=320)
    write_bpe_tokenizer(src, 320, split_regex=r"\w+|\s+")
    with pytest.raises(UnsupportedError) as e:
        convert(src, tmp_path / "m.gguf", progress=False)
    assert "pre-tokenizer" in one_line_error(e) and "llama-bpe" in str(e.value)
    assert not (tmp_path / "m.gguf").exists()


def test_sentencepiece_style_tokenizer_json_needs_tokenizer_model(tmp_path):
    src = hf_folder(tmp_path, vocab_size=320)
    write_bpe_tokenizer(src, 320)
    spec = json.loads((src / "tokenizer.json").read_text())
    spec["model"]["byte_fallback"] = True
    write_json(src / "tokenizer.json", spec)
    with pytest.raises(UnsupportedError) as e:
        convert(src, tmp_path / "m.gguf", progress=False)
    assert "tokenizer.model" in one_line_error(e)


def assert_same_ids(ours: Tokenizer, folder: Path) -> None:
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    for text in ["Hello world!", "It's 2024, don't we?\n\tnumbers 12345 and   spaces",
                 "<|im_start|>user\nhi there<|im_end|>", "ünïcödé ✅ 🦙"]:
        ids = ours.encode(text, add_bos=False)
        assert ids == hf.encode(text).ids, text
        assert ours.decode(ids) == text


def test_sentencepiece_tokenizer(tmp_path):
    import sentencepiece as spm

    src = hf_folder(tmp_path, vocab_size=400)
    write_spm_tokenizer(src, 400)
    m = open_gguf(convert(src, tmp_path / "m.gguf", progress=False)).metadata
    assert m["tokenizer.ggml.model"] == "llama" and m["tokenizer.ggml.pre"] == "default"
    sp = spm.SentencePieceProcessor(model_file=str(src / "tokenizer.model"))
    assert m["tokenizer.ggml.tokens"][:3] == ["<unk>", "<s>", "</s>"]
    assert m["tokenizer.ggml.token_type"][:4] == [2, 3, 3, 6]         # unknown, control, byte
    assert m["tokenizer.ggml.scores"][10] == pytest.approx(sp.GetScore(10))
    assert (m["tokenizer.ggml.bos_token_id"], m["tokenizer.ggml.eos_token_id"]) == (1, 2)
    ours = Tokenizer.from_metadata(m)
    for text in ["Hello world", "The quick brown fox jumps", "apples, don't we?"]:
        assert ours.encode(text, add_bos=False) == sp.encode(text), text


def test_model_with_tokenizer_runs_from_text(tmp_path):
    src = hf_folder(tmp_path, vocab_size=320)
    write_bpe_tokenizer(src, 320)
    model = gguf_runtime.load(convert(src, tmp_path / "m.gguf", progress=False), n_ctx=64)
    assert model.tokenize("Hello world", add_bos=False) == \
        model.tokenizer.encode("Hello world", add_bos=False)
    assert isinstance(model.generate("Hello", max_tokens=3), str)


# ------------------------------------------------------------------ bad input
def test_folder_without_config(tmp_path):
    with pytest.raises(SourceError) as e:
        convert(tmp_path, tmp_path / "m.gguf")
    assert "config.json" in one_line_error(e)


def test_folder_without_weights(tmp_path):
    write_json(tmp_path / "config.json", {"architectures": ["LlamaForCausalLM"]})
    with pytest.raises(SourceError) as e:
        convert(tmp_path, tmp_path / "m.gguf")
    assert "no weights" in one_line_error(e)


def test_unsupported_architecture_lists_the_supported_ones(tmp_path):
    src = hf_folder(tmp_path)
    config = json.loads((src / "config.json").read_text())
    write_json(src / "config.json", {**config, "architectures": ["GPTNeoXForCausalLM"]})
    with pytest.raises(UnsupportedError) as e:
        convert(src, tmp_path / "m.gguf")
    msg = one_line_error(e)
    assert "GPTNeoXForCausalLM" in msg and "Gemma3ForCausalLM" in msg and "Phi3" in msg


def test_missing_shard(tmp_path):
    case, model = hf_model()
    model.save_pretrained(tmp_path, max_shard_size="40KB")
    shard = sorted(tmp_path.glob("*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(SourceError) as e:
        convert(tmp_path, tmp_path / "m.gguf")
    assert shard.name in one_line_error(e)


def test_tensor_shape_disagreeing_with_config(tmp_path):
    src = hf_folder(tmp_path)
    config = json.loads((src / "config.json").read_text())
    write_json(src / "config.json", {**config, "intermediate_size": 96})
    with pytest.raises(ShapeMismatchError) as e:
        convert(src, tmp_path / "m.gguf")
    msg = one_line_error(e)
    assert "model.layers.0.mlp" in msg and "has shape [64, 128]" in msg and "[64, 96]" in msg


def test_bad_output_type(tmp_path):
    with pytest.raises(UnsupportedError) as e:
        convert(hf_folder(tmp_path), tmp_path / "m.gguf", "Q4_K")
    assert "Q8_0" in one_line_error(e)


def test_existing_output_needs_force(tmp_path):
    src, out = hf_folder(tmp_path), tmp_path / "m.gguf"
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError) as e:
        convert(src, out)
    assert str(out) in one_line_error(e) and out.read_bytes() == b"old"
    convert(src, out, force=True, progress=False)
    assert out.read_bytes()[:4] == b"GGUF"


def test_unwritable_output(tmp_path):
    with pytest.raises(GGUFError) as e:
        convert(hf_folder(tmp_path), tmp_path / "no-such-dir" / "m.gguf", progress=False)
    assert "cannot write" in one_line_error(e)


@pytest.mark.parametrize("existing", [False, True])
def test_failure_mid_write_leaves_no_partial_file(tmp_path, monkeypatch, existing):
    src, out = hf_folder(tmp_path), tmp_path / "m.gguf"
    if existing:
        out.write_bytes(b"old")
    calls = []
    real_read = HFSource.read

    def failing_read(self, name):
        calls.append(name)
        if len(calls) == 5:
            raise RuntimeError("disk on fire")
        return real_read(self, name)

    monkeypatch.setattr(HFSource, "read", failing_read)
    with pytest.raises(RuntimeError, match="disk on fire"):
        convert(src, out, force=True, progress=False)
    assert (out.read_bytes() == b"old") if existing else not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model"] + ["m.gguf"] * existing)


# ------------------------------------------------------------------ command line
def test_cli(tmp_path, capsys):
    src, out = hf_folder(tmp_path), tmp_path / "m.gguf"
    assert main([str(src), "-o", str(out), "--type", "q8_0", "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert open_gguf(out).tensors["blk.0.attn_q.weight"].qtype == T.Q8_0
    assert main([str(src), "-o", str(out), "-q"]) == 1                  # exists, no --force
    err = capsys.readouterr().err
    assert err.startswith("convert: error:") and err.count("\n") == 1


def test_cli_hook_for_gguf_runtime(tmp_path, capsys):
    """What `gguf-runtime convert` wires: add_arguments on a subparser, run(args)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(hf_folder(tmp_path)), "--type", "BF16", "--quiet"])
    assert run(args) == 0
    default_out = tmp_path / "model-BF16.gguf"
    assert capsys.readouterr().out.strip() == str(default_out) and default_out.is_file()
    assert convert_module.OUT_TYPES["BF16"][0] == T.BF16
