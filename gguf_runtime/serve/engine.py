"""Continuous batching: many requests share one model, one weight read per step serves them all.

One engine thread owns the model. Requests wait in a bounded queue; each step the engine
  1. ends requests that were cancelled (their client left) or ran past their time limit,
  2. moves queued requests into free slots (each slot a KV cache of n_ctx tokens), preferring
     the slot whose cached prompt shares the longest prefix with the new prompt: that part is
     not computed again (the prefix cache; llama-server's slot reuse),
  3. prefills one chunk of PREFILL_CHUNK tokens of one admitted prompt, so a long prompt does
     not stall the running streams for more than a chunk,
  4. advances every decoding request by one token in one Transformer.forward_batch call.
A row's result does not depend on the batch it ran in (tests/test_batch.py), nor on timing:
a request gets the tokens it would get alone. Only the prefix cache can change a prompt's
logits, by float32 summation order (as Model's own cache reuse; tests/test_determinism.py).
Each request reads its events from its own queue (`Request.events`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from quant.kernels import DECODE_MAX_ROWS
from quant.kernels.registry import torch_on_one_thread

from ..errors import ModelInputError
from ..generate import prefill
from ..sampling import SamplingParams, make_generator, sample
from ..text_stream import TextStream

PREFILL_CHUNK = 128      # a chunk of SmolLM2 / Gemma 3 270M takes ~0.2-0.3 s on 2 cores


class QueueFull(Exception):
    """The engine's queue holds its maximum of waiting requests (HTTP 503)."""


@dataclass
class TokenInfo:
    """A generated token as the client may ask to see it (OpenAI logprobs)."""

    token: int
    logprob: float
    top: list[tuple[int, float]]            # the top_logprobs most likely (id, logprob)


@dataclass
class Event:
    """What a request's queue receives: text pieces, then one final event (finish set)."""

    text: str = ""
    tokens: list[TokenInfo] = field(default_factory=list)
    finish: str | None = None               # "eos" | "stop" | "length" | "cancelled" | "error"
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Request:
    ids: list[int]
    max_tokens: int
    params: SamplingParams
    stops: list[str] = field(default_factory=list)
    stop_ids: set[int] = field(default_factory=set)
    top_logprobs: int = 0                   # alternatives per token to report (0: none)
    timeout_s: float = 600.0
    events: "queue.SimpleQueue[Event]" = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)


@dataclass
class _Job:
    """A request in a slot: what is left to prefill, the sampler's state, the text so far."""

    req: Request
    todo: list[int]
    history: list[int]
    gen: torch.Generator | None
    text: TextStream
    next_token: int | None = None           # sampled, not yet fed
    generated: int = 0


@dataclass
class _Slot:
    cache: object                           # KVCache
    ids: list[int] = field(default_factory=list)   # the tokens the cache holds
    prompt_rows: int = 0                    # positions [0, this) came from a prefill
    job: _Job | None = None
    last_used: float = 0.0


@dataclass
class Metrics:
    requests: int = 0
    finished: dict = field(default_factory=dict)          # finish reason -> count
    prompt_tokens: int = 0
    prefilled_tokens: int = 0
    generated_tokens: int = 0
    prefix_hits: int = 0
    prefix_tokens_saved: int = 0
    decode_steps: int = 0
    decode_rows: int = 0
    decode_seconds: float = 0.0
    prefill_seconds: float = 0.0
    last_batch: int = 0


class Engine:
    """The batching loop over `model` (a gguf_runtime Model) with `slots` sequences at most."""

    def __init__(self, model, slots: int = 4, max_queue: int = 64):
        if not 1 <= slots <= DECODE_MAX_ROWS:
            raise ModelInputError(f"slots must be 1..{DECODE_MAX_ROWS}, got {slots}")
        self.model, self.max_queue = model, max_queue
        self.slots = [_Slot(model._new_cache(model.n_ctx)) for _ in range(slots)]
        self.metrics = Metrics()
        self._queue: deque[Request] = deque()
        self._exclusive: deque = deque()             # (fn, done event, box) run between steps
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> "Engine":
        """Run the loop on a thread of its own (`run()` runs it on the calling thread)."""
        self._thread = threading.Thread(target=self.run, name="gguf-runtime-engine", daemon=True)
        self._thread.start()
        return self

    # ------------------------------------------------------------------ clients' side
    def submit(self, req: Request) -> Request:
        """Queue `req`; QueueFull when max_queue requests wait for a busy slot already, ModelInputError for a
        prompt that leaves no room in the context."""
        if not req.ids:
            raise ModelInputError("empty prompt: nothing to run")
        if len(req.ids) >= self.model.n_ctx:
            raise ModelInputError(f"prompt of {len(req.ids)} tokens leaves no room in the context of "
                                  f"{self.model.n_ctx} tokens; shorten it (or start the server with a larger -c)")
        with self._cv:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            free = sum(s.job is None for s in self.slots)        # about to take a queued request
            if len(self._queue) - free >= self.max_queue:
                raise QueueFull(f"every slot is busy and {len(self._queue)} requests wait already "
                                f"(the queue's limit is {self.max_queue})")
            self._queue.append(req)
            self.metrics.requests += 1
            self._cv.notify()
        return req

    def run_exclusive(self, fn):
        """fn() on the engine thread between two steps (it owns the model); its result or error."""
        done, box = threading.Event(), {}
        with self._cv:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            self._exclusive.append((fn, done, box))
            self._cv.notify()
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["result"]

    def queue_depth(self) -> int:
        return len(self._queue)

    def busy_slots(self) -> int:
        return sum(s.job is not None for s in self.slots)

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel what runs and waits, end the loop after its current step (waits for a loop
        that start() began; safe from a signal handler)."""
        self._stopping = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        """The loop, until stop(). Run it on the thread that should call the kernels: OpenMP
        keeps its worker threads spinning between calls only for the process's first thread
        when more threads exist than cores (libgomp's throttled spin), so a decode step from
        another thread waits on futex wake-ups: about 2x slower on 2 cores, measured."""
        while True:
            with self._cv:
                while not (self._stopping or self._queue or self._exclusive
                           or any(s.job for s in self.slots)):
                    self._cv.wait(0.2)      # a timeout: a signal handler can run, stop() be seen
                if self._stopping:
                    break
                exclusive = list(self._exclusive)
                self._exclusive.clear()
            for fn, done, box in exclusive:
                try:
                    box["result"] = fn()
                except Exception as e:  # noqa: BLE001 - handed to the caller
                    box["error"] = e
                done.set()
            try:
                self._step()
            except Exception as e:  # noqa: BLE001 - a bug of ours: end the running requests, go on
                for s in self.slots:
                    if s.job is not None:
                        self._finish(s, "error", f"{type(e).__name__}: {e}")
        self._shutdown()

    def _shutdown(self) -> None:
        with self._cv:
            waiting, self._queue = list(self._queue), deque()
            exclusive, self._exclusive = list(self._exclusive), deque()
        for req in waiting:
            req.events.put(Event(finish="cancelled", error="the server is shutting down",
                                 prompt_tokens=len(req.ids)))
        for _, done, box in exclusive:
            box["error"] = QueueFull("the server is shutting down")
            done.set()
        for s in self.slots:
            if s.job is not None:
                self._finish(s, "cancelled", "the server is shutting down")

    @torch.inference_mode()
    def _step(self) -> None:
        now = time.monotonic()
        for s in self.slots:
            if s.job is not None and s.job.req.cancelled.is_set():
                self._finish(s, "cancelled")
            elif s.job is not None and now - s.job.req.submitted > s.job.req.timeout_s:
                self._finish(s, "length")             # the request's time limit: what it has
        self._admit()
        filling = [s for s in self.slots if s.job is not None and s.job.todo]
        if filling:
            self._prefill_chunk(min(filling, key=lambda s: s.job.req.submitted))
        decoding = [s for s in self.slots if s.job is not None and s.job.next_token is not None]
        if decoding:
            self._decode(decoding)

    def _admit(self) -> None:
        with self._cv:
            while self._queue:
                free = [s for s in self.slots if s.job is None]
                if not free:
                    return
                req = self._queue.popleft()
                if req.cancelled.is_set():
                    req.events.put(Event(finish="cancelled", prompt_tokens=len(req.ids)))
                    self._count_finish("cancelled")
                    continue
                slot = max(free, key=lambda s: (self._shared(s, req.ids), -s.last_used))
                self._start(slot, req)

    @staticmethod
    def _shared(slot: _Slot, ids: list[int]) -> int:
        """Cached prompt positions that `ids` begins with (at least one token is run)."""
        n = 0
        for a, b in zip(slot.ids[:slot.prompt_rows], ids[:-1]):
            if a != b:
                break
            n += 1
        return n

    def _start(self, slot: _Slot, req: Request) -> None:
        common = self._shared(slot, req.ids)
        slot.cache.truncate(common)
        slot.ids, slot.prompt_rows = slot.ids[:common], common
        m = self.metrics
        m.prompt_tokens += len(req.ids)
        if common:
            m.prefix_hits += 1
            m.prefix_tokens_saved += common
        slot.job = _Job(req, req.ids[common:], list(req.ids), make_generator(req.params.seed),
                        TextStream(self.model.tokenizer, req.stops))
        if req.max_tokens <= 0:
            self._finish(slot, "length")

    def _prefill_chunk(self, slot: _Slot) -> None:
        job = slot.job
        part, job.todo = job.todo[:PREFILL_CHUNK], job.todo[PREFILL_CHUNK:]
        t0 = time.perf_counter()
        logits = prefill(self.model.transformer, part, slot.cache, chunk=PREFILL_CHUNK)
        self.metrics.prefill_seconds += time.perf_counter() - t0
        self.metrics.prefilled_tokens += len(part)
        slot.ids += part
        slot.prompt_rows = len(slot.ids)
        if not job.todo:
            self._sampled(slot, logits)

    def _decode(self, slots: list[_Slot]) -> None:
        with torch_on_one_thread():           # generate.generate_tokens' reason
            self._decode_rows(slots)

    def _decode_rows(self, slots: list[_Slot]) -> None:
        t0 = time.perf_counter()
        tokens = torch.tensor([s.job.next_token for s in slots])
        logits = self.model.transformer.forward_batch(tokens, [s.cache for s in slots])
        m = self.metrics
        m.decode_seconds += time.perf_counter() - t0
        m.decode_steps += 1
        m.decode_rows += len(slots)
        m.last_batch = len(slots)
        for s, row in zip(slots, logits):
            s.ids.append(s.job.next_token)
            s.job.next_token = None
            self._sampled(s, row)

    def _sampled(self, slot: _Slot, logits: torch.Tensor) -> None:
        """Sample the next token from `logits`, send its text, decide whether the request ends."""
        job, req = slot.job, slot.job.req
        token = sample(logits, job.history, req.params, job.gen)
        logprobs = torch.log_softmax(logits.float(), -1)
        top = []
        if req.top_logprobs:
            values, ids = torch.topk(logprobs, req.top_logprobs)
            top = list(zip(ids.tolist(), values.tolist()))
        info = TokenInfo(token, float(logprobs[token]), top)
        job.history.append(token)
        job.generated += 1
        self.metrics.generated_tokens += 1
        if token in req.stop_ids:
            return self._finish(slot, "eos")
        text = job.text.push(token)
        req.events.put(Event(text, [info]))
        if job.text.stopped:
            return self._finish(slot, "stop")
        if job.generated >= req.max_tokens or slot.cache.space == 0:
            return self._finish(slot, "length")
        job.next_token = token

    def _finish(self, slot: _Slot, reason: str, error: str | None = None) -> None:
        job = slot.job
        tail = job.text.flush() if reason in ("length", "eos") else ""
        job.req.events.put(Event(tail, finish=reason, error=error, prompt_tokens=len(job.req.ids),
                                 completion_tokens=job.generated))
        self._count_finish(reason)
        slot.job, slot.last_used = None, time.monotonic()

    def _count_finish(self, reason: str) -> None:
        self.metrics.finished[reason] = self.metrics.finished.get(reason, 0) + 1
