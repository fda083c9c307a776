"""quant.kernels against the oracle x @ dequantize(W).T (float64), and the dispatch around them.

Every registered kernel (every GGML type x path x backend) runs on random blocks whose f16
scales span the whole finite range (tests.test_formats.random_blocks), for x of 1, 3 and 17
rows and W row counts that no thread count divides. Float32 kernels only differ from the oracle
by summation order and by factoring scales out of block sums, so the error is bounded by
TOL_EPS float32 epsilons times sqrt(K) times sum_j |x_j| |w_ij| (plus rtol on the result).
Native tests skip when the native library cannot be built here (no compiler).
The "q8k" decode kernels round x first (Q8_K for the K-quants and IQ4_XS, Q8_0 for the 32-weight
formats): their oracle is x' @ W.T with x' = reference.q8k_round(x) / q8_0_round(x), the same
tolerance (the integer sums are exact).
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from hypothesis import given, settings
from hypothesis import strategies as st

import quant
from quant import QTensor, QuantError
from quant.kernels import DECODE_MAX_ROWS, cpu, cpuload, available_backends, kernel_for, native, qmatmul, registry, set_num_threads
from quant.kernels.reference import q8_0_round, q8k_round
from quant.qlinear import QLinear, QLinearGroup
from tests.test_formats import random_blocks

TOL_EPS = 4           # float32 epsilons per sqrt(K) of sum |x||w| (worst seen: 0.2)
RTOL = 1e-4
X_ROWS = (1, 3, 17)


def native_or_skip():
    if native.load() is None:
        pytest.skip("native kernels unavailable (no C compiler?)")


def backend_or_skip(backend: str) -> None:
    if backend == "native":
        native_or_skip()
    elif not registry.backend_available(backend):
        pytest.skip(f"{backend} kernels unavailable here (no native library or no AVX2)")


ROUNDINGS = {"Q8_K": q8k_round, "Q8_0": q8_0_round}


def x_seen_by(kernel: registry.Kernel, x: torch.Tensor) -> torch.Tensor:
    """The x a kernel effectively multiplies: rounded through Q8_K / Q8_0 for the q8k integer rows."""
    if kernel.backend == native.Q8K_BACKEND and kernel.path == "decode" and kernel.qtype in native.q8k_types():
        return ROUNDINGS[native.x_rounding(kernel.qtype)](x)
    return x


def reduced(kernel: registry.Kernel) -> bool:
    """Whether the kernel rounds below float32 (the bfloat16 prefill backend)."""
    return registry.declared_backend(kernel.backend).reduced_precision


def prefill_backend() -> str:
    """The backend a quantized prefill takes here by default."""
    order = [b for b in ("bf16", "native") if b in available_backends()]
    return order[0] if order else "reference"


def make_weight(qtype: T, n: int, k: int, seed: int = 0) -> QTensor:
    fmt = quant.get_format(qtype)
    raw = random_blocks(qtype, n * k // fmt.block_size, seed)
    return QTensor(raw.reshape(-1), qtype, (n, k))


def row_length(qtype: T) -> int:
    """3 blocks for 32-weight formats, 2 for super-blocks, 77 (a ragged tail) for float rows."""
    block = quant.get_format(qtype).block_size
    return {1: 77, 32: 96}.get(block, 2 * block)


def assert_close(y: torch.Tensor, x: torch.Tensor, w: QTensor, bf16: bool = False) -> None:
    """y (M, N) vs x (M, K) @ W.T in float64, W from the bit-exact dequantizer; `bf16`: the
    bound of a bfloat16 product (x and W rounded, float32 sums, result rounded), u = 2^-8:
    2u (|x| @ |W|.T) + u |ref|."""
    wd = w.dequantize().double()
    ref = x.double() @ wd.T
    scale = x.double().abs() @ wd.abs().T
    tol = RTOL * ref.abs() + TOL_EPS * torch.finfo(torch.float32).eps * math.sqrt(w.n_cols) * scale
    if bf16:
        u = 2.0 ** -8
        tol = tol + 2 * u * scale + u * ref.abs()
    err = (y.double() - ref).abs()
    bad = ~(err <= tol)
    assert not bad.any(), f"{int(bad.sum())} of {y.numel()} off, worst err/tol {float((err / tol).max()):.3g}"


# every CPU kernel (the GPU-only backend's kernels take device tensors: tests/test_triton.py)
KERNELS = sorted(((q, p, b) for (q, p), backends in registry.registered().items() for b in backends
                  if not registry.declared_backend(b).gpu_only),
                 key=lambda c: (int(c[0]), c[1], c[2]))


@pytest.mark.parametrize("m", X_ROWS)
@pytest.mark.parametrize("qtype, path, backend", KERNELS, ids=[f"{q.name}-{p}-{b}" for q, p, b in KERNELS])
def test_every_kernel_matches_oracle(qtype, path, backend, m):
    backend_or_skip(backend)
    w = make_weight(qtype, 37, row_length(qtype), seed=m)
    x = torch.randn(m, w.n_cols, generator=torch.Generator().manual_seed(m))
    out = torch.full((m, w.shape[0]), float("nan"))
    kernel = registry.select(qtype, path, backend)
    kernel.fn(x, w, out)
    assert_close(out, x_seen_by(kernel, x), w, bf16=reduced(kernel))


@pytest.mark.parametrize("qtype", native.DEQUANT_TYPES, ids=lambda t: t.name)
def test_native_dequantize_is_bit_exact(qtype):
    native_or_skip()
    w = make_weight(qtype, 9, 2 * quant.get_format(qtype).block_size)
    buf = torch.full((9 * w.n_cols + 5,), float("nan"))
    ours = native.dequantize_rows_into(w, 2, 7, buf)
    ref = w.dequantize_rows(2, 7)
    assert torch.equal(ours.view(torch.int32), ref.view(torch.int32))
    assert buf[5 * w.n_cols:].isnan().all(), "wrote past the requested rows"


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_kernels_write_only_their_columns_of_a_strided_out(backend):
    if backend == "native":
        native_or_skip()
    w = make_weight(T.Q4_K, 11, 256)
    for m in (1, 12):
        x = torch.randn(m, 256)
        big = torch.full((m, 20), -7.0)
        kernel_for(w, m, backend).fn(x, w, big[:, 4:15])
        assert_close(big[:, 4:15], x, w)
        assert (big[:, :4] == -7).all() and (big[:, 15:] == -7).all()


@pytest.mark.parametrize("shape", [(96,), (1, 96), (3, 96), (17, 96), (2, 5, 96), (0, 96)])
def test_qmatmul_shapes(shape):
    w = make_weight(T.Q8_0, 37, 96)
    x = torch.randn(shape)
    y = qmatmul(x, w)
    assert y.dtype == torch.float32 and y.shape == (*shape[:-1], 37)
    if y.numel():
        m = y.numel() // 37
        assert_close(y.reshape(-1, 37), x.reshape(-1, 96), w, bf16=reduced(kernel_for(w, m)))


def test_qmatmul_takes_strided_and_half_x():
    w = make_weight(T.Q5_0, 6, 64)
    x = torch.randn(64, 4).T                      # (4, 64), not contiguous
    assert_close(qmatmul(x, w), x, w)
    xh = x.half()
    assert_close(qmatmul(xh, w), xh.float(), w)


def test_f32_is_a_zero_copy_view_and_tolerates_misaligned_bytes():
    wf = torch.randn(13, 40)
    w = QTensor(wf, T.F32, (13, 40))
    assert w.data.data_ptr() == wf.data_ptr()
    x = torch.randn(2, 40)
    assert torch.allclose(qmatmul(x, w), x @ wf.T, rtol=1e-5, atol=1e-5)   # native decode rows
    assert torch.equal(qmatmul(x.repeat(20, 1), w), x.repeat(20, 1) @ wf.T)   # prefill: the view
    padded = torch.zeros(13 * 40 * 4 + 1, dtype=torch.uint8)
    padded[1:] = wf.view(-1).view(torch.uint8)
    misaligned = QTensor(padded[1:], T.F32, (13, 40))
    assert misaligned.data.data_ptr() % 4
    assert torch.allclose(qmatmul(x, misaligned), x @ wf.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x", [torch.randn(3, 95), torch.ones(3, 96, dtype=torch.int64)], ids=["wrong-K", "integer"])
def test_qmatmul_rejects_bad_x(x):
    with pytest.raises(QuantError, match="qmatmul x"):
        qmatmul(x, make_weight(T.Q8_0, 37, 96))


def test_qmatmul_rejects_non_2d_weight():
    w = QTensor(random_blocks(T.Q8_0, 6).reshape(-1), T.Q8_0, (2, 3, 32))
    with pytest.raises(QuantError, match="2-D"):
        qmatmul(torch.randn(32), w)


def test_dispatch_paths():
    w = make_weight(T.Q4_0, 8, 64)
    assert kernel_for(w, 1).path == kernel_for(w, DECODE_MAX_ROWS).path == "decode"
    assert kernel_for(w, DECODE_MAX_ROWS + 1).path == "prefill"
    expected = "native" if "native" in available_backends() else "reference"
    decode = native.Q8K_BACKEND if native.Q8K_BACKEND in available_backends() else expected
    assert kernel_for(w, 1).backend == decode and kernel_for(w, 512).backend == prefill_backend()
    assert kernel_for(w, 512, exact=True).backend == expected


def test_f32_prefill_routes_to_the_reference_view_matmul():
    w = make_weight(T.F32, 5, 64)
    assert kernel_for(w, 100).backend == "reference"
    with pytest.raises(QuantError, match="no native kernel for F32 \\(prefill\\)"):
        kernel_for(w, 100, backend="native")


DECODE_KERNELS = [(q, b) for q, p, b in KERNELS if p == "decode" and b in ("native", native.Q8K_BACKEND)]


@pytest.mark.parametrize("qtype, backend", DECODE_KERNELS, ids=[f"{q.name}-{b}" for q, b in DECODE_KERNELS])
def test_a_decode_row_is_the_same_whatever_the_row_count(qtype, backend):
    """Row r of an M-row decode call is bit for bit that row computed alone, for every M the
    decode path takes: a batch of sequences (Transformer.forward_batch) decodes as each alone."""
    backend_or_skip(backend)
    w = make_weight(qtype, 23, row_length(qtype), seed=3)
    run = kernel_for(w, 1, backend=backend).bind(w)
    x = torch.randn(DECODE_MAX_ROWS, w.shape[1])
    alone = torch.empty(DECODE_MAX_ROWS, 23)
    for r in range(DECODE_MAX_ROWS):
        run(x[r:r + 1], alone[r:r + 1])
    for m in range(2, DECODE_MAX_ROWS + 1):
        out = torch.full((m, 23), float("nan"))
        run(x[:m], out)
        assert torch.equal(out, alone[:m]), f"{m} rows"


def test_a_kernel_is_one_registration_and_unregistered_pairs_fall_through(monkeypatch):
    """A higher-priority backend with one (type, path) kernel takes just that pair."""
    calls = []
    monkeypatch.delenv("GGUF_RUNTIME_KERNELS", raising=False)
    monkeypatch.setitem(registry._BACKENDS, "fake", registry.Backend("fake", 100, lambda: True))
    monkeypatch.setitem(registry._KERNELS[(T.Q8_0, "decode")], "fake",
                        registry.Kernel("fake", T.Q8_0, "decode", lambda x, w, out: calls.append(out.fill_(1.0))))
    registry._SELECTED.clear()
    try:
        w8, w4 = make_weight(T.Q8_0, 5, 64), make_weight(T.Q4_0, 5, 64)
        assert (qmatmul(torch.randn(2, 64), w8) == 1).all() and len(calls) == 1
        fallback = "native" if "native" in available_backends() else "reference"
        assert kernel_for(w8, 100).backend == prefill_backend()
        assert kernel_for(w4, 1).backend == fallback                  # q8k is opt-in
        monkeypatch.setenv("GGUF_RUNTIME_KERNELS", "q8k,native,reference")
        assert kernel_for(w4, 1).backend == (native.Q8K_BACKEND if registry.backend_available(native.Q8K_BACKEND)
                                             else fallback)
        monkeypatch.setenv("GGUF_RUNTIME_KERNELS", "native,reference")
        assert kernel_for(w8, 1).backend == fallback
    finally:
        registry._SELECTED.clear()


def test_env_forces_reference(monkeypatch):
    w = make_weight(T.Q6_K, 5, 256)
    x = torch.randn(1, 256)
    monkeypatch.setenv("GGUF_RUNTIME_KERNELS", "reference")
    assert available_backends() == ("reference",)
    assert kernel_for(w, 1).backend == "reference"
    assert_close(qmatmul(x, w), x, w)
    monkeypatch.setenv("GGUF_RUNTIME_KERNELS", "reference,bogus")
    with pytest.raises(QuantError, match="bogus"):
        qmatmul(x, w)


def test_thread_counts(monkeypatch):
    native_or_skip()
    monkeypatch.setenv(cpuload.ENV, "0")          # exactly the count asked for
    w = make_weight(T.Q4_K, 37, 512)
    x = torch.randn(3, 512)
    torch_threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3, 5):
            set_num_threads(n)
            assert registry.threads() == n
            results.append(qmatmul(x, w))
        for y in results:           # rows are split, never a row's sum: identical results
            assert torch.equal(y, results[0])
        assert_close(results[0], x_seen_by(kernel_for(w, 3), x), w)
        with pytest.raises(QuantError):
            set_num_threads(0)
    finally:
        set_num_threads(None)
        torch.set_num_threads(torch_threads)
    assert registry.threads() == torch.get_num_threads()


def test_threads_leave_the_cores_other_processes_use(monkeypatch):
    """cpuload: others' CPU time (all busy time minus ours) over wall time = cores taken; the
    kernels get the rest (at least 1, at most what was asked). Fed readings, not a real load."""
    clock, busy, own = [100.0], [500.0], [10.0]
    monkeypatch.setattr(cpuload, "_busy_seconds", lambda cpus: busy[0])
    monkeypatch.setattr(cpuload.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(cpuload.time, "process_time", lambda: own[0])
    monkeypatch.setattr(cpuload, "_cpus", lambda: {0, 1})
    monkeypatch.setattr(cpuload, "_STATE", {})
    monkeypatch.setattr(cpuload, "_CACHED", [0.0, None])
    monkeypatch.delenv(cpuload.ENV, raising=False)

    def after(seconds: float, others: float, ours: float) -> int:
        clock[0] += seconds
        busy[0] += (others + ours) * seconds
        own[0] += ours * seconds
        return cpuload.available_threads(2)

    assert cpuload.available_threads(2) == 2                  # one reading: no estimate yet
    assert after(0.5, others=0.0, ours=2.0) == 2              # our own spinning is not a load
    assert after(0.5, others=1.0, ours=1.0) == 1              # a busy core: one thread
    assert after(0.1, others=0.0, ours=1.0) == 1              # within INTERVAL: the last estimate
    assert after(0.5, others=0.1, ours=1.0) == 2              # the core came back
    assert cpuload.available_threads(1) == 1
    monkeypatch.setenv(cpuload.ENV, "0")
    assert after(0.5, others=2.0, ours=0.0) == 2              # turned off: the count asked for


def test_busy_time_counts_only_the_cpus_we_may_run_on(tmp_path):
    stat = tmp_path / "stat"
    hz = os.sysconf("SC_CLK_TCK")
    stat.write_text("cpu  900 0 300 5000 0 0 0 0 0 0\n"
                    "cpu0 100 0 100 2500 7 1 1 1 0 0\n"       # busy 203 ticks (idle and iowait not)
                    "cpu1 800 0 200 2500 0 0 0 0 0 0\n"
                    "intr 12345\n")
    assert cpuload._busy_seconds({0}, str(stat)) == pytest.approx(203 / hz)
    assert cpuload._busy_seconds({0, 1}, str(stat)) == pytest.approx(1203 / hz)
    assert cpuload._busy_seconds({0}, str(tmp_path / "missing")) is None


FALLBACK_SCRIPT = """
import warnings, torch
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from quant.kernels import qmatmul, available_backends
    from quant import QTensor
    from gguf import GGMLQuantizationType as T
    w = QTensor(torch.zeros(4 * 34, dtype=torch.uint8), T.Q8_0, (4, 32))
    y = qmatmul(torch.ones(1, 32), w)
    y = qmatmul(torch.ones(1, 32), w)
print(available_backends(), tuple(y.shape), len([c for c in caught if "native kernels unavailable" in str(c.message)]))
"""


@pytest.mark.parametrize("cc", ["/nonexistent/cc", "false"])
def test_no_or_failing_compiler_falls_back_with_one_warning(cc, tmp_path):
    env = dict(os.environ, CC=cc, GGUF_RUNTIME_CACHE=str(tmp_path))
    env.pop("GGUF_RUNTIME_KERNELS", None)
    proc = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "('reference',) (1, 4) 1"


FALLBACK_BUILD_SCRIPT = """
import warnings, torch
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from quant.kernels import available_backends, qmatmul, set_num_threads
    from quant.kernels.reference import matmul_tiles
    from quant import quantize_tensor
    from gguf import GGMLQuantizationType as T
    set_num_threads(2)
    w = quantize_tensor(torch.randn(40, 512), T.Q4_K)
    x = torch.randn(3, 512)
    y = qmatmul(x, w, backend="native")
    ref = torch.empty(3, 40)
    matmul_tiles(x, w, ref)
print("native" in available_backends(), bool(torch.allclose(y, ref, rtol=1e-4, atol=1e-4)),
      [str(c.message).split(" (")[0] for c in caught if "built without" in str(c.message)])
"""


def test_a_compiler_without_openmp_still_builds_the_kernels(tmp_path):
    """Apple's clang has no -fopenmp: the library is built without it (one thread), with a warning."""
    native_or_skip()
    cc = tmp_path / "cc-no-openmp"
    cc.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && {{ echo "unsupported option -fopenmp" >&2; exit 1; }}; done\n'
                  f'exec {native._compiler()} "$@"\n')
    cc.chmod(0o755)
    env = dict(os.environ, CC=str(cc), GGUF_RUNTIME_CACHE=str(tmp_path / "cache"))
    env.pop("GGUF_RUNTIME_KERNELS", None)
    proc = subprocess.run([sys.executable, "-c", FALLBACK_BUILD_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True True ['gguf-runtime native kernels built without OpenMP: the kernels run on one thread']"


# -march values narrower than this CPU (the flags a CPU needs to run each), and the rows each
# build must take: test_decode_rows_follow_the_build checks them, in every build.
NARROWER_BUILDS = {"x86-64-v3": ("avx2", "fma", "f16c"), "x86-64-v2": ()}
AVX512_ROW_TYPES = {T.Q4_0, T.Q5_0, T.Q5_1, T.Q8_0, T.IQ4_NL, T.IQ4_XS}


def test_decode_rows_follow_the_build():
    """The decode rows are a function of the CPU's features (through -march), never of timing:
    AVX-512 rows for AVX512_ROW_TYPES where the build has AVX-512 F/BW/VL, AVX2 rows for the
    rest where it has AVX2 + FMA + F16C, plain C otherwise."""
    native_or_skip()
    march = os.environ.get(native.ENV_MARCH, "native")
    if march == "native":
        wide, avx2 = cpu.has("avx512f", "avx512bw", "avx512vl"), cpu.has("avx2", "fma", "f16c")
    else:
        wide, avx2 = False, bool(NARROWER_BUILDS.get(march))
    for qtype, kind in native.row_kinds().items():
        expected = "AVX-512" if wide and qtype in AVX512_ROW_TYPES else "AVX2" if avx2 else "C"
        assert kind == expected, (qtype.name, march)


@pytest.mark.parametrize("march", NARROWER_BUILDS)
def test_narrower_builds_pass_the_decode_tests(march):
    """The rows a narrower x86 CPU takes (AVX2 without AVX-512; no AVX2) are tested on this one
    too: a subprocess builds the library with -march=<that> and runs the decode tests on it."""
    native_or_skip()
    if platform.machine() not in ("x86_64", "AMD64") or not cpu.has(*NARROWER_BUILDS[march]):
        pytest.skip(f"this CPU cannot run a {march} build")
    env = dict(os.environ, **{native.ENV_MARCH: march})
    env.pop("GGUF_RUNTIME_KERNELS", None)
    tests = ("every_kernel_matches_oracle or whatever_the_row_count or native_decode_matches_oracle "
             "or q8k_decode_matches or decode_rows_follow_the_build or bound_kernel_equals")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__, "-k", tests],
                          env=env, capture_output=True, text=True, timeout=900,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout.splitlines()[-1]


def test_native_library_is_cached_by_source_and_machine(tmp_path, monkeypatch):
    native_or_skip()
    cc = native._compiler()
    monkeypatch.setenv("GGUF_RUNTIME_CACHE", str(tmp_path))
    path = native.library_path(cc)
    assert path.parent == tmp_path and path.name.startswith("ggr_native-") and path.suffix == ".so"


@settings(max_examples=40, deadline=None)
@given(qtype=st.sampled_from(native.DECODE_TYPES), n=st.integers(1, 40), m=st.integers(1, 20),
       blocks=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_native_decode_matches_oracle_on_random_shapes(qtype, n, m, blocks, seed):
    if native.load() is None:
        return
    block = quant.get_format(qtype).block_size
    k = blocks * (block if block > 1 else 7)
    w = make_weight(qtype, n, k, seed)
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((m, k)).astype(np.float32))
    out = torch.empty(m, n)
    registry.select(qtype, "decode", "native").fn(x, w, out)
    assert_close(out, x, w)


INTEGER_ROW_TYPES = (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.IQ4_NL, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
                     T.IQ4_XS)


@settings(max_examples=60, deadline=None)
@given(qtype=st.sampled_from(INTEGER_ROW_TYPES), n=st.integers(1, 40), m=st.integers(1, 20),
       blocks=st.integers(1, 5), seed=st.integers(0, 2**16), scale=st.sampled_from((1e-3, 1.0, 1e3)))
def test_q8k_decode_matches_rounded_x_oracle_on_random_shapes(qtype, n, m, blocks, seed, scale):
    """Integer rows == reference on x rounded as llama.cpp pairs it with the type (Q8_K for the
    K-quants, Q8_0 for the 32-weight formats); x with exact zeros, all-zero and tied blocks."""
    if qtype not in native.q8k_types():
        return
    block = quant.get_format(qtype).block_size
    k = blocks * 256
    w = make_weight(qtype, n, k, seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32) * np.float32(scale)
    x[rng.random((m, k)) < 0.1] = 0.0
    x[0, :256] = 0.0                                          # an all-zero block: d = 0
    if k > 256:
        x[0, 256:512] = np.sign(x[0, 256:512]) * np.float32(scale)  # every |x| ties
    x = torch.from_numpy(x)
    out = torch.empty(m, n)
    registry.select(qtype, "decode", native.Q8K_BACKEND).fn(x, w, out)
    assert native.x_rounding(qtype) == ("Q8_K" if block == 256 else "Q8_0")
    assert_close(out, ROUNDINGS[native.x_rounding(qtype)](x), w)


def test_q8_0_round_is_llama_cpps_q8_0():
    """d = f16(amax / 127), id = 127 / amax, ties to even: hand-worked on exact floats."""
    x = torch.zeros(2, 32)
    x[0, :4] = torch.tensor([127.0, -63.5, 0.5, 1.5])          # id 1: -63.5 -> -64, 0.5 -> 0, 1.5 -> 2
    x[1, :2] = torch.tensor([254.0, 3.0])                        # id 0.5, d 2: 3 -> 1.5 -> 2 -> 4
    y = q8_0_round(x)
    assert y[0, :4].tolist() == [127.0, -64.0, 0.0, 2.0]
    assert y[1, :2].tolist() == [254.0, 4.0]
    assert (y[:, 4:] == 0).all() and (q8_0_round(torch.zeros(32)) == 0).all()


def test_q8k_round_is_llama_cpps_q8_k():
    """d = max / -127 from the value of largest |x|, ties to even, hand-worked on exact floats."""
    x = torch.zeros(2, 256)
    x[0, :6] = torch.tensor([-127 / 64, 1.0, 0.5 / 64, 1.5 / 64, 2.5 / 64, -0.5 / 64])   # iscale 64
    x[1, :3] = torch.tensor([1.0, -1.0, 0.25])                                       # iscale -127
    y = q8k_round(x)
    assert y[0, :6].tolist() == [-127 / 64, 1.0, 0.0, 2 / 64, 2 / 64, 0.0]
    d1 = torch.tensor(1.0) / torch.tensor(-127.0)
    assert y[1, :3].tolist() == (d1 * torch.tensor([-127.0, 127.0, -32.0])).tolist()
    assert (y[:, 6:] == 0).all() and (q8k_round(torch.zeros(256)) == 0).all()


@pytest.mark.parametrize("m", [1, 17])
@pytest.mark.parametrize("qtype, path, backend", KERNELS, ids=[f"{q.name}-{p}-{b}" for q, p, b in KERNELS])
def test_bound_kernel_equals_the_kernel(qtype, path, backend, m):
    """Kernel.bind(W) (per-weight work done once) computes exactly what Kernel.fn does."""
    backend_or_skip(backend)
    w = make_weight(qtype, 21, row_length(qtype), seed=m)
    x = torch.randn(m, w.n_cols, generator=torch.Generator().manual_seed(m))
    kernel = registry.select(qtype, path, backend)
    want, got, strided = torch.empty(m, 21), torch.empty(m, 21), torch.full((m, 30), -7.0)
    kernel.fn(x, w, want)
    kernel.bind(w)(x, got)
    kernel.bind(w)(x, strided[:, 5:26])
    assert torch.equal(got, want) and torch.equal(strided[:, 5:26], want)
    assert (strided[:, :5] == -7).all() and (strided[:, 26:] == -7).all()


# a Q/K/V-like group with mixed types of one K (as a K-quant mix has: Q4_K, Q6_K, ...)
GROUP_TYPES = [(T.Q4_K, T.Q4_K, T.Q6_K), (T.Q4_1, T.Q8_0, T.Q5_0, T.F16), (T.Q5_K, T.BF16)]


@pytest.mark.parametrize("m", [1, 3, DECODE_MAX_ROWS])
@pytest.mark.parametrize("qtypes", GROUP_TYPES, ids=lambda ts: "-".join(t.name for t in ts))
def test_native_group_is_its_members_side_by_side(qtypes, m):
    """One ggr_gemv_multi call gives bit for bit what each weight's own kernel gives."""
    native_or_skip()
    ws = tuple(make_weight(t, n, 256, seed=n) for t, n in zip(qtypes, (37, 5, 19, 8)))
    x = torch.randn(m, 256)
    run = registry.select_group(ws, m)
    assert run is not None
    out = torch.full((m, sum(w.shape[0] for w in ws)), float("nan"))
    run(x, out, None)
    want = torch.cat([quant.kernels.qmatmul(x, w) for w in ws], dim=1)
    assert torch.equal(out, want)


@pytest.mark.parametrize("act", ["silu", "gelu"])
@pytest.mark.parametrize("m", [1, 5])
def test_native_gated_group_matches_reference_activation(act, m):
    """act(x @ G.T) * (x @ U.T) fused: the same gate/up sums, libm's exp/tanh vs torch's."""
    native_or_skip()
    from quant.kernels.reference import gated_reference
    gate, up = make_weight(T.Q4_K, 45, 512, seed=1), make_weight(T.Q6_K, 45, 512, seed=2)
    x = torch.randn(m, 512) * 0.05                    # keep gate values where act is not flat
    out = torch.full((m, 45), float("nan"))
    registry.select_group((gate, up), m)(x, out, act)
    want = gated_reference(quant.kernels.qmatmul(x, gate), quant.kernels.qmatmul(x, up), act)
    assert torch.allclose(out, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))


def test_group_kernel_only_for_decode_and_one_backend(monkeypatch):
    native_or_skip()
    ws = (make_weight(T.Q4_0, 8, 64), make_weight(T.Q8_0, 8, 64))
    assert registry.select_group(ws, DECODE_MAX_ROWS + 1) is None           # prefill: per weight
    assert registry.select_group((*ws, make_weight(T.F32, 8, 64)), 1) is not None   # F32: native too
    monkeypatch.setenv("GGUF_RUNTIME_KERNELS", "reference")
    assert registry.select_group(ws, 1) is None


def _linears(qtypes, k=256, biased=False):
    return [QLinear(make_weight(t, n, k, seed=n), torch.randn(n) if biased else None)
            for t, n in zip(qtypes, (24, 8, 8))]


@pytest.mark.parametrize("env", [None, "reference"])
@pytest.mark.parametrize("biased", [False, True])
@pytest.mark.parametrize("shape", [(256,), (1, 256), (4, 256), (2, 20, 256), (0, 256)])
def test_qlinear_group_equals_its_linears(shape, biased, env, monkeypatch):
    if env:
        monkeypatch.setenv("GGUF_RUNTIME_KERNELS", env)
    lins = _linears((T.Q4_K, T.Q4_K, T.Q6_K), biased=biased)
    group = QLinearGroup.of(lins)
    x = torch.randn(shape)
    want = torch.cat([l(x) for l in lins], dim=-1)
    got = group(x)
    assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-6, atol=1e-6)
    gate, up = lins[1], lins[2]
    pair = QLinearGroup.of([gate, up])
    from quant.kernels.reference import gated_reference
    g = pair.gated(x * 0.05, "silu")
    want = gated_reference(gate(x * 0.05), up(x * 0.05), "silu")
    assert g.shape == want.shape and torch.allclose(g, want, rtol=1e-5, atol=1e-6)


def test_qlinear_group_refuses_what_it_cannot_group():
    a, b = _linears((T.Q4_K, T.Q4_K))[0], QLinear(make_weight(T.Q4_K, 24, 256))
    assert QLinearGroup.of([a, None]) is None and QLinearGroup.of([a]) is None
    assert QLinearGroup.of([a, QLinear(make_weight(T.Q8_0, 8, 64))]) is None      # K differs
    group = QLinearGroup.of(_linears((T.Q4_K, T.Q4_K, T.Q6_K)))
    with pytest.raises(QuantError, match="two linears"):
        group.gated(torch.randn(256), "silu")
    with pytest.raises(QuantError, match="activation"):
        QLinearGroup.of([a, b]).gated(torch.randn(256), "relu")
    with pytest.raises(QuantError, match="QLinear x"):
        group(torch.randn(2, 255))


def test_native_kernel_clock_advances():
    native_or_skip()
    before = native.kernel_seconds()
    quant.kernels.qmatmul(torch.randn(1, 4096), make_weight(T.Q4_K, 256, 4096))
    assert native.kernel_seconds() > before


def _attention_oracle(q, k, v, scale, cap):
    """float64 softmax(c(scale q K^T)) V with K/V repeated per query head."""
    rep = q.shape[0] // k.shape[0]
    kk, vv = (t.double().repeat_interleave(rep, 0) for t in (k, v))
    s = (q.double()[:, None] @ kk.transpose(1, 2))[:, 0] * scale            # (H, S)
    if cap:
        s = torch.tanh(s / cap) * cap
    return (torch.softmax(s, -1)[:, None] @ vv)[:, 0]                         # (H, Dv)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("heads, kv_heads, dk, dv, s, cap", [
    (9, 3, 64, 64, 600, 0.0), (4, 1, 256, 256, 1, 0.0), (8, 2, 40, 24, 257, 50.0), (6, 6, 80, 80, 3, 0.0)])
def test_native_attention_matches_oracle(heads, kv_heads, dk, dv, s, cap, dtype):
    """One query over a slice of a preallocated cache (no copy), GQA, softcap, f32/f16 rows,
    positions spanning several chunks; the same result for every thread count."""
    native_or_skip()
    from quant.kernels.attention import attend_one
    g = torch.Generator().manual_seed(s)
    q = torch.randn(heads, dk, generator=g)
    k = torch.randn(kv_heads, s + 9, dk, generator=g).to(dtype)[:, 4:4 + s]
    v = torch.randn(kv_heads, s + 9, dv, generator=g).to(dtype)[:, 4:4 + s]
    results = []
    try:
        for n in (1, 2, 3):
            set_num_threads(n)
            results.append(attend_one(q, k, v, 0.3, cap))
    finally:
        set_num_threads(None)
    want = _attention_oracle(q, k, v, 0.3, cap)
    assert torch.allclose(results[0].double(), want, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(r, results[0]) for r in results)


def test_native_attention_declines_what_it_cannot_run(monkeypatch):
    from quant.kernels.attention import attend_one
    q, k = torch.randn(4, 32), torch.randn(2, 5, 32)
    assert attend_one(q.double(), k.double(), k.double(), 1.0) is None
    assert attend_one(q, k.transpose(1, 2).contiguous().transpose(1, 2), k, 1.0) is None   # strided rows
    monkeypatch.setenv("GGUF_RUNTIME_KERNELS", "reference")
    assert attend_one(q, k, k, 1.0) is None


@pytest.mark.parametrize("shape", [(1, 576), (3, 4, 256), (7, 70)])
@pytest.mark.parametrize("weighted", [True, False])
def test_native_rms_norm_matches_torch(shape, weighted):
    native_or_skip()
    from quant.kernels.rowops import rms_norm
    x = torch.randn(shape) * 3
    w = torch.randn(shape[-1]) if weighted else None
    for xs in (x, torch.cat([x, x], dim=-1)[..., :shape[-1]]):                 # contiguous, strided rows
        got = rms_norm(xs, w, 1e-6)
        assert torch.allclose(got, torch.nn.functional.rms_norm(xs, (shape[-1],), w, 1e-6), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("n_rot, dk", [(64, 64), (32, 80)])
def test_native_rope_matches_the_torch_form(neox, n_rot, dk):
    """rowops.rope_one against gguf_runtime.layers.Rope's torch form (the positions' rotation)."""
    native_or_skip()
    from gguf_runtime.config import RopeScaling
    from gguf_runtime.layers import Rope, RopeParams
    from quant.kernels.rowops import rope_one
    rope = Rope(RopeParams(n_rot, 10000.0, "neox" if neox else "norm", RopeScaling()))
    x = torch.randn(2, 5, dk)
    cos, sin = rope.cos_sin(torch.tensor([3, 517]))
    want = rope.apply(x, cos, sin)                                          # two tokens: torch form
    for t in range(2):
        got = rope_one(x[t:t + 1].contiguous(), cos[t:t + 1], sin[t:t + 1], n_rot, neox)
        assert torch.allclose(got, want[t:t + 1], rtol=1e-5, atol=1e-6)


def test_bf16_prefill_runs_only_when_named_and_within_its_bound(monkeypatch):
    """bf16 is opt-in: never the default; named, it is taken on CPUs with bfloat16 hardware
    (cpu.bf16_native) and stays within the module's bound of the float64 product."""
    from quant.kernels import cpu
    native_or_skip()
    w = make_weight(T.Q4_K, 64, 512)
    assert kernel_for(w, 40).backend != "bf16"
    monkeypatch.setenv("GGUF_RUNTIME_KERNELS", "bf16,native,reference")
    if not cpu.bf16_native():
        assert kernel_for(w, 40).backend == "native"
        pytest.skip(f"no bfloat16 hardware here ({cpu.describe()})")
    kernel = kernel_for(w, 40)
    assert kernel.backend == "bf16" and kernel_for(w, 4).backend == "native"   # prefill path only
    x = torch.randn(40, 512, generator=torch.Generator().manual_seed(2))
    out = torch.empty(40, 64)
    kernel.fn(x, w, out)
    assert_close(out, x, w, bf16=True)


def test_exact_linears_and_the_env_keep_prefill_in_float32(monkeypatch):
    """An exact QLinear (the output head) and GGUF_RUNTIME_KERNELS=native,reference never take
    the bfloat16 prefill; where it is taken, it differs from float32 (so the check can fail)."""
    native_or_skip()
    w = make_weight(T.Q4_K, 64, 512)
    x = torch.randn(40, 512, generator=torch.Generator().manual_seed(1))
    exact = torch.empty(40, 64)
    native.dequant_matmul(x, w, exact)
    assert torch.equal(QLinear(w, exact=True)(x), exact)
    assert torch.equal(QLinear(w)(x), exact)                 # bf16 is opt-in: not by default
    monkeypatch.setenv("GGUF_RUNTIME_KERNELS", "bf16,native,reference")
    assert torch.equal(QLinear(w, exact=True)(x), exact)
    if "bf16" in available_backends():
        assert not torch.equal(QLinear(w)(x), exact)
    monkeypatch.setenv("GGUF_RUNTIME_KERNELS", "native,reference")
    assert kernel_for(w, 40).backend == "native" and torch.equal(QLinear(w)(x), exact)
