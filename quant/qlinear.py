"""QLinear: y = x @ W.T (+ b) with W kept as raw GGML blocks; the kernels do the math.
QLinearGroup: several QLinear on one input (Q/K/V, gate/up) in one kernel call where possible.
ExpertStack: a 3-D stack of expert matrices whose experts are byte slices of the stack.

Legend: E experts, N out_features (rows per expert), K in_features (weights per row).
"""

from __future__ import annotations

import torch

from .errors import QuantError
from .kernels import kernel_for, registry
from .kernels.reference import ACTIVATIONS, GATED_ACTIVATIONS, gated_reference
from .qtensor import QTensor


def _kernel_key(x2: torch.Tensor) -> tuple[bool, str, str]:
    """What the kernel choice for x2 (M, K) depends on: decode path (few rows) or prefill, the
    device, GGUF_RUNTIME_KERNELS. QLinear and QLinearGroup cache their kernels under it."""
    return x2.shape[0] <= registry.DECODE_MAX_ROWS, x2.device.type, registry.env_spec()


class QLinear:
    """A linear layer over a 2-D QTensor W of shape (out_features, in_features).

    `__call__(x)` takes float (..., in_features) and returns float32 (..., out_features);
    W is never dequantized as a whole (see quant.kernels.qmatmul). The kernel is chosen per
    (decode/prefill path, x device, GGUF_RUNTIME_KERNELS) on first use and kept bound to W,
    so a decode step pays for one kernel call, not for the dispatch. `exact`: never a kernel
    that rounds below float32 (the bfloat16 prefill backend), for outputs such as logits.
    Raises QuantError for an x that is not floating point or whose last dim is not in_features.
    """

    def __init__(self, weight: QTensor, bias: torch.Tensor | None = None, exact: bool = False):
        if len(weight.shape) != 2:
            raise ValueError(f"QLinear needs a 2-D weight, got {weight!r}")
        self.weight, self.bias, self.exact = weight, bias, exact
        self.out_features, self.in_features = weight.shape
        self._bound: dict[tuple, registry.BoundFn] = {}

    @property
    def input_kind(self):
        """What `kernel_input` does to x depends only on this key (linears with equal keys may
        share one converted x, as QLinearGroup does)."""
        return None

    def kernel_input(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., K) as every kernel takes it: float32 (M, K), contiguous. The one place where
        activations enter the kernels."""
        if not x.is_floating_point() or x.shape[-1] != self.in_features:
            raise QuantError(f"QLinear x must be floating point (..., {self.in_features}) for "
                             f"{self.weight!r}, got {x.dtype} {tuple(x.shape)}")
        return x.reshape(-1, self.in_features).to(torch.float32).contiguous()

    def run(self, x2: torch.Tensor, out: torch.Tensor) -> None:
        """out (M, N) = x2 (M, K) @ W.T (no bias) for x2 from `kernel_input`; out may be strided."""
        key = _kernel_key(x2)
        fn = self._bound.get(key)
        if fn is None:
            fn = self._bound[key] = kernel_for(self.weight, x2.shape[0], on_cpu=key[1] == "cpu",
                                               exact=self.exact).bind(self.weight)
        fn(x2, out)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x2 = self.kernel_input(x)                                               # (M, K)
        out = torch.empty(x2.shape[0], self.out_features, device=x.device)      # (M, N)
        if out.numel():
            self.run(x2, out)
        y = out.view(*x.shape[:-1], self.out_features)
        return y + self.bias if self.bias is not None else y

    def __repr__(self) -> str:
        return f"QLinear({self.weight!r}, bias={self.bias is not None})"


class QLinearGroup:
    """QLinears of one input computed together: Q, K and V, or an FFN's gate and up.

    `__call__(x)` is [l_0(x) | l_1(x) | ...] along the last dim; `gated(x, act)` (two linears,
    gate and up, of equal out_features) is act(gate(x)) * up(x), act "silu" or "gelu" (tanh
    form). For few x rows where one backend has a group kernel (registry.select_group), that
    is one kernel call (the activation fused in); otherwise each linear runs its own kernel
    into its columns of one output. Build it with `QLinearGroup.of`.
    """

    def __init__(self, linears: list[QLinear]):
        self.linears = tuple(linears)
        self.in_features = linears[0].in_features
        self.out_features = sum(l.out_features for l in linears)
        self.offsets = [sum(l.out_features for l in linears[:j]) for j in range(len(linears) + 1)]
        biased = [l.bias is not None for l in linears]
        self.bias = torch.cat([l.bias if l.bias is not None else torch.zeros(l.out_features)
                               for l in linears]) if any(biased) else None
        self._group: dict[tuple, registry.GroupFn | None] = {}

    @classmethod
    def of(cls, linears: list[QLinear | None]) -> QLinearGroup | None:
        """The group of `linears`, or None when one is missing or they do not share an input
        (in_features, device, kernel_input's kind)."""
        if len(linears) < 2 or any(l is None for l in linears):
            return None
        first = linears[0]
        if any(l.in_features != first.in_features or l.input_kind != first.input_kind
               or l.weight.data.device != first.weight.data.device for l in linears):
            return None
        return cls(linears)

    def _group_kernel(self, x2: torch.Tensor) -> registry.GroupFn | None:
        key = _kernel_key(x2)
        if key not in self._group:
            weights = tuple(l.weight for l in self.linears)
            self._group[key] = registry.select_group(weights, x2.shape[0], key[1] == "cpu")
        return self._group[key]

    def _project(self, x2: torch.Tensor, act: str | None) -> tuple[torch.Tensor, bool]:
        """Kernel outputs for x2 (M, K) and whether `act` is already applied: act(gate) * up
        (M, N) when the group kernel fused it, else the projections side by side (M, sum N),
        biases added."""
        m = x2.shape[0]
        group = self._group_kernel(x2) if m else None
        if act not in ACTIVATIONS:              # the group kernels fuse silu / gelu only
            act = None
        if group is not None and (act is None or self.bias is None):
            out = torch.empty(m, self.linears[0].out_features if act else self.out_features)
            group(x2, out, act)
            act_done = act is not None
        else:
            out = torch.empty(m, self.out_features, device=x2.device)          # (M, sum N)
            for l, a, b in zip(self.linears, self.offsets, self.offsets[1:]):
                if m:
                    l.run(x2, out[:, a:b])
            act_done = False
        if self.bias is not None and not act_done:
            out += self.bias
        return out, act_done

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self._project(self.linears[0].kernel_input(x), None)
        return out.view(*x.shape[:-1], self.out_features)

    def gated(self, x: torch.Tensor, act: str) -> torch.Tensor:
        """act(gate(x)) * up(x), (..., N) for the two linears (gate, up) of this group."""
        n = self.linears[0].out_features
        if len(self.linears) != 2 or self.linears[1].out_features != n:
            raise QuantError(f"gated() needs two linears of equal out_features, got {self!r}")
        if act not in GATED_ACTIVATIONS:
            raise QuantError(f"unknown gated activation {act!r}; supported: {', '.join(GATED_ACTIVATIONS)}")
        out, act_done = self._project(self.linears[0].kernel_input(x), act)
        if not act_done:
            out = gated_reference(out[:, :n], out[:, n:], act)
        return out.view(*x.shape[:-1], n)

    def __repr__(self) -> str:
        return f"QLinearGroup({', '.join(map(repr, self.linears))})"


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
