"""gguf_runtime.memory: budget sizes, the process's cgroup limit, the plan and its refusal.

The plan's arithmetic is checked on a tiny Qwen3-MoE converted here (routed experts stream,
everything else resident) and on SmolLM2 (dense, tied embedding: nothing streams); a budget
below the resident minimum is one line naming how much is needed, from the API and the CLI.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import gguf_runtime
from gguf_runtime.convert import convert
from gguf_runtime.gguf_file import open_gguf
from gguf_runtime import memory
from gguf_runtime.memory import (STREAMABLE, MemoryBudgetError, advise, cgroup_limit, parse_size, plan_memory,
                                 tensor_group)
from tests.realmodels import smollm2_path
from tests.tiny_moe import CASES, IDS


@pytest.mark.parametrize("text, value", [("800M", 800 << 20), ("1.5G", 3 << 29), ("2GiB", 2 << 30),
                                         ("1200MB", 1200 << 20), ("123456", 123456), (" 64k ", 64 << 10),
                                         (4096, 4096)])
def test_sizes(text, value):
    assert parse_size(text) == value


def test_auto_is_the_machines_memory_capped_by_the_cgroup(monkeypatch):
    monkeypatch.setattr(memory, "cgroup_limit", lambda: 3 << 30)
    assert parse_size("auto") == min(3 << 30, memory.meminfo("MemTotal") or 3 << 30)
    monkeypatch.setattr(memory, "cgroup_limit", lambda: None)
    monkeypatch.setattr(memory, "meminfo", lambda key: None)
    with pytest.raises(MemoryBudgetError, match="unknown"):
        parse_size("auto")


@pytest.mark.parametrize("text", ["1.5X", "", "G", "-1G", "0", "1.5 GB extra", True])
def test_bad_sizes_are_one_line_errors(text):
    with pytest.raises(MemoryBudgetError, match=r"memory budget"):
        parse_size(text)


def test_cgroup_limit_is_the_tightest_of_the_process_group_and_its_ancestors(tmp_path):
    root = tmp_path / "cg"
    (root / "memory" / "a" / "b").mkdir(parents=True)
    (root / "memory" / "a" / "memory.limit_in_bytes").write_text("500000000\n")
    (root / "memory" / "a" / "b" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # unlimited
    (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    proc = tmp_path / "cgroup"
    proc.write_text("12:cpu,cpuacct:/x\n7:memory:/a/b\n")
    assert cgroup_limit(str(proc), str(root)) == 500000000                     # v1
    (root / "v2" / "s").mkdir(parents=True)
    (root / "v2" / "s" / "memory.max").write_text("max\n")
    (root / "v2" / "memory.max").write_text("800000000\n")
    proc.write_text("0::/v2/s\n")
    assert cgroup_limit(str(proc), str(root)) == 800000000                     # v2, from an ancestor
    proc.write_text("0::/nowhere\n")
    assert cgroup_limit(str(proc), str(tmp_path / "none")) is None


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe")
    CASES["qwen3moe"].build().save_pretrained(root / "hf")
    return convert(root / "hf", root / "q.gguf", "Q4_K_M", progress=False)


def test_plan_of_a_moe_streams_its_routed_experts_only(tiny_moe):
    gf = open_gguf(tiny_moe)
    plan = plan_memory(gf, kv_bytes=1 << 20, budget=1 << 40)
    assert sum(plan.groups.values()) == sum(t.nbytes for t in gf.tensors.values())
    experts = sum(t.nbytes for n, t in gf.tensors.items() if "_exps." in n)
    assert plan.experts == experts > 0 and plan.streamed == 0 and plan.expert_cache == experts
    weights = sum(v for k, v in plan.groups.items() if k not in STREAMABLE)
    assert plan.resident == weights + (1 << 20) + plan.runtime
    assert {"attention", "routers", "norms", "output head"} <= set(plan.groups)
    tight = plan_memory(gf, kv_bytes=1 << 20, budget=plan.resident + experts // 2)
    assert 0 < tight.streamed < experts and tight.expert_cache + tight.streamed == experts


def test_a_budget_is_planned_at_load_and_changes_no_number(tiny_moe, monkeypatch):
    monkeypatch.setattr(memory, "process_rss", lambda: 100 << 20)     # the process's share, fixed
    free = gguf_runtime.load(tiny_moe, n_ctx=32)
    probe = gguf_runtime.load(tiny_moe, n_ctx=32, memory_budget="64G").memory_plan
    # a quarter of the experts fit: most stream, their pages are advised; with three quarters
    # cached readahead stays on (no advice)
    tight = probe.resident + probe.experts // 4
    model = gguf_runtime.load(tiny_moe, n_ctx=32, memory_budget=tight)
    assert model.memory_plan.streamed > model.memory_plan.expert_cache and advise(model.gguf, model.memory_plan) > 0
    roomy = gguf_runtime.load(tiny_moe, n_ctx=32, memory_budget=probe.resident + probe.experts * 3 // 4).memory_plan
    assert 0 < roomy.streamed < roomy.expert_cache and advise(model.gguf, roomy) == 0
    assert torch.equal(model.logits(IDS), free.logits(IDS))
    assert any("stream from disk" in line for line in model.memory_plan.lines())


@pytest.mark.realmodel
def test_a_budget_below_the_resident_minimum_is_refused_with_what_is_needed():
    with pytest.raises(MemoryBudgetError, match=r"memory budget of 100 MiB is below the \d+ MiB this model "
                                                r"needs resident .* give at least \d+M"):
        gguf_runtime.load(smollm2_path(), n_ctx=512, memory_budget="100M")
    plan = gguf_runtime.load(smollm2_path(), n_ctx=512, memory_budget="4G").memory_plan
    assert plan.experts == 0 and "output head (tied embedding)" in plan.groups   # tied: resident
    assert tensor_group("token_embd.weight", tied=False) in STREAMABLE


@pytest.mark.realmodel
@pytest.mark.parametrize("argv, message", [
    (["run", "--mem-budget", "1.5X", "-p", "hi"], "argument --mem-budget: memory budget '1.5X' is not a size"),
    (["run", "--mem-budget", "100M", "-p", "hi", "-n", "1"], "needs resident"),
])
def test_cli_budget_errors_are_one_line(argv, message):
    proc = subprocess.run([sys.executable, "-m", "gguf_runtime", argv[0], str(smollm2_path()), *argv[1:]],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
