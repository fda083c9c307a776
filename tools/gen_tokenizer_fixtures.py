"""Generate tests/fixtures/tokenizer_<model>.json with llama.cpp (llama-cpp-python) as the oracle.

For each corpus string: llama.cpp's ids with (add_bos=True, special=True) - llama.cpp's
`add_special`, so BOS/EOS follow the file - and with (add_bos=False, special=False), plus
`llama_detokenize` of those ids (remove_special=false; unparse_special true and false).
Also the vocabulary facts a runtime must agree on: BOS/EOS ids, add_bos, end-of-generation ids.
The file also holds `variants`: the same vocabulary re-written as a vocab-only GGUF with some
metadata changed (`null` = key removed) - SmolLM2 with other `tokenizer.ggml.pre` values, so
every pre-tokenizer regex is checked against llama.cpp, Gemma 3 with `add_space_prefix` on.

    pip install llama-cpp-python   # builds llama.cpp
    python tools/gen_tokenizer_fixtures.py

Tests never need llama-cpp-python: they read the committed JSON.
"""

from __future__ import annotations

import ctypes
import json
import sys
import tempfile
from pathlib import Path

import gguf
import llama_cpp
from llama_cpp import Llama

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gguf_runtime.default_models import gemma3_270m_path, smollm2_135m_path  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
LONG_WORD = ("pneumonoultramicroscopicsilicovolcanoconiosis" * 112)[:5000]

CORPUS = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", " \n", "\n \n ", "\r\n", "\r\n\r\n",
    "Hello world", "Hello, world!", " Hello world", "Hello world ", "   leading spaces",
    "trailing spaces   ", "a  b   c    d     e", "multiple\n\nnew\n\n\nlines\n",
    "I'm", "DON'T", "we've", "They'll say it's John's", "you're, she'd, I'LL", "'s 't 're 'VE",
    " ' ", "don 't", "Hello ? Yes ! No . Maybe , so", "1234567", "3.14159", "1,000,000.00",
    "2024-11-24 22:51:57", "0x1F 0b1010 1e-9 -42", "x1y22z333w4444",
    "ąćęłńóśźż", "Ünïcödé ÀÉÎÕÜ", "café naïve façade résumé", "Straße ß ẞ",
    "e\u0301 combining a\u0308", "日本語のテキストです。", "中文字符测试，标点。", "한국어 텍스트",
    "مرحبا بالعالم", "नमस्ते दुनिया", "Привет, мир!", "Ελληνικά \u2126 \u03a9 \u212a K ι \u1fbe",
    "😀😃😄 😁", "👨‍👩‍👧‍👦 family", "👍🏽 thumbs", "🏳️‍🌈 flag", "a\u200db\u200cc",
    "zero\u200bwidth", "\u00a0nbsp\u00a0 \u3000ideographic", "em—dash – en… ellipsis",
    "“quotes” ‘single’ «guillemets»", "math: ∀x∈ℝ, x² ≥ 0, ½ ⅓ Ⅻ", "~tilde ~~ ~/path a~b",
    "$100 + 5% = <tag> ^ `code` | pipe", "def foo(x):\n    return x * 2\n",
    "class A:\n\tdef f(self):\n\t\tpass\n", "if (a && b) { c(); }\n// done",
    "    four spaces\n        eight\n", "<html><body>x</body></html>",
    "http://example.com/a?b=c&d=e#f", "email@example.com", "CamelCaseWord snake_case kebab-case",
    "ALLCAPS lowercase MiXeD iPhone", "\x00\x01\x1f\x7f", "\x1c\x1d\x1e\x1f\x85", "😀😀😀",
    "\ue000\U0010fffd", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ꙮ", "<0x41> literal", "▁already▁escaped ▁", LONG_WORD,
    "The quick brown fox jumps over the lazy dog. " * 20,
]
SPECIALS = {
    "gemma3": [
        "<start_of_turn>user\nhi<end_of_turn>", "<start_of_turn>user\nhi<end_of_turn>\n"
        "<start_of_turn>model\n", "<bos>text", "<eos>", "text<end_of_turn>", "a</s>b",
        "<unused0> <unused42>x", "<table><tr><td>x</td></tr></table>", "<start_of_image>",
        "<mask> <pad> <unk>", "[multimodal]", "\t\t\tindented", "many     spaces",
        "<start_of_turn", "<<start_of_turn>>", " <end_of_turn> ", "<|im_start|>user\nhi<|im_end|>",
    ],
    "smollm2": [
        "<|im_start|>user\nhi<|im_end|>", "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        "<|im_start|>assistant\n", "<|endoftext|>", "<reponame>x<file_sep>y",
        "<|im_start|><|im_end|>",
        "<|im_start", "<gh_stars>100", "<jupyter_code>print(1)", " <|im_end|> ",
        "<start_of_turn>user\nhi<end_of_turn>",
    ],
}
# Pre-tokenizers checked on SmolLM2's vocabulary, each on VARIANT_CORPUS.
PRE_VARIANTS = [
    "default", "llama-bpe", "llama3", "dbrx", "chatglm-bpe", "qwen2", "stablelm2", "qwen35",
    "smollm", "starcoder", "command-r", "gpt-2", "olmo", "mpt", "trillion", "falcon",
    "deepseek-llm", "deepseek-coder", "deepseek-v3", "gpt-4o", "llama4", "tekken",
    "seed-coder", "bailingmoe", "bloom", "poro-chat", "viking",
]
VARIANT_CORPUS = [
    "Hello world", "I'm DON'T we've They'll it's", "1234567 3.14159 x1y22", "a  b   c \n\n d",
    "   leading and trailing   ", "\n\n\n", "\r\n\r\n x", "def f(x):\n\treturn x  # c\n",
    "Hello ? Yes ! No . so , it ' s", "don 't 're 've 'm 'd 'll",
    "ÀÉÎ àéî \u2126 \u03a9 \u212a K \u1f7d Ⅻ ½",
    "日本語のテキスト 中文，标点。 한국어", "ひらがな カタカナ", "مرحبا नमस्ते Привет",
    "😀👨‍👩‍👧‍👦 🏳️‍🌈", "~tilde ~~ a~b $x +y <z> ^w `v` |u", "CamelCase snake_case ALLCAPS iPhone",
    "e\u0301 a\u0308 \u00a0 \u3000 \u200b", "！？～ ‘quotes’ “x”", "x/y/z a/\nb",
    "x\u3000~? \u2000y\u2028z \u1680\u205f", "<start_of_turn>user\n hi<end_of_turn> x<bos>  y",
    "<|im_start|> a<|im_end|>\n b", " ", "",
]
VARIANTS = {
    "gemma3": {"add_space_prefix=true": {"tokenizer.ggml.add_space_prefix": True},
               "add_space_prefix absent": {"tokenizer.ggml.add_space_prefix": None}},
    "smollm2": {f"pre={pre}": {"tokenizer.ggml.pre": pre} for pre in PRE_VARIANTS},
}


class Oracle:
    """llama.cpp's tokenize / detokenize for one GGUF (vocabulary only)."""

    def __init__(self, path: Path):
        self.llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)

    def tokenize(self, text: str, add_bos: bool, special: bool) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def detokenize(self, ids: list[int], unparse_special: bool) -> str:
        arr = (llama_cpp.llama_token * max(len(ids), 1))(*ids)
        size = 64 + 64 * len(ids)
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(self.vocab, arr, len(ids), buf, size, False, unparse_special)
        assert 0 <= n <= size, n
        return buf.raw[:n].decode("utf-8", "replace")

    def facts(self) -> dict:
        v = self.vocab
        n = llama_cpp.llama_vocab_n_tokens(v)
        return {"n_vocab": n, "bos_id": llama_cpp.llama_vocab_bos(v),
                "eos_id": llama_cpp.llama_vocab_eos(v),
                "add_bos": llama_cpp.llama_vocab_get_add_bos(v),
                "add_eos": llama_cpp.llama_vocab_get_add_eos(v),
                "eog_ids": [i for i in range(n) if llama_cpp.llama_vocab_is_eog(v, i)]}

    def case(self, text: str) -> dict:
        ids = self.tokenize(text, True, True)
        plain = self.tokenize(text, False, False)
        return {"text": text, "ids_special": ids, "ids_plain": plain,
                "detok_special": self.detokenize(ids, True),
                "detok_plain": self.detokenize(ids, False),
                "detok_plain_ids": self.detokenize(plain, True)}


def read_fields(src: Path) -> tuple[str, list[tuple]]:
    """Architecture and (key, value, type, subtype) of every metadata field of `src`."""
    reader = gguf.GGUFReader(src)
    fields = [(name, f.contents(), f.types[0], f.types[1] if len(f.types) > 1 else None)
              for name, f in reader.fields.items()
              if not name.startswith("GGUF.") and name != "general.architecture"]
    return reader.fields["general.architecture"].contents(), fields


def write_vocab_only(arch: str, fields: list[tuple], dst: Path, changes: dict) -> None:
    """A GGUF without tensors: `fields` with `changes` applied (None removes a key)."""
    writer = gguf.GGUFWriter(dst, arch=arch)
    kinds = {bool: gguf.GGUFValueType.BOOL, str: gguf.GGUFValueType.STRING}
    for name, value, kind, sub in fields:
        if name not in changes:
            writer.add_key_value(name, value, kind, sub)
    for name, value in changes.items():
        if value is not None:
            writer.add_key_value(name, value, kinds[type(value)])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def variants(src: Path, changes_by_label: dict[str, dict]) -> dict:
    out = {}
    arch, fields = read_fields(src)
    with tempfile.TemporaryDirectory() as tmp:
        for label, changes in changes_by_label.items():
            path = Path(tmp) / "variant.gguf"
            write_vocab_only(arch, fields, path, changes)
            oracle = Oracle(path)
            out[label] = {"metadata": changes, "cases": [oracle.case(t) for t in VARIANT_CORPUS]}
            del oracle
            path.unlink()
    return out


def dump(doc: dict, path: Path) -> None:
    """JSON with one case per line: reviewable diffs, deterministic bytes."""
    cases = ",\n  ".join(json.dumps(c, ensure_ascii=True) for c in doc.pop("cases"))
    changed = doc.pop("variants")
    head = json.dumps(doc, ensure_ascii=True, indent=1)[:-2]
    text = f'{head},\n "cases": [\n  {cases}\n ]'
    rows = ",\n  ".join(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=True)}"
                        for k, v in changed.items())
    text += f',\n "variants": {{\n  {rows}\n }}'
    path.write_text(text + "\n}\n", encoding="ascii")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, find in {"gemma3": gemma3_270m_path, "smollm2": smollm2_135m_path}.items():
        path = find()
        oracle = Oracle(path)
        doc = {"model": path.name, "generator": "tools/gen_tokenizer_fixtures.py",
               "llama_cpp_python": llama_cpp.__version__, **oracle.facts(),
               "cases": [oracle.case(t) for t in CORPUS + SPECIALS[name]],
               "variants": variants(path, VARIANTS[name])}
        n_cases = len(doc["cases"])
        dump(doc, OUT / f"tokenizer_{name}.json")
        print(f"{name}: {n_cases} cases written")


if __name__ == "__main__":
    main()
