"""The tiny models of the precision comparison (tests/test_precision.py and its generator,
tools/gen_precision_fixtures.py) and how their error is measured.

Error of a run = RMS(logits - exact) / RMS(exact) over every position of IDS, where `exact` is
our float32 forward on the same file (GGUF_RUNTIME_KERNELS=native,reference: the weights
dequantized bit-exactly, activations never rounded). "prompt": IDS in one batch; "decode": the
first id as a one-token prompt, then one generated-token step per id (teacher-forced), through
the KV cache, as a generation runs.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_JSON = FIXTURES / "precision_llamacpp.json"
FIXTURE_NPZ = FIXTURES / "precision_llamacpp.npz"
# 24 ids: more than DECODE_MAX_ROWS, so a prompt takes the prefill kernels (and bf16 when named)
IDS = torch.randint(3, 256, (24,), generator=torch.Generator().manual_seed(7)).tolist()
DENSE = ("llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "granite", "phi2", "stablelm",
         "stablelm-parallel", "starcoder2", "olmo2", "falcon")
EXACT = "native,reference"
BF16 = "bf16,q8k,native,block,reference"
Q8K = "q8k,native,block,reference"


def _moe_cases() -> tuple[str, ...]:
    from tests import tiny_moe
    return tuple(tiny_moe.CASES)


CASES = DENSE + _moe_cases()


def build(name: str) -> torch.nn.Module:
    """The seeded float32 transformers model of case `name` (dense ones widened)."""
    from tests import tiny_models, tiny_moe

    if name in tiny_moe.CASES:
        return tiny_moe.CASES[name].build()
    case = tiny_models.CASES[name]
    wide = tiny_models.WIDE_GEMMA if name.startswith("gemma") else tiny_models.WIDE
    if name.startswith("falcon"):           # FalconConfig derives head_dim (read-only)
        wide = {k: v for k, v in wide.items() if k != "head_dim"}
    return case.build(0, **wide)


def convert_case(name: str, folder: Path, out_type: str) -> Path:
    """Our converter's `out_type` file of case `name` (the HF folder saved once in `folder`)."""
    from gguf_runtime.convert import convert
    from tests.tiny_models import write_tiny_tokenizer

    hf = folder / "hf"
    if not (hf / "config.json").exists():
        build(name).save_pretrained(hf)
        write_tiny_tokenizer(hf)
    return convert(hf, folder / f"{name}-{out_type}.gguf", out_type, force=True, progress=False)


def weights_table(path: Path) -> dict[str, dict]:
    """tests.tiny_models.gguf_tensor_table with GGML's trailing 1 dims dropped from the shapes
    (llama.cpp's quantizer writes a (256, 1) vector as (256,): the same tensor)."""
    from tests.tiny_models import gguf_tensor_table

    table = gguf_tensor_table(path)
    for t in table.values():
        while len(t["shape"]) > 1 and t["shape"][-1] == 1:
            t["shape"] = t["shape"][:-1]
    return table


@contextmanager
def kernels(spec: str | None):
    """GGUF_RUNTIME_KERNELS = spec within (None: unset, the defaults)."""
    before = os.environ.get("GGUF_RUNTIME_KERNELS")
    if spec is None:
        os.environ.pop("GGUF_RUNTIME_KERNELS", None)
    else:
        os.environ["GGUF_RUNTIME_KERNELS"] = spec
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("GGUF_RUNTIME_KERNELS", None)
        else:
            os.environ["GGUF_RUNTIME_KERNELS"] = before


@torch.inference_mode()
def our_logits(path: Path, spec: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(prompt, decode) logits (T, V) of IDS under kernel setting `spec`."""
    import gguf_runtime
    from gguf_runtime.generate import decode_one, prefill

    with kernels(spec):
        model = gguf_runtime.load(path, n_ctx=64)
        prompt = model.logits(IDS)
        cache = model._new_cache(len(IDS))
        rows = [prefill(model.transformer, IDS[:1], cache)]
        rows += [decode_one(model.transformer, t, cache) for t in IDS[1:]]
    return prompt.numpy(), torch.stack(rows).numpy()


def rel_error(got: np.ndarray, exact: np.ndarray) -> float:
    return float(np.sqrt(np.mean((got - exact) ** 2)) / np.sqrt(np.mean(exact ** 2)))


def errors_on(path: Path, llama_prompt: np.ndarray, llama_decode: np.ndarray) -> dict:
    """Relative errors against the exact forward: llama.cpp's and ours (defaults), both paths."""
    exact, _ = our_logits(path, EXACT)
    ours_prompt, ours_decode = our_logits(path, None)
    return {"llamacpp_prompt": rel_error(llama_prompt, exact), "ours_prompt": rel_error(ours_prompt, exact),
            "llamacpp_decode": rel_error(llama_decode, exact), "ours_decode": rel_error(ours_decode, exact)}


def bf16_prompt_error(path: Path) -> float | None:
    """Our prompt error with the opt-in bf16 prefill, or None where this CPU cannot run it."""
    from quant.kernels import registry

    with kernels(BF16):
        if not registry.backend_available("bf16"):
            return None
    exact, _ = our_logits(path, EXACT)
    return rel_error(our_logits(path, BF16)[0], exact)


def q8k_decode_error(path: Path) -> float:
    """Our decode error with the opt-in Q8_K rows (llama.cpp's rounding of x)."""
    exact, _ = our_logits(path, EXACT)
    return rel_error(our_logits(path, Q8K)[1], exact)


def format_errors(e: dict) -> str:
    return (f"prompt llama.cpp {e['llamacpp_prompt']:.2e} ours {e['ours_prompt']:.2e} | "
            f"decode llama.cpp {e['llamacpp_decode']:.2e} ours {e['ours_decode']:.2e}")


def versions() -> dict:
    """What the random weights (and so the fixture) depend on."""
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__}
