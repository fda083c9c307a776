"""`gguf-runtime serve`: an OpenAI-compatible HTTP server for one model, as llama.cpp's
llama-server, on the standard library's ThreadingHTTPServer (no web framework needed for four
JSON endpoints).

    GET  /health                -> {"status": "ok"}
    GET  /v1/models             -> the one model
    POST /v1/completions        {"prompt": str, ...}           -> text_completion
    POST /v1/chat/completions   {"messages": [{role, content}], ...} -> chat.completion

Sampling fields: max_tokens (default 256), temperature (0.8, as llama-server), top_k, top_p,
min_p, repeat_penalty, presence_penalty, frequency_penalty, seed, stop (str or list), stream
(server-sent events: one chunk per text piece, then `data: [DONE]`). Other OpenAI fields
("model", "user", ...) are accepted and ignored; n must be 1. Requests run one at a time (the
model holds one KV cache, reused when a prompt extends the previous one, as in chat).

Bad requests get HTTP 400 (404 unknown path, 405 wrong method, 413 body over 1 MiB) with
{"error": {"message": one line, "type": "invalid_request_error"}}; nothing is left half-run.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .errors import GGUFError, ModelInputError
from .sampling import SamplingParams

MAX_BODY = 1 << 20
# llama-server's request defaults where they differ from ours, else SamplingParams' own
SAMPLING_DEFAULTS = {"max_tokens": 256, "temperature": 0.8} | {
    name: getattr(SamplingParams(), name)
    for name in ("top_k", "top_p", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty")}
FINISH = {"eos": "stop", "stop": "stop", "length": "length"}     # ours -> OpenAI's finish_reason


class RequestError(Exception):
    """An HTTP error answer: status and one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def sampling_kwargs(body: dict) -> dict:
    """Model.generate keyword arguments from an OpenAI request body; RequestError (400) on a
    field of the wrong type."""
    out = {}
    for name, default in SAMPLING_DEFAULTS.items():
        value = body.get(name, default)
        if value is None:
            value = default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(400, f"{name} must be a number, got {json.dumps(value)}")
        out[name] = int(value) if isinstance(default, int) else float(value)
    if out["max_tokens"] < 0:
        raise RequestError(400, f"max_tokens must be >= 0, got {out['max_tokens']}")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(400, f"seed must be an integer, got {json.dumps(seed)}")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise RequestError(400, "stop must be a string or a list of strings")
    if body.get("n", 1) != 1:
        raise RequestError(400, f"only n=1 is supported, got {json.dumps(body.get('n'))}")
    return out | {"seed": seed, "stop": stop}


class Server:
    """The model and its request lock; `handle(method, path, body)` -> (status, payload) where
    payload is a dict (JSON) or an iterator of dicts (an event stream)."""

    def __init__(self, model, name: str, verbose: bool = False):
        self.model, self.name, self.verbose = model, name, verbose
        self.lock = threading.Lock()

    def handle(self, method: str, path: str, body: bytes):
        path = path.split("?", 1)[0].rstrip("/") or "/"
        routes = {"/health": ("GET", self._health), "/v1/models": ("GET", self._models),
                  "/v1/completions": ("POST", self._completions),
                  "/v1/chat/completions": ("POST", self._chat)}
        if path not in routes:
            raise RequestError(404, f"no endpoint {path}; endpoints: {', '.join(routes)}")
        want, fn = routes[path]
        if method != want:
            raise RequestError(405, f"{path} takes {want}, got {method}")
        return fn(_json_body(body) if want == "POST" else {})

    def _health(self, _):
        return {"status": "ok"}

    def _models(self, _):
        return {"object": "list", "data": [{"id": self.name, "object": "model", "owned_by": "gguf-runtime",
                                            "architecture": self.model.architecture,
                                            "n_ctx": self.model.n_ctx}]}

    def _completions(self, body: dict):
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise RequestError(400, "prompt must be a string")
        kwargs = sampling_kwargs(body)
        return self._run(body, lambda: self.model.generate(prompt, stream=True, **kwargs), chat=False)

    def _chat(self, body: dict):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "messages must be a non-empty list of {role, content} objects")
        kwargs = sampling_kwargs(body)
        return self._run(body, lambda: self.model.chat(messages, stream=True, **kwargs), chat=True)

    def _run(self, body: dict, start, chat: bool):
        """Run a generation under the lock: the whole reply, or a stream of chunks."""
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        head = {"id": ident, "created": int(time.time()), "model": self.name}
        if not body.get("stream"):
            with self.lock:
                text = "".join(start())
                done = self.model.last_completion
            choice = {"index": 0, "finish_reason": FINISH.get(done.finish_reason, "stop")}
            choice |= {"message": {"role": "assistant", "content": text}} if chat else {"text": text, "logprobs": None}
            return head | {"object": "chat.completion" if chat else "text_completion",
                           "choices": [choice], "usage": self._usage(done)}
        self.lock.acquire()
        try:
            pieces = start()          # bad input raises here, before any byte is sent
            first = next(pieces, None)
        except BaseException:
            self.lock.release()
            raise
        return Stream(self._chunks(head, chat, first, pieces), pieces, self.lock)

    def _chunks(self, head: dict, chat: bool, first, pieces):
        """The stream's events."""
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text, finish=None, role=False):
            if chat:
                delta = ({"role": "assistant"} if role else {}) | ({"content": text} if text else {})
                return head | {"object": kind, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return head | {"object": kind, "choices": [{"index": 0, "text": text, "finish_reason": finish,
                                                        "logprobs": None}]}
        if chat:
            yield chunk("", role=True)
        if first is not None:
            yield chunk(first)
            for piece in pieces:
                yield chunk(piece)
        done = self.model.last_completion
        yield chunk("", FINISH.get(done.finish_reason, "stop")) | {"usage": self._usage(done)}

    def _usage(self, done) -> dict:
        prompt = self.model.timings.prompt_tokens
        return {"prompt_tokens": prompt, "completion_tokens": len(done.tokens),
                "total_tokens": prompt + len(done.tokens)}


class Stream:
    """A reply's events, holding the server's lock from before the first one until `close()`
    (which the handler always calls, even when the client left before the stream started):
    closing stops the generation and releases the lock, once."""

    def __init__(self, events, pieces, lock: threading.Lock):
        self._events, self._pieces, self._lock = events, pieces, lock

    def __iter__(self):
        return self._events

    def close(self) -> None:
        if self._lock is not None:
            self._events.close()
            self._pieces.close()                  # the model's generator: its cache bookkeeping
            self._lock, lock = None, self._lock
            lock.release()


def _json_body(body: bytes) -> dict:
    try:
        doc = json.loads(body.decode("utf-8") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"the body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise RequestError(400, "the body must be a JSON object")
    return doc


def make_handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, method: str) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    raise RequestError(413, f"body of {length} bytes is over the {MAX_BODY}-byte limit")
                body = self.rfile.read(length) if length > 0 else b""
                result = server.handle(method, self.path, body)
            except RequestError as e:
                return self._json(e.status, _error(str(e)))
            except (GGUFError, ValueError) as e:     # ModelInputError, bad roles, prompt too long...
                return self._json(400, _error(str(e)))
            except Exception as e:  # noqa: BLE001 - a bug of ours: one line to the client, not a hang
                return self._json(500, _error(f"internal error: {type(e).__name__}: {e}", "server_error"))
            if isinstance(result, dict):
                return self._json(200, result)
            self._events(result)

        def do_GET(self):  # noqa: N802 - http.server's names
            self._serve("GET")

        def do_POST(self):  # noqa: N802
            self._serve("POST")

        def _json(self, status: int, doc: dict) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _events(self, chunks: Stream) -> None:
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for c in chunks:
                        self._event(c)
                except (BrokenPipeError, ConnectionResetError):
                    raise
                except Exception as e:  # noqa: BLE001 - headers are out: end the stream with the error
                    self._event(_error(f"generation failed: {type(e).__name__}: {e}", "server_error"))
                self.wfile.write(b"data: [DONE]\n\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                chunks.close()                      # the client left: stop generating

        def _event(self, doc: dict) -> None:
            self.wfile.write(f"data: {json.dumps(doc)}\n\n".encode())
            self.wfile.flush()

        def log_message(self, fmt, *args):          # one line per request on stderr
            if server.verbose:
                super().log_message(fmt, *args)

    return Handler


def _error(message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind}}


def serve(model, name: str, host: str = "127.0.0.1", port: int = 8080, verbose: bool = False,
          ready=None) -> None:
    """Serve `model` until interrupted. `ready(httpd)` is called once listening (tests, logs).
    Raises ModelInputError when the address cannot be bound."""
    server = Server(model, name, verbose)
    try:
        httpd = ThreadingHTTPServer((host, port), make_handler(server))
    except OSError as e:
        raise ModelInputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    httpd.daemon_threads = True
    if ready is not None:
        ready(httpd)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
