"""How many cores other processes leave us: the native kernels' thread count follows it.

The kernels' OpenMP threads spin at every barrier, so a team of N threads on N cores where
another process keeps one core busy waits a scheduler slice at each of the hundreds of parallel
regions a decode step has: measured on 2 cores with one busy, SmolLM2 decoded at 29.5 tok/s with
2 threads and 71.9 with 1 (BENCHMARKS.md section 8; llama.cpp's pool collapses alike). So the
kernels run on the cores that are free: from Linux's /proc/stat (the busy time of the CPUs this
process may run on) minus this process's own CPU time (time.process_time: our threads, spinning included), over the wall time
since the last reading, re-read at most every INTERVAL seconds.

Numerics do not depend on this: every native kernel splits whole output rows (or attention
heads) statically over its threads and computes each the same way whatever the count
(tests/test_kernels.py::test_thread_counts), so only the speed follows the load.
GGUF_RUNTIME_ADAPT_THREADS=0 turns it off (the thread count is then exactly the one asked for).
"""

from __future__ import annotations

import os
import threading
import time

INTERVAL = 0.25          # seconds between readings
ENV = "GGUF_RUNTIME_ADAPT_THREADS"
# a core counts as free when others use less than this much of it (1.5 cores busy of 2: 1 free)
SLACK = 0.3

_LOCK = threading.Lock()
_STATE: dict = {}
_CACHED = [0.0, None]    # (valid until, free cores): the common case reads no file, takes no lock


def _cpus() -> set[int]:
    """The CPUs this process may run on (its affinity; all online CPUs where unknown)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _busy_seconds(cpus: set[int], stat: str = "/proc/stat") -> float | None:
    """Seconds of CPU time all processes have used on `cpus` since boot (/proc/stat's cpuN lines:
    user, nice, system, irq, softirq and steal ticks), None where unreadable."""
    try:
        with open(stat, "rb") as f:
            lines = [line.split() for line in f if line.startswith(b"cpu") and line[3:4].isdigit()]
    except OSError:
        return None
    ticks = 0
    for fields in lines:
        if len(fields) >= 9 and int(fields[0][3:]) in cpus:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
            ticks += user + nice + system + irq + softirq + steal
    return ticks / os.sysconf("SC_CLK_TCK") if lines else None


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


def free_cores(n_cpu: int) -> float | None:
    """Cores of n_cpu not used by other processes over the last reading interval; None until
    two readings exist, where /proc/stat is unreadable, or when turned off."""
    if not enabled():
        return None
    now = time.monotonic()
    if now < _CACHED[0]:
        return _CACHED[1]
    with _LOCK:
        last = _STATE.get("last")
        if last is not None and now - last[0] < INTERVAL:
            return _STATE.get("free")
        busy, own = _busy_seconds(_cpus()), time.process_time()
        if busy is None:
            return None
        if last is not None:
            others = max(0.0, (busy - last[1]) - (own - last[2])) / (now - last[0])
            _STATE["free"] = max(0.0, n_cpu - others)
        _STATE["last"] = (now, busy, own)
        _CACHED[:] = [now + INTERVAL, _STATE.get("free")]
        return _STATE.get("free")


def available_threads(wanted: int) -> int:
    """`wanted`, or fewer when other processes keep cores busy (at least 1)."""
    if wanted <= 1:
        return wanted
    free = free_cores(len(_cpus()) or wanted)
    if free is None:
        return wanted
    return max(1, min(wanted, int(free + SLACK)))
