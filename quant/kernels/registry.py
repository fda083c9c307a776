"""The kernel dispatch table: (GGML type, path) -> kernels, best available one chosen per call.

A kernel computes `out = x @ W.T` for x float32 (M, K) contiguous, W a 2-D QTensor (N, K) and
out a float32 (M, N) tensor it must fill (possibly a strided view: write into it, never rebind).
`path` is "decode" (M <= DECODE_MAX_ROWS: fused dequantize-and-dot wins) or "prefill" (many
rows: dequantize a tile once, let BLAS amortise it over the rows).

A backend ("native", "reference", ...) is a name, a priority and an availability check run
once on first use; a kernel is one `@register(backend, qtypes, paths)` line. A kernel may come
with `prepare(W) -> run(x, out)`, which does the per-weight work once (pointers, sizes) so that
a layer calling it every token pays only for the call (`Kernel.bind`). A backend may also offer
a group kernel (`register_group`): several W against one x in one call, optionally with a gated
activation fused in (see `GroupFn`). The environment
variable GGUF_RUNTIME_KERNELS, a comma-separated list of backend names, restricts which
backends may run (GGUF_RUNTIME_KERNELS=reference forces the pure-torch reference path); an
opt-in backend (bf16) runs only where the variable names it.

Precision is a function of the weight's type, the role of the rows and the settings, never of
how many rows a call has or of what ran before. By default no backend rounds activations: the
two that do (q8k: x rounded to Q8_K for generated tokens, as llama.cpp; bf16: bfloat16 prompt
matmuls) are opt-in, because on llama.cpp-quantized tiny models of every family neither was
always at most llama.cpp's own error (BENCHMARKS.md section 5). Prompt rows (`with
prompt_rows():`, which generate.prefill uses) never take q8k even when it is named: a prompt is
computed in float32 however it is chunked or reused. Both roles' choices are cached apart (the
role is part of env_spec()).
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from gguf import GGMLQuantizationType as T

from ..errors import QuantError
from ..qtensor import QTensor
from .cpuload import available_threads

KernelFn = Callable[[torch.Tensor, QTensor, torch.Tensor], None]
BoundFn = Callable[[torch.Tensor, torch.Tensor], None]            # run(x, out) for one bound W
PrepareFn = Callable[[QTensor], BoundFn]
# run(x, out, act) for W_0..W_n-1 bound together. act None: out (M, sum N) = the x @ W_j.T side
# by side; act "silu" / "gelu" (two W, gate and up, of equal N): out (M, N) = act(x@G.T) * (x@U.T)
GroupFn = Callable[[torch.Tensor, torch.Tensor, "str | None"], None]
PrepareGroupFn = Callable[[tuple[QTensor, ...]], GroupFn]
PATHS = ("decode", "prefill")
ENV_BACKENDS = "GGUF_RUNTIME_KERNELS"

# Largest x row count that takes the decode path. Measured with `tools/bench_kernels.py
# --crossover` (2048x2048, 2-core Zen 4): the fused native kernels are faster than native
# dequantize + MKL up to 16 rows for every format with 1 thread (up to 24-32 with 2 threads).
DECODE_MAX_ROWS = 16


@dataclass(frozen=True)
class Backend:
    name: str
    priority: int                       # higher is preferred
    available: Callable[[], bool]       # called at most once (cached); must not raise
    cpu_only: bool = True
    gpu_only: bool = False              # its kernels take device (not CPU) tensors only
    reduced_precision: bool = False     # rounds below float32 (bfloat16): skipped for exact=True
    rounds_activations: bool = False    # rounds x (Q8_K, bfloat16)
    opt_in: bool = False                # runs only when GGUF_RUNTIME_KERNELS names it
    prompt_rows_ok: bool = True         # may compute a prompt's rows even if it rounds x (bf16)


@dataclass(frozen=True)
class Kernel:
    backend: str
    qtype: T
    path: str
    fn: KernelFn
    prepare: PrepareFn | None = None

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.qtype.name}:{self.path}"

    def bind(self, w: QTensor) -> BoundFn:
        """run(x, out) computing out = x @ W.T for this W, per-weight work done once here."""
        if self.prepare is not None:
            return self.prepare(w)
        fn = self.fn
        return lambda x, out: fn(x, w, out)


_BACKENDS: dict[str, Backend] = {}
_KERNELS: dict[tuple[T, str], dict[str, Kernel]] = {}
_AVAILABLE: dict[str, bool] = {}
_SELECTED: dict[tuple, Kernel] = {}     # select() cache; cleared by every registration
_LOCK = threading.Lock()
_THREADS: list[int | None] = [None]     # None: follow torch.get_num_threads()
_GROUPS: dict[str, PrepareGroupFn] = {}  # backend -> its group kernel (decode path only)
_ENABLED: dict[tuple[str, str], bool] = {}   # backend_enabled() cache


def register_backend(name: str, priority: int, available: Callable[[], bool], cpu_only: bool = True,
                     gpu_only: bool = False, reduced_precision: bool = False,
                     rounds_activations: bool = False, opt_in: bool = False,
                     prompt_rows_ok: bool = True) -> None:
    """Declare a backend; `available()` decides, once and lazily, whether its kernels may run
    (from the CPU's features and the native library, never from a timing)."""
    _BACKENDS[name] = Backend(name, priority, available, cpu_only, gpu_only, reduced_precision,
                              rounds_activations, opt_in, prompt_rows_ok)
    _SELECTED.clear()


def register(backend: str, qtypes: Iterable[T], paths: Iterable[str] = PATHS,
             prepare: PrepareFn | None = None) -> Callable[[KernelFn], KernelFn]:
    """Decorator: register `fn` as `backend`'s kernel for every (qtype, path) given
    (`prepare`, if given, is its per-weight binder, see Kernel.bind)."""

    def add(fn: KernelFn) -> KernelFn:
        declared_backend(backend)
        for qtype in qtypes:
            for path in paths:
                if path not in PATHS:
                    raise QuantError(f"kernel path must be one of {PATHS}, got {path!r}")
                _KERNELS.setdefault((T(qtype), path), {})[backend] = Kernel(backend, T(qtype), path, fn, prepare)
        _SELECTED.clear()
        return fn

    return add


def register_group(backend: str) -> Callable[[PrepareGroupFn], PrepareGroupFn]:
    """Decorator: `prepare(weights) -> GroupFn` is `backend`'s group kernel for the decode path,
    used for weights whose decode kernels all come from `backend`."""

    def add(prepare: PrepareGroupFn) -> PrepareGroupFn:
        declared_backend(backend)
        _GROUPS[backend] = prepare
        return prepare

    return add


def select_group(weights: tuple[QTensor, ...], n_x_rows: int, on_cpu: bool = True) -> GroupFn | None:
    """A group kernel bound to `weights` for `n_x_rows` x rows, or None when there is none: on
    the prefill path, or when the weights' decode kernels do not all come from one backend that
    has a group kernel (then the caller runs each weight's own kernel)."""
    if path_for(n_x_rows) != "decode":
        return None
    backends = {select(w.qtype, "decode", None, on_cpu).backend for w in weights}
    if len(backends) != 1:
        return None
    prepare = _GROUPS.get(backends.pop())
    return prepare(weights) if prepare is not None else None


def backend_enabled(name: str) -> bool:
    """Whether backend `name` is both available and allowed by GGUF_RUNTIME_KERNELS now (for
    kernels outside the (type, path) table: attention, row ops). Cached per variable value."""
    key = (name, env_spec())
    if key not in _ENABLED:
        _ENABLED[key] = name in allowed_backends() and backend_available(name)
    return _ENABLED[key]


_ROLE = threading.local()               # .prompt: rows of a prompt are being computed


@contextlib.contextmanager
def prompt_rows():
    """Within: the rows computed are a prompt's (prefill), which never take a backend that
    rounds activations unless it is opt-in and named (see the module docstring)."""
    before = getattr(_ROLE, "prompt", False)
    _ROLE.prompt = True
    try:
        yield
    finally:
        _ROLE.prompt = before


def in_prompt_rows() -> bool:
    return getattr(_ROLE, "prompt", False)


def env_spec() -> str:
    """The current GGUF_RUNTIME_KERNELS value and row role (part of every cached kernel choice's
    key, so a prompt's kernels and a generated token's are bound apart)."""
    return os.environ.get(ENV_BACKENDS, "") + ("\0prompt" if in_prompt_rows() else "")


def backend_available(name: str) -> bool:
    """Whether backend `name` can run here (its check runs once, under a lock)."""
    if name not in _AVAILABLE:
        with _LOCK:
            if name not in _AVAILABLE:
                _AVAILABLE[name] = bool(_BACKENDS[name].available())
    return _AVAILABLE[name]


def allowed_backends() -> tuple[str, ...]:
    """Backends that may run now, best first: those GGUF_RUNTIME_KERNELS names (when unset, every
    declared one that is not opt-in), less, for prompt rows, those that round activations and
    may not compute a prompt's rows (q8k; see prompt_rows).

    Raises QuantError naming the declared backends when the variable names an unknown one.
    """
    spec = os.environ.get(ENV_BACKENDS, "").strip()
    names = [s.strip() for s in spec.split(",") if s.strip()] if spec else \
        [n for n, b in _BACKENDS.items() if not b.opt_in]
    unknown = [n for n in names if n not in _BACKENDS]
    if unknown:
        raise QuantError(f"{ENV_BACKENDS}={spec!r} names unknown backend(s) {', '.join(unknown)}; "
                         f"known: {', '.join(_BACKENDS)}")
    if in_prompt_rows():
        names = [n for n in names if not _BACKENDS[n].rounds_activations or _BACKENDS[n].prompt_rows_ok]
    return tuple(sorted(names, key=lambda n: -_BACKENDS[n].priority))


def path_for(n_x_rows: int) -> str:
    return "decode" if n_x_rows <= DECODE_MAX_ROWS else "prefill"


def select(qtype: T, path: str, backend: str | None = None, on_cpu: bool = True,
           exact: bool = False) -> Kernel:
    """The kernel to run for (qtype, path): the best allowed, available backend that has one.

    `backend` names one backend explicitly (it must be available and have the kernel); `exact`
    skips reduced-precision backends (float32 results wanted, e.g. logits).
    Raises QuantError naming the type, the path and the registered backends when none fits.
    Choices are cached per (arguments, GGUF_RUNTIME_KERNELS value): a dict lookup per call.
    """
    key = (qtype, path, backend, on_cpu, exact, env_spec())
    kernel = _SELECTED.get(key)
    if kernel is None:
        kernel = _SELECTED[key] = _choose(T(qtype), path, backend, on_cpu, exact)
    return kernel


def _runs_on(b: Backend, on_cpu: bool) -> bool:
    """Whether backend b's kernels take CPU tensors (on_cpu) or device tensors (not on_cpu)."""
    return not b.gpu_only if on_cpu else not b.cpu_only


def _choose(qtype: T, path: str, backend: str | None, on_cpu: bool, exact: bool) -> Kernel:
    table = _KERNELS.get((qtype, path), {})
    names = (backend,) if backend else allowed_backends()
    for name in names:
        b = _BACKENDS[name]
        if name in table and _runs_on(b, on_cpu) and not (exact and b.reduced_precision) \
                and backend_available(name):
            return table[name]
    raise QuantError(f"no {'/'.join(names)} kernel for {qtype.name} ({path}); "
                     f"registered: {', '.join(table) or 'none'}")


def registered() -> dict[tuple[T, str], tuple[str, ...]]:
    """(qtype, path) -> the backends registered for it."""
    return {key: tuple(kernels) for key, kernels in _KERNELS.items()}


def declared_backend(name: str) -> Backend:
    """The declaration of backend `name` (QuantError naming the declared ones if unknown)."""
    if name not in _BACKENDS:
        raise QuantError(f"kernel backend {name!r} is not declared; declared: {', '.join(_BACKENDS)}")
    return _BACKENDS[name]


def declared_backends() -> tuple[str, ...]:
    return tuple(sorted(_BACKENDS, key=lambda n: -_BACKENDS[n].priority))


def set_threads(n: int | None) -> None:
    if n is not None and n < 1:
        raise QuantError(f"thread count must be >= 1 or None, got {n}")
    _THREADS[0] = n


@contextlib.contextmanager
def torch_on_one_thread():
    """Within: torch's own ops on one thread, the native kernels on the threads they had.

    For a decode step's torch work (a 262k-way argmax, sampling, the residual adds): it is too
    small to gain from a second thread, and torch's OpenMP threads spin at each op's barrier,
    so with another process on one of 2 cores Gemma 3 decoded at 25 tok/s with them and 42 on
    one (BENCHMARKS.md section 8). Always one thread there (not load-dependent), so a decode
    step's numbers never depend on the machine's load. Not for prompts: their matmuls need the
    threads, and BLAS may block differently for another count."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    kept = _THREADS[0]
    _THREADS[0] = kept or n
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
        _THREADS[0] = kept


def threads() -> int:
    """Threads the native kernels use: the set_num_threads value, else torch's current setting,
    less the cores other processes keep busy (cpuload.available_threads; the results do not
    depend on the count)."""
    return available_threads(_THREADS[0] or torch.get_num_threads())
