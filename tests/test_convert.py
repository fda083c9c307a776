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
from gguf_runtime.convert.source import HFSource
from gguf_runtime.errors import GGUFError, UnsupportedError
from gguf_runtime.gguf_file import open_gguf
from gguf_runtime.tokenizer import Tokenizer
from quant.kernels import registry
from tests.tiny_models import (CASES, CHAT_TEMPLATE, SPECIALS, write_bpe_tokenizer, write_json,
                               write_spm_tokenizer, write_tiny_tokenizer)

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


def test_general_metadata_from_the_model_card_as_llama_cpp(tmp_path):
    """general.* from README.md's front matter and the parameter count (gguf-py's Metadata)."""
    src = hf_folder(tmp_path)
    (src / "README.md").write_text("---\nlicense: apache-2.0\ntags:\n- tiny\n---\n# Tiny\n")
    m = open_gguf(convert(src, tmp_path / "m.gguf", progress=False)).metadata
    n_params = sum(p.numel() for p in hf_model()[1].parameters())
    assert m["general.license"] == "apache-2.0" and m["general.tags"] == ["tiny"]
    assert m["general.size_label"] == f"{round(n_params / 1000)}K"
    assert m["general.name"] == "Model"                            # the folder's name


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


# ------------------------------------------------------------------ K-quant mixes (llama.cpp's rules)
# Rows of 256 (K-quant blocks fit) and 8 layers: llama.cpp's use_more_bits(i, 8) picks 0, 3, 6, 7.
WIDE = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=8, vocab_size=512)
MORE_8 = [True, False, False, True, False, False, True, True]
MORE_2 = [False, True]                         # n_layer 2: the last quarter
MORE_6 = [False, False, True, False, False, True]


def per_layer(more: list[bool], yes: str, no: str) -> list[str]:
    return [yes if m else no for m in more]


# What llama.cpp's llama_model_quantize chooses for the F16 file of each model (verified by
# tools/check_quant_rules_vs_llamacpp.py): per tensor kind, one type or one per layer; 1-D F32.
EXPECTED_TYPES = {
    ("llama", "Q4_K_M"): {                       # WIDE, untied: token_embd keeps the default
        "token_embd": "Q4_K", "output": "Q6_K", "attn_q": "Q4_K", "attn_k": "Q4_K",
        "attn_output": "Q4_K", "ffn_gate": "Q4_K", "ffn_up": "Q4_K",
        "attn_v": per_layer(MORE_8, "Q6_K", "Q4_K"), "ffn_down": per_layer(MORE_8, "Q6_K", "Q4_K")},
    ("llama", "Q5_K_M"): {
        "token_embd": "Q5_K", "output": "Q6_K", "attn_q": "Q5_K", "attn_k": "Q5_K",
        "attn_output": "Q5_K", "ffn_gate": "Q5_K", "ffn_up": "Q5_K",
        "attn_v": per_layer(MORE_8, "Q6_K", "Q5_K"), "ffn_down": per_layer(MORE_8, "Q6_K", "Q5_K")},
    ("llama", "Q4_K_S"): {                       # attn_v of the first 4, ffn_down of the first 8th
        "token_embd": "Q4_K", "output": "Q6_K", "attn_q": "Q4_K", "attn_k": "Q4_K",
        "attn_output": "Q4_K", "ffn_gate": "Q4_K", "ffn_up": "Q4_K",
        "attn_v": ["Q5_K"] * 4 + ["Q4_K"] * 4, "ffn_down": ["Q5_K"] + ["Q4_K"] * 7},
    ("llama", "Q6_K"): {k: "Q6_K" for k in ("token_embd", "output", "attn_q", "attn_k", "attn_v",
                                            "attn_output", "ffn_gate", "ffn_up", "ffn_down")},
    ("llama", "Q4_0"): {**{k: "Q4_0" for k in ("token_embd", "attn_q", "attn_k", "attn_v",
                                               "attn_output", "ffn_gate", "ffn_up", "ffn_down")},
                        "output": "Q6_K"},
    # Tiny qwen2 (tied, rows of 64 / 128): token_embd takes output's rule, Q8_0 as 64 % 256;
    # every K-quant falls back (Q4_K -> Q5_0, Q6_K -> Q8_0).
    ("qwen2", "Q4_K_M"): {
        "token_embd": "Q8_0", "attn_q": "Q5_0", "attn_k": "Q5_0", "attn_output": "Q5_0",
        "ffn_gate": "Q5_0", "ffn_up": "Q5_0",
        "attn_v": per_layer(MORE_2, "Q8_0", "Q5_0"), "ffn_down": per_layer(MORE_2, "Q8_0", "Q5_0")},
    ("gemma3", "Q4_K_M"): {                      # six layers, tied
        "token_embd": "Q8_0", "attn_q": "Q5_0", "attn_k": "Q5_0", "attn_output": "Q5_0",
        "ffn_gate": "Q5_0", "ffn_up": "Q5_0",
        "attn_v": per_layer(MORE_6, "Q8_0", "Q5_0"), "ffn_down": per_layer(MORE_6, "Q8_0", "Q5_0")},
}
FILE_TYPE_IDS = {"Q4_K_M": 15, "Q5_K_M": 17, "Q4_K_S": 14, "Q6_K": 18, "Q4_0": 2}


def assert_types(gf, expected: dict) -> None:
    """Every tensor of `gf` has the type `expected` gives its kind (and layer); 1-D are F32."""
    for t in gf.tensors.values():
        parts = t.name.split(".")
        if len(t.shape) == 1:
            assert t.qtype == T.F32, t.name
            continue
        kind = parts[2] if parts[0] == "blk" else parts[0]
        want = expected[kind]
        want = want[int(parts[1])] if isinstance(want, list) else want
        assert t.qtype.name == want, f"{t.name}: {t.qtype.name}, llama.cpp {want}"


def model_for(name: str) -> dict:
    return WIDE if name == "llama" else {}


@pytest.mark.parametrize("name, out_type", list(EXPECTED_TYPES))
def test_k_quant_mix_types_follow_llama_cpp(tmp_path, name, out_type):
    path = convert(hf_folder(tmp_path, name, **model_for(name)), tmp_path / "m.gguf", out_type,
                   progress=False)
    gf = open_gguf(path)
    assert_types(gf, EXPECTED_TYPES[name, out_type])
    assert gf.metadata["general.file_type"] == FILE_TYPE_IDS[out_type]
    assert gf.metadata["general.quantization_version"] == 2


def test_q4_k_and_q5_k_are_llama_quantize_aliases_and_pure_is_uniform(tmp_path):
    src = hf_folder(tmp_path, **WIDE)
    gf = open_gguf(convert(src, tmp_path / "a.gguf", "q4_k", progress=False))
    assert_types(gf, EXPECTED_TYPES["llama", "Q4_K_M"])
    assert gf.metadata["general.file_type"] == 15
    pure = open_gguf(convert(src, tmp_path / "p.gguf", "Q4_K_M", progress=False, pure=True))
    assert {t.qtype for t in pure.tensors.values() if len(t.shape) > 1} == {T.Q4_K}


# GGUF tensor kind -> transformers parameter, for llama (written out here, not taken from
# the converter's table, so the round trip is checked independently).
LLAMA_HF_NAMES = {
    "token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head",
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj"}


def with_file_weights(model, gf, heads: dict[str, int]):
    """A copy of a transformers llama holding the file's weights, dequantized, Q/K rows put
    back in Hugging Face order (GGUF row 2i of a head <- HF row i, 2i+1 <- HF row d/2 + i)."""
    hf = copy.deepcopy(model)
    params = dict(hf.named_parameters())
    for t in gf.tensors.values():
        parts = t.name.split(".")
        name = (f"model.layers.{parts[1]}.{LLAMA_HF_NAMES[parts[2]]}.{parts[3]}"
                if parts[0] == "blk" else f"{LLAMA_HF_NAMES[parts[0]]}.{parts[1]}")
        w = t.qtensor().dequantize()
        if parts[-2] in heads:
            n = heads[parts[-2]]
            w = w.reshape(n, -1, 2, w.shape[-1]).transpose(1, 2).reshape(w.shape)
        with torch.no_grad():
            params[name].copy_(w)
    return hf


def float32_backends() -> str:
    """GGUF_RUNTIME_KERNELS naming every kernel backend that keeps float32 precision."""
    return ",".join(b for b in registry.declared_backends()
                    if not registry.declared_backend(b).reduced_precision)


def test_q4_k_m_file_runs_in_the_runtime(tmp_path, monkeypatch):
    """The runtime computes exactly the file's (dequantized) weights' forward (float32 kernels;
    the default bfloat16 prefill within its rounding), and lands near the float model. Random
    models amplify weight noise (llama.cpp's own Q4_K_M logits on the same files are as far from
    float), so the model is kept shallow with weights N(0, 0.05)."""
    case, model = hf_model("llama", **{**WIDE, "num_hidden_layers": 2})
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "embed" not in name:
                p.mul_(0.5)
    src = case.save(model, tmp_path / "model")
    f32 = convert(src, tmp_path / "f32.gguf", "F32", progress=False)
    q4km = convert(src, tmp_path / "q4km.gguf", "Q4_K_M", progress=False)
    ids = (IDS * 3)[:32]
    ref = gguf_runtime.load(f32, n_ctx=64).logits(ids)
    got = gguf_runtime.load(q4km, n_ctx=64).logits(ids)
    with torch.no_grad():
        exact = with_file_weights(model, open_gguf(q4km), {"attn_q": 4, "attn_k": 2})(
            torch.tensor([ids])).logits[0]
    assert ((got - exact).norm() / exact.norm()).item() < 2e-2          # bfloat16 prefill
    monkeypatch.setenv("GGUF_RUNTIME_KERNELS", float32_backends())
    got32 = gguf_runtime.load(q4km, n_ctx=64).logits(ids)
    assert ((got32 - exact).norm() / exact.norm()).item() < 1e-4
    rel = ((got - ref).norm() / ref.norm()).item()
    top1 = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert rel < 0.25 and top1 >= 0.6, (rel, top1)        # measured: 0.18, 0.75
    assert q4km.stat().st_size < 0.2 * f32.stat().st_size


def test_non_finite_weight_names_the_tensor(tmp_path):
    case, model = hf_model()
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.model.layers[1].mlp.up_proj.weight[3, 5] = float("nan")
    src = case.save(bad, tmp_path / "model")
    with pytest.raises(GGUFError) as e:
        convert(src, tmp_path / "m.gguf", "Q8_0", progress=False)
    assert "model.layers.1.mlp.up_proj.weight" in one_line_error(e) and "NaN" in str(e.value)
    assert not (tmp_path / "m.gguf").exists()


def test_progress_bar_counts_tensors_and_bytes(tmp_path, capsys):
    src = hf_folder(tmp_path)
    capsys.readouterr()                                # transformers' own saving bar
    convert(src, tmp_path / "a.gguf", progress=False)
    assert capsys.readouterr().err.startswith("note: ")  # the notes only: no vocabulary here
    convert(src, tmp_path / "q.gguf", progress=False, notice=lambda line: None)
    assert capsys.readouterr().err == ""
    convert(src, tmp_path / "b.gguf", progress=True)
    err = capsys.readouterr().err
    assert "21/21 tensors" in err and "writing b.gguf" in err and "B/s" in err


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
    from gguf_runtime.convert.vocab import _QWEN2_SPLIT

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


def test_sentencepiece_without_byte_fallback(tmp_path):
    """The tiny models' vocabulary: no <0xNN> pieces, so unknown characters become <unk>."""
    import sentencepiece as spm

    src = hf_folder(tmp_path)
    write_tiny_tokenizer(src)
    model = gguf_runtime.load(convert(src, tmp_path / "m.gguf", progress=False), n_ctx=64)
    sp = spm.SentencePieceProcessor(model_file=str(src / "tokenizer.model"))
    assert model.tokenizer.n_vocab == sp.vocab_size() == 256
    for text in ["Hello world", "The quick brown fox jumps", "apples, don't we? ✅"]:
        assert model.tokenizer.encode(text, add_bos=False) == sp.encode(text), text
    assert 0 in sp.encode("✅")


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
        convert(hf_folder(tmp_path), tmp_path / "m.gguf", "Q3_K_L")
    msg = one_line_error(e)
    assert "'Q3_K_L'" in msg and "Q8_0" in msg and "Q4_K_M" in msg and "Q6_K" in msg


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
    assert convert_module.FILE_TYPES["BF16"].default == T.BF16


def test_notices_name_a_missing_vocabulary_and_each_type_fallback(tmp_path):
    """Rows of the tiny model (64 wide) are no multiple of 256: Q4_K falls back, as llama.cpp,
    and the user is told; with no tokenizer files the GGUF runs on token ids only, and says so."""
    notes: list[str] = []
    src = hf_folder(tmp_path)
    assert not (src / "tokenizer.json").exists() and not (src / "tokenizer.model").exists()
    path = convert(src, tmp_path / "m.gguf", "Q4_K_M", progress=False, notice=notes.append)
    assert any("no vocabulary" in n and "token ids only" in n for n in notes), notes
    fell = [n for n in notes if "not a multiple of Q4_K's 256" in n]
    assert fell and all("\n" not in n for n in notes)
    gf = open_gguf(path)
    for note in fell:                                   # the tensors named have the type said
        names = note.split("tensor(s) (", 1)[1].split("): rows", 1)[0].replace(", ...", "").split(", ")
        chosen = note.split(": ")[-1].split(" instead")[0]
        assert all(gf.tensors[n].qtype.name == chosen for n in names), note
    from gguf_runtime.describe import describe, format_description
    assert "runs on token ids only" in format_description(describe(gf))
    write_tiny_tokenizer(src)
    notes.clear()
    convert(src, tmp_path / "t.gguf", "F16", progress=False, notice=notes.append)
    assert notes == []
