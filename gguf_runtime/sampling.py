"""Pure sampling functions on a logits vector (V,), in llama.cpp's default order:
penalties -> top-k -> top-p -> min-p -> temperature -> draw (or greedy argmax at temperature 0)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ModelInputError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0        # <= 0: greedy
    top_k: int = 40                 # <= 0: off
    top_p: float = 0.95             # >= 1: off
    min_p: float = 0.05             # <= 0: off
    repeat_penalty: float = 1.0     # 1: off
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None

    def validate(self) -> "SamplingParams":
        if not 0.0 <= self.top_p <= 1.0 or not 0.0 <= self.min_p <= 1.0:
            raise ModelInputError(f"top_p and min_p must be in [0, 1], got {self.top_p}, "
                                  f"{self.min_p}")
        if self.repeat_penalty <= 0:
            raise ModelInputError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")
        if self.temperature < 0:
            raise ModelInputError(f"temperature must be >= 0, got {self.temperature}")
        return self


def apply_penalties(logits: torch.Tensor, history: list[int], p: SamplingParams) -> torch.Tensor:
    """llama.cpp's penalties over the last `penalty_last_n` tokens: repeat (divide positive
    logits, multiply negative ones), then presence and frequency (subtract)."""
    if not history or (p.repeat_penalty == 1.0 and not p.presence_penalty
                       and not p.frequency_penalty):
        return logits
    recent = torch.tensor(history[-p.penalty_last_n:] if p.penalty_last_n > 0 else history)
    ids, counts = recent.unique(return_counts=True)
    out = logits.clone()
    sel = out[ids]
    sel = torch.where(sel > 0, sel / p.repeat_penalty, sel * p.repeat_penalty)
    sel = sel - counts.float() * p.frequency_penalty - p.presence_penalty
    out[ids] = sel
    return out


def filter_logits(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Top-k, top-p (nucleus), min-p: removed entries become -inf."""
    out = logits.clone()
    if p.top_k > 0 and p.top_k < out.numel():
        kth = torch.topk(out, p.top_k).values[-1]
        out[out < kth] = float("-inf")
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(out, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        cum = probs.cumsum(-1)
        drop = cum - probs >= p.top_p                  # keep up to and including the crossing one
        out[order[drop]] = float("-inf")
    if p.min_p > 0.0:
        probs = torch.softmax(out, dim=-1)
        out[probs < p.min_p * probs.max()] = float("-inf")
    return out


def sample(logits: torch.Tensor, history: list[int], p: SamplingParams,
           generator: torch.Generator | None = None) -> int:
    """One token id from logits (V,) given the ids so far."""
    logits = apply_penalties(logits.float(), history, p)
    if p.temperature <= 0:
        return int(torch.argmax(logits))
    logits = filter_logits(logits, p) / p.temperature
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def make_generator(seed: int | None) -> torch.Generator:
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g
