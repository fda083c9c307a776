"""gpt-oss with the released models' YaRN rope against llama.cpp (not a test: needs llama-cpp-python).

    python tools/check_gpt_oss_yarn.py

The tiny random gpt-oss of tests/tiny_moe.py, given gpt-oss-20b's rope (YaRN, factor 32 over
4096 positions, transformers' `truncate: false`), converted to F32 by our converter; prints
llama.cpp's top-1 agreement with our runtime over 57 positions and the max |logit difference|
between each pair of llama.cpp, ours and transformers' float forward (BENCHMARKS.md section 3).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import gguf_runtime  # noqa: E402
from gguf_runtime.convert import convert  # noqa: E402
from tests import tiny_moe  # noqa: E402
from tests.tiny_models import write_tiny_tokenizer  # noqa: E402

YARN = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
        "original_max_position_embeddings": 4096, "rope_theta": 150000.0}
IDS = list(range(3, 60))


def main() -> None:
    import llama_cpp

    base = tiny_moe.CASES["gpt-oss"]
    case = dataclasses.replace(base, config={**base.config, "max_position_embeddings": 131072,
                                             "rope_parameters": YARN})
    root = Path(tempfile.mkdtemp(prefix="gpt-oss-yarn-"))
    model = case.build()
    model.save_pretrained(root / "hf")
    write_tiny_tokenizer(root / "hf")
    with torch.no_grad():
        hf = model(torch.tensor([IDS])).logits[0].float().numpy()
    path = convert(root / "hf", root / "gpt-oss-yarn-F32.gguf", "F32", progress=False)
    ours = gguf_runtime.load(path, n_ctx=128, kv_type="f32").logits(IDS).numpy()
    llm = llama_cpp.Llama(str(path), logits_all=True, n_threads=2, verbose=False, n_ctx=128)
    llm.eval(IDS)
    ref = np.array(llm.scores[:len(IDS)], dtype=np.float32)
    llm.close()
    print(f"top-1 equal {int((ours.argmax(-1) == ref.argmax(-1)).sum())}/{len(IDS)}; max |ours - llama.cpp| "
          f"{np.abs(ours - ref).max():.3g}, |llama.cpp - transformers| {np.abs(ref - hf).max():.3g}, "
          f"|ours - transformers| {np.abs(ours - hf).max():.3g}")


if __name__ == "__main__":
    main()
