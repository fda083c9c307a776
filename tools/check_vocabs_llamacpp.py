"""Our tokenizer on llama.cpp's own tokenizer tests: models/ggml-vocab-*.gguf (vocabulary-only
GGUFs) with their .inp (texts, each followed by a "__ggml_vocab_test__" line) and .out (llama.cpp's
token ids, one line per text), as llama.cpp's tests/test-tokenizer-0 reads them: no BOS/EOS
added, special tokens not parsed in the text.

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/llsdist
    tar xzf /tmp/llsdist/llama_cpp_python-0.3.36.tar.gz -C /tmp/llsdist
    python tools/check_vocabs_llamacpp.py [--llama-cpp-src DIR]

Prints a Markdown table (for BENCHMARKS.md); exit status 1 if any text tokenizes differently.
A vocabulary whose tokenizer model we do not support must fail to load with our one-line
UnsupportedError, which the table reports as such. A vocabulary that ships no texts is compared
with llama.cpp itself (llama-cpp-python, vocab_only) on every other file's texts plus a few
normalization cases, with and without BOS/EOS and special-token parsing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gguf_runtime  # noqa: E402
from gguf_runtime.errors import UnsupportedError  # noqa: E402

LLAMA_CPP_SRC = Path("/tmp/llsdist/llama_cpp_python-0.3.36/vendor/llama.cpp")
SEPARATOR = "\n__ggml_vocab_test__\n"
EXTRA = ["Ｈｅｌｌｏ　ｗｏｒｌｄ", "ﬁne ½ ① ㎞", "a\u00a0b", "x <mask> y", "<s>hi</s>", "tab\there",
         "  lead and trail  ", "日本語のテキスト", "\u200bzero width", "[CLS] [SEP] <|endoftext|>"]


def texts_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split(SEPARATOR)


def live_check(vocab: Path, tok, texts: list[str]) -> tuple[str, bool]:
    """Our ids against llama.cpp's own tokenizer on `texts` (needs llama-cpp-python)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return "loads (no test texts; llama-cpp-python absent for a live check)", True
    llm = Llama(model_path=str(vocab), vocab_only=True, verbose=False)
    cases = [(t, add, sp) for t in texts for add, sp in ((False, False), (True, True))]
    bad = [t for t, add, sp in cases if llm.tokenize(t.encode(), add_bos=add, special=sp)
           != tok.encode(t, add_bos=None if add else False, special=sp)]
    cell = f"{len(cases) - len(bad)}/{len(cases)} equal to llama.cpp live (no test texts shipped)"
    return cell + (f"; first differing text {bad[0][:40]!r}" if bad else ""), not bad


def check(vocab: Path, other_texts: list[str]) -> tuple[str, bool]:
    """(table cell, ok) for one vocabulary file."""
    try:
        tok = gguf_runtime.load_tokenizer(vocab)
    except UnsupportedError as e:
        return f"not supported: {str(e).split(': ', 1)[1][:90]}", True
    inp = Path(f"{vocab}.inp")
    if not inp.exists():
        return live_check(vocab, tok, other_texts + EXTRA)
    texts = texts_of(inp)
    wants = Path(f"{vocab}.out").read_text(encoding="utf-8").split("\n")
    bad = [t for t, w in zip(texts, wants)
           if tok.encode(t, add_bos=False, special=False) != [int(i) for i in w.split()]]
    n = min(len(texts), len(wants))
    cell = f"{n - len(bad)}/{n} equal" + (f"; first differing text {bad[0][:40]!r}" if bad else "")
    return cell, not bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp-src", type=Path, default=LLAMA_CPP_SRC)
    args = ap.parse_args()
    vocabs = sorted((args.llama_cpp_src / "models").glob("ggml-vocab-*.gguf"))
    if not vocabs:
        sys.exit(f"no models/ggml-vocab-*.gguf under {args.llama_cpp_src}; see this script's header")
    all_texts = list(dict.fromkeys(t for v in vocabs if Path(f"{v}.inp").exists()
                                   for t in texts_of(Path(f"{v}.inp"))))
    print("| vocabulary | tokenizer.ggml.model / pre | result |\n|---|---|---|")
    all_ok = True
    for vocab in vocabs:
        meta = gguf_runtime.open_gguf(vocab).metadata
        kind = f"{meta.get('tokenizer.ggml.model')} / {meta.get('tokenizer.ggml.pre', '-')}"
        cell, ok = check(vocab, all_texts)
        all_ok &= ok
        print(f"| {vocab.name} | {kind} | {cell} |")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
