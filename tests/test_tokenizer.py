"""Tokenizer against llama.cpp: committed fixtures (tools/gen_tokenizer_fixtures.py) for the two
real vocabularies, and tiny vocabulary-only GGUFs written here for the rest.

Fixture cases hold llama.cpp's ids for (add_bos=True, special=True) - llama.cpp's add_special,
i.e. our add_bos=None - and (add_bos=False, special=False), and `llama_detokenize` of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest

from gguf_runtime import open_gguf
from gguf_runtime.errors import GGUFError, MissingKeyError, UnsupportedError
from gguf_runtime.tokenizer import Tokenizer, load_tokenizer
from gguf_runtime.tokenizer.backends import BYTE_TO_UNICODE, clean_spaces
from tests.realmodels import gemma3_path, smollm2_path

FIXTURES = Path(__file__).parent / "fixtures"
REAL = {"gemma3": gemma3_path, "smollm2": smollm2_path}


@pytest.fixture(scope="module", params=sorted(REAL))
def real(request):
    """(name, metadata, Tokenizer, fixture document) of one real model; skips when absent."""
    path = REAL[request.param]()
    meta = open_gguf(path).metadata
    doc = json.loads((FIXTURES / f"tokenizer_{request.param}.json").read_text(encoding="ascii"))
    return request.param, meta, Tokenizer.from_metadata(meta, str(path)), doc


def _mismatches(tok: Tokenizer, cases: list[dict]) -> list[str]:
    """Every way `tok` disagrees with llama.cpp on `cases` (empty when it agrees)."""
    bad = []
    for c in cases:
        text = c["text"]
        checks = {
            "ids_special": tok.encode(text),
            "ids_plain": tok.encode(text, add_bos=False, special=False),
            "detok_special": tok.decode(c["ids_special"]),
            "detok_plain": tok.decode(c["ids_special"], skip_special=True),
            "detok_plain_ids": tok.decode(c["ids_plain"]),
        }
        bad += [f"{what} of {text[:40]!r}: {got!r:.200} != {c[what]!r:.200}"
                for what, got in checks.items() if got != c[what]]
    return bad


@pytest.mark.realmodel
def test_vocabulary_facts_match_llama_cpp(real):
    _, _, tok, doc = real
    assert (tok.n_vocab, tok.bos_id, tok.eos_id) == (doc["n_vocab"], doc["bos_id"], doc["eos_id"])
    assert (tok.add_bos, tok.add_eos) == (doc["add_bos"], doc["add_eos"])
    assert sorted(tok.eot_ids) == doc["eog_ids"]


@pytest.mark.realmodel
def test_ids_and_text_match_llama_cpp(real):
    _, _, tok, doc = real
    assert len(doc["cases"]) >= 60
    assert _mismatches(tok, doc["cases"]) == []


@pytest.mark.realmodel
def test_metadata_variants_match_llama_cpp(real):
    """Same vocabulary, other `tokenizer.ggml.pre` / `add_space_prefix` (None = key removed)."""
    name, meta, _, doc = real
    bad = []
    for label, variant in doc["variants"].items():
        changed = {k: v for k, v in meta.items() if k not in variant["metadata"]}
        changed.update({k: v for k, v in variant["metadata"].items() if v is not None})
        tok = Tokenizer.from_metadata(changed, f"{name} {label}")
        bad += [f"{label}: {m}" for m in _mismatches(tok, variant["cases"])]
    assert bad == []


def _streamed(tok: Tokenizer, ids: list[int], skip_special: bool = False) -> list[str]:
    dec = tok.stream_decoder(skip_special)
    return [dec.push(i) for i in ids] + [dec.flush()]


@pytest.mark.realmodel
def test_stream_decode_equals_full_decode(real):
    _, _, tok, doc = real
    for c in doc["cases"]:
        for ids in (c["ids_special"], c["ids_plain"]):
            for skip in (False, True):
                chunks = _streamed(tok, ids, skip)
                full = tok.decode(ids, skip)
                assert "".join(chunks) == full, c["text"][:40]
                if "\ufffd" not in full:  # no chunk may end inside a character
                    assert not any("\ufffd" in ch for ch in chunks), c["text"][:40]


@pytest.mark.realmodel
def test_stream_holds_back_partial_characters(real):
    name, _, tok, _ = real
    text = "ꙮ" if name == "gemma3" else "😀"  # byte-fallback tokens / byte-level pieces
    ids = tok.encode(text, add_bos=False)
    assert len(ids) > 1
    assert _streamed(tok, ids) == [""] * (len(ids) - 1) + [text, ""]


@pytest.mark.realmodel
def test_add_bos_true_forces_bos(real):
    _, _, tok, _ = real
    assert tok.encode("hi", add_bos=True) == [tok.bos_id] + tok.encode("hi", add_bos=False)


@pytest.mark.realmodel
def test_special_tokens_follow_the_special_flag(real):
    name, _, tok, _ = real
    turn_end = "<end_of_turn>" if name == "gemma3" else "<|im_end|>"
    end_id = tok.encode(turn_end, add_bos=False)
    assert len(end_id) == 1 and tok.is_control(end_id[0]) and end_id[0] in tok.eot_ids
    assert tok.token_text(end_id[0]) == turn_end
    assert len(tok.encode(turn_end, add_bos=False, special=False)) > 1
    assert tok.decode(end_id) == turn_end and tok.decode(end_id, skip_special=True) == ""


# -- llama.cpp's own tokenizer tests (tests/fixtures/llama_cpp_vocab/README.md) -------------

LLAMA_CPP_VOCABS = sorted((Path(__file__).parent / "fixtures" / "llama_cpp_vocab").glob("*.gguf"))


@pytest.mark.parametrize("vocab", LLAMA_CPP_VOCABS, ids=lambda p: p.stem)
def test_llama_cpp_vocab_tests(vocab):
    tok = load_tokenizer(vocab)
    texts = Path(f"{vocab}.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    wants = Path(f"{vocab}.out").read_text(encoding="utf-8").split("\n")
    assert len(texts) >= 40 and len(wants) >= len(texts) - 1
    for text, want in zip(texts, wants):
        assert tok.encode(text, add_bos=False, special=False) == [int(i) for i in want.split()], text


# -- tiny vocabulary-only GGUFs ---------------------------------------------------------------

SPM_TOKENS = (["<unk>", "<s>", "</s>", "<|turn|>"] + [f"<0x{b:02X}>" for b in range(256)]
              + ["▁", "h", "i", "e", "l", "o", "▁h", "▁hi", "he", "ll", "llo", "hello", "▁hello"])


def spm_metadata(**extra) -> dict:
    n = len(SPM_TOKENS)
    types = [2, 3, 3, 3] + [6] * 256 + [1] * (n - 260)
    scores = [0.0] * 260 + [-float(i) for i in range(n - 260)]
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": SPM_TOKENS,
            "tokenizer.ggml.scores": scores, "tokenizer.ggml.token_type": types, **extra}


BYTES = [BYTE_TO_UNICODE[b] for b in range(256)]
BPE_MERGES = ["Ġ t", "h e", "l l", "Ġt he", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d",
              "Ġwor ld"]


def bpe_metadata(**extra) -> dict:
    tokens = BYTES + ["Ġt", "he", "ll", "Ġthe", "hell", "hello", "Ġw", "or", "Ġwor", "ld",
                      "Ġworld", "<|endoftext|>"]
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": BPE_MERGES,
            "tokenizer.ggml.token_type": [1] * (len(tokens) - 1) + [3],
            "tokenizer.ggml.bos_token_id": len(tokens) - 1,
            "tokenizer.ggml.eos_token_id": len(tokens) - 1, **extra}


def write_vocab_only(path: Path, meta: dict) -> Path:
    """A GGUF with `meta` and no tensors at all, like llama.cpp's models/ggml-vocab-*.gguf."""
    writer = gguf.GGUFWriter(path, arch="llama")
    for key, value in meta.items():
        writer.add_key_value(key, value, *_gguf_type(value))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _gguf_type(value) -> tuple:
    T = gguf.GGUFValueType
    scalar = {bool: T.BOOL, int: T.INT32, float: T.FLOAT32, str: T.STRING}
    if isinstance(value, list):
        return T.ARRAY, scalar[type(value[0])]
    if isinstance(value, int) and not isinstance(value, bool):
        return (T.UINT32,)
    return (scalar[type(value)],)


def test_vocab_only_spm_gguf(tmp_path):
    """Expected values are llama.cpp's on this vocabulary (checked with llama-cpp-python)."""
    tok = load_tokenizer(write_vocab_only(tmp_path / "spm.gguf", spm_metadata()))
    assert (tok.model, tok.bos_id, tok.eos_id, tok.add_bos) == ("llama", 1, 2, True)
    assert tok.add_space_prefix  # llama.cpp's default for SentencePiece when the key is absent

    def texts(ids):
        return [tok.token_text(i) for i in ids]

    # highest-scoring merge first ("▁h" beats "he"), no BPE ranks
    assert texts(tok.encode("hello hi")) == ["<s>", "▁h", "e", "llo", "▁hi"]
    assert texts(tok.encode("hihello", add_bos=False)) == ["▁hi", "hello"]
    # a piece after a special token gets the space prefix again; unknown chars -> bytes
    assert texts(tok.encode("<|turn|>hi", add_bos=False)) == ["<|turn|>", "▁hi"]
    assert texts(tok.encode("é", add_bos=False)) == ["▁", "<0xC3>", "<0xA9>"]
    # the first token loses its leading space; after BOS it keeps it
    assert tok.decode(tok.encode("hello é", add_bos=False)) == "hello é"
    assert tok.decode(tok.encode("hello é")) == "<s> hello é"
    assert tok.decode(tok.encode("hello é"), skip_special=True) == " hello é"


def test_phi3_special_tokens_eat_following_spaces():
    """llama.cpp marks special tokens rstrip for models named phi-3 (expected ids: llama.cpp)."""
    meta = spm_metadata(**{"general.name": "Phi-3 mini"})
    for key, extra in (("tokens", "<|endoftext|>"), ("scores", 0.0), ("token_type", 3)):
        meta[f"tokenizer.ggml.{key}"] = meta[f"tokenizer.ggml.{key}"] + [extra]
    tok = Tokenizer.from_metadata(meta)
    assert tok.encode("hi <|turn|>  hi \n<|turn|>\t", add_bos=False) == [267, 260, 3, 267, 260, 14, 3]
    assert tok.encode("</s>  hi", add_bos=False) == [2, 267]  # rstrip
    assert tok.encode("<s> hi", add_bos=False) == [1, 260, 267]  # not rstrip
    assert tok.encode("<|endoftext|> hi", add_bos=False) == [273, 260, 267]


def test_vocab_only_bpe_gguf(tmp_path):
    tok = load_tokenizer(write_vocab_only(tmp_path / "bpe.gguf", bpe_metadata()))
    assert (tok.model, tok.pre, tok.add_bos) == ("gpt2", "gpt-2", False)
    ids = tok.encode("hello the world<|endoftext|>")
    assert [tok.token_text(i) for i in ids] == ["hello", "Ġthe", "Ġworld", "<|endoftext|>"]
    assert tok.eot_ids == {len(BYTES) + 11}
    assert tok.decode(ids, skip_special=True) == "hello the world"
    assert tok.decode(tok.encode("x , y ?")) == "x, y?"  # gpt-2 cleans spaces like llama.cpp


GEMMA4_TOKENS = (["<pad>", "<eos>", "<bos>", "<unk>", "<|turn>"] + [f"<0x{b:02X}>" for b in range(256)]
                 + ["▁", "h", "i", "e", "l", "o", "\n", "\n\n", "▁h", "▁hi", "he", "ll", "llo",
                    "hello", "▁hello"])


def test_vocab_only_gemma4_gguf(tmp_path):
    """SentencePiece-style BPE ('gemma4'). Expected tokens: llama.cpp's (llama-cpp-python 0.3.36,
    vocab_only, on this vocabulary with gemma4 hparams added); llama.cpp's own Gemma 4 vocabulary
    test (tools/check_vocabs_llamacpp.py) gives 46/46 equal."""
    tokens = GEMMA4_TOKENS
    meta = {"tokenizer.ggml.model": "gemma4", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": [0.0] * len(tokens),
            "tokenizer.ggml.token_type": [3, 3, 3, 2, 3] + [6] * 256 + [1] * (len(tokens) - 261),
            "tokenizer.ggml.merges": ["▁ h", "▁h i", "h e", "l l", "l lo", "l o", "he llo", "▁ hello"],
            "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 1,
            "tokenizer.ggml.unknown_token_id": 3, "tokenizer.ggml.add_bos_token": False}
    tok = load_tokenizer(write_vocab_only(tmp_path / "g4.gguf", meta))
    assert (tok.model, tok.pre, tok.add_bos, tok.add_space_prefix) == ("gemma4", "gemma4", True, False)

    def texts(text, **kw):
        return [tokens[i] for i in tok.encode(text, **kw)]

    # BOS although the file says no (llama.cpp overrides it for gemma4); ranked merges over
    # characters with spaces as '▁' ("l lo" needs a token "lo" that is not there)
    assert texts("hello hi") == ["<bos>", "he", "ll", "o", "▁hi"]
    assert texts(" hello", add_bos=False) == ["▁h", "e", "ll", "o"]
    # cut at newline runs: a run that is a token stays whole, others go through the merges
    assert texts("hello\n\nhi", add_bos=False) == ["he", "ll", "o", "\n\n", "h", "i"]
    assert texts("\n\n\nhe", add_bos=False) == ["\n", "\n", "\n", "he"]
    # a character that is no token: its UTF-8 bytes
    assert texts("hello é\n", add_bos=False) == ["he", "ll", "o", "▁", "<0xC3>", "<0xA9>", "\n"]
    assert texts("<|turn>hi", add_bos=False) == ["<|turn>", "h", "i"]
    for text in ("hello é\n", " hello", "hello\n\nhi"):
        assert tok.decode(tok.encode(text, add_bos=False)) == text


BERT_TOKENS = (["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
               + ["▁hello", "▁world", "▁,", "▁!", "▁play", "ing", "ed", "▁un", "known", "▁cafe",
                  "▁中", "▁文", "▁a", "b", "▁$"])


def test_vocab_only_bert_gguf(tmp_path):
    """WordPiece ('bert'). Expected tokens: llama.cpp's (llama-cpp-python 0.3.36, vocab_only, on
    this vocabulary with BERT hparams added); llama.cpp's own bert-bge vocabulary test
    (tools/check_vocabs_llamacpp.py) gives 47/47 equal."""
    tokens = BERT_TOKENS
    meta = {"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [3] + [1] * 99 + [3] * 4 + [1] * (len(tokens) - 104)}
    tok = load_tokenizer(write_vocab_only(tmp_path / "bert.gguf", meta))
    assert (tok.model, tok.bos_id, tok.add_bos, tok.add_space_prefix) == ("bert", 101, True, False)

    def texts(text, **kw):
        return [tokens[i] for i in tok.encode(text, **kw)]

    # [CLS] ... [SEP]; lowercased, split around punctuation, '▁' starts a word
    assert texts("Hello, World!") == ["[CLS]", "▁hello", "▁,", "▁world", "▁!", "[SEP]"]
    assert texts("playing played", add_bos=False) == ["▁play", "ing", "▁play", "ed"]
    # a word with a part no token covers is one [UNK]; no length limit makes a word unknown
    assert texts("unknownzz hello", add_bos=False) == ["[UNK]", "▁hello"]
    assert texts("a" * 150, add_bos=False) == ["[UNK]"]
    # accents stripped, CJK ideographs one word each, ASCII symbols split, whitespace dropped
    assert texts("Café 中文", add_bos=False) == ["▁cafe", "▁中", "▁文"]
    assert texts("ab $a", add_bos=False) == ["▁a", "b", "▁$", "▁a"]
    assert texts("  hello\tworld\n", add_bos=False) == ["▁hello", "▁world"]
    assert texts("[MASK] hello") == ["[CLS]", "[MASK]", "▁hello", "[SEP]"]
    assert tok.decode(tok.encode("playing, played!")) == "[CLS] playing, played![SEP]"


T5_TOKENS = ["<pad>", "</s>", "<unk>", "<extra>", "▁", "▁he", "llo", "▁hello", "▁w", "or", "ld",
             "▁world", "h", "e", "l", "o", "w", "r", "d", "▁hel", "lo"]
T5_SCORES = [0.0] * 4 + [-2.0, -3.0, -4.0, -5.0, -3.5, -4.5, -4.0, -6.5] + [-8.0] * 7 + [-3.2, -3.9]


def test_vocab_only_t5_gguf(tmp_path):
    """Unigram ('t5'). Expected tokens: llama.cpp's (llama-cpp-python 0.3.36, vocab_only, on this
    vocabulary with nomic-bert-moe hparams added); on llama.cpp's nomic-bert-moe vocabulary (with
    its precompiled charsmap) tools/check_vocabs_llamacpp.py finds 120/120 encodings equal."""
    meta = {"tokenizer.ggml.model": "t5", "tokenizer.ggml.tokens": T5_TOKENS,
            "tokenizer.ggml.scores": T5_SCORES,
            "tokenizer.ggml.token_type": [3, 3, 2, 4] + [1] * (len(T5_TOKENS) - 4),
            "tokenizer.ggml.add_space_prefix": True, "tokenizer.ggml.remove_extra_whitespaces": True,
            "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.unknown_token_id": 2,
            "tokenizer.ggml.add_eos_token": True}
    tok = load_tokenizer(write_vocab_only(tmp_path / "t5.gguf", meta))
    assert (tok.model, tok.bos_id, tok.add_bos, tok.add_eos) == ("t5", None, False, True)

    def texts(text, **kw):
        return [T5_TOKENS[i] for i in tok.encode(text, **kw)]

    # the best-scoring split, not the greedy one; '▁' before the text; EOS at the end
    assert texts("hello world") == ["▁hello", "▁world", "</s>"]
    assert texts("  hello   world  ", add_bos=False) == ["▁hello", "▁world"]   # spaces merged
    assert texts("helloworld", add_bos=False) == ["▁hello", "w", "or", "ld"]
    # characters no token covers: one <unk> per run; a user-defined token splits the text
    assert texts("hexyz", add_bos=False) == ["▁he", "<unk>"]
    assert texts("hello\tworld", add_bos=False) == ["▁hello", "<unk>", "w", "or", "ld"]
    assert texts("hello<extra>world", add_bos=False) == ["▁hello", "<extra>", "▁world"]
    assert tok.decode(tok.encode("hello world", add_bos=False)) == "hello world"


def test_stream_decoder_with_clean_spaces():
    tok = Tokenizer.from_metadata(bpe_metadata())
    for text in ("a , b ' c 's 're 've ?", "  ' ' x", " ?!.,", "héllo 😀 , ' s"):
        ids = tok.encode(text)
        assert "".join(_streamed(tok, ids)) == tok.decode(ids)


def test_clean_spaces_like_llama_cpp():
    assert clean_spaces(b"a , b . c ? d !") == b"a, b. c? d!"
    assert clean_spaces(b"it ' s") == b"it's" and clean_spaces(b"I 'm we 've") == b"I'm we've"
    assert clean_spaces(b"don 't they 'll") == b"don 't they 'll"


def test_unknown_pre_is_unsupported():
    with pytest.raises(UnsupportedError, match=r"'no-such-pre'.*supported: .*llama-bpe"):
        Tokenizer.from_metadata(bpe_metadata(**{"tokenizer.ggml.pre": "no-such-pre"}), "x.gguf")


def test_unknown_model_is_unsupported():
    with pytest.raises(UnsupportedError,
                       match=r"x.gguf: .*'rwkv'.*supported: gpt2, llama, gemma4, bert, t5"):
        Tokenizer.from_metadata(spm_metadata(**{"tokenizer.ggml.model": "rwkv"}), "x.gguf")


@pytest.mark.parametrize("key", ["tokenizer.ggml.tokens", "tokenizer.ggml.model"])
def test_missing_key_is_named(key):
    meta = spm_metadata()
    del meta[key]
    with pytest.raises(MissingKeyError, match=f"x.gguf: .*'{key}'"):
        Tokenizer.from_metadata(meta, "x.gguf")


def test_bpe_without_merges_is_a_missing_key():
    meta = bpe_metadata()
    del meta["tokenizer.ggml.merges"]
    with pytest.raises(MissingKeyError, match="'tokenizer.ggml.merges'"):
        Tokenizer.from_metadata(meta, "x.gguf")


def test_errors_are_one_line_gguf_errors():
    for meta in (spm_metadata(**{"tokenizer.ggml.model": "rwkv"}), {"tokenizer.ggml.model": "gpt2"}):
        with pytest.raises(GGUFError) as info:
            Tokenizer.from_metadata(meta, "x.gguf")
        assert "\n" not in str(info.value)
