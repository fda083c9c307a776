"""Reduced precision next to llama.cpp's: fixtures for tests/test_precision.py.

    python tools/gen_precision_fixtures.py [--cases llama,qwen3moe] [--types Q4_K_M,Q6_K,Q4_0] [--update]

For one tiny random transformers model per dense family (tests/tiny_models.py, widened to
WIDE so the rows are whole K-quant blocks) and every MoE case (tests/tiny_moe.py, 256 wide):
our converter writes an F32 GGUF; llama.cpp's own quantizer (`llama_model_quantize`, through
llama-cpp-python) makes each type of it; llama.cpp then evaluates the fixed ids IDS on that
file twice: in one batch (its prompt path) and one token at a time (its decode path). Recorded
per (case, type): llama.cpp's tensor table (name, type, shape, sha256 of the bytes), so the
test can check that our converter writes the very same weights, and llama.cpp's logits of
both paths (tests/fixtures/precision_llamacpp.npz; the summary in precision_llamacpp.json).

The test (no llama.cpp needed) rebuilds the file with our converter, checks the tensor table,
and measures on the file's own weights, against our exact float32 forward
(GGUF_RUNTIME_KERNELS=native,reference: no activation rounding anywhere), the relative error
of llama.cpp's logits and of ours in the default settings (prompt rows float32; generated
tokens with x rounded to Q8_K for Q4_K / Q6_K). This script also prints that table, with the
opt-in bf16 prefill, for BENCHMARKS.md.

Needs llama-cpp-python (built from source; on CPUs with AMX its weight repacking is switched
off here, see gguf_runtime.bench), transformers and sentencepiece.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tests import precision_cases as pc  # noqa: E402

FTYPES = {"Q4_K_M": 15, "Q6_K": 18, "Q4_0": 2, "Q8_0": 7}     # llama_ftype of llama.h


def llamacpp_quantize(src: Path, dst: Path, out_type: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = FTYPES[out_type], 2
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp failed to quantize {src} to {out_type}")


def llamacpp_logits(path: Path, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(T, V) logits of llama.cpp on `ids`: in one batch, and fed one token at a time."""
    import llama_cpp

    from gguf_runtime.bench import llama_repacking_crashes, switch_off_llama_repacking

    if llama_repacking_crashes():
        switch_off_llama_repacking()
    out = []
    for batched in (True, False):
        llm = llama_cpp.Llama(str(path), logits_all=True, n_threads=2, verbose=False, n_ctx=64)
        try:
            if batched:
                llm.eval(ids)
            else:
                for t in ids:
                    llm.eval([t])
            out.append(np.array(llm.scores[:len(ids)], dtype=np.float32))
        finally:
            llm.close()
    return out[0], out[1]


def run(cases: list[str], types: list[str]) -> tuple[dict, dict]:
    summary, arrays = {"ids": pc.IDS, "types": types, "versions": pc.versions(), "cases": {}}, {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in cases:
            f32 = pc.convert_case(name, work / name, "F32")
            rec = summary["cases"][name] = {}
            for t in types:
                theirs = work / f"{name}-llamacpp-{t}.gguf"
                llamacpp_quantize(f32, theirs, t)
                ours = pc.convert_case(name, work / name, t)
                table = pc.weights_table(theirs)
                prompt, decode = llamacpp_logits(theirs, pc.IDS)
                arrays[f"{name}/{t}/prompt"], arrays[f"{name}/{t}/decode"] = prompt, decode
                errors = pc.errors_on(ours, prompt, decode)
                rec[t] = {"tensors": table, "ours_equal": pc.weights_table(ours) == table,
                          "types_present": sorted({v["type"] for v in table.values()}),
                          "errors": errors, "bf16_prompt_error": pc.bf16_prompt_error(ours),
                          "q8k_decode_error": pc.q8k_decode_error(ours)}
                print(f"{name:18s} {t:7s} {pc.format_errors(errors)} "
                      f"bf16 prompt {rec[t]['bf16_prompt_error']} q8k decode {rec[t]['q8k_decode_error']:.2e} "
                      f"same weights: {rec[t]['ours_equal']}", flush=True)
    return summary, arrays


def markdown(summary: dict) -> str:
    rows = ["| case | type | prompt: llama.cpp | prompt: ours | prompt: ours bf16 (opt-in) | decode: llama.cpp | decode: ours | decode: ours q8k (opt-in) |",
            "|---|---|---|---|---|---|---|---|"]
    for name, by_type in summary["cases"].items():
        for t, r in by_type.items():
            e = r["errors"]
            bf16 = "n/a" if r["bf16_prompt_error"] is None else f"{r['bf16_prompt_error']:.2e}"
            worse = lambda ours, theirs: f"**{ours:.2e}**" if ours > theirs else f"{ours:.2e}"  # noqa: E731
            rows.append(f"| {name} | {t} | {e['llamacpp_prompt']:.2e} | {e['ours_prompt']:.2e} | "
                        f"{worse(r['bf16_prompt_error'], e['llamacpp_prompt']) if r['bf16_prompt_error'] is not None else bf16} | "
                        f"{e['llamacpp_decode']:.2e} | {e['ours_decode']:.2e} | "
                        f"{worse(r['q8k_decode_error'], e['llamacpp_decode'])} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(pc.CASES))
    ap.add_argument("--types", default="Q4_K_M,Q6_K,Q4_0")
    ap.add_argument("--update", action="store_true",
                    help="keep the fixtures' other cases (same versions and ids only), redo --cases")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    os.environ.pop("GGUF_RUNTIME_KERNELS", None)
    summary, arrays = run(args.cases.split(","), args.types.split(","))
    if args.update and pc.FIXTURE_JSON.exists():
        old = json.loads(pc.FIXTURE_JSON.read_text(encoding="utf-8"))
        if (old["versions"], old["ids"], old["types"]) != (summary["versions"], summary["ids"], summary["types"]):
            sys.exit("--update: the fixtures were recorded with other versions, ids or types: rerun every case")
        summary["cases"] = {**old["cases"], **summary["cases"]}
        arrays = {**dict(np.load(pc.FIXTURE_NPZ)), **arrays}
    pc.FIXTURE_JSON.write_text(json.dumps(summary, indent=1, sort_keys=True), encoding="utf-8")
    np.savez_compressed(pc.FIXTURE_NPZ, **arrays)
    print(markdown(summary))


if __name__ == "__main__":
    main()
