"""The mutation fuzzer (tests/fuzzing.py), CI-sized: about 2,000 mutated files in well under a
minute must each run or end in one clean GGUFError (no other exception, no crash, no hang).
tools/fuzz.py runs the long version in worker processes with time and memory limits; the
files it found are in tests/fixtures/fuzz_regressions/ and are run here too."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest

from tests import fuzzing

REGRESSIONS = Path(__file__).parent / "fixtures" / "fuzz_regressions"
CASE_SECONDS = 10


@pytest.fixture(autouse=True)
def time_limit():
    """A case that runs past CASE_SECONDS is a finding (a hang), not a stuck suite."""
    def expire(*_):
        raise TimeoutError(f"a fuzz case ran past {CASE_SECONDS} s")
    old = signal.signal(signal.SIGALRM, expire)
    yield lambda: signal.alarm(CASE_SECONDS)
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def run_case(path: Path, arm) -> str | None:
    arm()
    try:
        return fuzzing.check(path)
    finally:
        signal.alarm(0)


@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
def test_byte_mutations_of_the_header(tmp_path, qtype, time_limit):
    seed = fuzzing.write_seed(tmp_path / "seed.gguf", qtype)
    assert fuzzing.check(seed) is None                       # the seed itself runs
    data = seed.read_bytes()
    header = fuzzing.header_length(data)
    rng, findings = random.Random(f"bytes-{qtype}"), []
    case = tmp_path / "case.gguf"
    for i in range(1500):
        case.write_bytes(fuzzing.mutate(data, header, rng))
        problem = run_case(case, time_limit)
        if problem:
            findings.append(f"case {i}: {problem}")
    assert not findings, f"{len(findings)} findings, first: {findings[:3]}"


def test_semantic_mutations_of_keys_and_shapes(tmp_path, time_limit):
    rng, findings = random.Random("semantic"), []
    case = tmp_path / "case.gguf"
    for i in range(400):
        keys, shapes = fuzzing.semantic_case(rng)
        fuzzing.write_seed(case, rng.choice(["F32", "Q8_0"]), keys, shapes)
        problem = run_case(case, time_limit)
        if problem:
            findings.append(f"case {i} {keys} {shapes}: {problem}")
    assert not findings, f"{len(findings)} findings, first: {findings[:3]}"


@pytest.mark.parametrize("path", sorted(REGRESSIONS.glob("*.gguf")), ids=lambda p: p.name)
def test_regression_files(path, time_limit):
    assert run_case(path, time_limit) is None


ASAN_SCRIPT = """
import sys, warnings
warnings.simplefilter("ignore")
from pathlib import Path
from tests import fuzzing, test_hostile
if sys.argv[1] == "bite":                    # the load-time shape check off: ASan must see it
    import gguf_runtime.tensors
    gguf_runtime.tensors._matches = lambda got, want: True
    path = test_hostile.write(Path(sys.argv[2]) / "bite.gguf", test_hostile.META,
                              test_hostile.resized("blk.0.attn_norm.weight", (1,)))
    print(fuzzing.check(path))
    sys.exit(0)
paths = sorted(Path(sys.argv[2]).glob("*.gguf"))
for name, (meta, ts, _) in test_hostile.CASES.items():
    paths.append(test_hostile.write(Path(sys.argv[3]) / f"{len(paths)}.gguf", meta, ts))
bad = [(p.name, fuzzing.check(p)) for p in paths]
bad = [b for b in bad if b[1]]
print(f"{len(paths)} files, findings: {bad}")
sys.exit(1 if bad else 0)
"""


def _asan_run(*args: str):
    import os
    import shutil
    import subprocess
    import sys

    cc = shutil.which(os.environ.get("CC", "cc"))
    lib = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip() \
        if cc else ""
    if not lib or not os.path.isabs(lib) or not os.path.exists(lib):
        pytest.skip("no AddressSanitizer runtime (libasan) for the C compiler here")
    env = dict(os.environ, LD_PRELOAD=lib, GGUF_RUNTIME_ASAN="1",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=0", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-c", ASAN_SCRIPT, *args], capture_output=True, text=True,
                          env=env, cwd=Path(__file__).parents[1], timeout=600)


@pytest.mark.slow
def test_regression_and_hostile_files_run_clean_under_address_sanitizer(tmp_path):
    """The native library built with AddressSanitizer (GGUF_RUNTIME_ASAN=1) runs every
    regression file and every hand-made hostile file without a report; with the load-time
    shape check switched off, the 1-element attn_norm is still stopped: refused by the native
    binder (fail closed) or, past it, reported by AddressSanitizer."""
    r = _asan_run("files", str(REGRESSIONS), str(tmp_path))
    assert "AddressSanitizer" not in r.stderr and r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    bite = _asan_run("bite", str(tmp_path))
    assert "ERROR: AddressSanitizer" in bite.stderr or "rms_norm weight of 1 values" in bite.stdout, \
        (bite.stdout + bite.stderr)[-2000:]
