"""Generate tests/fixtures/fidelity_<model>.json with llama.cpp (llama-cpp-python) as the oracle.

For each prompt: llama.cpp's token ids, the top-10 (id, logit) at the last prompt position, and
the greedy 32-token continuation with llama.cpp's top-5 logits at every step (so a test can tell
a real divergence from a near-tie within quantization noise), and llama.cpp's own batched
argmax at every step ("batched_top1": prompt + continuation evaluated as one batch, as a prompt
prefill is). llama.cpp's batched and one-token kernels round differently, so that last field
measures how far llama.cpp agrees with itself: the noise floor for any other implementation.

    pip install llama-cpp-python   # builds llama.cpp (~17 min on 2 cores; pip caches the wheel)
    python tools/gen_fidelity_fixtures.py

Tests never need llama-cpp-python: they read the committed JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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


def run_prompt(llm: Llama, text: str, chat: bool) -> dict:
    # add_bos=True: llama.cpp still follows the file's add_bos_token (SmolLM2 adds none).
    ids = llm.tokenize(text.encode(), add_bos=True, special=True)
    llm.reset()
    llm.eval(ids)
    last = np.array(llm.scores[len(ids) - 1], dtype=np.float32)
    steps, logits = [], last
    for _ in range(N_GREEDY):
        t5 = top(logits, 5)
        steps.append({"token": t5[0][0], "top5": t5})
        if t5[0][0] == llm.token_eos():
            break
        llm.eval([t5[0][0]])
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    return {"text": text, "chat": chat, "ids": ids, "top10": top(last, 10), "greedy": steps,
            "batched_top1": batched_top1(llm, ids, [s["token"] for s in steps])}


def batched_top1(llm: Llama, ids: list[int], greedy: list[int]) -> list[int]:
    """llama.cpp's argmax at each greedy step when prompt + continuation is one batch."""
    llm.reset()
    llm.eval(ids + greedy[:-1])
    return [int(np.argmax(llm.scores[len(ids) - 1 + k])) for k in range(len(greedy))]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, find in MODELS.items():
        path = find()
        llm = Llama(model_path=str(path), n_ctx=1024, n_threads=N_THREADS, logits_all=True,
                    verbose=False, seed=0)
        cases = [run_prompt(llm, p, False) for p in PLAIN]
        cases += [run_prompt(llm, CHAT_FORMATS[name].format(q=q), True) for q in QUESTIONS]
        doc = {"model": path.name, "generator": "tools/gen_fidelity_fixtures.py",
               "llama_cpp_python": llama_cpp_version, "n_threads": N_THREADS, "cases": cases}
        (OUT / f"fidelity_{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False))
        print(f"{name}: {len(cases)} prompts written")


if __name__ == "__main__":
    main()
