"""QTensor: the raw blocks of one GGML tensor, its type and its logical shape.

Nothing here turns bytes into floats unless asked: `dequantize()` / `dequantize_rows()` are
the only float producers. Shapes are PyTorch order: the last dim is GGUF's ne[0] (the row
length), and a row, whatever the rank, is one contiguous run of `row_nbytes` bytes.

Legend: R = rows (product of all dims but the last), C = columns (weights per row).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from gguf import GGMLQuantizationType

from .errors import QuantError
from .formats import BlockFormat, get_format, row_nbytes

# Weights dequantized per step in `QTensor.dequantize`: bounds the float temporaries
# (a few times 4 B per weight) for huge tensors such as a 262144-row embedding.
CHUNK_WEIGHTS = 1 << 20


@dataclass(frozen=True, eq=False)
class QTensor:
    """Raw GGML blocks + type + logical shape; validated on construction.

    Args:
        data: the raw bytes: a torch or numpy array (any dtype, viewed as bytes, zero-copy when
            contiguous), bytes, bytearray or memoryview. Stored as a 1-D uint8 torch tensor.
        qtype: a GGMLQuantizationType or its integer id (stored as the enum).
        shape: logical shape, PyTorch order, 1 to 4 dims; the last must be a multiple of the
            type's block size.

    Raises QuantError for an unsupported type, a bad shape or a byte count that does not match.
    """

    data: torch.Tensor
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        fmt = get_format(self.qtype)
        if not 1 <= len(shape) <= 4 or min(shape) < 0:
            raise QuantError(f"{fmt.qtype.name} tensor shape must have 1 to 4 non-negative dims, got {shape}")
        data = as_byte_tensor(self.data)
        expected = math.prod(shape[:-1]) * row_nbytes(fmt.qtype, shape[-1])
        if data.numel() != expected:
            raise QuantError(f"{fmt.qtype.name} tensor of shape {shape} needs {expected} bytes, got {data.numel()}")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "qtype", fmt.qtype)
        object.__setattr__(self, "shape", shape)

    @property
    def format(self) -> BlockFormat:
        return get_format(self.qtype)

    @property
    def n_rows(self) -> int:
        return math.prod(self.shape[:-1])

    @property
    def n_cols(self) -> int:
        return self.shape[-1]

    @property
    def row_nbytes(self) -> int:
        return row_nbytes(self.qtype, self.n_cols)

    @property
    def nbytes(self) -> int:
        return self.data.numel()

    def row_bytes(self, start: int, stop: int) -> torch.Tensor:
        """Zero-copy 1-D uint8 view of rows [start, stop) (rows of the flattened (R, C) view)."""
        if not 0 <= start <= stop <= self.n_rows:
            raise QuantError(f"row range [{start}, {stop}) outside the {self.n_rows} rows of {self!r}")
        return self.data[start * self.row_nbytes: stop * self.row_nbytes]

    def dequantize_rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of the flattened (R, C) view as a fresh (stop - start, C) float32 tensor.

        Reads only those rows' bytes.
        """
        fmt = self.format
        blocks = self.row_bytes(start, stop).view(-1, fmt.type_size)
        return fmt.dequantize_blocks(blocks).view(stop - start, self.n_cols)

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows at integer indices `rows` (of the flattened (R, C) view) as float32 (len(rows), C).

        Copies and dequantizes only those rows' bytes (an embedding lookup).
        """
        fmt = self.format
        raw = self.data.view(self.n_rows, self.row_nbytes)[rows.reshape(-1)]  # (n, row bytes)
        return fmt.dequantize_blocks(raw.reshape(-1, fmt.type_size)).view(-1, self.n_cols)

    def dequantize(self) -> torch.Tensor:
        """The whole tensor as a fresh float32 tensor of `shape`, bit-exact with gguf.quants."""
        step = max(1, CHUNK_WEIGHTS // max(1, self.n_cols))
        if self.n_rows <= step:
            return self.dequantize_rows(0, self.n_rows).view(self.shape)
        out = torch.empty((self.n_rows, self.n_cols), dtype=torch.float32, device=self.data.device)  # (R, C)
        for start in range(0, self.n_rows, step):
            stop = min(self.n_rows, start + step)
            out[start:stop] = self.dequantize_rows(start, stop)
        return out.view(self.shape)

    def __repr__(self) -> str:
        return f"QTensor({self.qtype.name}, shape={self.shape}, {self.nbytes} B)"


def as_byte_tensor(data) -> torch.Tensor:
    """Any raw buffer -> 1-D uint8 torch tensor over the same bytes (copied only if strided).

    Read-only numpy arrays (a GGUF memory map opened "r") and immutable `bytes` are wrapped
    zero-copy with torch.from_numpy, silencing torch's non-writable warning: the raw bytes are
    never written here (every float result is a fresh tensor), so sharing them is safe and
    avoids copying hundreds of MB.
    """
    if isinstance(data, torch.Tensor):
        return data.contiguous().view(torch.uint8).reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    if not isinstance(data, np.ndarray):
        raise QuantError(f"raw tensor data must be a torch/numpy array or a bytes-like object, got {type(data).__name__}")
    data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(data)
