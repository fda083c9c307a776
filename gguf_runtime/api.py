"""Python API: `load(path) -> Model` with tokenize / detokenize / logits / generate / chat."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from quant.kernels.registry import prompt_rows

from .chat import render_chat, validate_messages
from .chat_templates import BUILTIN, default_template
from .config import ModelConfig
from .default_models import resolve_model
from .describe import runnable_problem
from .errors import ModelInputError, UnsupportedError
from .generate import PREFILL_CHUNK, Step, generate_tokens, prefill
from .gguf_file import open_gguf
from .kv_cache import KVCache, cache_nbytes, kv_dtype
from .memory import MemoryPlan, advise, parse_size, plan_memory
from .registry import detect
from .sampling import SamplingParams
from .text_stream import TextStream
from .tokenizer import Tokenizer
from .transformer import Transformer

DEFAULT_MAX_CTX = 4096


@dataclass
class Timings:
    load_s: float = 0.0
    prompt_tokens: int = 0
    reused_tokens: int = 0              # of the prompt, kept from the cache (not prefilled)
    prefill_s: float = 0.0
    generated_tokens: int = 0
    decode_s: float = 0.0

    @property
    def decode_rate(self) -> float:
        """Generated tokens per second after the first (which the prefill produced); 0 if none."""
        return (self.generated_tokens - 1) / self.decode_s if self.decode_s and self.generated_tokens > 1 else 0.0

    def summary(self) -> str:
        pre = self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0
        return (f"load {self.load_s:.2f} s | prefill {self.prompt_tokens} tok at {pre:.1f} tok/s"
                f" | decode {self.generated_tokens} tok at {self.decode_rate:.1f} tok/s")


@dataclass
class Completion:
    """What `generate(..., stream=False)` returns when `details=True`."""

    text: str
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"          # "eos" | "stop" | "length"


class Model:
    """A loaded GGUF model. Create with `gguf_runtime.load`."""

    def __init__(self, path, n_ctx: int | None = None, threads: int | None = None, kv_type: str = "f32",
                 memory_budget: str | int | None = None):
        t0 = time.perf_counter()
        kv_dtype(kv_type)                                     # a bad name fails before the load
        budget = parse_size(memory_budget) if memory_budget is not None else None
        self.kv_type = kv_type
        if threads:
            torch.set_num_threads(threads)
            _set_kernel_threads(threads)
        self.path = resolve_model(None if path is None else os.fspath(path))
        self.gguf = open_gguf(self.path)
        problem = runnable_problem(self.gguf)
        if problem:    # the config's messages already name the file
            problem = problem.removeprefix(f"{self.path}: ")
            raise UnsupportedError(f"{self.path}: cannot run: {problem}")
        self.spec = detect(self.gguf.metadata, str(self.path))
        self.config = ModelConfig.from_gguf(self.gguf.metadata, str(self.path),
                                            self.spec.swa_pattern, self.spec.norm == "layer")
        # A model converted without tokenizer files still runs on token ids (logits, generate_ids).
        has_vocab = "tokenizer.ggml.tokens" in self.gguf.metadata
        self.tokenizer = Tokenizer.from_metadata(self.gguf.metadata, str(self.path)) \
            if has_vocab else None
        self.transformer = Transformer(self.gguf, self.config, self.spec)
        self.n_ctx = min(n_ctx or min(self.config.context_length, DEFAULT_MAX_CTX),
                         self.config.context_length)
        if self.n_ctx <= 0:
            raise ModelInputError(f"n_ctx must be positive, got {n_ctx}")
        self.memory_plan = self._plan_memory(budget) if budget is not None else None
        self._cache: KVCache | None = None
        self._last_completion = Completion("")
        self._cached_ids: list[int] = []
        self._prompt_rows = 0                # positions [0, this) of the cache came from prefill
        self.timings = Timings(load_s=time.perf_counter() - t0)

    # ------------------------------------------------------------------ text <-> ids
    @property
    def architecture(self) -> str:
        return self.config.architecture

    def _tok(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ModelInputError(f"{self.path}: the file has no vocabulary "
                                  f"(tokenizer.ggml.tokens); pass token ids instead of text")
        return self.tokenizer

    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = True) -> list[int]:
        return self._tok().encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids: list[int]) -> str:
        return self._tok().decode(ids)

    # ------------------------------------------------------------------ forward
    def _cache_shape(self) -> tuple:
        c = self.config
        return c.head_count_kv[:c.trunk_block_count], c.key_length, c.value_length   # MTP blocks hold no cache

    def _new_cache(self, n_ctx: int) -> KVCache:
        return KVCache(n_ctx, *self._cache_shape(), self.kv_type)

    def _plan_memory(self, budget: int) -> MemoryPlan:
        """The memory plan under `budget` (gguf_runtime.memory): refused when the resident part
        does not fit; streaming experts' pages advised."""
        plan = plan_memory(self.gguf, cache_nbytes(self.n_ctx, *self._cache_shape(), self.kv_type), budget)
        plan.check(str(self.path))
        advise(self.gguf, plan)
        return plan

    @torch.inference_mode()
    def logits(self, ids: list[int]) -> torch.Tensor:
        """float32 (len(ids), n_vocab): next-token logits at every position of one fresh sequence."""
        ids = self._check_ids(ids)
        cache = self._new_cache(len(ids))
        return prefill(self.transformer, ids, cache, all_logits=True)

    @torch.inference_mode()
    def embedding(self, ids: list[int], normalize: bool = True) -> torch.Tensor:
        """float32 (D,): one vector for a sequence, pooled from the final normed hidden states
        as the file's {arch}.pooling_type says (2 cls: the first token's, 3 last: the last's,
        else the mean, as llama-server's default), L2-normalised as its /v1/embeddings."""
        ids = self._check_ids(ids)
        cache = self._new_cache(len(ids))
        with prompt_rows():
            h = torch.cat([self.transformer.forward(torch.tensor(ids[i:i + PREFILL_CHUNK]), cache, hidden=True)
                           for i in range(0, len(ids), PREFILL_CHUNK)])
        pooling = self.gguf.metadata.get(f"{self.architecture}.pooling_type", 1)
        v = h[0] if pooling == 2 else h[-1] if pooling == 3 else h.mean(0)
        return torch.nn.functional.normalize(v, dim=0) if normalize else v

    def _check_ids(self, ids: list[int]) -> list[int]:
        ids = [int(i) for i in ids]
        if not ids:
            raise ModelInputError("empty prompt: nothing to run (the tokenizer added no BOS)")
        bad = [i for i in ids if not 0 <= i < self.config.vocab_size]
        if bad:
            raise ModelInputError(f"token id {bad[0]} outside the vocabulary of "
                                  f"{self.config.vocab_size}")
        if len(ids) > self.n_ctx:
            raise ModelInputError(f"prompt of {len(ids)} tokens is longer than the context of "
                                  f"{self.n_ctx} tokens; shorten it or raise the context (-c N, n_ctx=N)")
        return ids

    def _prefill_reusing_cache(self, ids: list[int]) -> torch.Tensor:
        """Prefill, keeping the cached prefix shared with the previous call (chat turns).

        Only positions that were computed as prompt rows are kept: a generated token's cache
        row came from the decode kernels (x rounded to Q8_K), a fresh prefill's would not, so
        the previous answer is prefilled again. Then a reused cache differs from a fresh
        prefill of the whole history by float32 summation order only."""
        if self._cache is None:
            self._cache = self._new_cache(self.n_ctx)
        common = 0
        for a, b in zip(self._cached_ids[:self._prompt_rows], ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)                # always run at least one token
        self._cache.truncate(common)
        self._cached_ids = list(ids)
        self._prompt_rows = len(ids)
        self.timings.reused_tokens = common
        return prefill(self.transformer, ids[common:], self._cache)

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def generate_ids(self, prompt_ids: list[int], max_tokens: int = 128,
                     params: SamplingParams | None = None,
                     stop_ids: set[int] | None = None) -> Iterator[Step]:
        """Yield generated `Step`s (token id, log-prob, finish reason) after `prompt_ids`."""
        params = (params or SamplingParams()).validate()
        ids = self._check_ids(prompt_ids)
        if max_tokens <= 0:
            return
        t0 = time.perf_counter()
        logits = self._prefill_reusing_cache(ids)
        t1 = time.perf_counter()
        self.timings.prompt_tokens, self.timings.prefill_s = len(ids), t1 - t0
        if stop_ids is None:
            stop_ids = self.tokenizer.eot_ids if self.tokenizer is not None else set()
        n = 0
        try:
            for step in generate_tokens(self.transformer, logits, list(ids), self._cache,
                                        params, max_tokens, stop_ids):
                n += 1
                self._cached_ids.append(step.token)
                yield step
        finally:  # also when the consumer stops early (stop string, EOS, Ctrl-C)
            # The last sampled token was never fed: the cache holds only what it ran.
            self._cached_ids = self._cached_ids[:self._cache.length]
            self.timings.generated_tokens, self.timings.decode_s = n, time.perf_counter() - t1

    def generate(self, prompt: str, max_tokens: int = 128, temperature: float = 0.0,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 repeat_penalty: float = 1.0, presence_penalty: float = 0.0,
                 frequency_penalty: float = 0.0, seed: int | None = None,
                 stop: list[str] | str | None = None, stream: bool = False,
                 add_bos: bool | None = None, details: bool = False, ignore_eos: bool = False):
        """Continue `prompt`. Returns the new text (a `Completion` with details=True), or with
        stream=True an iterator of text pieces as they become valid UTF-8. ignore_eos=True goes
        on past end-of-generation tokens (llama.cpp's --ignore-eos), until max_tokens."""
        params = SamplingParams(temperature, top_k, top_p, min_p, repeat_penalty,
                                presence_penalty, frequency_penalty, seed=seed)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        ids = self._check_ids(self.tokenize(prompt, add_bos=add_bos))   # errors now, not at the
        params.validate()                                               # first piece of a stream
        pieces = self._text_pieces(ids, max_tokens, params, stops, set() if ignore_eos else None)
        if stream:
            return (p for p in pieces if isinstance(p, str))
        text = "".join(p for p in pieces if isinstance(p, str))
        return self._last_completion if details else text

    @property
    def last_completion(self) -> Completion:
        """The text, token ids, log-probs and finish reason of the last generate / chat call
        (filled as its stream is consumed)."""
        return self._last_completion

    def _text_pieces(self, ids, max_tokens, params, stops, stop_ids=None) -> Iterator[str]:
        """Stream text; hold back any tail that could still become a stop string."""
        done = Completion("")
        self._last_completion = done
        text = TextStream(self.tokenizer, stops)
        for step in self.generate_ids(ids, max_tokens, params, stop_ids):
            done.tokens.append(step.token)
            done.logprobs.append(step.logprob)
            if step.finish == "eos":
                done.finish_reason = "eos"
                break
            ready = text.push(step.token)
            done.text = text.text
            if text.stopped:
                done.finish_reason = "stop"
            if ready:
                yield ready
            if text.stopped:
                return
        ready = text.flush()
        done.text = text.text
        if ready:
            yield ready

    def chat_template(self, override: str | None = None) -> str:
        """The Jinja source chat() renders: `override` (a template, or a built-in name:
        chat_templates.BUILTIN), else the file's tokenizer.chat_template, else the built-in
        format of the model's family (chatml where none is known), as llama.cpp does."""
        if override:
            return BUILTIN.get(override, override)
        own = self.gguf.metadata.get("tokenizer.chat_template")
        return own if isinstance(own, str) and own else default_template(self.architecture)[1]

    def chat_prompt(self, messages: list[dict[str, str]],
                    chat_template: str | None = None) -> tuple[str, bool | None]:
        """(prompt text, add_bos) that chat() generates from: the rendered template, and False
        where the template wrote the BOS text itself."""
        messages = validate_messages(messages)
        tok = self._tok()
        prompt = render_chat(self.chat_template(chat_template), messages,
                             bos_token=tok.token_text(tok.bos_id), eos_token=tok.token_text(tok.eos_id))
        bos_in_text = bool(tok.bos_id is not None and prompt.startswith(tok.token_text(tok.bos_id)))
        return prompt, (False if bos_in_text else None)

    def chat(self, messages: list[dict[str, str]], max_tokens: int = 256,
             chat_template: str | None = None, **kwargs):
        """Reply to `messages` ({"role", "content"} dicts) using the model's chat template
        (see `chat_template`); keyword arguments as generate()."""
        prompt, add_bos = self.chat_prompt(messages, chat_template)
        return self.generate(prompt, max_tokens=max_tokens, add_bos=add_bos, **kwargs)


def _set_kernel_threads(threads: int) -> None:
    from quant.kernels import set_num_threads
    set_num_threads(threads)


def load(path=None, n_ctx: int | None = None, threads: int | None = None, kv_type: str = "f32",
         memory_budget: str | int | None = None) -> Model:
    """Load a GGUF model for generation.

    Args:
        path: a .gguf file, an embedded model name ("gemma3-270m", "smollm2-135m"), or None
            for the default model (Gemma 3 270M).
        n_ctx: context length to allocate (default: min(model's, 4096)).
        threads: CPU threads for the kernels (default: torch's setting).
        kv_type: KV cache element type, "f32" (default) or "f16" (llama.cpp's default: half
            the cache memory and the decode-time cache reads; see kv_cache.py).
        memory_budget: bytes or "1.5G" / "800M": plan the model's memory within it
            (gguf_runtime.memory; `model.memory_plan`): refused with MemoryBudgetError when
            what every token reads does not fit, streaming experts' pages advised.
    Returns:
        a Model. Raises GGUFError subclasses for files it cannot run, ModelInputError for a
        bad n_ctx or kv_type.
    """
    return Model(path, n_ctx=n_ctx, threads=threads, kv_type=kv_type, memory_budget=memory_budget)
