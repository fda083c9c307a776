"""Quantized GGML tensors: block formats, QTensor, and dequantization bit-exact with gguf-py."""

from __future__ import annotations

import torch
from gguf import GGMLQuantizationType

from .errors import QuantError
from .formats import SUPPORTED_TYPES, BlockFormat, get_format, row_nbytes
from .qtensor import QTensor
from .quantize import QUANTIZABLE_TYPES, quantize, quantize_tensor

__all__ = ["dequantize", "QTensor", "BlockFormat", "get_format", "row_nbytes", "QuantError", "SUPPORTED_TYPES"]
__all__ += ["quantize", "quantize_tensor", "QUANTIZABLE_TYPES"]


def dequantize(obj, qtype: GGMLQuantizationType | int | None = None, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Dequantize one tensor to a fresh float32 tensor of its logical (PyTorch-order) shape.

    Accepts:
        a QTensor;
        a tensor-info-like object with `.data` (raw bytes: numpy or torch array),
            `.qtype` (GGMLQuantizationType or int) and `.shape` (PyTorch order);
        raw bytes (bytes, bytearray, memoryview, numpy or torch array) with `qtype` and `shape`.

    Raises QuantError for an unsupported type, a bad shape or a byte count that does not match.
    """
    if isinstance(obj, QTensor):
        return obj.dequantize()
    if qtype is None and shape is None and all(hasattr(obj, a) for a in ("data", "qtype", "shape")):
        return QTensor(obj.data, obj.qtype, tuple(obj.shape)).dequantize()
    if qtype is None or shape is None:
        raise QuantError(f"dequantize({type(obj).__name__}) needs qtype and shape for raw bytes")
    return QTensor(obj, qtype, tuple(shape)).dequantize()
