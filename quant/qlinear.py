"""QLinear: y = x @ W.T (+ b) with W kept as raw GGML blocks; the kernels do the math.
ExpertStack: a 3-D stack of expert matrices whose experts are byte slices of the stack.

Legend: E experts, N out_features (rows per expert), K in_features (weights per row).
"""

from __future__ import annotations

import torch

from .errors import QuantError
from .kernels import qmatmul
from .qtensor import QTensor


class QLinear:
    """A linear layer over a 2-D QTensor W of shape (out_features, in_features).

    `__call__(x)` takes float32 (..., in_features) and returns float32 (..., out_features);
    W is never dequantized as a whole (see quant.kernels.qmatmul).
    """

    def __init__(self, weight: QTensor, bias: torch.Tensor | None = None):
        if len(weight.shape) != 2:
            raise ValueError(f"QLinear needs a 2-D weight, got {weight!r}")
        self.weight, self.bias = weight, bias
        self.out_features, self.in_features = weight.shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = qmatmul(x, self.weight)
        return y + self.bias if self.bias is not None else y

    def __repr__(self) -> str:
        return f"QLinear({self.weight!r}, bias={self.bias is not None})"


class ExpertStack:
    """E expert matrices stored as one 3-D QTensor (E, N, K), as GGUF's `ffn_*_exps` tensors.

    A row is `row_nbytes` bytes and expert e's N rows follow each other, so expert e is the one
    contiguous byte range [e * N * row_nbytes, (e + 1) * N * row_nbytes):

        | expert 0: N rows | expert 1: N rows | ... | expert E-1: N rows |

    `expert(e)` is a QLinear over a zero-copy 2-D QTensor on that range; the stack is never
    dequantized as a whole. When `touched` is a set (None by default: no bookkeeping), every
    expert handed out is added to it, so a caller can check which experts' bytes were read.

    Args:
        weight: the 3-D QTensor (E, N, K); K must be a whole number of blocks of its type.
        name: used in error messages (the GGUF tensor name).
    Raises QuantError when the stack is not 3-D or its byte size is not E * N * row_nbytes.
    """

    def __init__(self, weight: QTensor, name: str = "expert stack"):
        if len(weight.shape) != 3:
            raise QuantError(f"{name}: an expert stack must be 3-D (experts, out, in), "
                             f"got {weight!r}")
        self.weight, self.name = weight, name
        self.n_expert, self.out_features, self.in_features = weight.shape
        # row_nbytes raises QuantError when K is not a whole number of blocks
        self.expert_nbytes = self.out_features * weight.row_nbytes
        if weight.nbytes != self.n_expert * self.expert_nbytes:
            raise QuantError(f"{name}: {weight.nbytes} bytes for {self.n_expert} experts of "
                             f"{self.expert_nbytes} bytes")
        self._experts: list[QLinear | None] = [None] * self.n_expert
        self.touched: set[int] | None = None

    def expert(self, e: int) -> QLinear:
        """Expert e as a QLinear (out_features, in_features) over its own bytes (no copy)."""
        if not 0 <= e < self.n_expert:
            raise QuantError(f"{self.name}: expert {e} outside 0..{self.n_expert - 1}")
        if self.touched is not None:
            self.touched.add(e)
        lin = self._experts[e]
        if lin is None:
            raw = self.weight.data[e * self.expert_nbytes:(e + 1) * self.expert_nbytes]
            shape = (self.out_features, self.in_features)
            lin = self._experts[e] = QLinear(QTensor(raw, self.weight.qtype, shape))
        return lin

    def __repr__(self) -> str:
        return f"ExpertStack({self.name}, {self.weight!r})"
