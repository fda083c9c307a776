"""The CLI: inspect on both real models, run, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gguf_runtime.cli import main
from tests.realmodels import gemma3_path, smollm2_path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gguf_runtime.cli", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.realmodel
@pytest.mark.parametrize("find, arch, types", [
    (gemma3_path, "gemma3", {"Q8_0", "Q5_0", "Q4_K", "Q6_K", "F32"}),
    (smollm2_path, "llama", {"Q4_1", "Q8_0", "F32"}),
])
def test_inspect_json(find, arch, types, capsys):
    assert main(["inspect", str(find()), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == arch
    assert set(info["tensor_types"]) == types
    assert info["runnable"] is True
    assert info["config"]["block_count"] > 0 and info["tokenizer"]["vocab_size"] > 0
    assert info["tensor_bytes"] <= info["file_bytes"]


@pytest.mark.realmodel
def test_inspect_text_mentions_essentials(capsys):
    assert main(["inspect", str(smollm2_path())]) == 0
    out = capsys.readouterr().out
    for word in ("architecture:  llama", "chat template: yes", "Q4_1", "runnable:      yes"):
        assert word in out


@pytest.mark.realmodel
def test_run_prints_continuation():
    r = run_cli("run", str(smollm2_path()), "-p", "The capital of France is", "-n", "4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The capital of France is") and len(r.stdout) > 26


@pytest.mark.realmodel
def test_run_with_a_half_kv_cache_and_a_bad_cache_type():
    r = run_cli("run", str(smollm2_path()), "-p", "The capital of France is", "-n", "4", "--kv-type", "f16")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The capital of France is") and len(r.stdout) > 26
    r = run_cli("run", str(smollm2_path()), "--kv-type", "q4_0")
    assert r.returncode == 2 and "invalid choice: 'q4_0' (choose from 'f32', 'f16')" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_flag_is_one_line_usage_error():
    r = run_cli("run", "--no-such-flag")
    assert r.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_file_is_one_line_error(tmp_path):
    r = run_cli("inspect", str(tmp_path / "missing.gguf"))
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "cannot open" in r.stderr


def test_not_a_gguf_is_one_line_error(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"PK\x03\x04" + bytes(100))
    r = run_cli("run", str(p), "-n", "1")
    assert r.returncode == 1 and "not a GGUF file" in r.stderr
    assert r.stderr.strip().count("\n") == 0


@pytest.mark.realmodel
def test_prompt_too_long_is_one_line_error():
    r = run_cli("run", str(smollm2_path()), "-c", "16", "-p", "word " * 40, "-n", "2")
    assert r.returncode == 1 and "longer than the context" in r.stderr
    assert "Traceback" not in r.stderr
