"""A/B of the native decode rows in one process, alternating, so a VM's drifting speed hits both.

    python tools/bench_rows.py builds [--formats Q4_0 Q4_K ...] [-t 1]   # x86-64-v3 (AVX2) vs native
    python tools/bench_rows.py integer [--formats ...] [-t 1] [--rows 1]  # float vs integer (q8k) rows

"builds" loads the library built for -march=x86-64-v3 (the AVX2 rows) and for this CPU
(-march=native: AVX-512 rows where quant/kernels/csrc/fused_avx512.h has them) side by side and
times ggr_gemv on the same weights; "integer" times one build's float-x rows against its
integer rows (x rounded to Q8_K / Q8_0, flag GGR_Q8K). Each reported time is the median of 80
alternating measurements of 5 calls, over 8 weight copies (2048 x 2048 by default: they sit in
L2/L3, so this measures compute), in microseconds, with GB/s of weight bytes.
This is how BENCHMARKS.md section 8 chose which formats take AVX-512 rows.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from gguf import GGMLQuantizationType as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernels import random_weight  # noqa: E402
from quant.kernels import native  # noqa: E402

FORMATS = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS")
REPS, CALLS, COPIES = 80, 5, 8


def build(march: str) -> ctypes.CDLL:
    """The native library for -march=`march` (built into the cache if needed), bound."""
    os.environ[native.ENV_MARCH] = march
    try:
        cc = native._compiler()
        path = native.library_path(cc)
        if not path.exists():
            native._build(cc, path)
        lib = native._bind(ctypes.CDLL(str(path)))
        native._set_grids(lib)
        return lib
    finally:
        del os.environ[native.ENV_MARCH]


def alternate(runs: dict, reps: int = REPS) -> dict[str, list[float]]:
    """runs: label -> fn(copy index); microseconds per call of each, alternating."""
    times: dict[str, list[float]] = {label: [] for label in runs}
    for rep in range(reps):
        for label, fn in runs.items():
            t0 = time.perf_counter()
            for _ in range(CALLS):
                fn(rep % COPIES)
            times[label].append((time.perf_counter() - t0) / CALLS * 1e6)
    return times


def report(qtype: T, nbytes: int, times: dict[str, list[float]], extra: str) -> None:
    cells = [f"{label}: {statistics.median(t):7.1f} us ({nbytes / statistics.median(t) / 1e3:5.1f} GB/s)"
             for label, t in times.items()]
    print(f"{qtype.name:7} {extra}  " + "  ".join(cells), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("builds", "integer"))
    ap.add_argument("--formats", nargs="+", default=list(FORMATS))
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=1, help="x rows per call")
    ap.add_argument("--shape", default="2048x2048")
    args = ap.parse_args()
    n, k = (int(v) for v in args.shape.split("x"))
    x = torch.randn(args.rows, k)
    y = torch.empty(args.rows, n)
    libs = {"AVX2 build": build("x86-64-v3"), "native build": build("native")} if args.mode == "builds" else \
        {"native": build("native")}
    for name in args.formats:
        qtype = T[name]
        ws = [random_weight(qtype, n, k, seed=s) for s in range(COPIES)]
        if args.mode == "builds":
            runs = {label: (lambda i, lib=lib: lib.ggr_gemv(int(qtype), ws[i].data.data_ptr(), ws[i].row_nbytes, n,
                                                             x.data_ptr(), args.rows, k, y.data_ptr(), args.threads))
                    for label, lib in libs.items()}
        else:
            lib = libs["native"]
            if not lib.ggr_has_q8k(int(qtype)):
                print(f"{name:7} no integer rows in this build")
                continue
            mats = {flag: [native.GGRMatrix(int(qtype), flag, w.data.data_ptr(), w.row_nbytes, n) for w in ws]
                    for flag in (0, native.FLAG_Q8K)}
            runs = {label: (lambda i, ms=mats[flag]: lib.ggr_gemv_multi(ctypes.byref(ms[i]), 1, x.data_ptr(), args.rows,
                                                                         k, y.data_ptr(), 0, args.threads))
                    for label, flag in (("float rows", 0), ("integer rows", native.FLAG_Q8K))}
        report(qtype, ws[0].data.numel(), alternate(runs), f"{args.threads}t {args.rows}x")


if __name__ == "__main__":
    main()
