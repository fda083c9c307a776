"""Generate tests/fixtures/fidelity_<model>.json with llama.cpp (llama-cpp-python) as the oracle.

For each prompt: llama.cpp's token ids, the top-10 (id, logit) at the last prompt position, and
the greedy 32-token continuation with llama.cpp's top-5 logits at every step (so a test can tell
a real divergence from a near-tie within quantization noise), and llama.cpp's own batched
argmax at every step ("batched_top1": prompt + continuation evaluated as one batch, as a prompt
prefill is). llama.cpp's batched and one-token kernels round differently, so that last field
measures how far llama.cpp agrees with itself: the noise floor for any other implementation.

A second floor: the same prompts through llama.cpp on a copy of the file whose F32 norm weights
are each moved by one float32 ulp (a relative change of 6e-8, far below any quantization step):
its argmax on the fixture's continuation ("nudged_top1", teacher-forced, token by token), its
logits there for the fixture's top-5 ids ("nudged_top5_logits") and its own free-running
continuation ("nudged_greedy"). Activations rounded to 8 bits turn such a change
into differences of a tenth of a logit within 30 layers, so this is how often llama.cpp agrees
with llama.cpp when the arithmetic differs in the last bit.

    pip install llama-cpp-python   # builds llama.cpp (~17 min on 2 cores; pip caches the wheel)
    python tools/gen_fidelity_fixtures.py

Tests never need llama-cpp-python: they read the committed JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np
from llama_cpp import Llama, __version__ as llama_cpp_version

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gguf_runtime.default_models import gemma3_270m_path, smollm2_135m_path  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
N_GREEDY = 32
N_THREADS = 2

PLAIN = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The three primary colors are",
    "Water boils at a temperature of",
    "In 1969, the first humans landed on",
]
QUESTIONS = [
    "What is the largest planet in the solar system?",
    "Write a haiku about autumn leaves.",
    "Explain in one sentence what a neural network is.",
]
CHAT_FORMATS = {
    "gemma3": "<start_of_turn>user\n{q}<end_of_turn>\n<start_of_turn>model\n",
    "smollm2": "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
               "Hugging Face<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
}
MODELS = {"gemma3": gemma3_270m_path, "smollm2": smollm2_135m_path}


def top(logits: np.ndarray, k: int) -> list[list]:
    idx = np.argsort(-logits, kind="stable")[:k]
    return [[int(i), float(logits[i])] for i in idx]


def greedy_rows(llm: Llama, ids: list[int], n: int):
    """llama.cpp's greedy decode after `ids` (token by token): yields the logits row of each of
    at most n steps, feeding each row's argmax, stopping after EOS."""
    llm.reset()
    llm.eval(ids)
    for k in range(n):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        yield row
        token = int(np.argmax(row))
        if token == llm.token_eos() or k + 1 == n:
            return
        llm.eval([token])


def run_prompt(llm: Llama, text: str, chat: bool) -> dict:
    # add_bos=True: llama.cpp still follows the file's add_bos_token (SmolLM2 adds none).
    ids = llm.tokenize(text.encode(), add_bos=True, special=True)
    steps, last = [], None
    for row in greedy_rows(llm, ids, N_GREEDY):
        if last is None:                                   # the last prompt position
            last = row
        t5 = top(row, 5)
        steps.append({"token": t5[0][0], "top5": t5})
    return {"text": text, "chat": chat, "ids": ids, "top10": top(last, 10), "greedy": steps,
            "batched_top1": batched_top1(llm, ids, [s["token"] for s in steps])}


def batched_top1(llm: Llama, ids: list[int], greedy: list[int]) -> list[int]:
    """llama.cpp's argmax at each greedy step when prompt + continuation is one batch."""
    llm.reset()
    llm.eval(ids + greedy[:-1])
    return [int(np.argmax(llm.scores[len(ids) - 1 + k])) for k in range(len(greedy))]


def nudged_copy(src: Path, dst: Path) -> None:
    """Write src to dst with every F32 `*norm.weight` moved one ulp toward +inf."""
    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(dst), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        kind = field.types[0]
        sub = {"sub_type": field.types[-1]} if kind == gguf.GGUFValueType.ARRAY else {}
        writer.add_key_value(key, field.contents(), kind, **sub)
    for t in reader.tensors:
        data = t.data
        if t.tensor_type == gguf.GGMLQuantizationType.F32 and t.name.endswith("norm.weight"):
            data = np.nextafter(data, np.float32(np.inf)).astype(np.float32)
        writer.add_tensor(t.name, data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def nudged_run(llm: Llama, case: dict) -> None:
    """Add llama.cpp-on-the-nudged-file's teacher-forced argmax and free-running continuation."""
    ids, want = case["ids"], [s["token"] for s in case["greedy"]]
    llm.reset()
    llm.eval(ids)
    top1, top5 = [], []
    for k, (tok, step) in enumerate(zip(want, case["greedy"])):
        row = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top1.append(int(np.argmax(row)))
        top5.append([float(row[i]) for i, _ in step["top5"]])
        if k + 1 < len(want):
            llm.eval([tok])
    free = [int(np.argmax(row)) for row in greedy_rows(llm, ids, len(want))]
    case["nudged_top1"], case["nudged_top5_logits"], case["nudged_greedy"] = top1, top5, free


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, find in MODELS.items():
        path = find()
        llm = Llama(model_path=str(path), n_ctx=1024, n_threads=N_THREADS, logits_all=True,
                    verbose=False, seed=0)
        cases = [run_prompt(llm, p, False) for p in PLAIN]
        cases += [run_prompt(llm, CHAT_FORMATS[name].format(q=q), True) for q in QUESTIONS]
        del llm
        with tempfile.TemporaryDirectory() as tmp:
            nudged = Path(tmp) / "nudged.gguf"
            nudged_copy(path, nudged)
            llm = Llama(model_path=str(nudged), n_ctx=1024, n_threads=N_THREADS,
                        logits_all=True, verbose=False, seed=0)
            for case in cases:
                nudged_run(llm, case)
            del llm
        doc = {"model": path.name, "generator": "tools/gen_fidelity_fixtures.py",
               "llama_cpp_python": llama_cpp_version, "n_threads": N_THREADS, "cases": cases}
        (OUT / f"fidelity_{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False))
        print(f"{name}: {len(cases)} prompts written")


if __name__ == "__main__":
    main()
