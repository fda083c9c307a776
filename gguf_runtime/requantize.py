"""Requantize a float GGUF (F32 / F16 / BF16 tensors) to another type, as llama-quantize does.

    requantize("m-F16.gguf", "m-Q4_K_M.gguf", "Q4_K_M")   # gguf-runtime quantize IN OUT TYPE

- Types: convert_types.choose_types, llama.cpp's per-tensor rules; a tensor that is not
  quantized (norms, 1-D) or already has its type is copied byte for byte.
- Metadata: every key/value pair is copied byte for byte in its order; general.file_type and
  general.quantization_version are set (in place, or appended), split.* keys are dropped
  (the output is one file), as llama.cpp does.
- Tensors keep the input's order. One tensor at a time: the input's memory map -> float32 ->
  `quant.quantize` -> the output, under a temporary name renamed at the end.

Output layout (GGUF v3, little-endian; str = len: u64 | utf-8 bytes):
    "GGUF" | version: u32 = 3 | n_tensors: u64 | n_kv: u64 | kv pairs (copied)
    n_tensors x { name: str | n_dims: u32 | ne: u64[n_dims] | type: u32 | offset: u64 }
    padding to general.alignment | tensor data, each at an aligned offset
"""

from __future__ import annotations

import argparse
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGML_QUANT_VERSION, GGMLQuantizationType

from .convert import Progress, check_output, quantize_rows, temporary_path
from .convert_source import ConvertError
from .convert_types import (FLOAT_TYPES, TYPE_NAMES, FileType, ModelInfo, TensorSpec,
                            choose_types, file_type)
from .errors import MissingKeyError, QuantError, UnsupportedError
from .gguf_file import DEFAULT_ALIGNMENT, GGUFFile, TensorInfo, _Cursor, open_gguf

__all__ = ["requantize", "add_arguments", "run"]

_U32 = 4                                     # GGUF value type id of uint32
_DROPPED_KEYS = ("split.no", "split.count", "split.tensors.count")


@dataclass
class _Out:
    """One output tensor: the input tensor, its new type and its data offset."""

    src: TensorInfo
    qtype: GGMLQuantizationType
    offset: int = 0

    @property
    def nbytes(self) -> int:
        block, type_size = GGML_QUANT_SIZES[self.qtype]
        return self.src.n_elements // block * type_size


def requantize(in_path, out_path, out_type: str, force: bool = False, progress: bool = True,
               pure: bool = False) -> Path:
    """Write `in_path` (a GGUF of F32/F16/BF16 tensors) requantized to `out_type` at `out_path`.

    Args:
        in_path: the float GGUF (a split set opens from its first part).
        out_path: the GGUF to write.
        out_type: one of TYPE_NAMES ("Q4_K_M", "Q6_K", "Q8_0", "F16", ...).
        force: overwrite out_path if it exists.
        progress: show a progress bar on stderr.
        pure: as llama-quantize --pure: every quantizable tensor takes the base type.
    Returns out_path as a Path. Raises UnsupportedError (unknown type, a tensor that is not
    float), OutputExistsError, MissingKeyError (no {arch}.block_count), ConvertError (cannot
    write, a value that cannot be quantized), GGUFFormatError (bad input); all one line.
    """
    ft, out = file_type(out_type), Path(out_path)
    check_output(out, force)
    gf = open_gguf(in_path)
    try:
        for t in gf.tensors.values():
            if t.qtype not in FLOAT_TYPES:
                raise UnsupportedError(
                    f"{gf.path}: tensor {t.name!r} is {t.qtype.name}; quantize needs a file of "
                    f"F32, F16 or BF16 tensors (requantizing quantized tensors is not supported)")
        specs = [TensorSpec(t.name, t.shape, t.qtype) for t in gf.tensors.values()]
        types = choose_types(specs, ft, _model_info(gf), pure)
        plan = [_Out(t, types[t.name]) for t in gf.tensors.values()]
        _write(gf, plan, _metadata(gf, ft), out, progress)
    finally:
        gf.close()
    return out


def _model_info(gf: GGUFFile) -> ModelInfo:
    arch, meta = gf.architecture, gf.metadata
    if not arch:
        raise MissingKeyError(f"{gf.path}: metadata key 'general.architecture' is missing")
    if f"{arch}.block_count" not in meta:
        raise MissingKeyError(f"{gf.path}: metadata key '{arch}.block_count' is missing")

    def first(key: str, default: int = 0) -> int:     # per-layer arrays: the first layer's
        value = meta.get(f"{arch}.{key}", default)
        return int(value[0] if isinstance(value, list) else value)

    n_head = first("attention.head_count")
    return ModelInfo(arch, first("block_count"), first("expert_count"), n_head,
                     first("attention.head_count_kv", n_head))


# ------------------------------------------------------------------ metadata, byte for byte
def _metadata(gf: GGUFFile, ft: FileType) -> list[bytes]:
    """The input's kv pairs as raw bytes, with file_type / quantization_version set."""
    pairs = [(k, raw) for k, raw in _raw_pairs(gf.path) if k not in _DROPPED_KEYS]
    for key, value in (("general.quantization_version", GGML_QUANT_VERSION),
                       ("general.file_type", int(ft.ftype))):
        raw = _string(key) + struct.pack("<II", _U32, value)
        at = next((i for i, (k, _) in enumerate(pairs) if k == key), None)
        if at is None:
            pairs.append((key, raw))
        else:
            pairs[at] = (key, raw)
    return [raw for _, raw in pairs]


def _raw_pairs(path: Path) -> list[tuple[str, bytes]]:
    """(key, the pair's bytes: key | value type | value) for each kv pair of the file."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm, \
            memoryview(mm) as buf:
        cur = _Cursor(buf, path)
        cur.pos = 4 + 4 + 8                         # magic, version, tensor count
        pairs = []
        for i in range(cur.u64("metadata count")):
            start = cur.pos
            key = cur.string(f"metadata key #{i}")
            cur.value(cur.u32(f"value type of {key!r}"), f"metadata {key!r}")
            pairs.append((key, bytes(buf[start:cur.pos])))
        return pairs


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _tensor_info(t: _Out) -> bytes:
    ne = tuple(reversed(t.src.shape))                # GGUF order: row length first
    return (_string(t.src.name) + struct.pack(f"<I{len(ne)}Q", len(ne), *ne)
            + struct.pack("<IQ", int(t.qtype), t.offset))


# ------------------------------------------------------------------ writing
def _write(gf: GGUFFile, plan: list[_Out], kv: list[bytes], out: Path, progress: bool) -> None:
    """Header, kv, infos, then each tensor's data, under a temporary name renamed at the end."""
    align = gf.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    offset = 0
    for t in plan:
        t.offset = offset
        offset += -(-t.nbytes // align) * align
    tmp = temporary_path(out)
    try:
        with open(tmp, "wb") as f:
            f.write(b"GGUF" + struct.pack("<IQQ", 3, len(plan), len(kv)))
            f.writelines(kv)
            f.writelines(_tensor_info(t) for t in plan)
            with Progress(sum(t.nbytes for t in plan), len(plan), out, progress) as bar:
                for t in plan:
                    f.write(bytes(-f.tell() % align))     # each tensor starts aligned
                    f.write(_tensor_bytes(gf, t))
                    bar.tensor_done(t.nbytes)
            f.write(bytes(-f.tell() % align))             # and ends so, as llama.cpp's files
        os.replace(tmp, out)
    except OSError as e:
        raise ConvertError(f"{out}: cannot write: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def _tensor_bytes(gf: GGUFFile, t: _Out) -> np.ndarray:
    """The tensor's new bytes: copied when the type stays, else dequantized and quantized."""
    if t.qtype == t.src.qtype:
        return t.src.data
    try:
        return quantize_rows(t.src.qtensor().dequantize_rows, t.src.shape, t.qtype)
    except QuantError as e:
        raise ConvertError(f"{gf.path}: tensor {t.src.name!r}: {e}") from e


# ------------------------------------------------------------------ command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `gguf-runtime quantize IN OUT TYPE`."""
    p.add_argument("input", help="GGUF of F32 / F16 / BF16 tensors")
    p.add_argument("output", help="GGUF to write")
    p.add_argument("type", metavar="TYPE", help=f"one of: {', '.join(TYPE_NAMES)}")
    p.add_argument("--pure", action="store_true",
                   help="no Q4_K_M-style mix: every quantizable tensor takes the base type")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Handler of `gguf-runtime quantize` (GGUFError propagates to the CLI's one-line report)."""
    path = requantize(args.input, args.output, args.type, force=args.force,
                      progress=not args.quiet, pure=args.pure)
    print(path)
    return 0

