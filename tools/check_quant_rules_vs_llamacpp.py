"""Check our per-tensor type choice (and bytes) against llama.cpp's own `llama_model_quantize`.

    python tools/check_quant_rules_vs_llamacpp.py [--types Q4_K_M,Q6_K] [--keep DIR]

For tiny random models of several architectures (tests/tiny_models.py, plus wider variants
whose rows are multiples of 256 so the K-quant rules are reached without fallbacks):
  1. our converter writes an F16 GGUF;
  2. llama.cpp (llama-cpp-python's llama_model_quantize, no imatrix) quantizes it to each type;
  3. our `requantize` does the same, and our `convert` writes the type straight from the
     Hugging Face folder;
and per tensor the three types must agree; llama.cpp's and requantize's tensor bytes must be
identical (same float16 input, same reference quantizers) and so must every metadata value.
Also checks `choose_types` against the real Gemma 3 270M Q4_K_M file when it is installed.
Needs llama-cpp-python and transformers; not part of the test suite.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from gguf_runtime.convert import convert  # noqa: E402
from gguf_runtime.convert.tensor_types import (FILE_TYPES, ModelInfo, TensorSpec,  # noqa: E402
                                        choose_types, file_type)
from gguf_runtime.gguf_file import open_gguf  # noqa: E402
from gguf_runtime.requantize import requantize  # noqa: E402
from tests.tiny_models import CASES  # noqa: E402

WIDE = dict(hidden_size=256, intermediate_size=256, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512)
MODELS = {   # name -> (tiny case, config overrides)
    "llama-8L-wide": ("llama", dict(WIDE, num_hidden_layers=8)),
    "llama-22L-wide": ("llama", dict(WIDE, num_hidden_layers=22, hidden_size=256,
                                     intermediate_size=256)),
    "qwen2-tied-wide": ("qwen2", dict(WIDE, num_hidden_layers=8)),
    "gemma3-wide": ("gemma3", dict(WIDE, head_dim=64, query_pre_attn_scalar=64,
                                   num_hidden_layers=12)),
    "phi3-qkv-wide": ("phi3", dict(WIDE, num_hidden_layers=8)),
    "llama-tiny": ("llama", {}),           # rows of 64 / 128: every fallback path
    "gemma3-tiny": ("gemma3", {}),
    "qwen2-tiny": ("qwen2", {}),
}
DEFAULT_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K_S", "Q4_K_M", "Q5_K_S",
                 "Q5_K_M", "Q6_K", "F16", "F32", "BF16", "Q4_K_M+pure", "Q4_0+pure"]


def _quiet_log(level, text, user_data):
    pass


_QUIET = None


def llama_quantize(src: Path, dst: Path, type_name: str, pure: bool) -> None:
    import llama_cpp

    global _QUIET
    if _QUIET is None:           # kept alive: llama.cpp calls it for every later log line
        _QUIET = llama_cpp.llama_log_callback(_quiet_log)
    llama_cpp.llama_log_set(_QUIET, ctypes.c_void_p())
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(FILE_TYPES[type_name].ftype)
    params.nthread = 2
    params.pure = pure
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                      ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama_model_quantize {src} -> {type_name} failed")


def compare(name: str, type_name: str, ref: Path, ours: Path, direct: Path) -> list[str]:
    """Differences between llama.cpp's file and ours (types, bytes, metadata)."""
    a, b, c = open_gguf(ref), open_gguf(ours), open_gguf(direct)
    problems = []
    if set(a.tensors) != set(b.tensors):
        problems.append(f"tensor sets differ: {set(a.tensors) ^ set(b.tensors)}")
    for t in a.tensors.values():
        ours_t, direct_t = b.tensors.get(t.name), c.tensors.get(t.name)
        if ours_t is None:
            continue
        if not (t.qtype == ours_t.qtype == direct_t.qtype):
            problems.append(f"{t.name} {list(t.shape)}: llama.cpp {t.qtype.name}, requantize "
                            f"{ours_t.qtype.name}, convert {direct_t.qtype.name}")
        elif not np.array_equal(t.data, ours_t.data):
            problems.append(f"{t.name}: {t.qtype.name} bytes differ")
    for key, value in a.metadata.items():
        if b.metadata.get(key) != value:
            problems.append(f"metadata {key}: llama.cpp {value!r}, ours {b.metadata.get(key)!r}")
    if set(b.metadata) != set(a.metadata):
        problems.append(f"metadata keys differ: {set(a.metadata) ^ set(b.metadata)}")
    return [f"[{name} {type_name}] {p}" for p in problems]


def type_table(path: Path) -> str:
    gf = open_gguf(path)
    return ", ".join(f"{n}={t.qtype.name}" for n, t in gf.tensors.items() if len(t.shape) > 1)


def check_models(types: list[str], work: Path) -> tuple[int, list[str]]:
    n_checked, problems = 0, []
    for name, (case_name, overrides) in MODELS.items():
        case = CASES[case_name]
        case = dataclasses.replace(case, config={**case.config, **overrides})
        folder = case.save(case.build(), work / name)
        f16 = convert(folder, work / f"{name}-F16.gguf", "F16", force=True, progress=False)
        for spec in types:
            type_name, pure = spec.removesuffix("+pure"), spec.endswith("+pure")
            ref, ours = work / f"{name}-{spec}-llama.gguf", work / f"{name}-{spec}.gguf"
            direct = work / f"{name}-{spec}-direct.gguf"
            llama_quantize(f16, ref, type_name, pure)
            requantize(f16, ours, type_name, force=True, progress=False, pure=pure)
            convert(folder, direct, type_name, force=True, progress=False, pure=pure)
            found = compare(name, spec, ref, ours, direct)
            n_checked += len(open_gguf(ref).tensors)
            problems += found
            print(f"{name:16s} {spec:11s} {'OK' if not found else 'DIFF'}", flush=True)
            if spec == "Q4_K_M":
                print(f"    {type_table(ref)}")
    return n_checked, problems


def synthetic_llama(path: Path, n_layer: int, n_expert: int) -> Path:
    """An F16 llama GGUF written directly (our converter has no MoE): hidden 256, kv heads 2
    of 4, and with n_expert > 0 a router and 3-D expert stacks in every layer."""
    from gguf import GGUFWriter

    rng = np.random.default_rng(0)
    w = GGUFWriter(path, "llama")
    for method, value in (("add_block_count", n_layer), ("add_context_length", 128),
                          ("add_embedding_length", 256), ("add_feed_forward_length", 256),
                          ("add_head_count", 4), ("add_head_count_kv", 2),
                          ("add_rope_dimension_count", 64), ("add_layer_norm_rms_eps", 1e-5),
                          ("add_vocab_size", 512), ("add_file_type", 1)):
        getattr(w, method)(value)
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(2)
    w.add_tokenizer_model("none")
    shapes = {"token_embd.weight": (512, 256), "output_norm.weight": (256,),
              "output.weight": (512, 256)}
    for i in range(n_layer):
        blk = {"attn_norm": (256,), "attn_q": (256, 256), "attn_k": (128, 256),
               "attn_v": (128, 256), "attn_output": (256, 256), "ffn_norm": (256,)}
        blk.update({"ffn_gate_inp": (n_expert, 256), "ffn_gate_exps": (n_expert, 256, 256),
                    "ffn_up_exps": (n_expert, 256, 256), "ffn_down_exps": (n_expert, 256, 256)}
                   if n_expert else {"ffn_gate": (256, 256), "ffn_up": (256, 256),
                                     "ffn_down": (256, 256)})
        shapes.update({f"blk.{i}.{k}.weight": v for k, v in blk.items()})
    for name, shape in shapes.items():
        data = rng.standard_normal(shape).astype(np.float32) * 0.05
        w.add_tensor(name, data if len(shape) == 1 else data.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def check_synthetic(work: Path) -> tuple[int, list[str]]:
    """8-expert MoE (attn_v / attn_k Q8_0, attn_output Q5_K, experts' layer from the name) and
    80-layer "70B" (Q4_K attn_v -> Q5_K) rules, which no tiny Hugging Face model reaches."""
    n_checked, problems = 0, []
    for name, n_layer, n_expert, types in (("moe8", 4, 8, ["Q4_K_M", "Q4_K_S", "Q5_K_M"]),
                                           ("llama80", 80, 0, ["Q4_K_M", "Q4_K_S"])):
        f16 = synthetic_llama(work / f"{name}-F16.gguf", n_layer, n_expert)
        for type_name in types:
            ref, ours = work / f"{name}-{type_name}-llama.gguf", work / f"{name}-{type_name}.gguf"
            llama_quantize(f16, ref, type_name, False)
            requantize(f16, ours, type_name, force=True, progress=False)
            found = compare(name, type_name, ref, ours, ours)
            n_checked += len(open_gguf(ref).tensors)
            problems += found
            print(f"{name:16s} {type_name:11s} {'OK' if not found else 'DIFF'}", flush=True)
    return n_checked, problems


def check_gemma3_270m() -> list[str]:
    """Our rules on the shipped llama.cpp Gemma 3 270M Q4_K_M file's names and shapes."""
    try:
        from gguf_runtime.default_models import gemma3_270m_path
        gf = open_gguf(gemma3_270m_path())
    except Exception as e:  # not installed: nothing to check
        print(f"gemma3-270m: skipped ({e})")
        return []
    m, arch = gf.metadata, gf.architecture
    info = ModelInfo(arch, m[f"{arch}.block_count"], m.get(f"{arch}.expert_count", 0),
                     m[f"{arch}.attention.head_count"], m[f"{arch}.attention.head_count_kv"])
    ft = [f for f in FILE_TYPES.values() if int(f.ftype) == m["general.file_type"]][0]
    base = {t.name: (t.qtype if len(t.shape) == 1 else file_type("F16").default)
            for t in gf.tensors.values()}
    got = choose_types([TensorSpec(t.name, t.shape, base[t.name]) for t in gf.tensors.values()],
                       ft, info)
    problems = [f"[gemma3-270m {ft.name}] {t.name} {list(t.shape)}: file {t.qtype.name}, "
                f"ours {got[t.name].name}" for t in gf.tensors.values()
                if got[t.name] != t.qtype]
    print(f"gemma3-270m {ft.name}: {len(gf.tensors)} tensors, "
          f"{'OK' if not problems else f'{len(problems)} DIFF'}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default=",".join(DEFAULT_TYPES))
    parser.add_argument("--keep", default=None, help="work folder to keep (default: temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        types = [t for t in args.types.split(",") if t]
        n, problems = check_models(types, work) if types else (0, [])
        n2, more = check_synthetic(work)
    n, problems = n + n2, problems + more
    problems += check_gemma3_270m()
    for p in problems:
        print(p)
    print(f"{n} tensor choices checked against llama.cpp; {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
