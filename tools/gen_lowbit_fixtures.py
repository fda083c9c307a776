"""Tiny GGUFs whose weights llama.cpp quantized to the codebook / ternary / MXFP4 types, and
llama.cpp's logits on them: fixtures for tests/test_lowbit_fidelity.py.

    python tools/gen_lowbit_fixtures.py [--cases llama,qwen3moe]

For each case (tests/precision_cases.py: the dense llama widened to 256, the qwen3moe MoE) our
converter writes an F32 GGUF; every matrix of it (2-D weights and 3-D expert stacks, routers
excepted) is then quantized by llama.cpp's own `ggml_quantize_chunk` (libggml-base of
llama-cpp-python) to the type, with an importance matrix (IQ1/IQ2 need one: per column the mean
square of 64 standard-normal draws, seeded by the tensor's name), token_embd / output to Q8_0,
norms and routers kept F32. `llama_model_quantize` cannot be used: its imatrix argument is a
C++ map. llama.cpp then evaluates IDS on each file in one batch and one token at a time.

Written: tests/fixtures/lowbit/<case>-<type>.gguf, lowbit_llamacpp.npz (logits),
lowbit_llamacpp.json (sha256 of each file, versions). The test needs neither llama.cpp nor
this script.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gguf  # noqa: E402
import numpy as np  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402

from tests import precision_cases as pc  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "lowbit"
TYPES = {"llama": ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "TQ1_0",
                   "TQ2_0", "MXFP4"),
         "qwen3moe": ("IQ1_M", "IQ2_XXS", "MXFP4")}
KEEP_F32 = (".ffn_gate_inp.weight",)


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imatrix(name: str, n_cols: int) -> np.ndarray:
    """A stand-in importance matrix: per column the mean of 64 squared N(0, 1) draws."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return (rng.standard_normal((64, n_cols)) ** 2).mean(axis=0).astype(np.float32)


def target_type(name: str, ndim: int, qtype: T) -> T:
    if ndim < 2 or name.endswith(KEEP_F32) or not name.endswith(".weight"):
        return T.F32
    return T.Q8_0 if name.split(".")[0] in ("token_embd", "output") else qtype


def write_quantized(f32: Path, out: Path, qtype: T, lib) -> None:
    """`f32` with every matrix quantized by llama.cpp to `qtype` (see the module docstring)."""
    quantize = _tool("gen_quant_fixtures").ggml_quantize
    reader = gguf.GGUFReader(f32)
    arch = str(reader.fields["general.architecture"].contents())
    w = gguf.GGUFWriter(out, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.file_type"):
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)
    for t in reader.tensors:
        data = np.asarray(t.data, dtype=np.float32)            # numpy order: (..., n_cols)
        want = target_type(t.name, data.ndim, qtype)
        if want == T.F32:
            w.add_tensor(t.name, data)
            continue
        rows = data.reshape(-1, data.shape[-1])
        weights = imatrix(t.name, rows.shape[1]) if want != T.Q8_0 else None
        blocks = quantize(lib, rows, want, weights)             # (R, row bytes)
        w.add_tensor(t.name, blocks.reshape(*data.shape[:-1], -1), raw_dtype=want)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file()
    w.close()


def main(argv=None) -> None:
    import llama_cpp

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(TYPES))
    args = ap.parse_args(argv)
    lib = _tool("gen_quant_fixtures").load_ggml()
    logits = _tool("gen_precision_fixtures").llamacpp_logits
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {"ids": pc.IDS, "versions": pc.versions() | {"llama_cpp_python": llama_cpp.__version__},
               "files": {}}
    arrays = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            f32 = pc.convert_case(case, Path(tmp) / case, "F32")
            for type_name in TYPES[case]:
                path = OUT / f"{case}-{type_name}.gguf"
                write_quantized(f32, path, T[type_name], lib)
                prompt, decode = logits(path, pc.IDS)
                arrays[f"{path.stem}/prompt"], arrays[f"{path.stem}/decode"] = prompt, decode
                summary["files"][path.name] = {"case": case, "type": type_name, "bytes": path.stat().st_size,
                                               "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
                errors = pc.errors_on(path, prompt, decode)
                summary["files"][path.name]["errors"] = errors
                print(f"{path.name:24s} {path.stat().st_size:9,d} B  {pc.format_errors(errors)}", flush=True)
    np.savez_compressed(OUT / "lowbit_llamacpp.npz", **arrays)
    (OUT / "lowbit_llamacpp.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
