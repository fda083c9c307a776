"""prefill / decode_one / generate_tokens: the decode loop, in token ids only (knows no text)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from quant.kernels.registry import prompt_rows, torch_on_one_thread

from .kv_cache import KVCache
from .sampling import SamplingParams, make_generator, sample
from .transformer import Transformer

# Tokens per forward pass in a prefill: each chunk dequantizes every weight tile once, so
# longer chunks amortise it further (512, llama.cpp's default ubatch: +5-10% prefill tok/s
# over 256 on Gemma 3 and the 1.9 B model here; activations stay a few tens of MB).
PREFILL_CHUNK = 512


@dataclass
class Step:
    """One generated token: its id, its log-probability under the model, why it stopped."""

    token: int
    logprob: float
    finish: str | None = None       # None | "eos" | "length"


def prefill(model: Transformer, ids: list[int], cache: KVCache, chunk: int = PREFILL_CHUNK,
            all_logits: bool = False) -> torch.Tensor:
    """Feed `ids` in chunks; returns logits of the last token (V,) or of all of them (T, V).

    A prompt's rows are computed in float32 activations whatever their number (no Q8_K
    rounding: quant.kernels.registry.prompt_rows), so its logits and its cache depend on the
    chunking, on cache reuse and on what ran before only by float32 summation order (measured
    and tested: tests/test_determinism.py)."""
    cache.check_room(len(ids))
    outs = []
    with prompt_rows():
        for i in range(0, len(ids), chunk):
            part = torch.tensor(ids[i:i + chunk], dtype=torch.long)
            outs.append(model.forward(part, cache, all_logits=all_logits))
    return torch.cat(outs) if all_logits else outs[-1][0]


def decode_one(model: Transformer, token: int, cache: KVCache) -> torch.Tensor:
    """Feed one generated token; returns the next-token logits (V,). Its rows take the decode
    kernels of generated tokens (float32 x; x rounded as llama.cpp with q8k named), torch's own
    ops on one thread (registry.torch_on_one_thread)."""
    cache.check_room(1)
    with torch_on_one_thread():
        return model.forward(torch.tensor([token], dtype=torch.long), cache)[0]


def generate_tokens(model: Transformer, logits: torch.Tensor, history: list[int], cache: KVCache,
                    params: SamplingParams, max_tokens: int, stop_ids: set[int]) -> Iterator[Step]:
    """Sample up to `max_tokens` tokens after a prefill whose last logits are given.

    `history` (the ids so far, used by the penalties) is extended in place. Stops on a stop id
    (yielded with finish="eos") or when the context is full (finish="length").
    """
    gen = make_generator(params.seed)
    for n in range(max_tokens):
        with torch_on_one_thread():
            token = sample(logits, history, params, gen)
            logprob = float(torch.log_softmax(logits.float(), -1)[token])
        history.append(token)
        if token in stop_ids:
            yield Step(token, logprob, "eos")
            return
        last = n == max_tokens - 1 or cache.space == 0
        yield Step(token, logprob, "length" if last else None)
        if last:
            return
        logits = decode_one(model, token, cache)
