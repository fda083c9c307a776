"""gguf-runtime bench where llama.cpp's AMX weight repacking crashes (llama-cpp-python 0.3.36
segfaults in the first decode on AMX CPUs): that side is rerun, or run from the start, with
use_extra_bufts=False, and the table says so. No timing is asserted."""

from __future__ import annotations

import sys
import types

from gguf_runtime import bench
from quant.kernels import cpu


def result(engine: str, note: str = "") -> bench.BenchResult:
    return bench.BenchResult(engine, 0.1, 100.0, 50.0, 300.0, note=note)


def test_amx_cpus_are_known_to_crash(monkeypatch):
    for flags, want in (({"avx2", "avx512f"}, False), ({"amx_tile", "amx_bf16"}, True), ({"amx_int8"}, True)):
        monkeypatch.setattr(cpu, "model_and_flags", lambda f=flags: ("test CPU", frozenset(f)))
        assert bench.llama_repacking_crashes() is want


def test_switching_repacking_off_patches_the_default_params(monkeypatch):
    fake = types.SimpleNamespace(llama_model_default_params=lambda: types.SimpleNamespace(use_extra_bufts=True))
    monkeypatch.setitem(sys.modules, "llama_cpp", fake)
    bench.switch_off_llama_repacking()
    bench.switch_off_llama_repacking()                    # twice: still one wrapper deep
    assert fake.llama_model_default_params().use_extra_bufts is False


def test_a_crashed_llama_cpp_is_rerun_without_repacking(monkeypatch, capsys):
    monkeypatch.setattr(bench, "llama_cpp_available", lambda: True)
    monkeypatch.setattr(bench, "llama_repacking_crashes", lambda: False)
    calls = []

    def worker(engine, path, threads, n_prompt, n_decode, no_repack=False):
        calls.append((engine, no_repack))
        if engine == "llama.cpp" and not no_repack:
            return None, ("killed by signal 11", -11)
        return result(engine, bench.NO_REPACK_NOTE if no_repack and engine == "llama.cpp" else ""), None

    monkeypatch.setattr(bench, "_run_worker", worker)
    results = bench.run_bench("model.gguf", repeats=1)
    assert calls == [("gguf-runtime", False), ("llama.cpp", False), ("llama.cpp", True)]
    assert "rerun with its weight repacking off" in capsys.readouterr().err
    table = bench.format_table("model.gguf", 2, results)
    assert f"llama.cpp: {bench.NO_REPACK_NOTE}" in table and "ratio" in table


def test_on_amx_llama_cpp_runs_without_repacking_from_the_start(monkeypatch):
    monkeypatch.setattr(bench, "llama_cpp_available", lambda: True)
    monkeypatch.setattr(bench, "llama_repacking_crashes", lambda: True)
    seen = []
    monkeypatch.setattr(bench, "_run_worker", lambda engine, *a, **k: (seen.append(a[-1]) or result(engine), None))
    bench.run_bench("model.gguf")
    assert seen == [True, True]


def test_an_engine_runs_in_its_own_process():
    """What run_bench starts per engine: `python -m gguf_runtime.bench --worker ...` prints one
    JSON line of results (a missing __main__ once made every engine 'failed')."""
    import json
    import subprocess

    from tests.realmodels import smollm2_path

    path = smollm2_path()
    r = subprocess.run([sys.executable, "-m", "gguf_runtime.bench", "--worker", "gguf-runtime", str(path),
                        "1", "8", "4"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["engine"] == "gguf-runtime" and res["decode_tok_s"] > 0
