"""The two families with no converter path (qwen = Qwen 1, deepseek = DeepSeek-MoE v1) against
llama.cpp (not a test: needs llama-cpp-python).

    python tools/check_handmade_llamacpp.py

Their hand-made F32 files (tests/test_qwen1.py, tests/test_deepseek1.py: llama.cpp's layout of
each family, written from tiny random transformers models), then llama.cpp's own quantizer makes
Q8_0 and Q4_K_M of each. On every file, llama.cpp and our runtime evaluate tests.precision_cases.IDS
in one batch and one token at a time; printed: llama.cpp's top-1 agreement with ours, and both
errors against our exact float32 forward on the file's own weights (as tests/test_precision.py
measures), for BENCHMARKS.md.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import torch  # noqa: E402

from gen_precision_fixtures import llamacpp_logits, llamacpp_quantize  # noqa: E402
from gguf_runtime.convert import convert  # noqa: E402
from tests import precision_cases as pc  # noqa: E402
from tests import tiny_moe  # noqa: E402
from tests.test_deepseek1 import deepseek_v1_file  # noqa: E402
from tests.test_qwen1 import qwen1_file  # noqa: E402
from tests.tiny_models import CASES, HEADS, WIDE, write_tiny_tokenizer  # noqa: E402


def handmade(name: str, work: Path) -> Path:
    """The F32 file of `name` in llama.cpp's layout of its family."""
    if name == "qwen":
        model = CASES["qwen2"].build(0, **WIDE, num_key_value_heads=HEADS, tie_word_embeddings=False)
        make = qwen1_file
    else:
        model, make = tiny_moe.CASES["qwen2moe"].build(), deepseek_v1_file
        with torch.no_grad():
            for layer in model.model.layers:
                layer.mlp.shared_expert_gate.weight.zero_()
    model.save_pretrained(work / "hf")
    write_tiny_tokenizer(work / "hf")
    return make(convert(work / "hf", work / "src-F32.gguf", "F32", progress=False), work / f"{name}-F32.gguf")


def main() -> None:
    torch.set_num_threads(2)
    for name in ("qwen", "deepseek"):
        work = Path(tempfile.mkdtemp(prefix=f"handmade-{name}-"))
        f32 = handmade(name, work)
        for out_type in ("F32", "Q8_0", "Q4_K_M"):
            path = f32 if out_type == "F32" else work / f"{name}-llamacpp-{out_type}.gguf"
            if out_type != "F32":
                llamacpp_quantize(f32, path, out_type)
            prompt, decode = llamacpp_logits(path, pc.IDS)
            ours, _ = pc.our_logits(path, None)
            top1 = int((ours.argmax(-1) == prompt.argmax(-1)).sum())
            print(f"{name:9s} {out_type:7s} top-1 {top1}/{len(pc.IDS)}  "
                  f"{pc.format_errors(pc.errors_on(path, prompt, decode))}", flush=True)


if __name__ == "__main__":
    main()
