"""Benchmark quant.kernels: decode (1 x row) and prefill (512 rows), q8k vs native vs reference.

    python tools/bench_kernels.py                    # the table (about 2-4 minutes on 2 cores)
    python tools/bench_kernels.py --quick            # 2048x2048 only, fewer repeats
    python tools/bench_kernels.py --crossover        # decode vs prefill kernels by x row count
    python tools/bench_kernels.py --llama            # add llama.cpp's own CPU matmul (ggml via ctypes)

Decode GB/s = W's bytes / time: the weights are read once per call, so that is the memory
bandwidth the kernel sustains. "hot" repeats one matrix (2048x2048 fits in L2/L3, so it measures
compute); "cold" cycles through copies totalling > COLD_BYTES, so every call streams from DRAM
like a real model's layers do. Times are medians of `--reps` calls after a warm-up.
Weights are random blocks with small finite scales (speed does not depend on the values).
"q8k" (decode only) is "native" with x rounded to Q8_K and integer dots for Q4_K / Q6_K.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quant  # noqa: E402
from quant import QTensor  # noqa: E402
from quant.kernels import available_backends, registry, set_num_threads  # noqa: E402

FORMATS = (T.Q4_0, T.Q4_1, T.Q5_0, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K)
SHAPES = {"2048x2048": (2048, 2048)}
BIG = ("262144x640", (262144, 640), T.Q8_0)      # a 256k-vocabulary embedding / output matrix
COLD_BYTES = 96 << 20                             # > the L3 of the machines we bench on
PREFILL_ROWS = 512


def random_weight(qtype: T, n: int, k: int, seed: int = 0) -> QTensor:
    fmt = quant.get_format(qtype)
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (n * k // fmt.block_size, fmt.type_size), dtype=np.uint8)
    offset = 0
    for name, size in fmt.fields:
        if name in ("d", "dmin", "m"):
            blocks[:, offset:offset + size] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
        offset += size
    return QTensor(blocks.reshape(-1), qtype, (n, k))


def time_calls(fn, reps: int) -> float:
    """Median seconds of `reps` calls of fn(i) after one warm-up call."""
    fn(0)
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_kernel(kernel, weights: list[QTensor], m: int, reps: int) -> float:
    """Median seconds per call of `kernel` bound to each weight in turn (as a model layer calls it)."""
    w0 = weights[0]
    x = torch.randn(m, w0.n_cols)
    out = torch.empty(m, w0.shape[0])
    runs = [kernel.bind(w) for w in weights]
    return time_calls(lambda i: runs[i % len(runs)](x, out), reps)


def decode_row(label: str, qtype: T, shape, backends, threads, reps: int, cold: bool) -> list[str]:
    w = random_weight(qtype, *shape)
    n_copies = -(-COLD_BYTES // w.nbytes) if cold else 1
    copies = [w] + [random_weight(qtype, *shape, seed=s) for s in range(1, n_copies)]
    cells = [f"{qtype.name:6} {label:11} {w.nbytes / 2**20:7.1f}"]
    for backend in backends:
        kernel = registry.select(qtype, "decode", backend)
        for t in threads:
            set_num_threads(t)
            big = w.nbytes > COLD_BYTES
            n_reps = max(3, reps // 10) if backend == "reference" or big else reps
            hot = run_kernel(kernel, [w], 1, n_reps)
            cells.append(f"{hot * 1e3:8.3f} {w.nbytes / hot / 1e9:5.1f}")
            if cold and backend != "reference":
                dt = run_kernel(kernel, copies, 1, max(n_reps, 2 * len(copies)))
                cells.append(f"{dt * 1e3:8.3f} {w.nbytes / dt / 1e9:5.1f}")
    return cells


def prefill_row(label: str, qtype: T, shape, backends, threads, reps: int) -> list[str]:
    w = random_weight(qtype, *shape)
    cells = [f"{qtype.name:6} {label:11}"]
    flops = 2 * PREFILL_ROWS * shape[0] * shape[1]
    for backend in backends:
        kernel = registry.select(qtype, "prefill", backend)
        for t in threads:
            set_num_threads(t)
            dt = run_kernel(kernel, [w], PREFILL_ROWS, max(2, reps // 20))
            cells.append(f"{dt * 1e3:9.1f} {flops / dt / 1e9:5.0f}")
    return cells


def crossover(formats, threads: int, reps: int) -> None:
    """Time per call of each kernel family by x row count: where prefill starts to win."""
    set_num_threads(threads)
    print(f"\ncrossover, 2048x2048, {threads} threads: ms per call "
          "(native decode / native prefill / reference prefill)")
    rows = (1, 2, 4, 6, 8, 12, 16, 24, 32)
    print("type   " + "".join(f"{m:>21}" for m in rows))
    for qtype in formats:
        w = random_weight(qtype, 2048, 2048)
        cells = []
        for m in rows:
            ts = [run_kernel(registry.select(qtype, path, b), [w], m, max(3, reps // 4))
                  for path, b in (("decode", "native"), ("prefill", "native"), ("prefill", "reference"))]
            cells.append("/".join(f"{t * 1e3:.2f}" for t in ts))
        print(f"{qtype.name:6} " + "".join(f"{c:>21}" for c in cells), flush=True)


class LlamaMatmul:
    """llama.cpp's own CPU matmul (ggml_mul_mat through libggml-cpu from llama-cpp-python).

    ggml quantizes x to 8 bits and dots integers (so it is faster and ~0.5% less exact than
    our float kernels); a fresh thread set per call, as ggml_graph_compute_with_ctx does.
    """

    def __init__(self):
        import ctypes
        import os

        import llama_cpp  # raises ImportError when llama-cpp-python is absent

        lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
        self.ct = ctypes
        self.base = ctypes.CDLL(os.path.join(lib_dir, "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
        self.cpu = ctypes.CDLL(os.path.join(lib_dir, "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)

        class Params(ctypes.Structure):
            _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]

        self.Params, p, i64 = Params, ctypes.c_void_p, ctypes.c_int64
        for name, args, res in (("ggml_init", [Params], p), ("ggml_new_tensor_2d", [p, ctypes.c_int, i64, i64], p),
                                ("ggml_get_data", [p], p), ("ggml_mul_mat", [p, p, p], p), ("ggml_new_graph", [p], p),
                                ("ggml_build_forward_expand", [p, p], None), ("ggml_free", [p], None)):
            fn = getattr(self.base, name)
            fn.argtypes, fn.restype = args, res
        self.cpu.ggml_graph_compute_with_ctx.argtypes = [p, p, ctypes.c_int]

    def time(self, w: QTensor, m: int, threads: int, reps: int) -> float:
        n, k = w.shape
        ctx = self.base.ggml_init(self.Params(w.nbytes + 16 * m * k + 4 * m * n + (64 << 20), None, False))
        try:
            a = self.base.ggml_new_tensor_2d(ctx, int(w.qtype), k, n)
            b = self.base.ggml_new_tensor_2d(ctx, int(T.F32), k, m)
            self.ct.memmove(self.base.ggml_get_data(a), w.data.data_ptr(), w.nbytes)
            x = torch.randn(m, k)
            self.ct.memmove(self.base.ggml_get_data(b), x.data_ptr(), 4 * m * k)
            graph = self.base.ggml_new_graph(ctx)
            self.base.ggml_build_forward_expand(graph, self.base.ggml_mul_mat(ctx, a, b))
            return time_calls(lambda i: self.cpu.ggml_graph_compute_with_ctx(ctx, graph, threads), reps)
        finally:
            self.base.ggml_free(ctx)


def llama_table(cases, threads, reps: int) -> None:
    try:
        llama = LlamaMatmul()
    except (ImportError, OSError) as exc:
        print(f"\nllama.cpp: unavailable ({exc})")
        return
    print(f"\nllama.cpp ggml_mul_mat (x quantized to 8 bits): decode ms, GB/s | prefill {PREFILL_ROWS} rows ms")
    print(f"{'type':6} {'shape':11}" + "".join(f"{f'dec {t}t':>15}" for t in threads)
          + "".join(f"{f'pre {t}t':>10}" for t in threads))
    for label, qtype, shape in cases:
        w = random_weight(qtype, *shape)
        cells = []
        for t in threads:
            dt = llama.time(w, 1, t, reps if w.nbytes < COLD_BYTES else max(3, reps // 10))
            cells.append(f"{dt * 1e3:9.3f} {w.nbytes / dt / 1e9:5.1f}")
        pre = [f"{llama.time(w, PREFILL_ROWS, t, max(2, reps // 20)) * 1e3:10.1f}" for t in threads]
        print(f"{qtype.name:6} {label:11}" + "".join(f"{c:>15}" for c in cells) + "".join(pre), flush=True)


def row_text(cells: list[str]) -> str:
    return cells[0] + "".join(f"{c:>15}" for c in cells[1:])


def decode_table(cases, backends, threads, reps: int) -> None:
    heads = []
    for b in backends:
        for t in threads:
            heads += [f"{b[:3]}{t}t hot", f"{b[:3]}{t}t cold"] if b != "reference" else [f"{b[:3]}{t}t"]
    print("\ndecode, 1 x row: ms per call and GB/s of weight bytes (cold: streamed from DRAM)")
    print(f"{'type':6} {'shape':11} {'MiB':>7}" + "".join(f"{h:>15}" for h in heads))
    for label, qtype, shape in cases:
        print(row_text(decode_row(label, qtype, shape, backends, threads, reps, cold=True)), flush=True)


def prefill_table(cases, backends, threads, reps: int) -> None:
    print(f"\nprefill, {PREFILL_ROWS} x rows: ms per call and GFLOP/s")
    print(f"{'type':6} {'shape':11}" + "".join(f"{b[:3] + str(t) + 't':>15}" for b in backends for t in threads))
    for label, qtype, shape in cases:
        print(row_text(prefill_row(label, qtype, shape, backends, threads, reps)), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="2048x2048 only, fewer repeats")
    ap.add_argument("--crossover", action="store_true")
    ap.add_argument("--llama", action="store_true", help="also time llama.cpp's ggml CPU matmul")
    ap.add_argument("--formats", nargs="+", default=[t.name for t in FORMATS])
    args = ap.parse_args(argv)
    torch_threads = torch.get_num_threads()
    backends = [b for b in ("q8k", "native", "reference") if b in available_backends()]
    print(f"backends: {', '.join(backends)}; torch {torch.__version__}, {torch_threads} torch threads")
    formats = [T[name] for name in args.formats]
    reps = max(5, args.reps // 5) if args.quick else args.reps
    cases = [(label, q, shape) for q in formats for label, shape in SHAPES.items()]
    if not args.quick and BIG[2] in formats:
        cases.append((BIG[0], BIG[2], BIG[1]))
    try:
        if args.crossover:
            crossover(formats, max(args.threads), reps)
            return
        decode_table(cases, backends, args.threads, reps)
        prefill_table(cases, [b for b in backends if b != "q8k"], args.threads, reps)   # q8k: decode only
        if args.llama:
            llama_table(cases, args.threads, reps)
    finally:
        set_num_threads(None)
        torch.set_num_threads(torch_threads)


if __name__ == "__main__":
    main()
