"""Requantize a float GGUF (F32 / F16 / BF16 tensors) to another type, as llama-quantize does.

    requantize("m-F16.gguf", "m-Q4_K_M.gguf", "Q4_K_M")   # gguf-runtime quantize IN OUT TYPE

- Types: convert_types.choose_types, llama.cpp's per-tensor rules; a tensor that is not
  quantized (norms, 1-D) or already has its type is copied byte for byte.
- Metadata: every key/value pair is copied in its order with the value type it had;
  general.file_type and general.quantization_version are set (in place, or appended), split.*
  keys are dropped (the output is one file), as llama.cpp does.
- Tensors keep the input's order. One tensor at a time: the input's memory map -> float32 ->
  `quant.quantize` -> the output, under a temporary name renamed at the end. The file layout
  (header, kv pairs, tensor infos, aligned data) is gguf-py's GGUFWriter's, as the converter's.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from gguf import (GGML_QUANT_SIZES, GGML_QUANT_VERSION, GGMLQuantizationType, GGUFValueType,
                  GGUFWriter)

from .convert import Progress, check_output, quantize_rows, temporary_path
from .convert.source import ConvertError
from .convert.tensor_types import (FLOAT_TYPES, TYPE_NAMES, FileType, ModelInfo, TensorSpec,
                            choose_types, fallback_notes, file_type, print_note)
from .errors import MissingKeyError, QuantError, UnsupportedError
from .gguf_file import GGUFFile, TensorInfo, open_gguf

__all__ = ["requantize", "add_arguments", "run"]

_DROPPED_KEYS = ("split.no", "split.count", "split.tensors.count")


@dataclass
class _Out:
    """One output tensor: the input tensor and its new type."""

    src: TensorInfo
    qtype: GGMLQuantizationType

    @property
    def nbytes(self) -> int:
        block, type_size = GGML_QUANT_SIZES[self.qtype]
        return self.src.n_elements // block * type_size


def requantize(in_path, out_path, out_type: str, force: bool = False, progress: bool = True,
               pure: bool = False, notice: Callable[[str], None] = print_note) -> Path:
    """Write `in_path` (a GGUF of F32/F16/BF16 tensors) requantized to `out_type` at `out_path`.

    Args:
        in_path: the float GGUF (a split set opens from its first part).
        out_path: the GGUF to write.
        out_type: one of TYPE_NAMES ("Q4_K_M", "Q6_K", "Q8_0", "F16", ...).
        force: overwrite out_path if it exists.
        progress: show a progress bar on stderr.
        pure: as llama-quantize --pure: every quantizable tensor takes the base type.
        notice: called with one line per group of tensors that fell back to another type
            (default: "note: ..." on stderr).
    Returns out_path as a Path. Raises UnsupportedError (unknown type, a tensor that is not
    float), OutputExistsError, MissingKeyError (no {arch}.block_count), ConvertError (cannot
    write, a value that cannot be quantized), GGUFFormatError (bad input); all one line.
    """
    ft, out = file_type(out_type), Path(out_path)
    check_output(out, force)
    gf = open_gguf(in_path)
    fallbacks: list = []
    try:
        for t in gf.tensors.values():
            if t.qtype not in FLOAT_TYPES:
                raise UnsupportedError(
                    f"{gf.path}: tensor {t.name!r} is {t.qtype.name}; quantize needs a file of "
                    f"F32, F16 or BF16 tensors (requantizing quantized tensors is not supported)")
        specs = [TensorSpec(t.name, t.shape, t.qtype) for t in gf.tensors.values()]
        types = choose_types(specs, ft, _model_info(gf), pure, fallbacks)
        plan = [_Out(t, types[t.name]) for t in gf.tensors.values()]
        _write(gf, plan, _metadata(gf, ft), out, progress)
    finally:
        gf.close()
    for line in fallback_notes(fallbacks):
        notice(line)
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


# ------------------------------------------------------------------ metadata
@dataclass
class _KV:
    """One metadata pair to write: its value and the GGUF types it was stored with."""

    key: str
    value: Any
    vtype: GGUFValueType
    sub_type: GGUFValueType | None = None


def _metadata(gf: GGUFFile, ft: FileType) -> list[_KV]:
    """The input's kv pairs in order, with file_type / quantization_version set."""
    pairs = []
    for key, value in gf.metadata.items():
        if key not in _DROPPED_KEYS:
            vtype, etype = gf.metadata_types[key]
            pairs.append(_KV(key, value, GGUFValueType(vtype),
                             None if etype is None else GGUFValueType(etype)))
    for key, value in (("general.quantization_version", GGML_QUANT_VERSION),
                       ("general.file_type", int(ft.ftype))):
        kv = _KV(key, value, GGUFValueType.UINT32)
        at = next((i for i, p in enumerate(pairs) if p.key == key), None)
        if at is None:
            pairs.append(kv)
        else:
            pairs[at] = kv
    return pairs


def _as_bytes(value: Any) -> Any:
    """Strings as their stored bytes (vocabularies may hold byte tokens that are not UTF-8: the
    reader keeps them as surrogate escapes, which GGUFWriter would refuse to encode)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, list):
        return [_as_bytes(v) for v in value]
    if isinstance(value, np.ndarray):         # a large numeric array, a view of the input map
        return value.tolist()
    return value


# ------------------------------------------------------------------ writing
def _write(gf: GGUFFile, plan: list[_Out], kv: list[_KV], out: Path, progress: bool) -> None:
    """GGUFWriter: kv pairs and tensor infos, then each tensor's data as it is made, under a
    temporary name renamed at the end."""
    tmp = temporary_path(out)
    w = GGUFWriter(tmp, gf.architecture)                    # writes general.architecture first
    try:
        for p in kv:
            if p.key == "general.architecture":
                continue
            if p.key == "general.alignment":
                w.add_custom_alignment(int(p.value))        # also aligns the data
                continue
            w.add_key_value(p.key, _as_bytes(p.value), p.vtype, sub_type=p.sub_type)
        for t in plan:
            block, type_size = GGML_QUANT_SIZES[t.qtype]
            byte_shape = (*t.src.shape[:-1], t.src.shape[-1] // block * type_size)
            w.add_tensor_info(t.src.name, byte_shape, np.dtype(np.uint8), t.nbytes, raw_dtype=t.qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        with Progress(sum(t.nbytes for t in plan), len(plan), out, progress) as bar:
            for t in plan:
                w.write_tensor_data(np.ascontiguousarray(_tensor_bytes(gf, t)).view(np.uint8))
                bar.tensor_done(t.nbytes)
        w.close()
        os.replace(tmp, out)
    except OSError as e:
        raise ConvertError(f"{out}: cannot write: {e}") from e
    except ValueError as e:                                 # a value GGUFWriter cannot store
        raise ConvertError(f"{out}: cannot write {gf.path}'s metadata: {e}") from e
    finally:
        w.close()
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

