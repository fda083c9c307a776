"""Interop bars (2) and (3) of the converter against llama.cpp, written to a committed fixture.

    python tools/check_interop_llamacpp.py [--cases llama,qwen2] [--update] [--no-logits] [--keep DIR]

For every tiny random transformers model (tests/tiny_models.py; the MoE ones of
tests/tiny_moe.py once the converter's `detect_family` accepts them), saved with
`save_pretrained` and a real SentencePiece vocabulary (`write_tiny_tokenizer`):
  (2) our converter writes F32, F16, Q8_0 and Q4_K_M; llama.cpp (llama-cpp-python) loads each
      file and evaluates a fixed token sequence; its top-1 token at every position is compared
      with our runtime's (`gguf_runtime.load(path).logits(ids)`), with the max |logit diff|;
  (3) llama.cpp's own convert_hf_to_gguf.py (its vendored gguf-py first on PYTHONPATH, in a
      subprocess) converts the same folder to f16 and q8_0; every tensor (name, type, shape,
      sha256 of the bytes) and every metadata key is compared with our file's; each difference
      is reported with what it is (type, shape, how many values/blocks differ and by how much).
      Where llama.cpp's model class reads only a BPE tokenizer.json with a known fingerprint
      (or, stablelm without one, a Qwen tiktoken vocabulary), its vocabulary step is swapped
      for its SentencePiece one (SHIM; marked "vocab_shim").
Results go to tests/fixtures/interop_llamacpp.json (read by tests/test_interop.py, which needs
neither llama.cpp nor this script) and a Markdown table on stdout (for BENCHMARKS.md).
Needs llama-cpp-python (for (2)), transformers, sentencepiece and llama.cpp's source tree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from gguf import GGUFReader, quants  # noqa: E402

import gguf_runtime  # noqa: E402
from gguf_runtime.convert import convert  # noqa: E402
from gguf_runtime.convert.arch import detect_family  # noqa: E402
from gguf_runtime.errors import UnsupportedError  # noqa: E402
from tests import tiny_models  # noqa: E402
from tests.tiny_models import (VOCAB, gguf_metadata, gguf_tensor_table,  # noqa: E402
                               value_digest, write_tiny_tokenizer)

SEED = 0
IDS = torch.randint(0, VOCAB, (20,), generator=torch.Generator().manual_seed(SEED)).tolist()
LOGIT_TYPES = ("F32", "F16", "Q8_0", "Q4_K_M")
BYTE_TYPES = {"F16": "f16", "Q8_0": "q8_0"}          # ours -> convert_hf_to_gguf --outtype
LLAMA_CPP_SRC = Path("/tmp/llsdist/llama_cpp_python-0.3.36/vendor/llama.cpp")
FIXTURE = ROOT / "tests" / "fixtures" / "interop_llamacpp.json"


@dataclass(frozen=True)
class TinyModel:
    """One tiny model to check: where it comes from and how to build it (seeded)."""

    name: str
    source: str                        # "tiny_models" | "tiny_moe"
    build: Callable[[], torch.nn.Module]


# Dense cases llama.cpp's own converter cannot convert (ours does; tests/test_architectures.py
# checks them against transformers).
LLAMA_CPP_CANNOT = {
    "falcon-7b": "llama.cpp's FalconModel takes num_kv_heads for the multi-query (7B) layout, which "
                 "transformers 5 saves as the head count: its QKV view fails (real Falcon-7B "
                 "config.json files have no num_kv_heads and convert)",
}


def tiny_models_to_check() -> tuple[list[TinyModel], dict[str, str]]:
    """Dense cases, then MoE cases the converter accepts; and {name: why not} for the rest."""
    found = [TinyModel(n, "tiny_models", lambda c=c: c.build(SEED))
             for n, c in tiny_models.CASES.items() if n not in LLAMA_CPP_CANNOT]
    missing: dict[str, str] = dict(LLAMA_CPP_CANNOT)
    try:
        from tests import tiny_moe
    except ImportError as e:
        return found, {"moe": f"tests/tiny_moe.py not importable: {e}"}
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    for name, case in tiny_moe.CASES.items():
        cfg = getattr(transformers, case.config_class)(**{**tiny_moe.COMMON, **case.config})
        cfg.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[cfg.model_type]]
        try:
            detect_family(cfg.to_dict(), name)
            found.append(TinyModel(name, "tiny_moe", case.build))
        except UnsupportedError as e:
            missing[name] = str(e).split(";")[0]
    return found, missing


def save_folder(model: TinyModel, folder: Path) -> np.ndarray:
    """save_pretrained + the tiny SentencePiece vocabulary; returns transformers' float32
    logits of IDS, (T, V)."""
    folder.mkdir(parents=True, exist_ok=True)
    hf = model.build()
    hf.save_pretrained(folder)
    write_tiny_tokenizer(folder)
    with torch.no_grad():
        return hf(torch.tensor([IDS])).logits[0].float().numpy()


# ----------------------------------------------------------------- (3) bytes and metadata
# Some llama.cpp model classes (Qwen2/3-MoE, DeepSeek-V2, GLM-4.5's `_set_vocab_glm`, ...) read
# only a byte-level BPE tokenizer.json whose pre-tokenizer fingerprint is a known real model's,
# which no tiny tokenizer can have. There the vocabulary step (only) is swapped for the SentencePiece one the
# other classes use; tensors and hyperparameters are untouched. Marked in the results.
SHIM_MARK = "interop-shim: _set_vocab_gpt2 / _set_vocab_glm / _set_vocab_qwen -> _set_vocab_sentencepiece"
SHIM = f"""
import runpy, sys
from conversion.base import TextModel
def _spm(self):
    print({SHIM_MARK!r}, file=sys.stderr)
    self._set_vocab_sentencepiece()
TextModel._set_vocab_gpt2 = TextModel._set_vocab_glm = TextModel._set_vocab_qwen = _spm
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def llamacpp_convert(src: Path, out: Path, outtype: str, llama_src: Path) -> bool:
    """llama.cpp's convert_hf_to_gguf.py in a subprocess, with its own gguf-py first on the
    path; returns whether the vocabulary shim was used."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(llama_src / "gguf-py"), str(llama_src), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-c", SHIM, str(llama_src / "convert_hf_to_gguf.py"), str(src),
           "--outtype", outtype, "--outfile", str(out)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"convert_hf_to_gguf.py {src.name} {outtype} failed:\n"
                           f"{res.stderr[-3000:]}")
    return SHIM_MARK in res.stderr


def describe_value_diff(a, b) -> str:
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"lengths {len(a)} vs {len(b)}"
        idx = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        return f"{len(idx)} of {len(a)} entries differ, first [{idx[0]}]: " \
               f"{a[idx[0]]!r} vs {b[idx[0]]!r}"
    return f"{a!r} vs {b!r}"


def metadata_diff(ours: dict, theirs: dict) -> dict:
    """Keys only one side writes and values that differ (ours vs llama.cpp's), in words; and
    value digests: llama.cpp's for every key, ours (None: absent) where they differ."""
    both = sorted(set(ours) & set(theirs))
    mine = {k: value_digest(ours[k]) if k in ours else None for k in set(ours) | set(theirs)}
    return {"llamacpp_digests": {k: value_digest(v) for k, v in sorted(theirs.items())},
            "our_digests_where_different": {
                k: d for k, d in sorted(mine.items())
                if k not in theirs or d != value_digest(theirs[k])},
            "only_ours": {k: _short(ours[k]) for k in sorted(set(ours) - set(theirs))},
            "only_llamacpp": {k: _short(theirs[k]) for k in sorted(set(theirs) - set(ours))},
            "differ": {k: describe_value_diff(ours[k], theirs[k])
                       for k in both if ours[k] != theirs[k]}}


def _short(v):
    return f"[{len(v)} entries]" if isinstance(v, list) and len(v) > 8 else v


def why_tensor_differs(name: str, ours: GGUFReader, theirs: GGUFReader) -> str:
    """What differs between the two files' tensor `name`, in words."""
    a, b = _find(ours, name), _find(theirs, name)
    if a is None or b is None:
        return "only in llama.cpp's file" if a is None else "only in our file"
    if a.tensor_type != b.tensor_type:
        return f"type: ours {a.tensor_type.name}, llama.cpp {b.tensor_type.name}"
    if list(a.shape) != list(b.shape):
        return f"shape: ours {list(a.shape)}, llama.cpp {list(b.shape)}"
    x = quants.dequantize(a.data, a.tensor_type).astype(np.float64).ravel()
    y = quants.dequantize(b.data, b.tensor_type).astype(np.float64).ravel()
    diff = np.abs(x - y)
    text = (f"same type and shape; {int((diff > 0).sum())} of {diff.size} values differ, "
            f"max |diff| {diff.max():.3g} (max |value| {np.abs(y).max():.3g})")
    if a.tensor_type.name == "Q8_0":
        blocks = np.asarray(a.data).reshape(-1, 34) != np.asarray(b.data).reshape(-1, 34)
        text += (f"; {int(blocks.any(1).sum())} of {len(blocks)} blocks, "
                 f"{int(blocks[:, :2].any(1).sum())} with a different scale")
    return text


def _find(reader: GGUFReader, name: str):
    return next((t for t in reader.tensors if t.name == name), None)


def compare_files(ours: Path, theirs: Path) -> dict:
    """Bar (3) for one pair of files: llama.cpp's tensor table, differences, metadata."""
    a, b = gguf_tensor_table(ours), gguf_tensor_table(theirs)
    ra, rb = GGUFReader(ours), GGUFReader(theirs)
    differing = {n: {"ours": a.get(n), "why": why_tensor_differs(n, ra, rb)}
                 for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)}
    return {"tensors": b, "identical": sum(a.get(n) == t for n, t in b.items()),
            "differing": differing,
            "metadata": metadata_diff(gguf_metadata(ours), gguf_metadata(theirs))}


def check_bytes(folder: Path, work: Path, llama_src: Path) -> dict:
    out = {}
    for ours_type, outtype in BYTE_TYPES.items():
        ours = convert(folder, work / f"ours-{ours_type}.gguf", ours_type, force=True,
                       progress=False)
        theirs = work / f"llamacpp-{outtype}.gguf"
        shim = llamacpp_convert(folder, theirs, outtype, llama_src)
        out[ours_type] = {**compare_files(ours, theirs), "vocab_shim": shim}
    return out


# ----------------------------------------------------------------- (2) llama.cpp runs our file
def llamacpp_logits(path: Path, ids: list[int]) -> np.ndarray:
    """(T, V) logits of llama.cpp evaluating `ids` in one batch."""
    import llama_cpp

    llm = llama_cpp.Llama(str(path), logits_all=True, n_threads=2, verbose=False, n_ctx=64)
    try:
        llm.eval(ids)
        return np.array(llm.scores[:len(ids)], dtype=np.float32)
    finally:
        llm.close()


def check_logits(folder: Path, work: Path, hf_logits: np.ndarray) -> dict:
    """Per type: llama.cpp vs our runtime on our file, and each one's max |diff| from
    transformers' float32 forward (a flipped near-tie shows on one side only)."""
    out = {}
    for t in LOGIT_TYPES:
        path = convert(folder, work / f"ours-{t}.gguf", t, force=True, progress=False)
        ref = llamacpp_logits(path, IDS)
        ours = gguf_runtime.load(path, n_ctx=64).logits(IDS).float().numpy()
        out[t] = {**compare_logits(ours, ref), "max_abs_diff_vs_transformers": {
            "ours": float(np.abs(ours - hf_logits).max()),
            "llamacpp": float(np.abs(ref - hf_logits).max())}}
    return out


def compare_logits(ours: np.ndarray, ref: np.ndarray) -> dict:
    """Top-1 agreement of (T, V) logits; where they disagree, how close our own top two were
    (our logit of our top-1 minus our logit of llama.cpp's top-1: a near tie when small)."""
    a, b = ours.argmax(-1), ref.argmax(-1)
    return {"positions": len(a), "top1_agree": int((a == b).sum()),
            "max_abs_diff": float(np.abs(ref - ours).max()),
            "max_abs_logit": float(np.abs(ref).max()),
            "disagreements": [{"pos": int(i), "ours": int(a[i]), "llamacpp": int(b[i]),
                               "our_margin": float(ours[i, a[i]] - ours[i, b[i]])}
                              for i in np.flatnonzero(a != b)]}


# ----------------------------------------------------------------- report
def versions() -> dict:
    import importlib.metadata as md

    def version(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None
    return {p: version(p) for p in ("llama_cpp_python", "transformers", "torch", "gguf",
                                    "sentencepiece")}


def markdown(results: dict) -> str:
    """Two tables: (2) top-1 agreement per arch/type, (3) identical tensors per arch/type."""
    lines = ["| model | " + " | ".join(f"{t} top-1 (max abs diff)" for t in LOGIT_TYPES) + " |",
             "|---" * (len(LOGIT_TYPES) + 1) + "|"]
    for name, r in results["models"].items():
        cells = [f"{v['top1_agree']}/{v['positions']} ({v['max_abs_diff']:.2g})"
                 for v in (r.get("logits") or {}).values()]
        lines.append(f"| {name} | " + " | ".join(cells or ["-"] * len(LOGIT_TYPES)) + " |")
    lines += ["", "| model | " + " | ".join(f"{t} tensors identical" for t in BYTE_TYPES)
              + " | differing tensors | metadata keys only ours / only llama.cpp / values "
              "differ |", "|---" * (len(BYTE_TYPES) + 3) + "|"]
    for name, r in results["models"].items():
        lines.append(bytes_row(name, r["bytes"]))
    notes = [f"- {name} {t}: {disagreement_note(v)}" for name, r in results["models"].items()
             for t, v in (r.get("logits") or {}).items() if v["disagreements"]]
    if notes:
        lines += ["", "Top-1 disagreements (our margin: our logit of our top-1 minus ours of "
                  "llama.cpp's; max |diff| from transformers' float32 logits):", *notes]
    if any(c["vocab_shim"] for r in results["models"].values() for c in r["bytes"].values()):
        lines += ["", "\\* llama.cpp's converter reads only a byte-level BPE tokenizer.json with "
                  "a known pre-tokenizer fingerprint for this class; its vocabulary step was "
                  "swapped for its SentencePiece one (tensors and hyperparameters untouched)."]
    if results["not_covered"]:
        lines += ["", "Not yet covered: " + ", ".join(
            f"{n} ({why})" for n, why in results["not_covered"].items())]
    return "\n".join(lines)


def bytes_row(name: str, by_type: dict) -> str:
    """One Markdown row of bar (3): identical counts per type, then the union of differences
    (* = llama.cpp's vocabulary step was shimmed, see SHIM)."""
    counts = [f"{c['identical']}/{len(c['tensors'])}" for c in by_type.values()]
    why = sorted({f"{t} {n}: {d['why']}" for t, c in by_type.items()
                  for n, d in c["differing"].items()})
    meta = [sorted({k for c in by_type.values() for k in c["metadata"][part]})
            for part in ("only_ours", "only_llamacpp", "differ")]
    shim = "*" if any(c["vocab_shim"] for c in by_type.values()) else ""
    return (f"| {name}{shim} | " + " | ".join(counts) + f" | {'; '.join(why) or '-'} | "
            + " / ".join(", ".join(m) or "-" for m in meta) + " |")


def disagreement_note(v: dict) -> str:
    pos = ", ".join(f"pos {d['pos']} (margin {d['our_margin']:.3g})" for d in v["disagreements"])
    hf = v["max_abs_diff_vs_transformers"]
    return f"{pos}; vs transformers: ours {hf['ours']:.2g}, llama.cpp {hf['llamacpp']:.2g}"


def run(args) -> dict:
    found, missing = tiny_models_to_check()
    wanted = set(args.cases.split(",")) if args.cases else None
    results = {"versions": versions(), "seed": SEED, "ids": IDS, "models": {},
               "not_covered": missing}
    work_root = Path(args.keep or tempfile.mkdtemp(prefix="interop-"))
    for model in found:
        if wanted and model.name not in wanted:
            continue
        work = work_root / model.name
        folder = work / "hf"
        hf_logits = save_folder(model, folder)
        entry = {"source": model.source, "bytes": check_bytes(folder, work, args.llama_cpp_src)}
        if not args.no_logits:
            entry["logits"] = check_logits(folder, work, hf_logits)
        results["models"][model.name] = entry
        print(f"{model.name}: done", file=sys.stderr)
    return results


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", help="comma-separated model names (default: all)")
    ap.add_argument("--no-logits", action="store_true", help="skip (2) (no llama-cpp-python)")
    ap.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    ap.add_argument("--llama-cpp-src", type=Path, default=LLAMA_CPP_SRC)
    ap.add_argument("--out", type=Path, default=FIXTURE)
    ap.add_argument("--update", action="store_true",
                    help="keep the fixture's other models (same versions only), redo --cases")
    args = ap.parse_args(argv)
    results = run(args)
    if args.update and args.out.exists():
        old = json.loads(args.out.read_text(encoding="utf-8"))
        if old["versions"] != results["versions"] or old["seed"] != results["seed"]:
            sys.exit(f"--update: {args.out} was recorded with {old['versions']}, now "
                     f"{results['versions']}: rerun every case")
        results["models"] = {**old["models"], **results["models"]}
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(markdown(results))


if __name__ == "__main__":
    main()
