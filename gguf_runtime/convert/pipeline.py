"""Hugging Face folder -> GGUF (float, Q8_0, legacy and K-quant mixes), one tensor at a time.

    convert(src_dir, out_path, out_type="Q4_K_M")   # or: gguf-runtime convert SRC --type Q4_K_M

The folder holds config.json, *.safetensors (one file, or shards with
model.safetensors.index.json) and optionally tokenizer.model / tokenizer.json. Pipeline:
  1. read config.json, pick the family (arch.py; the families' facts: gguf_runtime/models/),
     read the tokenizer (vocab.py);
  2. plan every tensor from the safetensors headers alone: GGUF name, shape (checked against
     config.json), output type; per-expert matrices become 3-D `ffn_*_exps` stacks and fused
     tensors are split (plan.py); write header, metadata and tensor infos;
  3. stream the data: read one tensor (or one expert stack), apply the family's fixes,
     quantize, append, forget it.
The file is written under a temporary name in the output folder and renamed at the end, so a
failed conversion never leaves a half-written file under the final name.

Output types follow llama.cpp (tensor_types.py): 1-D tensors (norms, biases, rope_freqs) are
always F32; 2-D weights take what `llama-quantize` would give them from an F16 file (Q4_K_M:
Q6_K for output and some attn_v / ffn_down, fallbacks for rows not a multiple of 256, ...),
quantized here from the float32 source with `quant.quantize` (llama.cpp's reference
quantizers, no importance matrix). Peak memory is about one float32 tensor (an expert stack
for MoE models) and its blocks.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gguf
import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGML_QUANT_VERSION, GGMLQuantizationType, GGUFWriter

import quant

from ..errors import GGUFError, QuantError
from .arch import (Family, HParams, detect_family, expected_shape, hyperparameters,
                           llama3_rope_freqs, transform)
from .plan import Recipe, plan_recipes, read_recipe, recipe_shape
from .source import (ConvertError, HFSource, OutputExistsError, ShapeMismatchError,
                             SourceError)
from .tensor_types import (FILE_TYPES, TYPE_NAMES, FileType, ModelInfo, TensorSpec,
                            choose_types, fallback_notes, file_type, print_note)
from .vocab import Vocab, load_vocab

T = GGMLQuantizationType
QUANTIZE_CHUNK = 1 << 22         # weights per quant.quantize call (16 MB of float32)

__all__ = ["convert", "add_arguments", "run", "main", "FILE_TYPES", "TYPE_NAMES", "ConvertError",
           "SourceError", "ShapeMismatchError", "OutputExistsError", "Progress", "quantize_rows",
           "check_output", "temporary_path"]


@dataclass
class PlannedTensor:
    """One output tensor: where its data comes from and how it is stored."""

    name: str                          # GGUF name
    shape: tuple[int, ...]             # logical, PyTorch order
    qtype: GGMLQuantizationType
    recipe: Recipe | None = None       # its Hugging Face source; None for generated ones
    data: torch.Tensor | None = None   # generated tensors (rope_freqs)

    @property
    def label(self) -> str:
        return self.recipe.label if self.recipe is not None else self.name

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
    ft: FileType
    pure: bool = False


def convert(src_dir, out_path, out_type: str = "F16", force: bool = False,
            progress: bool = True, pure: bool = False,
            notice: Callable[[str], None] = print_note) -> Path:
    """Convert a Hugging Face model folder to one GGUF file.

    Args:
        src_dir: folder with config.json and *.safetensors (tokenizer files optional).
        out_path: the .gguf file to write.
        out_type: a name of TYPE_NAMES: "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0",
            "Q5_1", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K" ("Q4_K" / "Q5_K": the _M
            mixes, as llama-quantize). Per-tensor types follow llama.cpp (tensor_types.py).
        force: overwrite out_path if it exists.
        progress: show a progress bar on stderr.
        pure: as llama-quantize --pure: no per-tensor mix, every 2-D weight the base type.
        notice: called with each warning line: no tokenizer files (the file then has no
            vocabulary and runs on token ids only), tensors that fell back to another type
            (default: "note: ..." on stderr).
    Returns:
        out_path as a Path. Raises GGUFError subclasses (SourceError, ShapeMismatchError,
        OutputExistsError, UnsupportedError, ConvertError) with one-line messages.
    """
    out = Path(out_path)
    ft = file_type(out_type)
    check_output(out, force)
    src = HFSource(src_dir)
    try:
        family, h = detect_family(src.config, str(src.folder))
        job = Job(src, h, family, load_vocab(src.folder, h, family.arch), ft, pure)
        if job.vocab is None:
            notice(f"{src.folder}: no tokenizer.json / tokenizer.model: the GGUF gets no vocabulary "
                   f"and runs on token ids only")
        fallbacks: list = []
        _write(job, _plan(job, fallbacks), out, progress)
    finally:
        src.close()
    for line in fallback_notes(fallbacks):
        notice(line)
    return out


# ------------------------------------------------------------------ planning (headers only)
def _plan(job: Job, fallbacks: list | None = None) -> list[PlannedTensor]:
    h, plan = job.h, []
    freqs = llama3_rope_freqs(h) if job.family.arch == "llama" else None
    if freqs is not None:
        plan.append(PlannedTensor("rope_freqs.weight", tuple(freqs.shape), T.F32, data=freqs))
    for r in plan_recipes(job.family, h, job.src.names()):
        shape = recipe_shape(r, job.src, h)
        want = expected_shape(job.family, h, r.sources[0], r.name)
        if shape != want:
            raise ShapeMismatchError(f"{job.src.files[r.sources[0]]}: tensor {r.label!r} has "
                                     f"shape {list(shape)}, config.json implies {list(want)}")
        plan.append(PlannedTensor(r.name, shape, _base_type(r.name, shape, job.ft), recipe=r))
    names = {t.name for t in plan}
    for required in ("token_embd.weight", "output_norm.weight"):
        if required not in names:
            raise ConvertError(f"{job.src.folder}: no tensor for {required!r} "
                               f"(expected model.embed_tokens / model.norm)")
    types = choose_types([TensorSpec(t.name, t.shape, t.qtype) for t in plan], job.ft,
                         _model_info(job), job.pure, fallbacks)
    for t in plan:
        t.qtype = types[t.name]
    return sorted(plan, key=_file_order)


_ALWAYS_F32 = (".ffn_gate_inp.weight", ".ffn_gate_inp_shexp.weight")     # routers


def _base_type(name: str, shape: tuple[int, ...], ft: FileType) -> GGMLQuantizationType:
    """The type before llama.cpp's quantization rules: what convert_hf_to_gguf.py writes
    (1-D tensors, norms, routers and anything not a .weight stay F32)."""
    if (len(shape) <= 1 or name.endswith(("_norm.weight", *_ALWAYS_F32))
            or not name.endswith(".weight")):
        return T.F32
    return T.F16 if ft.quantized else ft.default


def _model_info(job: Job) -> ModelInfo:
    h = job.h
    return ModelInfo(job.family.arch, h.n_layer, h.n_expert, h.n_head, h.n_kv)


def _file_order(t: PlannedTensor) -> tuple:
    """rope_freqs, token_embd, blocks by index, then output_norm / output."""
    parts = t.name.split(".")
    if parts[0] == "blk":
        return (2, int(parts[1]), t.name)
    return ({"rope_freqs": 0, "token_embd": 1}.get(parts[0], 3), 0, t.name)


# ------------------------------------------------------------------ writing
def _write(job: Job, plan: list[PlannedTensor], out: Path, progress: bool) -> None:
    """Write to a temporary name next to `out`, then rename; remove it on any failure."""
    tmp = temporary_path(out)
    w = GGUFWriter(tmp, job.family.arch)
    try:
        for t in plan:
            w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
        _add_metadata(w, job, plan)          # after the tensor infos: size_label counts them
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        with Progress(sum(t.nbytes for t in plan), len(plan), out, progress) as bar:
            for t in plan:
                w.write_tensor_data(_tensor_bytes(job, t))
                bar.tensor_done(t.nbytes)
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
    _add_model_card(w, job.src.folder.resolve())
    w.add_file_type(int(job.ft.ftype))
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


def _add_model_card(w: GGUFWriter, folder: Path) -> None:
    """general.* as llama.cpp's prepare_metadata: gguf-py's Metadata from README.md's model card
    and the folder name (name, basename, finetune, license, tags, ...), size_label from the
    tensor infos already added (e.g. "107K", "8x7B")."""
    total, shared, expert, n_expert = w.get_total_parameter_count()
    meta = gguf.Metadata.load(None, folder, None, total)
    meta.name = meta.name or folder.name
    if meta.size_label is None and total > 0:
        meta.size_label = gguf.size_label(total, shared, expert, n_expert)
    meta.set_gguf_meta_model(w)


def _tensor_bytes(job: Job, t: PlannedTensor) -> np.ndarray:
    """Read, fix and quantize one tensor; the float copy is dropped when this returns."""
    data = t.data if t.data is not None else read_recipe(t.recipe, job.src, job.h)
    rows = transform(job.family, job.h, t.name, data).reshape(-1, t.shape[-1])   # (R, C)
    try:
        return quantize_rows(lambda start, stop: rows[start:stop], t.shape, t.qtype)
    except QuantError as e:
        raise ConvertError(f"{job.src.folder}: tensor {t.label!r}: {e}") from e


def quantize_rows(rows: Callable[[int, int], torch.Tensor], shape: tuple[int, ...],
                  qtype: GGMLQuantizationType) -> np.ndarray:
    """`quant.quantize` of a (..., C) tensor, fed QUANTIZE_CHUNK weights at a time.

    rows(start, stop) gives rows [start, stop) of the (R, C) view as float32. Blocks never
    span rows, so the bytes equal one call on the whole tensor; the quantizer's temporaries
    (its finiteness check alone is 1.25x its input) stay the size of a chunk.
    """
    n_cols = shape[-1]
    n_rows = math.prod(shape[:-1])
    block, type_size = GGML_QUANT_SIZES[qtype]
    row_nbytes = n_cols // block * type_size
    out = np.empty(n_rows * row_nbytes, dtype=np.uint8)
    step = max(1, QUANTIZE_CHUNK // n_cols)
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        out[start * row_nbytes:stop * row_nbytes] = quant.quantize(rows(start, stop), qtype).numpy()
    return out


def check_output(out: Path, force: bool) -> None:
    """OutputExistsError when `out` exists and `force` is not set (convert and quantize)."""
    if out.exists() and not force:
        raise OutputExistsError(f"{out}: already exists (pass force=True / --force to overwrite)")


def temporary_path(out: Path) -> Path:
    """Where a GGUF is written before it is renamed to `out`: hidden, next to it (same file
    system, so the rename is atomic), per process."""
    return out.with_name(f".{out.name}.{os.getpid()}.part")


class Progress:
    """A tqdm bar on stderr counting output bytes, with tensors written as its postfix."""

    def __init__(self, total_bytes: int, n_tensors: int, out: Path, enabled: bool):
        from tqdm import tqdm

        self.n_tensors, self.done = n_tensors, 0
        self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"writing {out.name}",
                        disable=not enabled, file=sys.stderr)
        self.bar.set_postfix_str(f"0/{n_tensors} tensors", refresh=False)

    def tensor_done(self, nbytes: int) -> None:
        self.done += 1
        self.bar.set_postfix_str(f"{self.done}/{self.n_tensors} tensors", refresh=False)
        self.bar.update(nbytes)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


# ------------------------------------------------------------------ command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `gguf-runtime convert`."""
    p.add_argument("src_dir", help="Hugging Face model folder (config.json + *.safetensors)")
    p.add_argument("-o", "--outfile", default=None,
                   help="output .gguf (default: SRC_DIR-TYPE.gguf next to the folder)")
    p.add_argument("--type", "--outtype", dest="out_type", default="F16", type=str.upper,
                   choices=TYPE_NAMES, metavar="TYPE",
                   help=f"output type, per-tensor rules as llama-quantize (default F16): "
                        f"{', '.join(TYPE_NAMES)}")
    p.add_argument("--pure", action="store_true",
                   help="no Q4_K_M-style mix: every 2-D weight takes the base type")
    p.add_argument("--force", action="store_true", help="overwrite the output file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Handler of `gguf-runtime convert` (GGUFError propagates to the CLI's one-line report)."""
    src = Path(args.src_dir)
    out = Path(args.outfile) if args.outfile else \
        src.resolve().with_name(f"{src.resolve().name}-{args.out_type}.gguf")
    path = convert(src, out, args.out_type, force=args.force, progress=not args.quiet,
                   pure=args.pure)
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
