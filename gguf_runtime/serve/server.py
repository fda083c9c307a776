"""`gguf-runtime serve`: an OpenAI-compatible HTTP server for one model, as llama.cpp's
llama-server: many clients at once through continuous batching (engine.py).

    GET  /health                -> {"status": "ok", "slots_busy", "queue"}
    GET  /v1/models             -> the one model
    GET  /metrics               -> Prometheus text: requests, tokens, queue, batch, prefix cache
    POST /v1/completions        {"prompt": str | [ids], ...}          -> text_completion
    POST /v1/chat/completions   {"messages": [{role, content}], ...}  -> chat.completion
    POST /v1/embeddings         {"input": str | [str] | [ids]}        -> list of embeddings

Fields: see openai_api.py (max_tokens defaults to and is capped by --max-tokens; n up to the
slots; logprobs / top_logprobs; stream with server-sent events). Errors are JSON
{"error": {"message": one line, "type"}} for every method and path: 400 bad field, 404 unknown
path or model, 405 wrong method, 413 body over 1 MiB, 503 + Retry-After when the queue is full.
A client that disconnects (streaming or not) frees its slot at the next step. SIGINT / SIGTERM
stop accepting, end the running requests and return (exit 0).

The standard library's ThreadingHTTPServer, not an ASGI stack: one thread per connection that
waits on its request's event queue is all the concurrency the HTTP side needs (the model runs
on the engine's one thread), disconnects show as a closed socket, and shutdown is
`httpd.shutdown()`; a framework would add two dependencies for the same.
"""

from __future__ import annotations

import base64
import json
import queue
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..errors import GGUFError, ModelInputError
from .engine import Engine, Event, QueueFull
from .openai_api import (RequestError, Reply, Settings, chat_messages, chat_top_logprobs, check_model,
                         check_unsupported, completion_top_logprobs, head, parse_json, prompt_ids,
                         requests_for, usage)

MAX_BODY = 1 << 20
POLL_S = 0.25               # how often a waiting handler looks whether its client is still there


class Server:
    """Routes: `handle(method, path, body, gone)` -> (status, payload); payload is a dict (JSON),
    a str (text) or an iterator of dicts (an event stream). `gone()` tells whether the client
    has left (checked while a reply is being computed)."""

    def __init__(self, model, engine: Engine, settings: Settings, verbose: bool = False):
        self.model, self.engine, self.s, self.verbose = model, engine, settings, verbose
        self.routes = {"/health": ("GET", self._health), "/v1/models": ("GET", self._models),
                       "/metrics": ("GET", self._metrics),
                       "/v1/completions": ("POST", self._completions),
                       "/v1/chat/completions": ("POST", self._chat),
                       "/v1/embeddings": ("POST", self._embeddings)}

    def handle(self, method: str, path: str, body: bytes, gone=lambda: False):
        path = path.split("?", 1)[0].rstrip("/") or "/"
        if path not in self.routes:
            raise RequestError(404, f"no endpoint {path}; endpoints: {', '.join(self.routes)}")
        want, fn = self.routes[path]
        if method != want:
            raise RequestError(405, f"{path} takes {want}, got {method}", {"Allow": want})
        return fn(parse_json(body) if want == "POST" else {}, gone)

    # ------------------------------------------------------------------ GET
    def _health(self, _, __):
        return {"status": "ok", "slots_busy": self.engine.busy_slots(), "queue": self.engine.queue_depth()}

    def _models(self, _, __):
        return {"object": "list", "data": [{"id": self.s.name, "object": "model", "owned_by": "gguf-runtime",
                                            "architecture": self.model.architecture,
                                            "n_ctx": self.model.n_ctx}]}

    def _metrics(self, _, __) -> str:
        m, e = self.engine.metrics, self.engine
        rate = m.decode_rows / m.decode_seconds if m.decode_seconds else 0.0
        rows = [("requests_total", "counter", m.requests, "requests accepted"),
                ("requests_running", "gauge", e.busy_slots(), "requests in a slot"),
                ("queue_depth", "gauge", e.queue_depth(), "requests waiting for a slot"),
                ("slots", "gauge", len(e.slots), "sequences decoded together at most"),
                ("prompt_tokens_total", "counter", m.prompt_tokens, "prompt tokens of admitted requests"),
                ("prefilled_tokens_total", "counter", m.prefilled_tokens, "prompt tokens computed"),
                ("generated_tokens_total", "counter", m.generated_tokens, "tokens generated"),
                ("prefix_cache_hits_total", "counter", m.prefix_hits, "requests that reused a cached prefix"),
                ("prefix_cache_tokens_saved_total", "counter", m.prefix_tokens_saved, "prompt tokens not recomputed"),
                ("decode_steps_total", "counter", m.decode_steps, "batched decode steps"),
                ("batch_size", "gauge", m.last_batch, "sequences in the last decode step"),
                ("decode_tokens_per_second", "gauge", round(rate, 3), "tokens per second of decode-step time"),
                ("prefill_seconds_total", "counter", round(m.prefill_seconds, 6), "time in prefill chunks")]
        out = []
        for name, kind, value, text in rows:
            out += [f"# HELP gguf_runtime_{name} {text}", f"# TYPE gguf_runtime_{name} {kind}",
                    f"gguf_runtime_{name} {value}"]
        out += ["# HELP gguf_runtime_requests_finished_total requests ended, by reason",
                "# TYPE gguf_runtime_requests_finished_total counter"]
        out += [f'gguf_runtime_requests_finished_total{{reason="{r}"}} {n}' for r, n in sorted(m.finished.items())]
        return "\n".join(out) + "\n"

    # ------------------------------------------------------------------ POST
    def _completions(self, body: dict, gone):
        check_model(body, self.s)
        check_unsupported(body)
        top = completion_top_logprobs(body)
        ids = prompt_ids(body, self.model)
        return self._generate(body, ids, top, chat=False, gone=gone)

    def _chat(self, body: dict, gone):
        check_model(body, self.s)
        check_unsupported(body)
        top = chat_top_logprobs(body)
        prompt, add_bos = self.model.chat_prompt(chat_messages(body))
        return self._generate(body, self.model.tokenize(prompt, add_bos=add_bos), top, chat=True, gone=gone)

    def _embeddings(self, body: dict, gone):
        check_model(body, self.s)
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and all(isinstance(t, int) for t in inputs)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(
                isinstance(x, str) or (isinstance(x, list) and x and all(isinstance(t, int) for t in x)) for x in inputs):
            raise RequestError(400, "input must be a string, a list of strings, or token id lists")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise RequestError(400, f"encoding_format must be \"float\" or \"base64\", got {json.dumps(fmt)}")
        ids = [self.model.tokenize(x) if isinstance(x, str) else x for x in inputs]
        vectors = [self.engine.run_exclusive(lambda i=i: self.model.embedding(i)) for i in ids]
        # base64: the little-endian float32 bytes (what the openai client asks for by default)
        vectors = [v.tolist() if fmt == "float" else base64.b64encode(v.numpy().astype("<f4").tobytes()).decode()
                   for v in vectors]
        n = sum(len(i) for i in ids)
        return {"object": "list", "model": self.s.name, "usage": {"prompt_tokens": n, "total_tokens": n},
                "data": [{"object": "embedding", "index": k, "embedding": v} for k, v in enumerate(vectors)]}

    def _generate(self, body: dict, ids: list[int], top: int, chat: bool, gone):
        reqs = requests_for(body, ids, self.model, self.s, max(top, 0))
        submitted = []
        try:
            for r in reqs:
                submitted.append(self.engine.submit(r))
        except QueueFull as e:
            for r in submitted:
                r.cancelled.set()
            raise RequestError(503, f"server busy: {e}; retry later", {"Retry-After": "1"}) from None
        replies = [Reply(self.model, chat, top, i) for i in range(len(reqs))]
        h = head(self.s, chat)
        if body.get("stream"):
            return Stream(self._chunks(h, chat, reqs, replies, gone), reqs)
        for i, e in _events(reqs, gone):
            _raise_for(e)
            replies[i].add(e)
        return h | {"object": "chat.completion" if chat else "text_completion",
                    "choices": [r.choice() for r in replies], "usage": usage(replies)}

    def _chunks(self, h: dict, chat: bool, reqs, replies, gone):
        kind = "chat.completion.chunk" if chat else "text_completion"
        started = set()
        for i, e in _events(reqs, gone):
            _raise_for(e)
            replies[i].add(e)
            if e.text or e.tokens or e.finish is not None or (chat and i not in started):
                doc = h | {"object": kind, "choices": [replies[i].chunk_choice(e, first=i not in started)]}
                started.add(i)
                if e.finish is not None and all(r.finish for r in replies):
                    doc["usage"] = usage(replies)
                yield doc


def _raise_for(e: Event) -> None:
    if e.finish == "cancelled":
        raise RequestError(503, f"request cancelled: {e.error or 'the client left'}")
    if e.finish == "error":
        raise RequestError(500, f"generation failed: {e.error}")


def _events(reqs, gone):
    """(choice index, event) as they come, until every request has finished; cancels all of
    them when the client leaves (looked at every POLL_S) or the consumer stops early."""
    live = dict(enumerate(reqs))
    look = time.monotonic() + POLL_S
    try:
        while live:
            for i, r in list(live.items()):
                try:
                    e = r.events.get(timeout=POLL_S if len(live) == 1 else 0.01)
                except queue.Empty:
                    continue
                if e.finish is not None:
                    del live[i]
                yield i, e
            if time.monotonic() > look:
                if gone():
                    return
                look = time.monotonic() + POLL_S
    finally:
        for r in reqs:
            r.cancelled.set()          # no-op for finished ones: the slot is already free


class Stream:
    """An event stream's documents; `close()` cancels its requests (the client left)."""

    def __init__(self, docs, reqs):
        self.docs, self.reqs = docs, reqs

    def __iter__(self):
        return self.docs

    def close(self) -> None:
        self.docs.close()
        for r in self.reqs:
            r.cancelled.set()


def make_handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _gone(self) -> bool:
            """Whether the client closed its end (readable with no data: EOF)."""
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
            except (OSError, ValueError):
                return True

        def _serve(self, method: str) -> None:
            try:
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    raise RequestError(400, "Content-Length must be an integer") from None
                if length > MAX_BODY:
                    raise RequestError(413, f"body of {length} bytes is over the {MAX_BODY}-byte limit")
                body = self.rfile.read(length) if length > 0 else b""
                result = server.handle(method, self.path, body, self._gone)
            except RequestError as e:
                return self._send(e.status, _error(str(e), _kind(e.status)), e.headers)
            except (GGUFError, ValueError) as e:     # ModelInputError, bad roles, prompt too long...
                return self._send(400, _error(str(e)))
            except (BrokenPipeError, ConnectionResetError):
                return None
            except Exception as e:  # noqa: BLE001 - a bug of ours: one line to the client, not a hang
                return self._send(500, _error(f"internal error: {type(e).__name__}: {e}", "server_error"))
            if isinstance(result, Stream):
                return self._events(result)
            self._send(200, result)

        def send_error(self, code, message=None, explain=None):
            """http.server's own errors (bad request line, unsupported method) as JSON too."""
            try:
                self._send(code, _error(f"{code} {message or self.responses.get(code, ('',))[0]}", _kind(code)))
            except OSError:
                pass

        def _send(self, status: int, doc, headers: dict | None = None) -> None:
            text = isinstance(doc, str)
            data = (doc if text else json.dumps(doc)).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _events(self, chunks: Stream) -> None:
            try:
                it = iter(chunks)
                first = next(it, None)             # a full queue or bad field: still a JSON error
            except RequestError as e:
                chunks.close()
                return self._send(e.status, _error(str(e), _kind(e.status)), e.headers)
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    if first is not None:
                        self._event(first)
                    for c in it:
                        self._event(c)
                except (BrokenPipeError, ConnectionResetError):
                    raise
                except Exception as e:  # noqa: BLE001 - headers are out: end the stream with the error
                    self._event(_error(str(e) if isinstance(e, RequestError) else
                                       f"generation failed: {type(e).__name__}: {e}", "server_error"))
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                chunks.close()                      # the client left: its slot is freed

        def _event(self, doc: dict) -> None:
            self.wfile.write(f"data: {json.dumps(doc)}\n\n".encode())
            self.wfile.flush()

        def log_message(self, fmt, *args):          # one line per request on stderr
            if server.verbose:
                super().log_message(fmt, *args)

    for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):   # JSON for every method
        setattr(Handler, f"do_{method}", lambda self, m=method: self._serve(m))
    return Handler


def _kind(status: int) -> str:
    return "server_error" if status >= 500 else "not_found_error" if status == 404 else "invalid_request_error"


def _error(message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind}}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A client that left is not an error; anything else is one line, not a traceback."""
        kind, value = sys.exc_info()[:2]
        if kind is not None and not issubclass(kind, (ConnectionError, TimeoutError)):
            print(f"gguf-runtime serve: {client_address[0]}: {kind.__name__}: {value}", file=sys.stderr)


def serve(model, name: str, host: str = "127.0.0.1", port: int = 8080, verbose: bool = False,
          ready=None, slots: int = 4, max_tokens: int = 512, timeout_s: float = 600.0,
          max_queue: int = 64) -> None:
    """Serve `model` until SIGINT / SIGTERM (or `httpd.shutdown()`). `ready(httpd)` is called
    once listening (tests, logs). The batching engine runs on the calling thread (see
    Engine.run: kernels are fastest from the main thread), the HTTP server on another.
    Raises ModelInputError when the address cannot be bound."""
    try:
        httpd = _HTTPServer((host, port), None)
    except OSError as e:
        raise ModelInputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    engine = Engine(model, slots, max_queue)
    settings = Settings(name, max_tokens, timeout_s, max_n=slots)
    httpd.RequestHandlerClass = make_handler(Server(model, engine, settings, verbose))

    def http_side():
        try:
            httpd.serve_forever(poll_interval=0.2)
        finally:
            engine.stop()                    # httpd.shutdown() from anywhere ends the engine too

    def on_signal(signum, frame):
        engine.stop()
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    http = threading.Thread(target=http_side, name="gguf-runtime-http", daemon=True)
    http.start()
    if ready is not None:
        ready(httpd)
    try:
        engine.run()
    finally:
        httpd.shutdown()
        http.join(30)
        httpd.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
