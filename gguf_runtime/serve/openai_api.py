"""OpenAI request bodies -> engine requests, engine events -> OpenAI response objects.

Every field is checked: a wrong type, a non-finite or out-of-range number, an unknown model, a
feature the server does not have (tools, JSON-constrained output, image parts) is a RequestError
(HTTP 400 / 404) naming the field and what is accepted; nothing is silently ignored that would
change the answer. Fields that do not change it ("user", "stream_options", ...) are accepted.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass

from ..sampling import SamplingParams
from .engine import Event, Request, TokenInfo

FINISH = {"eos": "stop", "stop": "stop", "length": "length"}     # ours -> OpenAI's finish_reason
MAX_TOP_LOGPROBS = 20
MAX_SEED = (1 << 63) - 1


class RequestError(Exception):
    """An HTTP error answer: status and one-line message."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def parse_json(body: bytes) -> dict:
    """The body as a JSON object; NaN / Infinity (which Python's json reads) are refused."""
    def no_constant(name):
        raise RequestError(400, f"the body is not JSON: {name} is not a JSON number")
    try:
        doc = json.loads(body.decode("utf-8") or "null", parse_constant=no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise RequestError(400, f"the body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise RequestError(400, "the body must be a JSON object")
    return doc


def number(body: dict, name: str, default, lo: float = -math.inf, hi: float = math.inf,
           integer: bool = False, lo_open: bool = False):
    """body[name] (default when absent or null) checked to be a finite number in range."""
    value = body.get(name)
    if value is None:
        return default
    ok_type = isinstance(value, int) or (isinstance(value, float) and not integer)
    if isinstance(value, bool) or not ok_type:
        raise RequestError(400, f"{name} must be {'an integer' if integer else 'a number'}, got {json.dumps(value)}")
    low_ok = value > lo if lo_open else value >= lo
    if not (math.isfinite(value) and low_ok and value <= hi):
        bounds = f"{'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi != math.inf else "")
        raise RequestError(400, f"{name} must be {bounds}, got {value}")
    return value


@dataclass
class Settings:
    """The server's limits (serve's flags)."""

    name: str
    max_tokens: int = 512          # a request's default and cap
    timeout_s: float = 600.0       # a request's time limit from arrival
    max_n: int = 4                 # choices per request (n), at most the slots


def check_model(body: dict, s: Settings) -> None:
    model = body.get("model")
    if model is not None and model not in (s.name, s.name.removesuffix(".gguf")):
        raise RequestError(404, f"model {json.dumps(model)} is not served here; this server serves "
                                f"{json.dumps(s.name)}")


def check_unsupported(body: dict) -> None:
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        kind = fmt.get("type") if isinstance(fmt, dict) else fmt
        raise RequestError(400, f"response_format {json.dumps(kind)} is not supported (no constrained "
                                f"sampling yet); supported: {{\"type\": \"text\"}}")
    if body.get("tools") or body.get("functions"):
        raise RequestError(400, "tools / functions are not supported by this server; send messages only")
    if body.get("tool_choice") not in (None, "none", "auto"):
        raise RequestError(400, "tool_choice needs tools, which this server does not support")


def requests_for(body: dict, ids: list[int], model, s: Settings, top_logprobs: int) -> list[Request]:
    """One engine request per choice (n), with the body's sampling fields checked."""
    max_tokens = number(body, "max_completion_tokens", None, 0, integer=True)
    max_tokens = number(body, "max_tokens", s.max_tokens if max_tokens is None else max_tokens, 0, integer=True)
    d = SamplingParams()
    params = dict(
        temperature=number(body, "temperature", 0.8, 0.0, 100.0),       # llama-server's default
        top_k=number(body, "top_k", d.top_k, 0, integer=True),
        top_p=number(body, "top_p", d.top_p, 0.0, 1.0, lo_open=True),
        min_p=number(body, "min_p", d.min_p, 0.0, 1.0),
        repeat_penalty=number(body, "repeat_penalty", d.repeat_penalty, 0.0, 100.0, lo_open=True),
        presence_penalty=number(body, "presence_penalty", d.presence_penalty, -2.0, 2.0),
        frequency_penalty=number(body, "frequency_penalty", d.frequency_penalty, -2.0, 2.0))
    seed = number(body, "seed", None, 0, MAX_SEED, integer=True)
    n = number(body, "n", 1, 1, s.max_n, integer=True)
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(x, str) for x in stop):
        raise RequestError(400, "stop must be a string or a list of strings")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool) or not isinstance(body.get("stream", False), bool):
        raise RequestError(400, "stream and ignore_eos must be true or false")
    stop_ids = set() if ignore_eos else set(model.tokenizer.eot_ids)
    return [Request(ids, min(max_tokens, s.max_tokens),
                    SamplingParams(**params, seed=None if seed is None else (seed + i) % (MAX_SEED + 1)).validate(),
                    stop, stop_ids, top_logprobs, s.timeout_s) for i in range(n)]


def prompt_ids(body: dict, model) -> list[int]:
    """/v1/completions' prompt: a string, a list of one string, or a list of token ids."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return model.tokenize(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        bad = [t for t in prompt if not 0 <= t < model.config.vocab_size]
        if bad:
            raise RequestError(400, f"prompt token {bad[0]} is outside the vocabulary of {model.config.vocab_size}")
        return prompt
    raise RequestError(400, "prompt must be a string or a list of token ids (one prompt per request)")


def chat_messages(body: dict) -> list[dict]:
    """messages with content as a string or a list of text parts (joined by newlines)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RequestError(400, f"messages[{i}] must be an object with role and content")
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise RequestError(400, f"messages[{i}].content: only text parts are supported, got {json.dumps(kind)}")
                parts.append(part["text"])
            content = "\n".join(parts)
        out.append({**m, "content": content})
    return out


def chat_top_logprobs(body: dict) -> int:
    """Chat: logprobs true/false and top_logprobs 0..20; -1 when logprobs are off."""
    want = body.get("logprobs", False)
    if want is None:
        want = False
    if not isinstance(want, bool):
        raise RequestError(400, f"logprobs must be true or false for chat, got {json.dumps(want)}")
    top = number(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS, integer=True)
    if top and not want:
        raise RequestError(400, "top_logprobs needs logprobs: true")
    return top if want else -1


def completion_top_logprobs(body: dict) -> int:
    """Completions: logprobs is the number of alternatives 0..20 (null: off); -1 when off."""
    value = body.get("logprobs")
    return -1 if value is None else number(body, "logprobs", 0, 0, MAX_TOP_LOGPROBS, integer=True)


class Reply:
    """Accumulates one choice's events into the OpenAI shapes."""

    def __init__(self, model, chat: bool, top_logprobs: int, index: int = 0):
        self.model, self.chat, self.top, self.index = model, chat, top_logprobs, index
        self.text, self.tokens, self.offsets = "", [], []
        self.finish: str | None = None
        self.usage = (0, 0)

    def add(self, e: Event) -> None:
        for info in e.tokens:
            self.offsets.append(len(self.text))
            self.tokens.append(info)
        self.text += e.text
        if e.finish is not None:
            self.finish = FINISH.get(e.finish, "stop")
            self.usage = (e.prompt_tokens, e.completion_tokens)

    def _piece(self, token: int) -> tuple[str, list[int]]:
        raw = self.model.tokenizer.piece(token)
        return raw.decode("utf-8", "replace"), list(raw)

    def logprobs(self, tokens: list[TokenInfo], offsets: list[int]):
        if self.top < 0:
            return None
        if self.chat:
            def entry(tok, lp):
                text, raw = self._piece(tok)
                return {"token": text, "logprob": lp, "bytes": raw}
            return {"content": [entry(t.token, t.logprob) | {"top_logprobs": [entry(i, lp) for i, lp in t.top]}
                                for t in tokens]}
        return {"tokens": [self._piece(t.token)[0] for t in tokens],
                "token_logprobs": [t.logprob for t in tokens],
                "top_logprobs": [{self._piece(i)[0]: lp for i, lp in t.top} for t in tokens] if self.top else None,
                "text_offset": offsets}

    def choice(self) -> dict:
        c = {"index": self.index, "finish_reason": self.finish,
             "logprobs": self.logprobs(self.tokens, self.offsets)}
        return c | ({"message": {"role": "assistant", "content": self.text}} if self.chat else {"text": self.text})

    def chunk_choice(self, e: Event, first: bool = False) -> dict:
        finish = FINISH.get(e.finish, "stop") if e.finish is not None else None
        logprobs = self.logprobs(e.tokens, [0] * len(e.tokens)) if e.tokens else None
        if self.chat:
            delta = ({"role": "assistant"} if first else {}) | ({"content": e.text} if e.text else {})
            return {"index": self.index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        return {"index": self.index, "text": e.text, "finish_reason": finish, "logprobs": logprobs}


def head(s: Settings, chat: bool) -> dict:
    return {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
            "model": s.name}


def usage(replies: list[Reply]) -> dict:
    prompt = replies[0].usage[0] if replies else 0
    completion = sum(r.usage[1] for r in replies)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
