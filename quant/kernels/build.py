"""Building the native library: csrc/ggr.c compiled on first use with the system C compiler.

`cc -O3 -march=native -fopenmp -shared -fPIC -ffp-contract=off -std=gnu11` (about 2-10 s, no
torch headers) into $GGUF_RUNTIME_CACHE or ~/.cache/gguf-runtime/, the file name keyed by a
hash of the source, the compiler, the flags and the CPU, so a shared home directory never loads
a library built for another machine. A compiler that refuses -fopenmp (Apple's clang) or
-march=native gets the flags without them (FALLBACK_DROPS, in order), with one warning.
quant.kernels.native loads and binds what this builds (and re-exports these names).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

SOURCE_DIR = Path(__file__).with_name("csrc")
SOURCE = SOURCE_DIR / "ggr.c"                 # includes the headers beside it
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-ffp-contract=off", "-std=gnu11")
# flag sets tried after CFLAGS fails: (flags dropped, what the warning says is lost)
FALLBACK_DROPS = ((("-fopenmp",), "OpenMP: the kernels run on one thread"),
                  (("-fopenmp", "-march=native"), "OpenMP and -march=native: one thread, no AVX2 rows"))
ENV_CACHE = "GGUF_RUNTIME_CACHE"
# -march for the build instead of "native" (e.g. x86-64-v3: AVX2 without AVX-512; x86-64-v2:
# no AVX2, so no q8k rows): runs the suite as a CPU of that kind would (with torch's
# ATEN_CPU_CAPABILITY=avx2 / default for torch's own kernels).
ENV_MARCH = "GGUF_RUNTIME_MARCH"
# GGUF_RUNTIME_ASAN=1: build with AddressSanitizer (the process must preload libasan, as
# tests/test_fuzz.py's ASan job does): an out-of-bounds access in a kernel aborts with a report.
ENV_ASAN = "GGUF_RUNTIME_ASAN"
ASAN_FLAGS = ("-fsanitize=address", "-fno-omit-frame-pointer", "-g")


def cache_dir() -> Path:
    """$GGUF_RUNTIME_CACHE, else ~/.cache/gguf-runtime, else (unwritable home) a per-user temp dir."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    home = Path.home() / ".cache" / "gguf-runtime"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if os.access(home, os.W_OK):
            return home
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"gguf-runtime-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU model and feature flags (first CPU)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    keep = ("model name", "flags", "Features", "CPU part")
    return "\n".join(dict.fromkeys(l for l in lines if l.split(":")[0].strip() in keep))


def cflags() -> tuple[str, ...]:
    """CFLAGS with $GGUF_RUNTIME_MARCH as the -march value when set (letters, digits, - _ .),
    and AddressSanitizer's flags with GGUF_RUNTIME_ASAN=1."""
    march = os.environ.get(ENV_MARCH, "").strip()
    flags = CFLAGS + (ASAN_FLAGS if os.environ.get(ENV_ASAN) == "1" else ())
    if not march or march == "native":
        return flags
    if not all(c.isalnum() or c in "-_." for c in march):
        raise RuntimeError(f"{ENV_MARCH}={march!r} is not a -march value")
    return tuple(f"-march={march}" if f == "-march=native" else f for f in flags)


def library_path(cc: str) -> Path:
    """Cache file for this source, compiler, flags and machine."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256()
    sources = [f.read_bytes() for f in sorted(SOURCE_DIR.glob("*.[ch]"))]
    for part in (*sources, cc.encode(), version.encode(), " ".join(cflags()).encode(),
                 platform.machine().encode(), platform.system().encode(), _cpu_identity().encode()):
        key.update(part + b"\0")
    return cache_dir() / f"ggr_native-{key.hexdigest()[:16]}.so"


def _build(cc: str, target: Path) -> None:
    """Compile to a temporary file beside `target`, then rename (atomic for concurrent builders):
    with CFLAGS, else with the first FALLBACK_DROPS set the compiler accepts (one warning)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        flags0 = cflags()
        attempts = [(flags0, None)] + [(tuple(f for f in flags0 if f not in drop and not
                                              (f.startswith("-march=") and "-march=native" in drop)), lost)
                                       for drop, lost in FALLBACK_DROPS]
        for flags, lost in attempts:
            proc = subprocess.run([cc, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                break
            if lost is None:
                first_error = proc.stderr.strip()[-800:]
        else:
            raise RuntimeError(f"{cc} failed: {first_error}")
        if lost is not None:
            warnings.warn(f"gguf-runtime native kernels built without {lost} ({cc} refused the full "
                          f"flags: {first_error.splitlines()[-1] if first_error else 'no message'})",
                          RuntimeWarning, stacklevel=4)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
