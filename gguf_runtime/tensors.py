"""Loading tensors with their shapes checked against the config: the one place where a file's
tensor shapes are compared with what its hyperparameters say, before any kernel sees them.

A lying shape (an `attn_output` of 4000 rows where the model width is 256, a 1-element norm, a
token embedding of [28311552, 1]) is a GGUFFormatError naming the tensor, its shape and the
expected one; the native binders check sizes again (fail closed). Shapes are PyTorch order
(rows, cols); `None` in an expected shape is a size read from the file (then kept consistent
by the caller); a tuple of shapes lists the alternatives (a Q/K norm per head or whole).
"""

from __future__ import annotations

from quant import QuantError
from quant.qlinear import ExpertStack, QLinear

from .errors import GGUFFormatError
from .gguf_file import GGUFFile, TensorInfo

Shape = tuple


def _fmt(shape: Shape) -> str:
    return "(" + ", ".join("*" if w is None else str(w) for w in shape) + ")"


def _matches(got: tuple, want: Shape) -> bool:
    while len(got) > len(want) and got[0] == 1:     # ggml's trailing ne = 1: (1, D) is (D,)
        got = got[1:]
    return len(got) == len(want) and all(w is None or w == s for w, s in zip(want, got))


class Tensors:
    """Fetches tensors by name, checks their shapes; errors name the file and tensor.

    `prefix` ("blk.3.") is put before every name; `context` ends the error messages
    ("qwen3moe with 8 experts of width 64").
    """

    def __init__(self, gf: GGUFFile, prefix: str, context: str):
        self.gf, self.prefix, self.context = gf, prefix, context

    def info(self, name: str, shape: Shape | list[Shape], required: bool = True) -> TensorInfo | None:
        """The tensor {prefix}{name}; `shape` one expected shape or a list of alternatives."""
        full = f"{self.prefix}{name}"
        t = self.gf.tensors.get(full)
        if t is None:
            if required:
                raise GGUFFormatError(f"{self.gf.path}: required tensor {full!r} is missing "
                                      f"({self.context})")
            return None
        shapes = shape if isinstance(shape, list) else [shape]
        if not any(_matches(t.shape, s) for s in shapes):
            raise GGUFFormatError(f"{self.gf.path}: tensor {full!r} has shape {t.shape}, expected "
                                  f"{' or '.join(_fmt(s) for s in shapes)} ({self.context})")
        return t

    def stack(self, name: str, shape: Shape, required: bool = True) -> ExpertStack | None:
        t = self.info(name, shape, required)
        if t is None:
            return None
        try:
            return ExpertStack(t.qtensor(), f"{self.prefix}{name}")
        except QuantError as e:
            raise GGUFFormatError(f"{self.gf.path}: {e}") from None

    def linear(self, name: str, shape: Shape | list[Shape], required: bool = True,
               bias: bool = False) -> QLinear | None:
        """The QLinear of {name}.weight (shape (N, K)), with {name}.bias of (N,) when `bias`
        and present (`name` with or without its ".weight")."""
        name = name[:-len(".weight")] if name.endswith(".weight") else name
        t = self.info(f"{name}.weight", shape, required)
        if t is None:
            return None
        b = self.vector(f"{name}.bias", t.shape[-2] if len(t.shape) > 1 else 1) if bias else None
        try:
            return QLinear(t.qtensor(), b)
        except (QuantError, ValueError) as e:
            raise GGUFFormatError(f"{self.gf.path}: tensor {self.prefix}{name}.weight: {e}") from None

    def vector(self, name: str, n: int | list[int], required: bool = False):
        """A float vector of n (or one of the sizes n) values, dequantized (norms, biases)."""
        sizes = n if isinstance(n, list) else [n]
        t = self.info(name, [(m,) for m in sizes], required)
        return t.qtensor().dequantize().reshape(-1) if t is not None else None


class BlockTensors(Tensors):
    """The tensors blk.{i}.* of block i."""

    def __init__(self, gf: GGUFFile, i: int, context: str):
        super().__init__(gf, f"blk.{i}.", context)
        self.i = i
