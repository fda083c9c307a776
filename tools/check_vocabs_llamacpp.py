"""Our tokenizer on llama.cpp's own tokenizer tests: models/ggml-vocab-*.gguf (vocabulary-only
GGUFs) with their .inp (texts, each followed by a "__ggml_vocab_test__" line) and .out (llama.cpp's
token ids, one line per text), as llama.cpp's tests/test-tokenizer-0 reads them: no BOS/EOS
added, special tokens not parsed in the text.

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/llsdist
    tar xzf /tmp/llsdist/llama_cpp_python-0.3.36.tar.gz -C /tmp/llsdist
    python tools/check_vocabs_llamacpp.py [--llama-cpp-src DIR]

Prints a Markdown table (for BENCHMARKS.md); exit status 1 if any text tokenizes differently.
A vocabulary whose tokenizer model we do not support must fail to load with our one-line
UnsupportedError, which the table reports as such.
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


def check(vocab: Path) -> tuple[str, bool]:
    """(table cell, ok) for one vocabulary file."""
    try:
        tok = gguf_runtime.load_tokenizer(vocab)
    except UnsupportedError as e:
        return f"not supported: {str(e).split(': ', 1)[1][:90]}", True
    inp = Path(f"{vocab}.inp")
    if not inp.exists():
        return "loads (llama.cpp ships no test texts)", True
    texts = inp.read_text(encoding="utf-8").split(SEPARATOR)
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
    print("| vocabulary | tokenizer.ggml.model / pre | result |\n|---|---|---|")
    all_ok = True
    for vocab in vocabs:
        meta = gguf_runtime.open_gguf(vocab).metadata
        kind = f"{meta.get('tokenizer.ggml.model')} / {meta.get('tokenizer.ggml.pre', '-')}"
        cell, ok = check(vocab)
        all_ok &= ok
        print(f"| {vocab.name} | {kind} | {cell} |")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
