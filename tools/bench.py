"""Benchmark gguf-runtime against llama.cpp: `python tools/bench.py [MODEL] [-t 2] [--json F]`.

Same as `gguf-runtime bench`; see gguf_runtime/bench.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gguf_runtime.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
