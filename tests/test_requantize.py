"""`requantize` / `gguf-runtime quantize`: llama.cpp's per-tensor types, metadata copied with
its value types (non-UTF-8 strings too), the input's tensor order, and every bad input as a one-line GGUFError.

Oracles: the expected llama.cpp type tables of tests/test_convert.py (checked against
llama_model_quantize by tools/check_quant_rules_vs_llamacpp.py), the converter writing the same
type straight from the Hugging Face folder (same float32 values -> the same file, byte for
byte), and gguf-py's GGUFReader for the metadata value types.
"""

from __future__ import annotations

import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType, GGUFWriter

from gguf_runtime import cli
from gguf_runtime.convert import convert
from gguf_runtime.convert.source import OutputExistsError
from gguf_runtime.errors import UnsupportedError
from gguf_runtime.gguf_file import open_gguf
from gguf_runtime.requantize import requantize
from tests.test_convert import EXPECTED_TYPES, WIDE, assert_types, hf_folder, one_line_error
from tests.tiny_models import write_bpe_tokenizer


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """(Hugging Face folder, its F16 GGUF with a BPE tokenizer, its F32 GGUF) of the WIDE llama."""
    root = tmp_path_factory.mktemp("wide")
    src = hf_folder(root, **WIDE)
    write_bpe_tokenizer(src, 320)
    return (src, convert(src, root / "f16.gguf", "F16", progress=False),
            convert(src, root / "f32.gguf", "F32", progress=False))


def test_f16_to_q4_k_m_keeps_metadata_order_and_follows_llama_cpp(wide, tmp_path):
    _, f16, _ = wide
    out = requantize(f16, tmp_path / "q.gguf", "Q4_K_M", progress=False)
    a, b = open_gguf(f16), open_gguf(out)
    assert_types(b, EXPECTED_TYPES["llama", "Q4_K_M"])
    assert list(b.metadata) == list(a.metadata)
    assert b.metadata == {**a.metadata, "general.file_type": 15}
    assert len(b.metadata["tokenizer.ggml.tokens"]) == 512
    assert list(b.tensors) == list(a.tensors)
    for t in a.tensors.values():
        if len(t.shape) == 1:                             # not quantized: copied as is
            assert (b.tensors[t.name].data == t.data).all(), t.name
    types = {f.name: f.types for f in GGUFReader(f16).fields.values()}
    assert {f.name: f.types for f in GGUFReader(out).fields.values()} == types


def test_non_utf8_strings_and_custom_alignment_survive(wide, tmp_path):
    """A vocabulary's byte tokens need not be UTF-8, and general.alignment moves the data."""
    _, f16, _ = wide
    src = GGUFReader(f16)
    odd = tmp_path / "odd.gguf"
    w = GGUFWriter(odd, "llama")
    w.add_custom_alignment(64)
    for field in src.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        sub = {"sub_type": field.types[-1]} if field.types[0] == GGUFValueType.ARRAY else {}
        w.add_key_value(field.name, field.contents(), field.types[0], **sub)
    w.add_key_value("test.raw_tokens", [b"\xff\xfe", b"ok"], GGUFValueType.ARRAY,
                    sub_type=GGUFValueType.STRING)
    for t in src.tensors:
        w.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = requantize(odd, tmp_path / "q.gguf", "Q8_0", progress=False)
    a, b = open_gguf(odd), open_gguf(out)
    assert b.metadata == {**a.metadata, "general.file_type": 7}
    assert b.metadata["test.raw_tokens"][0].encode("utf-8", "surrogateescape") == b"\xff\xfe"
    assert b.metadata["general.alignment"] == 64
    assert all(t.offset % 64 == 0 for t in b.tensors.values())


def test_f32_file_requantized_equals_direct_conversion(wide, tmp_path):
    """Same float32 values, same rules, same writer layout: the same bytes."""
    src, _, f32 = wide
    direct = convert(src, tmp_path / "direct.gguf", "Q4_K_M", progress=False)
    requantized = requantize(f32, tmp_path / "re.gguf", "Q4_K_M", progress=False)
    assert requantized.read_bytes() == direct.read_bytes()


@pytest.mark.parametrize("out_type, weight", [("Q6_K", T.Q6_K), ("Q8_0", T.Q8_0),
                                              ("F16", T.F16), ("BF16", T.BF16)])
def test_other_types_and_pure(wide, tmp_path, out_type, weight):
    _, f16, _ = wide
    gf = open_gguf(requantize(f16, tmp_path / "q.gguf", out_type, progress=False, pure=True))
    assert {t.qtype for t in gf.tensors.values() if len(t.shape) > 1} == {weight}
    assert {t.qtype for t in gf.tensors.values() if len(t.shape) == 1} == {T.F32}


def test_quantized_input_is_refused_naming_the_tensor(wide, tmp_path):
    _, f16, _ = wide
    q8 = requantize(f16, tmp_path / "q8.gguf", "Q8_0", progress=False)
    with pytest.raises(UnsupportedError) as e:
        requantize(q8, tmp_path / "q.gguf", "Q4_K_M", progress=False)
    msg = one_line_error(e)
    assert "token_embd.weight" in msg and "Q8_0" in msg and "F16" in msg
    assert not (tmp_path / "q.gguf").exists()


def test_unknown_type_lists_the_supported_ones(wide, tmp_path):
    _, f16, _ = wide
    with pytest.raises(UnsupportedError) as e:
        requantize(f16, tmp_path / "q.gguf", "Q3_K_M")
    msg = one_line_error(e)
    assert "'Q3_K_M'" in msg and all(t in msg for t in ("Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"))


def test_existing_output_needs_force(wide, tmp_path):
    _, f16, _ = wide
    out = tmp_path / "q.gguf"
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError) as e:
        requantize(f16, out, "Q4_0")
    assert str(out) in one_line_error(e) and out.read_bytes() == b"old"
    requantize(f16, out, "Q4_0", force=True, progress=False)
    assert open_gguf(out).metadata["general.file_type"] == 2


def test_failure_mid_write_leaves_no_partial_file(wide, tmp_path, monkeypatch):
    import quant

    _, f16, _ = wide
    calls, real = [], quant.quantize

    def failing(x, qtype):
        calls.append(qtype)
        if len(calls) == 4:
            raise RuntimeError("disk on fire")
        return real(x, qtype)

    monkeypatch.setattr(quant, "quantize", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        requantize(f16, tmp_path / "q.gguf", "Q4_K_M", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli(wide, tmp_path, capsys):
    _, f16, _ = wide
    out = tmp_path / "q.gguf"
    assert cli.main(["quantize", str(f16), str(out), "q4_k_m", "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert open_gguf(out).metadata["general.file_type"] == 15
    for argv, words in [([str(f16), str(out), "Q4_K_M", "-q"], ["already exists", "--force"]),
                        ([str(f16), str(tmp_path / "x.gguf"), "Q9"], ["'Q9'", "Q4_K_M"]),
                        ([str(out), str(tmp_path / "y.gguf"), "Q6_K"], ["Q4_K", "F16"])]:
        assert cli.main(["quantize", *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("gguf-runtime: error:") and err.count("\n") == 1, err
        assert all(w in err for w in words), err
    assert cli.main(["quantize", str(f16), str(out), "Q6_K", "--force", "-q"]) == 0
