"""The Triton GPU kernels (quant/kernels/triton_kernels.py), run by Triton's interpreter on CPU
tensors (TRITON_INTERPRET=1, in a subprocess: the variable must be set before the kernels are
defined). Skipped where the `triton` package is not installed. On a GPU machine the same script
runs with device="cuda" (no interpreter) when CUDA is available.

Checked per format, on real quantized tensors (our quantizers, random weights): the dequantized
tile equals quant's reference dequantization bit for bit, and decode (1 and 3 x rows, into a
column slice as QLinearGroup writes) and prefill (20 rows) agree with x @ W.T in float64 within
float32 summation noise. And a whole tiny model runs through the backend (under the interpreter
the backend takes CPU tensors) with the reference kernels' logits.
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


MODEL_CHECK = """
import os, sys, torch
import gguf_runtime
from gguf_runtime.generate import decode_one, prefill
from quant.kernels import registry

def run(path, kernels):
    os.environ["GGUF_RUNTIME_KERNELS"] = kernels
    m = gguf_runtime.load(path, n_ctx=40, kv_type="f32")
    ids = list(range(3, 20))
    with torch.inference_mode():
        full = m.logits(ids)                                  # 17 rows: the prefill kernels
        cache = m._new_cache(40)
        prefill(m.transformer, ids[:14], cache)
        steps = torch.stack([decode_one(m.transformer, t, cache) for t in ids[14:]])  # decode
    used = {registry.select(t.qtype, p).backend for t in (m.transformer.blk[0].attn_output.weight,)
            for p in ("decode", "prefill")}
    return full, steps, used

for path in sys.argv[1:]:
    ref_full, ref_steps, _ = run(path, "reference")
    full, steps, used = run(path, "triton,reference")
    err = max(((a - b).abs().max() / b.abs().max()).item() for a, b in ((full, ref_full), (steps, ref_steps)))
    print(os.path.basename(path), sorted(used), "ok" if err < 1e-5 else f"relative error {err:.2e}")
"""


def test_a_whole_model_through_the_triton_backend_under_the_interpreter(tmp_path):
    """A dense Q4_0 model (Q/K/V grouped with biases, written into column slices): prefill and
    decode logits through the Triton kernels equal the reference kernels'. (The interpreter runs
    each program in numpy: a tiny MoE takes minutes, so experts, which are QLinears over byte
    slices of the stacks, are left to the GPU run.)"""
    pytest.importorskip("triton")
    pytest.importorskip("transformers")
    from gguf_runtime.convert import convert
    from tests import tiny_models

    dense = tiny_models.CASES["qwen2"]
    src = dense.save(dense.build(), tmp_path / "dense")
    path = convert(src, tmp_path / "qwen2-Q4_0.gguf", "Q4_0", progress=False)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", MODEL_CHECK, str(path)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "qwen2-Q4_0.gguf ['triton'] ok"


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
