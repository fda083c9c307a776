"""Side-by-side benchmark: gguf-runtime vs llama.cpp (llama-cpp-python) on the same file.

Each engine runs in its own subprocess (so peak RSS is its own), alternating, with the same
thread count: load time, prefill tok/s on a prompt of `prompt_tokens` ids, decode tok/s over
`decode_tokens` greedy steps, peak RSS. The prompt is the same token ids for both engines.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

ENGINES = ("gguf-runtime", "llama.cpp")


@dataclass
class BenchResult:
    engine: str
    load_s: float
    prefill_tok_s: float
    decode_tok_s: float
    peak_rss_mib: float
    kernels: str = ""               # gguf-runtime: the kernel backends in use, best first
    note: str = ""                  # how this engine had to be run (llama.cpp without repacking)


# llama-cpp-python 0.3.36 segfaults in the first decode on CPUs with AMX when its weights are
# repacked into AMX tiles ("extra buffer types"); with use_extra_bufts=False it runs.
ENV_NO_REPACK = "GGUF_RUNTIME_BENCH_LLAMA_NO_REPACK"
NO_REPACK_NOTE = "weight repacking off (use_extra_bufts=False)"


def llama_repacking_crashes() -> bool:
    """Whether this CPU has AMX, where llama.cpp's weight repacking crashes."""
    from quant.kernels import cpu
    return cpu.has("amx_tile") or cpu.has("amx_bf16") or cpu.has("amx_int8")


def switch_off_llama_repacking() -> None:
    """Make every llama_cpp.Llama created from now on load with use_extra_bufts=False."""
    import llama_cpp

    default = getattr(llama_cpp.llama_model_default_params, "_gguf_runtime_default", None) \
        or llama_cpp.llama_model_default_params

    def without_repacking():
        params = default()
        params.use_extra_bufts = False
        return params

    without_repacking._gguf_runtime_default = default
    llama_cpp.llama_model_default_params = without_repacking


def _prompt_ids(n: int, n_vocab: int) -> list[int]:
    """Deterministic ordinary-text-like ids (avoid the first 300 special/control ids)."""
    return [300 + (i * 7919) % (min(n_vocab, 30000) - 300) for i in range(n)]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ours_after_prefill(path: str, threads: int, n_prompt: int, n_ctx: int):
    """gguf-runtime loaded and prefilled with the benchmark prompt, timed: (model, cache, last
    logits, load seconds, prefill seconds). Runs under torch.inference_mode by the caller."""
    import gguf_runtime
    from gguf_runtime.generate import prefill

    t0 = time.perf_counter()
    model = gguf_runtime.load(path, n_ctx=n_ctx, threads=threads)
    load_s = time.perf_counter() - t0
    ids = _prompt_ids(n_prompt, model.config.vocab_size)
    cache = model._new_cache(model.n_ctx)
    t0 = time.perf_counter()
    logits = prefill(model.transformer, ids, cache)
    return model, cache, logits, load_s, time.perf_counter() - t0


def _worker_ours(path: str, threads: int, n_prompt: int, n_decode: int) -> BenchResult:
    import torch

    from gguf_runtime.generate import decode_one
    from quant.kernels.registry import torch_on_one_thread

    with torch.inference_mode():
        model, cache, logits, load_s, prefill_s = _ours_after_prefill(
            path, threads, n_prompt, n_prompt + n_decode + 8)
        t0 = time.perf_counter()
        for _ in range(n_decode):
            with torch_on_one_thread():           # as generate_tokens samples
                token = int(logits.argmax())
            logits = decode_one(model.transformer, token, cache)
        decode_s = time.perf_counter() - t0
    from quant.kernels import describe_choices

    return BenchResult("gguf-runtime", load_s, n_prompt / prefill_s, n_decode / decode_s,
                       _peak_rss_mib(), describe_choices())


def _worker_llama(path: str, threads: int, n_prompt: int, n_decode: int) -> BenchResult:
    import numpy as np
    from llama_cpp import Llama

    if os.environ.get(ENV_NO_REPACK):
        switch_off_llama_repacking()
    t0 = time.perf_counter()
    llm = Llama(model_path=path, n_ctx=n_prompt + n_decode + 8, n_threads=threads,
                n_threads_batch=threads, n_batch=512, verbose=False)
    load_s = time.perf_counter() - t0
    ids = _prompt_ids(n_prompt, llm.n_vocab())
    t0 = time.perf_counter()
    llm.eval(ids)
    prefill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n_decode):
        tok = int(np.argmax(_llama_last_logits(llm)))
        llm.eval([tok])
    decode_s = time.perf_counter() - t0
    return BenchResult("llama.cpp", load_s, n_prompt / prefill_s, n_decode / decode_s,
                       _peak_rss_mib(), note=NO_REPACK_NOTE if os.environ.get(ENV_NO_REPACK) else "")


def _llama_last_logits(llm):
    """The last evaluated position's logits straight from llama.cpp's context (no copy)."""
    import llama_cpp
    import numpy as np

    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))


def _worker_profile(path: str, threads: int, n_prompt: int, n_decode: int) -> dict:
    """gguf-runtime's decode-step profile (gguf_runtime.bench.profiling) after an n_prompt prefill."""
    import torch

    from gguf_runtime.bench.profiling import profile_decode

    with torch.inference_mode():
        model, cache, logits, _, _ = _ours_after_prefill(path, threads, n_prompt,
                                                         n_prompt + 2 * n_decode + 8)
    return profile_decode(model.transformer, cache, int(logits.argmax()), n_decode).to_dict()


WORKERS = {"gguf-runtime": _worker_ours, "llama.cpp": _worker_llama, "profile": _worker_profile}


def _run_worker(engine: str, path: str, threads: int, n_prompt: int, n_decode: int,
                no_repack: bool = False):
    """(result, None) or (None, (error line, return code)) of one worker process."""
    cmd = [sys.executable, "-m", "gguf_runtime.bench", "--worker", engine, path,   # __main__.py
           str(threads), str(n_prompt), str(n_decode)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if no_repack:
        env[ENV_NO_REPACK] = "1"
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        line = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"
        return None, (line if r.returncode > 0 else f"killed by signal {-r.returncode}", r.returncode)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return (BenchResult(**out) if engine in ENGINES else out), None


def run_profile(path: str, threads: int = 2, n_prompt: int = 512, n_decode: int = 32) -> str:
    """gguf-runtime's decode profile in its own process, as text (the error line if it failed)."""
    from .profiling import DecodeProfile

    out, err = _run_worker("profile", path, threads, n_prompt, n_decode)
    if out is None:
        return f"[profile failed: {err[0]}]"
    out["torch_ops"] = [tuple(op) for op in out["torch_ops"]]
    return DecodeProfile(**out).format()


def llama_cpp_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("llama_cpp") is not None


def run_bench(path: str, threads: int = 2, n_prompt: int = 512, n_decode: int = 128,
              repeats: int = 1) -> list[BenchResult]:
    """Alternate the engines `repeats` times; keep each engine's best run."""
    engines = [e for e in ENGINES if e != "llama.cpp" or llama_cpp_available()]
    no_repack = llama_repacking_crashes()        # known to crash: do not even try
    best: dict[str, BenchResult] = {}
    for _ in range(repeats):
        for engine in engines:
            res, err = _run_worker(engine, path, threads, n_prompt, n_decode, no_repack)
            if res is None and engine == "llama.cpp" and err[1] < 0 and not no_repack:
                print(f"[llama.cpp {err[0]}: rerun with its {NO_REPACK_NOTE}]", file=sys.stderr)
                no_repack = True
                res, err = _run_worker(engine, path, threads, n_prompt, n_decode, no_repack)
            if res is None:
                print(f"[{engine} failed: {err[0]}]", file=sys.stderr)
                continue
            old = best.get(engine)
            if old is None or res.decode_tok_s > old.decode_tok_s:
                best[engine] = res
    return list(best.values())


def format_table(path: str, threads: int, results: list[BenchResult], floor=None) -> str:
    """The side-by-side table; `floor` (bench.floor.Floor) adds the bandwidth-floor line."""
    rows = [f"model: {os.path.basename(path)}   threads: {threads}",
            f"{'engine':14s} {'load s':>8s} {'prefill tok/s':>14s} {'decode tok/s':>13s} "
            f"{'peak RSS MiB':>13s}"]
    for r in results:
        rows.append(f"{r.engine:14s} {r.load_s:8.2f} {r.prefill_tok_s:14.1f} "
                    f"{r.decode_tok_s:13.1f} {r.peak_rss_mib:13.0f}")
    by = {r.engine: r for r in results}
    if len(by) == 2:
        ours, ref = by["gguf-runtime"], by["llama.cpp"]
        rows.append(f"{'ratio':14s} {ref.load_s / ours.load_s:8.2f} "
                    f"{ours.prefill_tok_s / ref.prefill_tok_s:14.2f} "
                    f"{ours.decode_tok_s / ref.decode_tok_s:13.2f} "
                    f"{ours.peak_rss_mib / ref.peak_rss_mib:13.2f}")
        rows.append("(ratio: ours/llama.cpp for speed and RSS, llama.cpp/ours for load)")
    rows += [f"{r.engine} kernels: {r.kernels}" for r in results if r.kernels]
    rows += [f"{r.engine}: {r.note}" for r in results if r.note]
    if floor is not None:
        line = (f"bandwidth floor: {floor.active_bytes / 1e6:.1f} MB read per token at "
                f"{floor.gb_per_s:.1f} GB/s = {floor.tok_per_s:.1f} tok/s")
        rows.append(line + "".join(f"; {r.engine} at {floor.tok_per_s / r.decode_tok_s:.2f}x "
                                   f"the floor" for r in results))
    return "\n".join(rows)


def _worker_main(argv: list[str]) -> None:
    engine, path, threads, n_prompt, n_decode = argv
    res = WORKERS[engine](path, int(threads), int(n_prompt), int(n_decode))
    print(json.dumps(res if isinstance(res, dict) else asdict(res)))

