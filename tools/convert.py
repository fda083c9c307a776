#!/usr/bin/env python3
"""Hugging Face folder -> GGUF: `python tools/convert.py SRC_DIR -o OUT.gguf --type F16`.

A thin wrapper over gguf_runtime.convert (the same code as `gguf-runtime convert`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gguf_runtime.convert import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
