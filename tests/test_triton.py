"""The Triton GPU kernels (quant/kernels/triton_kernels.py), run by Triton's interpreter on CPU
tensors (TRITON_INTERPRET=1, in a subprocess: the variable must be set before the kernels are
defined). Skipped where the `triton` package is not installed. On a GPU machine the same script
runs with device="cuda" (no interpreter) when CUDA is available.

Checked per format, on real quantized tensors (our quantizers, random weights): the dequantized
tile equals quant's reference dequantization bit for bit, and decode (1 and 3 x rows, into a
column slice as QLinearGroup writes) and prefill (20 rows) agree with x @ W.T in float64 within
float32 summation noise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType as T

from quant import quantize_tensor
from quant.kernels import kernel_for

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import sys, torch
from quant import QTensor, quantize_tensor
from quant.kernels import triton_kernels as tk
device = sys.argv[1]
failures = []
for qtype in tk.FORMATS:
    g = torch.Generator().manual_seed(int(qtype))
    w = quantize_tensor(torch.randn(37, 512, generator=g) * 0.05, qtype)
    ref = w.dequantize()
    w = QTensor(w.data.to(device), w.qtype, w.shape)
    if not torch.equal(tk.dequantize(w).cpu(), ref):
        failures.append(f"{qtype.name} dequantize")
    for m, path in ((1, tk.gemv), (3, tk.gemv), (20, tk.dequant_matmul)):
        x = torch.randn(m, 512, generator=g)
        out = torch.zeros(m, 40, device=device)
        path(x.to(device), w, out[:, 2:39])                    # a column slice of a wider output
        want = (x.double() @ ref.double().T).float()
        err = ((out[:, 2:39].cpu() - want).abs().max() / want.abs().max()).item()
        if err > 1e-5 or out[:, :2].abs().max() or out[:, 39:].abs().max():
            failures.append(f"{qtype.name} {path.__name__} m={m}: relative error {err:.2e}")
print("FAILED: " + "; ".join(failures) if failures else f"ok {len(tk.FORMATS)} formats")
"""


def run_check(device: str, interpret: bool) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run([sys.executable, "-c", CHECK, device], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def test_kernels_under_the_interpreter():
    pytest.importorskip("triton")
    assert run_check("cpu", interpret=True) == "ok 7 formats"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_kernels_on_the_gpu():
    pytest.importorskip("triton")
    assert run_check("cuda", interpret=False) == "ok 7 formats"


def test_gpu_backend_never_takes_cpu_tensors():
    """The "triton" backend is GPU-only: CPU weights keep the CPU kernels even where it is
    available; device weights take it when it is available, else the device-agnostic reference."""
    w = quantize_tensor(torch.randn(4, 256), T.Q4_K)
    assert kernel_for(w, 1, on_cpu=True).backend != "triton"
    assert kernel_for(w, 100, on_cpu=True).backend != "triton"
    expected = "triton" if (torch.cuda.is_available() and _has_triton()) else "reference"
    assert kernel_for(w, 1, on_cpu=False).backend == expected


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def test_cpu_runs_do_not_import_triton():
    """Importing triton costs about 80 MB and 0.2 s: only the GPU kernels' first call does."""
    code = "import sys, gguf_runtime, quant.kernels; print('triton' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
