"""QLinear: y = x @ W.T (+ b) with W kept as raw GGML blocks; the kernels do the math."""

from __future__ import annotations

import torch

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
