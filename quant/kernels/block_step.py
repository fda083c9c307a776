"""One transformer block's decode step (one token) in one native call: csrc/block_step.h.
Also a sparse FFN's routed experts for one token in one call (`bind_experts`).

A decode step of a small model is mostly Python: per block some twenty small calls (norms,
Q/K/V, rope, cache write, attention, output, residual, FFN), each a few microseconds of
interpreter and torch dispatch around a kernel that may itself take only tens of microseconds.
`bind_block` packs a block's weights, norms and sizes into one `ggr_block` once; each token
then costs one call. The C side runs the same kernels in the same order as the Python decoder
(gemv_multi with the same flags, rms_norm_row, rope_row, attend_run), so the result is
bit-identical to it; tests/test_generate.py checks that on every architecture.

The step is its own backend, "block" (available with the native library): GGUF_RUNTIME_KERNELS
without "block" runs every op from Python. The step fails closed: `bind_block` binds only a
block whose plan (gguf_runtime/block_plan.py) is one it implements, NATIVE_PLAN: every key
known and every value listed (a new kind of norm, residual or attention is refused, not run
wrongly), and returns None as well for a weight whose decode kernel is not native, biases on
the FFN or the norms, non-float32 or non-CPU tensors; the decoder then runs its Python path.

Legend: D model width, H/Hkv query/kv heads, Dk/Dv head dims, F FFN width, n_ctx cache length.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import QuantError
from ..qtensor import QTensor
from . import native
from .attention import KV_TYPES
from .registry import backend_enabled, path_for, register_backend, select, threads

if TYPE_CHECKING:                               # qlinear imports this package
    from ..qlinear import ExpertStack, QLinear, QLinearGroup

BACKEND = "block"
QK_NORM_MODES = {None: 0, "head": 1, "whole": 2}
GATED = tuple(a for a in native.ACT_CODES if a)      # the activations the native glu fuses
# The block plans csrc/block_step.h implements: plan key -> the values it runs. The FFN half is
# bound only for NATIVE_FFN; other FFN kinds take a step of attention only (the caller runs
# the FFN). A plan with a key not listed here, or a value not listed, is refused.
NATIVE_PLAN = {"norm": ("rms",), "pre_norm": (True,), "residual": ("sequential",), "attention": ("gqa",),
               "qk_norm": tuple(QK_NORM_MODES), "sinks": (False,), "ffn": ("gated", "gated_fused", "plain", "moe"),
               "activation": ("silu", "gelu")}
NATIVE_FFN = ("gated",)


def plan_supported(plan: dict) -> bool:
    """The native step implements `plan` (see NATIVE_PLAN): fail closed on anything unknown."""
    return set(plan) == set(NATIVE_PLAN) and all(plan[k] in NATIVE_PLAN[k] for k in plan)

register_backend(BACKEND, priority=5, available=lambda: native.load() is not None)


class GGRBlock(ctypes.Structure):
    """ggr_block of csrc/block_step.h."""

    _fields_ = [*[(n, ctypes.c_int64) for n in ("d", "n_head", "n_kv", "dk", "dv", "n_rot", "window", "n_ff")],
                *[(n, ctypes.c_int32) for n in ("neox", "qk_norm", "n_qkv", "act")],
                *[(n, ctypes.c_float) for n in ("eps", "attn_scale", "attn_cap", "residual_scale")],
                *[(n, ctypes.c_void_p) for n in ("attn_norm", "qkv_bias", "q_norm", "k_norm", "o_bias",
                                                  "post_attn_norm", "ffn_norm", "post_ffw_norm")],
                ("qkv", native.GGRMatrix * 3), ("o", native.GGRMatrix), ("gate_up", native.GGRMatrix * 2),
                ("down", native.GGRMatrix)]


@dataclass
class BlockWeights:
    """What one block's decode step reads. Norms are float32 vectors (None: no such norm, or
    for attn_norm / ffn_norm a norm without weight)."""

    plan: dict                                  # the block plan's as_dict() (see NATIVE_PLAN)
    qkv: QLinear | QLinearGroup                 # [Q | K | V] on the attention input
    attn_output: QLinear
    gate_up: QLinearGroup | None                # (gate, up) of a "gated" FFN
    down: QLinear | None
    attn_norm: torch.Tensor | None
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    post_attention_norm: torch.Tensor | None
    ffn_norm: torch.Tensor | None
    post_ffw_norm: torch.Tensor | None
    biased_norms: bool = False                  # a norm has a bias (the step has none)


@dataclass(frozen=True)
class BlockShape:
    d: int
    n_head: int
    n_kv: int
    dk: int
    dv: int
    n_rot: int
    neox: bool
    window: int                                 # 0: attend to every cached position
    eps: float
    attn_scale: float
    attn_cap: float                             # 0: no soft-capping
    residual_scale: float                       # 0: none


def _matrix(w: QTensor) -> native.GGRMatrix | None:
    """The ggr_matrix of W (N, K) with the flags of the kernel the Python decoder would run for
    one x row, or None when that kernel is not a native one (the step would not be identical)."""
    if w.data.device.type != "cpu" or len(w.shape) != 2:
        return None
    try:
        backend = select(w.qtype, path_for(1)).backend
    except QuantError:
        return None
    if backend not in ("native", native.Q8K_BACKEND):
        return None
    return native.matrix(w, native.FLAG_Q8K if backend == native.Q8K_BACKEND else 0)


def _enabled() -> bool:
    """The one-call steps may run: backend "block" and the native kernels both allowed here."""
    return backend_enabled(BACKEND) and backend_enabled("native")


def _linears(l: QLinear | QLinearGroup) -> tuple[QLinear, ...]:
    return getattr(l, "linears", (l,))             # a QLinearGroup's, or the one QLinear


def _vector_ok(t: torch.Tensor | None, n: int) -> bool:
    return t is None or (t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()
                         and t.numel() == n)


def _ptr(t: torch.Tensor | None) -> int | None:
    return t.data_ptr() if t is not None else None


class BlockStep:
    """A block's decode step bound once: `step(x, cos, sin, k_cache, v_cache, pos)` for one
    sequence, `step.rows(x, cos, sin, k_caches, v_caches, positions)` for one token of each of
    m sequences (row r equals that sequence's own step, bit for bit).

    x (m, D) float32 is updated in place (x + attention, then + FFN when `has_ffn`); cos / sin
    (m, n_rot/2) are the rows' positions'; k_caches / v_caches (Hkv, n_ctx, Dk / Dv) each row's
    layer cache, contiguous, float16 or float32 (all alike), whose row positions[r] is written
    (rounded to nearest, as torch's copy). Raises QuantError if the native side rejects a size
    or dtype.
    """

    def __init__(self, job: GGRBlock, keep: tuple, has_ffn: bool):
        self.job, self._keep, self.has_ffn = job, keep, has_ffn     # keep: tensors job points into
        self._fn, self._ref = native.load().ggr_block_step, ctypes.byref(job)

    def __call__(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                 v_cache: torch.Tensor, pos: int) -> None:
        self.rows(x, cos, sin, [k_cache], [v_cache], [pos])

    def rows(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_caches: list[torch.Tensor],
             v_caches: list[torch.Tensor], positions: list[int]) -> None:
        j, m = self.job, len(positions)
        n_ctx = k_caches[0].shape[1]
        caches_ok = all(k.shape == (j.n_kv, n_ctx, j.dk) and v.shape == (j.n_kv, n_ctx, j.dv)
                        and k.is_contiguous() and v.is_contiguous() and k.dtype == v.dtype == k_caches[0].dtype
                        for k, v in zip(k_caches, v_caches))
        if (not caches_ok or len(k_caches) != m or len(v_caches) != m or x.numel() != m * j.d
                or x.dtype != torch.float32 or cos.shape != (m, j.n_rot // 2) or sin.shape != cos.shape
                or not (x.is_contiguous() and cos.is_contiguous() and sin.is_contiguous())):
            raise QuantError(f"block step: x {tuple(x.shape)} {x.dtype}, caches {tuple(k_caches[0].shape)} / "
                             f"{tuple(v_caches[0].shape)} do not fit a block of width {j.d} with {j.n_kv} "
                             f"kv heads of {j.dk} / {j.dv} (contiguous float32 x, one cache of one dtype per row)")
        kv_type = KV_TYPES.get(k_caches[0].dtype, -1)
        ptrs = ctypes.c_void_p * m
        if self._fn(self._ref, x.data_ptr(), m, cos.data_ptr(), sin.data_ptr(),
                    ptrs(*[k.data_ptr() for k in k_caches]), ptrs(*[v.data_ptr() for v in v_caches]),
                    kv_type, n_ctx, (ctypes.c_int64 * m)(*positions), threads()):
            raise QuantError(f"native block step rejected position {', '.join(map(str, positions))} of a cache "
                             f"of {n_ctx} ({k_caches[0].dtype} keys and values; float16 or float32)")


def bind_block(w: BlockWeights, s: BlockShape) -> BlockStep | None:
    """The bound step of one block, or None where it cannot run (see the module docstring)."""
    if not _enabled() or not plan_supported(w.plan) or w.biased_norms:
        return None
    qk_norm = w.plan["qk_norm"]
    qkv = [_matrix(l.weight) for l in _linears(w.qkv)]
    o = _matrix(w.attn_output.weight)
    n_qkv = s.n_head * s.dk + s.n_kv * (s.dk + s.dv)
    qkv_bias = w.qkv.bias
    if (None in qkv or o is None or len(qkv) not in (1, 3) or w.qkv.out_features != n_qkv
            or not _vector_ok(qkv_bias, n_qkv) or not _vector_ok(w.attn_output.bias, s.d)):
        return None
    nq_norm = {"head": s.dk, "whole": s.n_head * s.dk}.get(qk_norm, 0)
    nk_norm = {"head": s.dk, "whole": s.n_kv * s.dk}.get(qk_norm, 0)
    norms = [(w.attn_norm, s.d), (w.q_norm, nq_norm), (w.k_norm, nk_norm), (w.post_attention_norm, s.d),
             (w.ffn_norm, s.d), (w.post_ffw_norm, s.d)]
    if not all(_vector_ok(t, n) for t, n in norms) or (qk_norm and (w.q_norm is None or w.k_norm is None)):
        return None
    job = GGRBlock(d=s.d, n_head=s.n_head, n_kv=s.n_kv, dk=s.dk, dv=s.dv, n_rot=s.n_rot, window=s.window,
                   neox=int(s.neox), qk_norm=QK_NORM_MODES[qk_norm], n_qkv=len(qkv), act=0,
                   eps=s.eps, attn_scale=s.attn_scale, attn_cap=s.attn_cap, residual_scale=s.residual_scale,
                   attn_norm=_ptr(w.attn_norm), qkv_bias=_ptr(qkv_bias), q_norm=_ptr(w.q_norm),
                   k_norm=_ptr(w.k_norm), o_bias=_ptr(w.attn_output.bias),
                   post_attn_norm=_ptr(w.post_attention_norm))
    for j, m in enumerate(qkv):
        job.qkv[j] = m
    job.o = o
    return BlockStep(job, (w, qkv_bias), _bind_ffn(job, w))


def _bind_ffn(job: GGRBlock, w: BlockWeights) -> bool:
    """Fill the FFN half of `job` when the block's FFN is a bias-free gated pair + down."""
    act = w.plan["activation"]
    if w.plan["ffn"] not in NATIVE_FFN or w.gate_up is None or w.down is None or act not in GATED:
        return False
    gate_up = [_matrix(l.weight) for l in w.gate_up.linears]
    down = _matrix(w.down.weight)
    if (len(gate_up) != 2 or None in gate_up or down is None or gate_up[0].flags != gate_up[1].flags
            or w.gate_up.bias is not None
            or w.down.bias is not None or gate_up[0].n != gate_up[1].n or w.down.in_features != gate_up[0].n):
        return False
    job.gate_up[0], job.gate_up[1], job.down = gate_up[0], gate_up[1], down
    job.n_ff, job.act = gate_up[0].n, native.ACT_CODES[act]
    job.ffn_norm, job.post_ffw_norm = _ptr(w.ffn_norm), _ptr(w.post_ffw_norm)
    return True


class GGRExperts(ctypes.Structure):
    """ggr_experts of csrc/block_step.h: each stack as its expert 0."""

    _fields_ = [("gate", native.GGRMatrix), ("up", native.GGRMatrix), ("down", native.GGRMatrix),
                ("n_expert", ctypes.c_int64), ("act", ctypes.c_int32)]


class ExpertsStep:
    """The routed experts of one token bound once: `step(x, ids, weights)` -> (1, D) =
    sum_j weights[j] * down_e(act(gate_e(x)) * up_e(x)), e = ids[j], summed in the order given
    (as the Python decoder sums them). Raises QuantError for an expert id outside the stacks."""

    def __init__(self, job: GGRExperts, keep: tuple, d: int):
        self.job, self._keep, self.d = job, keep, d
        self._fn, self._ref = native.load().ggr_experts_step, ctypes.byref(job)

    def __call__(self, x: torch.Tensor, ids: list[int], weights: list[float]) -> torch.Tensor:
        k, out = len(ids), torch.empty(1, self.d)
        if x.numel() != self.d or x.dtype != torch.float32 or not x.is_contiguous() or len(weights) != k:
            raise QuantError(f"experts step: x {tuple(x.shape)} {x.dtype} with {k} ids and {len(weights)} "
                             f"weights; it takes one contiguous float32 row of {self.d} and a weight per id")
        if self._fn(self._ref, x.data_ptr(), (ctypes.c_int32 * k)(*ids), (ctypes.c_float * k)(*weights), k,
                    out.data_ptr(), threads()):
            raise QuantError(f"native experts step rejected experts {ids} of {self.job.n_expert}")
        return out


def _stack_matrix(stack: ExpertStack) -> native.GGRMatrix | None:
    """ggr_matrix of expert 0 of `stack` (its first N rows; see _matrix), or None."""
    w = stack.weight
    return _matrix(QTensor(w.data[:stack.expert_nbytes], w.qtype, (stack.out_features, stack.in_features)))


def bind_experts(gate: ExpertStack | None, up: ExpertStack, down: ExpertStack, act: str) -> ExpertsStep | None:
    """The bound experts step of a sparse FFN, or None where it cannot run (no gate stack, a
    non-native kernel, the "block" backend not allowed)."""
    if gate is None or act not in GATED or not _enabled():
        return None
    mats = [_stack_matrix(s) for s in (gate, up, down)]
    if None in mats or mats[0].flags != mats[1].flags or not gate.n_expert == up.n_expert == down.n_expert:
        return None
    job = GGRExperts(*mats, n_expert=gate.n_expert, act=native.ACT_CODES[act])
    return ExpertsStep(job, (gate, up, down), down.out_features)


class GGRRouting(ctypes.Structure):
    """ggr_routing of csrc/block_step.h: k experts per token, gating 1 softmax / 2 sigmoid,
    renormalise, scale, optional selection bias."""

    _fields_ = [("k", ctypes.c_int32), ("gating", ctypes.c_int32), ("norm", ctypes.c_int32),
                ("scale", ctypes.c_float), ("bias", ctypes.c_void_p)]


GATINGS = {"softmax": 1, "sigmoid": 2}           # ggr_routing.gating


def routing_job(k: int, gating: str, norm: bool, scale: float, bias: torch.Tensor | None) -> GGRRouting | None:
    """The ggr_routing of a router, or None where the native routing cannot run it (another
    gating, no library, a bias that is not a contiguous float32 vector); `bias` must outlive it."""
    if gating not in GATINGS or native.load() is None or not backend_enabled("native"):
        return None
    if bias is not None and not (bias.dtype == torch.float32 and bias.is_contiguous() and bias.dim() == 1):
        return None
    return GGRRouting(k, GATINGS[gating], int(norm), scale, _ptr(bias))


def native_route(logits: torch.Tensor, job: GGRRouting) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits (T, E) -> weights (T, K) float32 and ids (T, K) int64, best first, through
    ggr_route (softmax / sigmoid in float32 with expf, ties to the lower id)."""
    x = logits.to(torch.float32).contiguous()
    t, e = x.shape
    ids = torch.empty(t, job.k, dtype=torch.int32)
    weights = torch.empty(t, job.k)
    if native.load().ggr_route(x.data_ptr(), t, e, ctypes.byref(job), ids.data_ptr(), weights.data_ptr()):
        raise QuantError(f"native routing rejected {job.k} of {e} experts")
    return weights, ids.long()


class MoEStep:
    """A sparse FFN's routed part for one token bound once (router, routing, experts): `step(x)`
    -> ((1, D) output, expert ids in the order run). Equal to moe.MoE's router call + native_route
    + ExpertsStep in one native call (same kernels, same order)."""

    def __init__(self, experts: ExpertsStep, router: native.GGRMatrix, routing: GGRRouting, keep: tuple):
        self.experts, self.router, self.routing, self._keep = experts, router, routing, keep
        self._fn = native.load().ggr_moe_step
        self._refs = (ctypes.byref(experts.job), ctypes.byref(router), ctypes.byref(routing))
        self._ids, self._w = (ctypes.c_int32 * routing.k)(), (ctypes.c_float * routing.k)()

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        d = self.experts.d
        if x.numel() != d or x.dtype != torch.float32 or not x.is_contiguous():
            raise QuantError(f"MoE step: x {tuple(x.shape)} {x.dtype}; it takes one contiguous float32 row of {d}")
        out = torch.empty(1, d)
        if self._fn(*self._refs, x.data_ptr(), out.data_ptr(), self._ids, self._w, threads()):
            raise QuantError(f"native MoE step rejected the router's choice of {self.routing.k} experts")
        return out, list(self._ids)


def bind_moe(experts: ExpertsStep | None, router: QTensor, routing: GGRRouting | None) -> MoEStep | None:
    """The one-call routed step, or None where it cannot run (no experts step or routing job, a
    router whose decode kernel is not native)."""
    if experts is None or routing is None:
        return None
    mat = _matrix(router)
    if mat is None or router.shape != (experts.job.n_expert, experts.d):
        return None
    return MoEStep(experts, mat, routing, (router,))
