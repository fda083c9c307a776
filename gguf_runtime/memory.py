"""A memory budget: what a model keeps resident, what the rest of the budget holds, what streams.

`load(path, memory_budget="1.5G")` / `--mem-budget 1.5G` plans the model's memory before it
runs (`inspect --mem-budget` prints the plan). Every token needs the attention weights, norms,
routers, shared experts, dense FFNs and the output head: those are the resident minimum, with
the KV cache of the chosen context and what the process already holds (Python, torch, the
kernels: its resident size when the plan is made). The token embedding is read a row per token
(resident only when tied to the output head). Routed experts (`ffn_*_exps`) are the part that
may stream: what fits in the rest of the budget can stay cached, the remainder is read from disk
as the router asks for it.

What the plan changes today: a budget below the resident minimum is refused with one line
saying how much is needed, and when most experts do not fit, their byte ranges of the memory
map are advised MADV_RANDOM (no readahead: a fault reads the expert's pages, not a window of the
file that evicts the dense weights the next token needs) and the resident ranges MADV_WILLNEED.
An expert cache of its own and read-ahead of the next layer's experts are not built yet.

Sizes: "800M", "1.5G", "2GiB", "1200MB" (binary units: K = 1024), a number of bytes, or "auto":
MemTotal capped by the process's cgroup limit. Without a budget nothing is planned or refused
(a model larger than memory then runs as the kernel pages its memory map).
"""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelInputError
from .gguf_file import GGUFFile

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MiB = 1 << 20


class MemoryBudgetError(ModelInputError):
    """A memory budget that is not a size, or smaller than what the model must keep resident."""


def parse_size(text: str | int) -> int:
    """Bytes of "800M" / "1.5G" / "2GiB" / "123456" (binary units), or of "auto": what the machine
    can give (machine_memory); MemoryBudgetError otherwise."""
    if isinstance(text, str) and text.strip().lower() == "auto":
        value = machine_memory()
        if value is None:
            raise MemoryBudgetError("memory budget 'auto': this machine's memory is unknown; give a size")
        return value
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise MemoryBudgetError(f"memory budget {str(text)!r} is not a size; use e.g. 800M, 1.5G "
                                    f"or a number of bytes")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise MemoryBudgetError(f"memory budget must be positive, got {text!r}")
    return value


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_limit(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> int | None:
    """The tightest memory limit of this process's own cgroup and its ancestors (v2 memory.max,
    v1 memory.limit_in_bytes), None where there is none."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        if controllers == "":                                       # v2: "0::/path"
            base, name = Path(root), "memory.max"
        elif "memory" in controllers.split(","):                    # v1: "N:memory:/path"
            base, name = Path(root) / "memory", "memory.limit_in_bytes"
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            limit = _read_int(base.joinpath(*parts[:depth]) / name)
            if limit is not None and limit < 1 << 60:
                limits.append(limit)
    return min(limits) if limits else None


def meminfo(key: str) -> int | None:
    """Bytes of a /proc/meminfo line ("MemTotal", "MemAvailable"), None where unknown."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_memory() -> int | None:
    """What this machine can give a process: MemTotal, capped by its cgroup's limit."""
    known = [v for v in (meminfo("MemTotal"), cgroup_limit()) if v is not None]
    return min(known) if known else None


def process_rss() -> int:
    """This process's resident bytes now (/proc/self/statm), 0 where unknown."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * mmap.PAGESIZE
    except (OSError, IndexError, ValueError):
        return 0


def tensor_group(name: str, tied: bool) -> str:
    """Which part of the plan a tensor belongs to (GGUF names)."""
    if "_exps." in name:
        return "routed experts"
    if "_shexp" in name:
        return "shared experts"
    if name.startswith("token_embd."):
        return "output head (tied embedding)" if tied else "token embedding (rows on demand)"
    if "ffn_gate_inp" in name or "exp_probs_b" in name:
        return "routers"
    if name.startswith("output."):
        return "output head"
    if "norm" in name:
        return "norms"
    if ".attn_" in name:
        return "attention"
    if ".ffn_" in name:
        return "dense FFNs"
    return "other"


STREAMABLE = ("routed experts", "token embedding (rows on demand)")


@dataclass
class MemoryPlan:
    """Bytes per part; `resident` must fit, routed experts fill what is left, the rest streams."""

    budget: int
    groups: dict[str, int] = field(default_factory=dict)
    kv_cache: int = 0
    runtime: int = 0                     # what the process held when the plan was made

    @property
    def resident(self) -> int:
        return sum(v for k, v in self.groups.items() if k not in STREAMABLE) + self.kv_cache + self.runtime

    @property
    def experts(self) -> int:
        return self.groups.get("routed experts", 0)

    @property
    def expert_cache(self) -> int:
        return max(0, min(self.experts, self.budget - self.resident))

    @property
    def streamed(self) -> int:
        return self.experts - self.expert_cache

    def check(self, what: str) -> None:
        """MemoryBudgetError when the budget cannot hold the resident minimum."""
        if self.budget < self.resident:
            raise MemoryBudgetError(
                f"{what}: a memory budget of {self.budget / MiB:.0f} MiB is below the {self.resident / MiB:.0f} MiB "
                f"this model needs resident ({(self.resident - self.kv_cache - self.runtime) / MiB:.0f} MiB of "
                f"weights every token reads, {self.kv_cache / MiB:.0f} MiB of KV cache, "
                f"{self.runtime / MiB:.0f} MiB already used by the process); give at least "
                f"{-(-self.resident // MiB)}M or a shorter context")

    def lines(self) -> list[str]:
        out = [f"memory budget {self.budget / MiB:.0f} MiB: resident {self.resident / MiB:.0f} MiB "
               f"(weights every token reads + KV cache {self.kv_cache / MiB:.0f} MiB + process "
               f"{self.runtime / MiB:.0f} MiB)"]
        out += [f"  {name:34s} {nbytes / MiB:9.1f} MiB  {'streams' if name in STREAMABLE else 'resident'}"
                for name, nbytes in sorted(self.groups.items(), key=lambda kv: -kv[1])]
        if self.experts:
            out.append(f"  routed experts: {self.expert_cache / MiB:.0f} MiB can stay cached, "
                       f"{self.streamed / MiB:.0f} MiB stream from disk")
        return out


def plan_memory(gf: GGUFFile, kv_bytes: int, budget: int) -> MemoryPlan:
    """The plan of `gf` under `budget` with a KV cache of `kv_bytes`."""
    tied = "output.weight" not in gf.tensors
    plan = MemoryPlan(budget, kv_cache=kv_bytes, runtime=process_rss())
    for name, info in gf.tensors.items():
        group = tensor_group(name, tied)
        plan.groups[group] = plan.groups.get(group, 0) + info.nbytes
    return plan


def advise(gf: GGUFFile, plan: MemoryPlan) -> int:
    """When most routed experts stream (more than the budget can cache): MADV_RANDOM on their
    pages, MADV_WILLNEED on the resident weights'. Where most of them fit, readahead brings in
    experts the next tokens will want and is left on: measured on the 1.7 GB MoE inside 1200
    MiB (825 MiB cached, 686 streamed), no advice ran 41-45 tok/s and MADV_RANDOM 34-39
    (BENCHMARKS.md section 2). Returns the number of ranges advised (0: none)."""
    if plan.streamed <= plan.expert_cache or not hasattr(mmap, "MADV_RANDOM"):
        return 0
    tied = "output.weight" not in gf.tensors
    n = 0
    for name, info in gf.tensors.items():
        group = tensor_group(name, tied)
        advice = mmap.MADV_RANDOM if group in STREAMABLE else mmap.MADV_WILLNEED
        n += gf.advise(name, advice)
    return n
