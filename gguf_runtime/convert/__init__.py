"""Hugging Face folder -> GGUF: `convert()` and the `gguf-runtime convert` command.

    pipeline.py      the one-tensor-at-a-time pipeline (plan from headers, stream, quantize)
    arch.py          GGUF names, expected shapes, per-tensor fixes over the family modules'
                     facts (gguf_runtime/models/: rename tables, hparams writers, HF classes)
    plan.py          which HF tensors make each GGUF tensor (expert stacks, splits, kv_b)
    source.py        config.json and a lazy view of the safetensors weights
    tensor_types.py  llama-quantize's per-tensor type rules
    vocab.py         tokenizer.model / tokenizer.json -> tokenizer.ggml.* (+ prehash.py)
"""

from ..errors import ConvertError, OutputExistsError, ShapeMismatchError, SourceError
from .pipeline import (Progress, add_arguments, check_output, convert, main, quantize_rows, run,
                       temporary_path)
from .tensor_types import FILE_TYPES, TYPE_NAMES

__all__ = ["convert", "main", "run", "add_arguments", "quantize_rows", "check_output", "temporary_path",
           "Progress", "FILE_TYPES", "TYPE_NAMES", "ConvertError", "SourceError", "ShapeMismatchError", "OutputExistsError"]
