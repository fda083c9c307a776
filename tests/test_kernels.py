"""quant.kernels against the oracle x @ dequantize(W).T (float64), and the dispatch around them.

Every registered kernel (every GGML type x path x backend) runs on random blocks whose f16
scales span the whole finite range (tests.test_formats.random_blocks), for x of 1, 3 and 17
rows and W row counts that no thread count divides. Float32 kernels only differ from the oracle
by summation order and by factoring scales out of block sums, so the error is bounded by
TOL_EPS float32 epsilons times sqrt(K) times sum_j |x_j| |w_ij| (plus rtol on the result).
Native tests skip when the native library cannot be built here (no compiler).
"""

from __future__ import annotations

import math
import os
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
from quant.kernels import DECODE_MAX_ROWS, available_backends, kernel_for, native, qmatmul, registry, set_num_threads
from tests.test_formats import random_blocks

TOL_EPS = 4           # float32 epsilons per sqrt(K) of sum |x||w| (worst seen: 0.2)
RTOL = 1e-4
X_ROWS = (1, 3, 17)


def native_or_skip():
    if native.load() is None:
        pytest.skip("native kernels unavailable (no C compiler?)")


def make_weight(qtype: T, n: int, k: int, seed: int = 0) -> QTensor:
    fmt = quant.get_format(qtype)
    raw = random_blocks(qtype, n * k // fmt.block_size, seed)
    return QTensor(raw.reshape(-1), qtype, (n, k))


def row_length(qtype: T) -> int:
    """3 blocks for 32-weight formats, 2 for super-blocks, 77 (a ragged tail) for float rows."""
    block = quant.get_format(qtype).block_size
    return {1: 77, 32: 96}.get(block, 2 * block)


def assert_close(y: torch.Tensor, x: torch.Tensor, w: QTensor) -> None:
    """y (M, N) vs x (M, K) @ W.T in float64, W from the bit-exact dequantizer."""
    wd = w.dequantize().double()
    ref = x.double() @ wd.T
    scale = x.double().abs() @ wd.abs().T
    tol = RTOL * ref.abs() + TOL_EPS * torch.finfo(torch.float32).eps * math.sqrt(w.n_cols) * scale
    err = (y.double() - ref).abs()
    bad = ~(err <= tol)
    assert not bad.any(), f"{int(bad.sum())} of {y.numel()} off, worst err/tol {float((err / tol).max()):.3g}"


KERNELS = sorted(((q, p, b) for (q, p), backends in registry.registered().items() for b in backends),
                 key=lambda c: (int(c[0]), c[1], c[2]))


@pytest.mark.parametrize("m", X_ROWS)
@pytest.mark.parametrize("qtype, path, backend", KERNELS, ids=[f"{q.name}-{p}-{b}" for q, p, b in KERNELS])
def test_every_kernel_matches_oracle(qtype, path, backend, m):
    if backend == "native":
        native_or_skip()
    w = make_weight(qtype, 37, row_length(qtype), seed=m)
    x = torch.randn(m, w.n_cols, generator=torch.Generator().manual_seed(m))
    out = torch.full((m, w.shape[0]), float("nan"))
    registry.select(qtype, path, backend).fn(x, w, out)
    assert_close(out, x, w)


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
        assert_close(y.reshape(-1, 37), x.reshape(-1, 96), w)


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
    assert torch.equal(qmatmul(x, w), x @ wf.T)
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
    assert kernel_for(w, 1).backend == kernel_for(w, 512).backend == expected


def test_f32_routes_to_the_reference_view_matmul():
    w = make_weight(T.F32, 5, 64)
    assert kernel_for(w, 1).backend == kernel_for(w, 100).backend == "reference"
    with pytest.raises(QuantError, match="no native kernel for F32"):
        kernel_for(w, 1, backend="native")


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
        assert kernel_for(w8, 100).backend == kernel_for(w4, 1).backend == fallback
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
        assert_close(results[0], x, w)
        with pytest.raises(QuantError):
            set_num_threads(0)
    finally:
        set_num_threads(None)
        torch.set_num_threads(torch_threads)
    assert registry.threads() == torch.get_num_threads()


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
