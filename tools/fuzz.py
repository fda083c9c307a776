"""The long fuzz run: mutated GGUF files (tests/fuzzing.py) through open, load + logits and the
tokenizer, in worker processes with a per-case time limit and an address-space limit.

    python tools/fuzz.py [--cases 100000] [--workers 2] [--seconds 10] [--save DIR]

Three cases in four are byte mutations of the seeds' headers, one semantic (odd key values,
odd tensor shapes); the workers make their cases from the case number, so a finding is
reproduced from its number alone. A worker that dies (a signal: a crash in native code, or the memory limit)
or overruns the time limit is a finding, as is any exception other than a one-line GGUFError;
each distinct finding's file is saved into --save (default tests/fixtures/fuzz_regressions,
which tests/test_fuzz.py runs). Address-space limit per worker: twice the largest case file +
1 GiB above what the worker has mapped after importing torch. Prints a summary line per
10,000 cases and the findings at the end; exit 1 if there were any.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import fuzzing  # noqa: E402

DEFAULT_SAVE = ROOT / "tests" / "fixtures" / "fuzz_regressions"


SEMANTIC_EVERY = 4       # every 4th case is a semantic one (each costs a write and a load: ~40 ms)


def make_case(index: int, seeds: dict[str, tuple[bytes, int]], work: Path) -> Path:
    """Case `index` (deterministic): byte mutations, every SEMANTIC_EVERY-th a semantic one."""
    rng = random.Random(index)
    path = work / f"case-{index}.gguf"
    qtype = rng.choice(sorted(seeds))
    if index % SEMANTIC_EVERY:
        data, header = seeds[qtype]
        path.write_bytes(fuzzing.mutate(data, header, rng))
    else:
        keys, shapes = fuzzing.semantic_case(rng)
        fuzzing.write_seed(path, qtype, keys, shapes)
    return path


def _vm_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def worker(jobs: mp.Queue, results: mp.Queue, seconds: int, extra_bytes: int, seeds: dict,
           work: Path) -> None:
    import warnings

    import gguf_runtime  # noqa: F401  (torch imported before the limit is set)
    warnings.simplefilter("ignore")
    limit = _vm_bytes() + extra_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def expire(*_):
        raise TimeoutError(f"ran past {seconds} s")

    signal.signal(signal.SIGALRM, expire)
    while True:
        job = jobs.get()
        if job is None:
            return
        index = job
        try:
            path = make_case(index, seeds, work)
        except Exception:  # noqa: BLE001 - the writer refused the case: not a finding
            results.put((index, None))
            continue
        signal.alarm(seconds)
        try:
            problem = fuzzing.check(path)
        except TimeoutError as e:
            problem = f"hang: {e}"
        except MemoryError:
            problem = "MemoryError: allocation over the address-space limit"
        finally:
            signal.alarm(0)
        path.unlink(missing_ok=True)
        results.put((index, problem))


def run(n_cases: int, n_workers: int, seconds: int, save: Path) -> Counter:
    work = Path(tempfile.mkdtemp(prefix="gguf-fuzz-"))
    seeds = {}
    for qtype in ("F32", "Q8_0"):
        data = fuzzing.write_seed(work / f"seed-{qtype}.gguf", qtype).read_bytes()
        seeds[qtype] = (data, fuzzing.header_length(data))
    extra = 2 * max(len(d) for d, _ in seeds.values()) + (1 << 30)
    ctx = mp.get_context("fork")
    jobs, results = ctx.Queue(maxsize=4 * n_workers), ctx.Queue()
    procs = {}

    def start() -> None:
        p = ctx.Process(target=worker, args=(jobs, results, seconds, extra, seeds, work), daemon=True)
        p.start()
        procs[p.pid] = [p, None]

    for _ in range(n_workers):
        start()
    findings, examples, done, t0 = Counter(), {}, 0, time.time()
    pending: set[int] = set()
    next_case = 0
    while done < n_cases:
        while next_case < n_cases and len(pending) < 4 * n_workers:
            pending.add(next_case)
            jobs.put(next_case)
            next_case += 1
        try:
            index, problem = results.get(timeout=seconds + 5)
        except Exception:  # noqa: BLE001 - a worker died or hangs: find it
            index, problem = _dead_worker(procs, pending, start)
            if index is None:
                continue
        done += 1
        pending.discard(index)
        if problem:
            sig = problem[:90]
            findings[sig] += 1
            if sig not in examples:
                examples[sig] = index
                save.mkdir(parents=True, exist_ok=True)
                target = save / f"fuzz-{index}.gguf"
                target.write_bytes(make_case(index, seeds, work).read_bytes())
        if done % 10_000 == 0:
            print(f"{done} cases, {sum(findings.values())} findings, {time.time() - t0:.0f} s", flush=True)
    for _ in procs:
        jobs.put(None)
    print(f"{n_cases} cases in {time.time() - t0:.0f} s with {n_workers} workers: "
          f"{sum(findings.values())} findings, {len(findings)} distinct")
    for sig, count in findings.most_common():
        print(f"  {count:6d}  {sig}  (e.g. case {examples[sig]})")
    return findings


def _dead_worker(procs: dict, pending: set, start):
    """A worker that died: its case is the oldest pending one it held; restart it."""
    for pid, (p, _) in list(procs.items()):
        if not p.is_alive():
            del procs[pid]
            start()
            if pending:
                index = min(pending)
                return index, f"worker killed by signal {-p.exitcode}" if p.exitcode and p.exitcode < 0 \
                    else f"worker exited with {p.exitcode}"
    return None, None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--save", type=Path, default=DEFAULT_SAVE)
    args = ap.parse_args(argv)
    return 1 if run(args.cases, args.workers, args.seconds, args.save) else 0


if __name__ == "__main__":
    sys.exit(main())
