"""Sparse (Mixture-of-Experts) FFN, as llama.cpp's `build_moe_ffn`: a router scores the experts,
each token runs its top-k experts and sums their outputs weighted by the router; shared experts
(`ffn_*_shexp`) run for every token.

Which layers are sparse is decided at build time (`is_sparse`): all layers of a model with
`{arch}.expert_count` > 0 except the `leading_dense_block_count` first ones (DeepSeek), which
keep the dense FFN. The decoder loop is the same for both (transformer.py).

Legend: T tokens, D model width, E experts, K experts used per token, F expert FFN width,
G expert groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from quant import QuantError
from quant.kernels.block_step import (ExpertsStep, GGRRouting, MoEStep, bind_experts, bind_moe, native_route,
                                      routing_job)
from quant.kernels.registry import env_spec
from quant.qlinear import ExpertStack, QLinear, QLinearGroup

from .config import ModelConfig
from .errors import GGUFFormatError
from .gguf_file import GGUFFile
from .layers import gated_activation, per_row
from .tensors import BlockTensors

if TYPE_CHECKING:                       # the family modules import this module's users
    from .models.spec import ArchSpec

# llama.cpp's llama_expert_gating_func_type; 0 (unset) is the ArchSpec's expert_gating_unset
# (softmax for deepseek2, sigmoid for glm4moe, as llama.cpp's load_hparams).
GATING_FUNCS = {1: "softmax", 2: "sigmoid"}
# ggml's clamp of the sum of the selected weights before renormalising (smallest normal f16).
_MIN_WEIGHT_SUM = 6.103515625e-5


@dataclass(frozen=True)
class Routing:
    """How a router turns its logits into K weighted experts (the same for every sparse layer)."""

    n_expert: int
    n_used: int
    gating: str                  # "softmax" | "sigmoid": router logits -> probabilities
    norm: bool                   # renormalise the K selected probabilities to sum to 1
    scale: float                 # then multiply them (1: none)
    n_group: int = 0             # DeepSeek-V3 group-limited selection (0 or 1: off)
    n_group_used: int = 0

    @classmethod
    def from_config(cls, c: ModelConfig, spec: ArchSpec) -> "Routing":
        norm = spec.expert_weights_norm
        gating = spec.expert_gating
        if gating == "file":
            gating = _unset_gating(c, spec) if c.expert_gating_func == 0 else \
                GATING_FUNCS.get(c.expert_gating_func, f"#{c.expert_gating_func}")
        return cls(c.expert_count, c.expert_used_count, gating,
                   c.expert_weights_norm if norm is None else norm,
                   c.expert_weights_scale or 1.0, c.expert_group_count, c.expert_group_used_count)


def _unset_gating(c: ModelConfig, spec: ArchSpec) -> str:
    """The router of a file without {arch}.expert_gating_func, as llama.cpp's loader decides:
    deepseek2 files of GLM-4.7-Flash's shape (a trunk of 47 or 48 blocks, 154,880 tokens: its
    converter writes no gating key) are sigmoid, other deepseek2 files (DeepSeek-V2 / V2.5)
    softmax; other families take their ArchSpec's expert_gating_unset."""
    if c.architecture == "deepseek2":
        glm47 = c.trunk_block_count in (47, 48) and c.vocab_size == 154880
        return "sigmoid" if glm47 else "softmax"
    return spec.expert_gating_unset


def routing_problem(c: ModelConfig, spec: ArchSpec) -> str | None:
    """One line saying why the expert keys cannot be run (llama.cpp's asserts), else None."""
    a, n, k = c.architecture, c.expert_count, c.expert_used_count
    if n <= 0:
        return None
    if not 1 <= k <= n:
        return f"{a}.expert_used_count is {k}; it must be between 1 and {a}.expert_count ({n})"
    gating = Routing.from_config(c, spec).gating
    if gating not in ("softmax", "sigmoid", "softmax_weight"):
        return f"{a}.expert_gating_func {c.expert_gating_func} is not supported " \
               f"(supported: 1 softmax, 2 sigmoid)"
    g, gu = c.expert_group_count, c.expert_group_used_count
    if g > 1 and (n % g or not 0 < gu < g or n // g < 2):
        return f"{a}.expert_group_count {g} / expert_group_used_count {gu} do not fit " \
               f"{n} experts"
    return None


def is_sparse(c: ModelConfig, layer: int) -> bool:
    """Whether block `layer` has an expert FFN (decided from the config, as llama.cpp does)."""
    return c.expert_count > 0 and layer >= c.leading_dense_block_count


def route(logits: torch.Tensor, r: Routing, bias: torch.Tensor | None = None,
          job: GGRRouting | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits (T, E) -> weights (T, K) and selected expert ids (T, K), best first.

    `bias` (E,) (DeepSeek-V3's exp_probs_b) shifts the probabilities for the selection only;
    the weights are the unbiased probabilities of the selected experts. "softmax_weight"
    (gpt-oss): the top k of the logits, weighted by the softmax over those k. With `job`
    (native_routing_job: softmax / sigmoid without groups) the same math runs natively, as the
    one-call decode step runs it, so a prompt's tokens and generated ones route alike.
    """
    if job is not None:
        return native_route(logits, job)
    if r.gating == "softmax_weight":
        top = logits.topk(r.n_used, dim=-1)                               # (T, K)
        weights = torch.softmax(top.values, -1)
        return (weights * r.scale if r.scale != 1.0 else weights), top.indices
    probs = torch.softmax(logits, -1) if r.gating == "softmax" else per_row(torch.sigmoid, logits)
    select = probs + bias if bias is not None else probs                  # (T, E)
    if r.n_group > 1:
        select = _limit_groups(select, r.n_group, r.n_group_used)
    selected = select.topk(r.n_used, dim=-1).indices                      # (T, K)
    weights = probs.gather(-1, selected)                                  # (T, K)
    if r.norm:
        weights = weights / weights.sum(-1, keepdim=True).clamp(min=_MIN_WEIGHT_SUM)
    if r.scale != 1.0:
        weights = weights * r.scale
    return weights, selected


def native_routing_job(r: Routing, bias: torch.Tensor | None) -> GGRRouting | None:
    """The native routing of `r` (softmax / sigmoid, no group limit), or None (torch's route)."""
    return None if r.n_group > 1 else routing_job(r.n_used, r.gating, r.norm, r.scale, bias)


def _limit_groups(select: torch.Tensor, n_group: int, n_used: int) -> torch.Tensor:
    """Keep only the experts of the n_used groups whose two best scores sum highest."""
    n_tok, n_expert = select.shape
    groups = select.view(n_tok, n_group, n_expert // n_group)             # (T, G, E/G)
    score = groups.topk(2, dim=-1).values.sum(-1)                         # (T, G)
    drop = torch.ones(n_tok, n_group, dtype=torch.bool)
    drop.scatter_(1, score.topk(n_used, dim=-1).indices, False)
    return groups.masked_fill(drop[..., None], float("-inf")).view(n_tok, n_expert)


@dataclass
class MoE:
    """One sparse FFN; attributes are the block's GGUF tensor names (None when absent)."""

    routing: Routing
    activation: str                                  # "silu" | "gelu" (gated)
    ffn_gate_inp: QLinear                            # router (E, D)
    ffn_up_exps: ExpertStack                         # (E, F, D)
    ffn_down_exps: ExpertStack                       # (E, D, F)
    ffn_gate_exps: ExpertStack | None = None         # (E, F, D); absent: silu(up) only
    exp_probs_b: torch.Tensor | None = None          # (E,) selection bias (DeepSeek-V3)
    ffn_gate_shexp: QLinear | None = None            # shared experts, one dense gated FFN
    ffn_up_shexp: QLinear | None = None
    ffn_down_shexp: QLinear | None = None
    ffn_gate_inp_shexp: torch.Tensor | None = None   # (D,) Qwen2-MoE: shared FFN's sigmoid gate
    exps_bias: tuple | None = None                   # gpt-oss: (gate (E, F), up (E, F), down (E, D))
    _gate_up: dict = field(default_factory=dict, repr=False)   # expert -> its QLinearGroup
    _steps: dict = field(default_factory=dict, repr=False)     # GGUF_RUNTIME_KERNELS -> ExpertsStep
    _jobs: dict = field(default_factory=dict, repr=False)      # GGUF_RUNTIME_KERNELS -> GGRRouting
    _moe_steps: dict = field(default_factory=dict, repr=False)  # GGUF_RUNTIME_KERNELS -> MoEStep

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(T, D) normed hidden states -> (T, D) FFN output."""
        step = self._moe_step() if x.shape[0] == 1 else None
        if step is not None:                    # router, routing and experts in one native call
            out, ids = step(x.contiguous())
            self._mark_touched(ids)
        else:
            weights, selected = route(self.ffn_gate_inp(x), self.routing, self.exp_probs_b, self._routing_job())
            out = self._routed(x, weights, selected)
        if self.ffn_up_shexp is not None:
            out = out + self._shared(x)
        return out

    def _routed(self, x: torch.Tensor, weights: torch.Tensor,
                selected: torch.Tensor) -> torch.Tensor:
        """Grouped dispatch: tokens are grouped by expert, so each selected expert runs one
        matmul per projection over all its tokens and its bytes are read once per step."""
        if x.shape[0] == 1:
            return self._routed_one(x, weights[0], selected[0])
        n_used = selected.shape[1]
        order = torch.argsort(selected.reshape(-1), stable=True)          # (T*K,) by expert
        tokens = order // n_used                                          # (T*K,)
        slot_w = weights.reshape(-1)[order]                               # (T*K,)
        counts = torch.bincount(selected.reshape(-1), minlength=self.routing.n_expert)
        out = torch.zeros_like(x)                                         # (T, D)
        start = 0
        for e, n in enumerate(counts.tolist()):
            if n:
                rows = tokens[start:start + n]
                y = self._expert(e, x[rows]) * slot_w[start:start + n, None]
                out.index_add_(0, rows, y)
                start += n
        return out

    def _routed_one(self, x: torch.Tensor, weights: torch.Tensor,
                    selected: torch.Tensor) -> torch.Tensor:
        """One token (decode): its K experts in expert order, summed as `_routed` sums them
        (so decode and prefill round alike), without the grouping bookkeeping; one native call
        (quant.kernels.block_step.bind_experts, same ops, same result) where it can run."""
        pairs = sorted(zip(selected.tolist(), weights.tolist()))
        step = self._experts_step()
        if step is not None:
            ids = [e for e, _ in pairs]
            self._mark_touched(ids)
            return step(x.contiguous(), ids, [w for _, w in pairs])
        out = None
        for e, w in pairs:
            y = self._expert(e, x).mul_(w)                                # (1, D)
            out = y if out is None else out.add_(y)
        return out

    def _experts_step(self) -> ExpertsStep | None:
        key = env_spec()
        if self.exps_bias is not None:          # the native step has no expert biases
            return None
        if key not in self._steps:
            self._steps[key] = bind_experts(self.ffn_gate_exps, self.ffn_up_exps, self.ffn_down_exps,
                                            self.activation)
        return self._steps[key]

    def _routing_job(self) -> GGRRouting | None:
        key = env_spec()
        if key not in self._jobs:
            self._jobs[key] = native_routing_job(self.routing, self.exp_probs_b)
        return self._jobs[key]

    def _moe_step(self) -> MoEStep | None:
        """The one-call routed step where it computes what the calls it replaces compute: an
        experts step, native routing, a router without bias whose decode kernel is native."""
        key = env_spec()
        if key not in self._moe_steps:
            router = self.ffn_gate_inp
            plain = router.bias is None and not router.exact
            self._moe_steps[key] = bind_moe(self._experts_step(), router.weight, self._routing_job()) if plain else None
        return self._moe_steps[key]

    def _mark_touched(self, ids: list[int]) -> None:
        """ExpertStack.touched bookkeeping for experts run without `expert(e)`."""
        for stack in (self.ffn_gate_exps, self.ffn_up_exps, self.ffn_down_exps):
            if stack is not None and stack.touched is not None:
                stack.touched.update(ids)

    def _expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        if self.exps_bias is not None:
            return self._biased_expert(e, x)
        up = self.ffn_up_exps.expert(e)                                   # marks it touched
        if self.ffn_gate_exps is None:
            return self.ffn_down_exps.expert(e)(torch.nn.functional.silu(up(x)))
        gate = self.ffn_gate_exps.expert(e)
        group = self._gate_up.get(e)
        if group is None:
            group = self._gate_up[e] = QLinearGroup.of([gate, up])
        h = group.gated(x, self.activation) if group is not None else \
            gated_activation(gate(x), up(x), self.activation)
        return self.ffn_down_exps.expert(e)(h)                            # (n, D)

    def _biased_expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """down_e(act(gate_e(x) + bg_e, up_e(x) + bu_e)) + bd_e (gpt-oss's biased experts)."""
        b_gate, b_up, b_down = (b[e] for b in self.exps_bias)
        h = gated_activation(self.ffn_gate_exps.expert(e)(x) + b_gate, self.ffn_up_exps.expert(e)(x) + b_up,
                             self.activation)
        return self.ffn_down_exps.expert(e)(h) + b_down                   # (n, D)

    def _shared(self, x: torch.Tensor) -> torch.Tensor:
        if "shexp" not in self._gate_up:
            self._gate_up["shexp"] = QLinearGroup.of([self.ffn_gate_shexp, self.ffn_up_shexp])
        group = self._gate_up["shexp"]
        h = group.gated(x, self.activation) if group is not None else \
            gated_activation(self.ffn_gate_shexp(x), self.ffn_up_shexp(x), self.activation)
        out = self.ffn_down_shexp(h)                                      # (T, D)
        if self.ffn_gate_inp_shexp is not None:
            # a per-row reduction (not x @ w: a BLAS gemv may sum a row differently for
            # other row counts), so a batch of sequences gates as each alone
            out = out * per_row(torch.sigmoid, (x * self.ffn_gate_inp_shexp).sum(-1, keepdim=True))
        return out


# ---------------------------------------------------------------------- loading
def build_moe(gf: GGUFFile, i: int, config: ModelConfig, spec: ArchSpec) -> MoE:
    """The sparse FFN of block i, every tensor checked against expert_count and the width.

    Raises GGUFFormatError naming the tensor when one is missing or has the wrong shape.
    """
    problem = routing_problem(config, spec)
    if problem:
        raise GGUFFormatError(f"{gf.path}: {problem}")
    n, d = config.expert_count, config.embedding_length
    ld = BlockTensors(gf, i, f"{config.architecture} with {n} experts of width {d}")
    router = ld.linear("ffn_gate_inp.weight", (n, d), bias=True)
    up = ld.stack("ffn_up_exps.weight", (n, None, d))
    f = up.out_features
    moe = MoE(Routing.from_config(config, spec), spec.activation, ffn_gate_inp=router,
              ffn_up_exps=up,
              ffn_down_exps=ld.stack("ffn_down_exps.weight", (n, d, f)),
              ffn_gate_exps=ld.stack("ffn_gate_exps.weight", (n, f, d), required=False),
              exp_probs_b=ld.vector("exp_probs_b.bias", n))
    biases = [ld.info(f"ffn_{p}_exps.bias", (n, w), required=False) for p, w in (("gate", f), ("up", f), ("down", d))]
    if any(b is not None for b in biases):
        if None in biases or moe.ffn_gate_exps is None:
            raise GGUFFormatError(f"{gf.path}: block {i} has some of ffn_gate/up/down_exps.bias but not all "
                                  f"three (with ffn_gate_exps)")
        moe.exps_bias = tuple(b.qtensor().dequantize().reshape(n, -1) for b in biases)
    shared = config.expert_shared_count > 0 or config.expert_shared_feed_forward_length > 0
    if shared or f"blk.{i}.ffn_up_shexp.weight" in gf.tensors:
        moe.ffn_up_shexp = ld.linear("ffn_up_shexp.weight", (None, d))
        fs = moe.ffn_up_shexp.out_features
        moe.ffn_gate_shexp = ld.linear("ffn_gate_shexp.weight", (fs, d))
        moe.ffn_down_shexp = ld.linear("ffn_down_shexp.weight", (d, fs))
        moe.ffn_gate_inp_shexp = ld.vector("ffn_gate_inp_shexp.weight", d)
    return moe
