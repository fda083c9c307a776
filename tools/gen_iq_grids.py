"""Write quant/data/iq_grids.npz: the IQ1/IQ2/IQ3 codebooks and the IQ2 sign table, parsed
from llama.cpp's ggml/src/ggml-common.h (the C source they are defined in).

    python tools/gen_iq_grids.py [--ggml-common PATH]

Each grid entry of ggml-common.h is one integer whose little-endian bytes are the entry's
values (8 for the uint64 grids, 4 for the uint32 ones; iq1s bytes are int8 -1/0/1). Saved:
  iq2xxs (256, 8) u8 | iq2xs (512, 8) u8 | iq2s (1024, 8) u8 | iq3xxs (256, 4) u8
  iq3s (512, 4) u8   | iq1s (2048, 8) i8 | ksigns (128,) u8 (ksigns_iq2xs)
and prints each array's sha256 (tests/test_formats_iq.py checks the file against them and
against gguf-py's own copy of the grids).
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "quant" / "data" / "iq_grids.npz"
DEFAULT_SRC = Path("/tmp/llsdist/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/src/ggml-common.h")
TABLES = {  # our name: (C name, C element type, values per entry, numpy dtype of a value)
    "iq2xxs": ("iq2xxs_grid", np.uint64, 8, np.uint8), "iq2xs": ("iq2xs_grid", np.uint64, 8, np.uint8),
    "iq2s": ("iq2s_grid", np.uint64, 8, np.uint8), "iq3xxs": ("iq3xxs_grid", np.uint32, 4, np.uint8),
    "iq3s": ("iq3s_grid", np.uint32, 4, np.uint8), "iq1s": ("iq1s_grid", np.uint64, 8, np.int8),
    "ksigns": ("ksigns_iq2xs", np.uint8, 1, np.uint8),
}


def table(source: str, c_name: str) -> list[int]:
    """The integers between GGML_TABLE_BEGIN(type, c_name, size) and GGML_TABLE_END()."""
    m = re.search(rf"GGML_TABLE_BEGIN\(\w+, {c_name}, \w+\)(.*?)GGML_TABLE_END\(\)", source, re.S)
    if m is None:
        raise SystemExit(f"{c_name} not found")
    return [int(v, 0) for v in re.findall(r"0x[0-9a-fA-F]+|\b\d+\b", m.group(1))]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ggml-common", type=Path, default=DEFAULT_SRC)
    args = ap.parse_args(argv)
    source = args.ggml_common.read_text()
    arrays = {}
    for name, (c_name, c_type, per_entry, dtype) in TABLES.items():
        raw = np.array(table(source, c_name), dtype=c_type)
        values = raw.astype("<" + np.dtype(c_type).str[1:]).view(np.uint8).view(dtype)
        arrays[name] = values.reshape(-1, per_entry) if per_entry > 1 else values
        print(f"{name:8s} {str(arrays[name].shape):12s} sha256 "
              f"{hashlib.sha256(arrays[name].tobytes()).hexdigest()}")
    OUT.parent.mkdir(exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
