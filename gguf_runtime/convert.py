"""Hugging Face folder -> GGUF (F32, F16, BF16, Q8_0), one tensor in memory at a time.

    convert(src_dir, out_path, out_type="F16")      # or: gguf-runtime convert SRC -o OUT.gguf

The folder holds config.json, *.safetensors (one file, or shards with
model.safetensors.index.json) and optionally tokenizer.model / tokenizer.json. Pipeline:
  1. read config.json, pick the Family (convert_arch.py), read the tokenizer (convert_vocab.py);
  2. plan every tensor from the safetensors headers alone: GGUF name, shape (checked against
     config.json), output type; write header, metadata and tensor infos (gguf.GGUFWriter);
  3. stream the data: read one tensor, apply the family's fixes, quantize, append, forget it.
The file is written under a temporary name in the output folder and renamed at the end, so a
failed conversion never leaves a half-written file under the final name.

Output types follow llama.cpp: 1-D tensors (norms, biases, rope_freqs) are always F32; 2-D
weights take the requested type, Q8_0 falling back to F16 for rows not a multiple of 32.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGML_QUANT_VERSION, GGMLQuantizationType, GGUFWriter
from gguf import LlamaFileType, quants

from .convert_arch import (Family, HParams, detect_family, expected_shape, gguf_name,
                           hyperparameters, llama3_rope_freqs, transform)
from .convert_source import (ConvertError, HFSource, OutputExistsError, ShapeMismatchError,
                             SourceError)
from .convert_vocab import Vocab, load_vocab
from .errors import GGUFError, UnsupportedError

T = GGMLQuantizationType
OUT_TYPES = {"F32": (T.F32, LlamaFileType.ALL_F32), "F16": (T.F16, LlamaFileType.MOSTLY_F16),
             "BF16": (T.BF16, LlamaFileType.MOSTLY_BF16),
             "Q8_0": (T.Q8_0, LlamaFileType.MOSTLY_Q8_0)}

__all__ = ["convert", "add_arguments", "run", "main", "OUT_TYPES", "ConvertError",
           "SourceError", "ShapeMismatchError", "OutputExistsError"]


@dataclass
class PlannedTensor:
    """One output tensor: where its data comes from and how it is stored."""

    name: str                          # GGUF name
    shape: tuple[int, ...]             # logical, PyTorch order
    qtype: GGMLQuantizationType
    hf_name: str | None = None         # source tensor; None for generated ones
    data: torch.Tensor | None = None   # generated tensors (rope_freqs)

    @property
    def nbytes(self) -> int:
        block, type_size = GGML_QUANT_SIZES[self.qtype]
        return int(np.prod(self.shape)) // block * type_size


@dataclass
class Job:
    """A conversion in progress: the source, what it is, and what to write."""

    src: HFSource
    h: HParams
    family: Family
    vocab: Vocab | None
    qtype: GGMLQuantizationType
    file_type: LlamaFileType


def convert(src_dir, out_path, out_type: str = "F16", force: bool = False,
            progress: bool = True) -> Path:
    """Convert a Hugging Face model folder to one GGUF file.

    Args:
        src_dir: folder with config.json and *.safetensors (tokenizer files optional).
        out_path: the .gguf file to write.
        out_type: "F32", "F16", "BF16" or "Q8_0" for 2-D weights (1-D tensors stay F32).
        force: overwrite out_path if it exists.
        progress: show a progress bar on stderr.
    Returns:
        out_path as a Path. Raises GGUFError subclasses (SourceError, ShapeMismatchError,
        OutputExistsError, UnsupportedError, ConvertError) with one-line messages.
    """
    out = Path(out_path)
    key = str(out_type).upper()
    if key not in OUT_TYPES:
        raise UnsupportedError(f"output type {out_type!r} is not supported; supported: "
                               f"{', '.join(OUT_TYPES)}")
    if out.exists() and not force:
        raise OutputExistsError(f"{out}: already exists (pass force=True / --force to overwrite)")
    src = HFSource(src_dir)
    try:
        h = HParams(src.config, str(src.folder))
        family = detect_family(h)
        job = Job(src, h, family, load_vocab(src.folder, h, family.arch), *OUT_TYPES[key])
        _write(job, _plan(job), out, progress)
    finally:
        src.close()
    return out


# ------------------------------------------------------------------ planning (headers only)
def _plan(job: Job) -> list[PlannedTensor]:
    h, plan = job.h, []
    freqs = llama3_rope_freqs(h) if job.family.arch == "llama" else None
    if freqs is not None:
        plan.append(PlannedTensor("rope_freqs.weight", tuple(freqs.shape), T.F32, data=freqs))
    for hf_name in job.src.names():
        name = gguf_name(job.family, h, hf_name)
        if name is None:
            continue
        shape, want = job.src.shape(hf_name), expected_shape(h, hf_name, name)
        if shape != want:
            raise ShapeMismatchError(f"{job.src.files[hf_name]}: tensor {hf_name!r} has shape "
                                     f"{list(shape)}, config.json implies {list(want)}")
        plan.append(PlannedTensor(name, shape, _storage_type(shape, job.qtype), hf_name=hf_name))
    names = {t.name for t in plan}
    for required in ("token_embd.weight", "output_norm.weight"):
        if required not in names:
            raise ConvertError(f"{job.src.folder}: no tensor for {required!r} "
                               f"(expected model.embed_tokens / model.norm)")
    return sorted(plan, key=_file_order)


def _storage_type(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> GGMLQuantizationType:
    if len(shape) <= 1:
        return T.F32
    if qtype == T.Q8_0 and shape[-1] % GGML_QUANT_SIZES[T.Q8_0][0]:
        return T.F16
    return qtype


def _file_order(t: PlannedTensor) -> tuple:
    """rope_freqs, token_embd, blocks by index, then output_norm / output."""
    parts = t.name.split(".")
    if parts[0] == "blk":
        return (2, int(parts[1]), t.name)
    return ({"rope_freqs": 0, "token_embd": 1}.get(parts[0], 3), 0, t.name)


# ------------------------------------------------------------------ writing
def _write(job: Job, plan: list[PlannedTensor], out: Path, progress: bool) -> None:
    """Write to a temporary name next to `out`, then rename; remove it on any failure."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    w = GGUFWriter(tmp, job.family.arch)
    try:
        _add_metadata(w, job, plan)
        for t in plan:
            w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        with _progress_bar(plan, out, progress) as bar:
            for t in plan:
                w.write_tensor_data(_tensor_bytes(job, t))
                bar.update(t.nbytes)
        w.close()
        os.replace(tmp, out)
    except GGUFError:
        raise
    except OSError as e:
        raise ConvertError(f"{out}: cannot write: {e}") from e
    finally:
        w.close()
        tmp.unlink(missing_ok=True)


def _add_metadata(w: GGUFWriter, job: Job, plan: list[PlannedTensor]) -> None:
    w.add_type("model")
    w.add_name(job.src.folder.resolve().name)
    w.add_file_type(int(job.file_type))
    w.add_quantization_version(GGML_QUANT_VERSION)
    kv = hyperparameters(job.family, job.h)
    # llama.cpp writes vocab_size for llama only; the runtime needs it for files without tokens.
    kv["add_vocab_size"] = next(t.shape[0] for t in plan if t.name == "token_embd.weight")
    for method, value in kv.items():
        getattr(w, method)(value)
    if job.vocab is not None:
        job.vocab.write(w)
    else:  # llama.cpp's _set_vocab_none: loadable by llama.cpp, token ids only
        w.add_tokenizer_model("none")


def _tensor_bytes(job: Job, t: PlannedTensor) -> np.ndarray:
    """Read, fix and quantize one tensor; the float copy is dropped when this returns."""
    data = t.data if t.data is not None else job.src.read(t.hf_name)
    data = transform(job.family, job.h, t.name, data)
    return quants.quantize(np.ascontiguousarray(data.numpy()), t.qtype)


def _progress_bar(plan: list[PlannedTensor], out: Path, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=sum(t.nbytes for t in plan), unit="B", unit_scale=True,
                desc=f"writing {out.name}", disable=not enabled, file=sys.stderr)


# ------------------------------------------------------------------ command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `gguf-runtime convert`."""
    p.add_argument("src_dir", help="Hugging Face model folder (config.json + *.safetensors)")
    p.add_argument("-o", "--outfile", default=None,
                   help="output .gguf (default: SRC_DIR-TYPE.gguf next to the folder)")
    p.add_argument("--type", "--outtype", dest="out_type", default="F16", type=str.upper,
                   choices=list(OUT_TYPES), help="type of 2-D weights (default F16)")
    p.add_argument("--force", action="store_true", help="overwrite the output file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Handler of `gguf-runtime convert` (GGUFError propagates to the CLI's one-line report)."""
    src = Path(args.src_dir)
    out = Path(args.outfile) if args.outfile else \
        src.resolve().with_name(f"{src.resolve().name}-{args.out_type}.gguf")
    path = convert(src, out, args.out_type, force=args.force, progress=not args.quiet)
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (tools/convert.py): parse argv, convert, one-line errors."""
    parser = argparse.ArgumentParser(prog="convert", description="Hugging Face folder -> GGUF")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except GGUFError as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 1
