"""`gguf-runtime serve` on the real SmolLM2 model, in-process on an ephemeral port, driven with
urllib and with the official `openai` client: replies equal the Python API's, streams equal
whole replies, concurrent clients get exactly their sequential answers (continuous batching),
a shared prefix is not computed twice, clients that leave free their slots, limits hold, bad
requests get one-line JSON errors, and SIGINT during a request exits 0."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import gguf_runtime
from gguf_runtime.errors import ModelInputError
from gguf_runtime.serve.server import MAX_BODY, serve
from tests.realmodels import smollm2_path
from tests.test_cli import run_cli

pytestmark = pytest.mark.realmodel
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
PROMPTS = ["Once upon a time", "The capital of France is", "def fibonacci(n):", "My favourite colour is",
           "In 1492, Columbus", "The recipe needs two eggs and"]


@pytest.fixture(scope="module")
def model():
    return gguf_runtime.load(smollm2_path(), n_ctx=256)


def start(model, **kw):
    """(base url, httpd, thread) of a server on an ephemeral port."""
    started, box = threading.Event(), {}

    def ready(httpd):
        box["httpd"] = httpd
        started.set()

    thread = threading.Thread(target=serve, args=(model, "smol", "127.0.0.1", 0), kwargs={"ready": ready, **kw},
                              daemon=True)
    thread.start()
    assert started.wait(30)
    host, port = box["httpd"].server_address[:2]
    return f"http://{host}:{port}", box["httpd"], thread


@pytest.fixture(scope="module")
def server(model):
    url, httpd, thread = start(model)
    yield model, url, httpd
    httpd.shutdown()
    thread.join(30)


def request(url: str, body=None, method: str | None = None, raw: bytes | None = None):
    """(status, decoded JSON or the raw text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if r.headers["Content-Type"] == "application/json" else text
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def events(text: str) -> list:
    assert text.endswith("data: [DONE]\n\n")
    return [json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: {")]


def metrics(url: str) -> dict[str, float]:
    _, text = request(url + "/metrics")
    return {line.split(" ")[0].removeprefix("gguf_runtime_"): float(line.split(" ")[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def client(url: str):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)


def test_health_and_models(server):
    _, url, _ = server
    status, doc = request(url + "/health")
    assert status == 200 and doc["status"] == "ok"
    status, doc = request(url + "/v1/models")
    assert status == 200 and doc["data"][0]["id"] == "smol" and doc["data"][0]["architecture"] == "llama"


def test_completion_equals_the_api(server):
    model, url, _ = server
    want = model.generate("The capital of France is", max_tokens=8, temperature=0)
    status, doc = request(url + "/v1/completions", {"prompt": "The capital of France is", "max_tokens": 8,
                                                    "temperature": 0, "model": "smol"})
    assert status == 200 and doc["object"] == "text_completion"
    assert doc["choices"][0]["text"] == want and doc["choices"][0]["finish_reason"] == "length"
    assert doc["usage"]["completion_tokens"] == 8 and doc["usage"]["prompt_tokens"] > 0


def test_chat_equals_the_api_and_the_stream_equals_the_reply(server):
    model, url, _ = server
    want = "".join(model.chat(CHAT, max_tokens=16, temperature=0, stream=True))
    body = {"messages": CHAT, "max_tokens": 16, "temperature": 0}
    status, doc = request(url + "/v1/chat/completions", body)
    assert status == 200 and doc["choices"][0]["message"] == {"role": "assistant", "content": want}
    status, text = request(url + "/v1/chat/completions", body | {"stream": True})
    chunks = events(text)
    assert status == 200 and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == want
    assert chunks[-1]["choices"][0]["finish_reason"] == doc["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"] == doc["usage"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_completion_stream_with_a_stop_string(server):
    model, url, _ = server
    want = model.generate("The capital of France is", max_tokens=16, temperature=0, stop=".")
    status, text = request(url + "/v1/completions", {"prompt": "The capital of France is", "max_tokens": 16,
                                                     "temperature": 0, "stop": ".", "stream": True})
    chunks = events(text)
    assert status == 200 and "".join(c["choices"][0]["text"] for c in chunks) == want
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "." not in want


def test_the_openai_client_chat_logprobs_n_and_text_parts(server):
    model, url, _ = server
    c = client(url)
    want = "".join(model.chat(CHAT, max_tokens=12, temperature=0, stream=True))
    parts = [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}]
    r = c.chat.completions.create(model="smol", messages=parts, max_tokens=12, temperature=0,
                                  logprobs=True, top_logprobs=3, n=2)
    assert [ch.message.content for ch in r.choices] == [want, want]            # greedy: equal choices
    lp = r.choices[0].logprobs.content
    assert "".join(t.token for t in lp) == want and len(lp[0].top_logprobs) == 3
    assert all(t.top_logprobs[0].logprob >= t.logprob - 1e-6 for t in lp)     # greedy took the best
    assert lp[0].top_logprobs[0].token == lp[0].token
    stream = c.chat.completions.create(model="smol", messages=CHAT, max_tokens=12, temperature=0, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in stream) == want


def test_completion_logprobs_match_the_model(server):
    model, url, _ = server
    status, doc = request(url + "/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4,
                                                    "temperature": 0, "logprobs": 2})
    lp = doc["choices"][0]["logprobs"]
    done = model.generate("The capital of France is", max_tokens=4, temperature=0, details=True)
    assert status == 200 and np.allclose(lp["token_logprobs"], done.logprobs, atol=1e-5)
    assert "".join(lp["tokens"]) == done.text and len(lp["top_logprobs"][0]) == 2
    assert lp["text_offset"][0] == 0


def test_embeddings_float_and_base64(server):
    _, url, _ = server
    c = client(url)
    e = c.embeddings.create(model="smol", input=["The cat sat on the mat.", "Quarterly revenue grew 4%."])
    a, b = (np.array(d.embedding) for d in e.data)                     # the client asks for base64
    assert a.shape == (576,) and abs(np.linalg.norm(a) - 1) < 1e-5 and not np.allclose(a, b)
    status, doc = request(url + "/v1/embeddings", {"input": "The cat sat on the mat.", "encoding_format": "float"})
    assert status == 200 and np.allclose(doc["data"][0]["embedding"], a, atol=1e-6)
    raw = request(url + "/v1/embeddings", {"input": "The cat sat on the mat.", "encoding_format": "base64"})[1]
    assert np.allclose(np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), "<f4"), a, atol=1e-6)


def test_concurrent_clients_get_their_sequential_answers(server):
    """Six streaming clients at once on four slots: each stream equals the same request run
    alone (greedy), and the engine really decoded several sequences per step."""
    model, url, _ = server
    alone = {p: model.generate(p, max_tokens=24, temperature=0, details=True) for p in PROMPTS}
    before = metrics(url)

    def stream(prompt):
        _, text = request(url + "/v1/completions", {"prompt": prompt, "max_tokens": 24, "temperature": 0,
                                                    "stream": True})
        return "".join(c["choices"][0]["text"] for c in events(text))

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        got = dict(zip(PROMPTS, pool.map(stream, PROMPTS)))
    assert got == {p: done.text for p, done in alone.items()}
    after = metrics(url)
    steps = after["decode_steps_total"] - before["decode_steps_total"]
    tokens = sum(len(done.tokens) for done in alone.values())
    assert after["generated_tokens_total"] - before["generated_tokens_total"] == tokens
    assert steps < tokens - len(PROMPTS)       # fewer steps than decoded tokens: rows were batched


def test_a_shared_prefix_is_not_computed_again(server):
    model, url, _ = server
    system = "You are a helpful assistant who answers in one short sentence. " * 3
    msgs = lambda q: [{"role": "system", "content": system}, {"role": "user", "content": q}]   # noqa: E731
    first = request(url + "/v1/chat/completions", {"messages": msgs("Name a colour."), "max_tokens": 4,
                                                   "temperature": 0})[1]
    before = metrics(url)
    second = request(url + "/v1/chat/completions", {"messages": msgs("Name a fruit."), "max_tokens": 4,
                                                    "temperature": 0})[1]
    after = metrics(url)
    saved = after["prefix_cache_tokens_saved_total"] - before["prefix_cache_tokens_saved_total"]
    assert after["prefix_cache_hits_total"] == before["prefix_cache_hits_total"] + 1 and saved > 40
    computed = after["prefilled_tokens_total"] - before["prefilled_tokens_total"]
    assert computed + saved == second["usage"]["prompt_tokens"] and first["usage"]["prompt_tokens"] > saved
    want = "".join(model.chat(msgs("Name a fruit."), max_tokens=4, temperature=0, stream=True))
    assert second["choices"][0]["message"]["content"] == want


def test_a_client_leaving_frees_its_slot_streaming_or_not(server):
    _, url, _ = server
    before = metrics(url)
    host, port = url.split("//")[1].split(":")
    for stream in (True, False):
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 200, "temperature": 0,
                           "ignore_eos": True, "stream": stream}).encode()
        s = socket.create_connection((host, int(port)), timeout=30)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        if stream:
            assert s.recv(64).startswith(b"HTTP/1.1 200")
        s.close()                                            # leave
    for _ in range(600):                                     # both are ended at a step soon
        m = metrics(url)
        if m.get('requests_finished_total{reason="cancelled"}', 0) >= \
                before.get('requests_finished_total{reason="cancelled"}', 0) + 2:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the abandoned requests were not cancelled")
    assert m["generated_tokens_total"] - before["generated_tokens_total"] < 2 * 200
    assert m["requests_running"] == 0
    status, doc = request(url + "/v1/completions", {"prompt": "Hello", "max_tokens": 2, "temperature": 0})
    assert status == 200 and doc["usage"]["completion_tokens"] == 2


def test_limits_max_tokens_cap_queue_and_timeout(model):
    url, httpd, thread = start(model, slots=1, max_tokens=5, max_queue=0, timeout_s=600)
    try:
        status, doc = request(url + "/v1/completions", {"prompt": "Hi", "temperature": 0, "ignore_eos": True})
        assert status == 200 and doc["usage"]["completion_tokens"] == 5            # the default: the cap
        status, doc = request(url + "/v1/completions", {"prompt": "Hi", "max_tokens": 10**8, "ignore_eos": True})
        assert status == 200 and doc["usage"]["completion_tokens"] == 5            # capped
        conn = http.client.HTTPConnection(url.split("//")[1], timeout=60)          # takes the only slot
        conn.request("POST", "/v1/completions", json.dumps({"prompt": "Hi", "stream": True, "ignore_eos": True}))
        resp = conn.getresponse()
        assert resp.status == 200
        while metrics(url)["requests_running"] < 1:
            time.sleep(0.01)
        # the slot is busy and the queue holds 0: refused (or, if the stream ended already, answered)
        status, doc = request(url + "/v1/completions", {"prompt": "Hi", "max_tokens": 1})
        assert status in (503, 200)
        if status == 503:
            assert "retry later" in doc["error"]["message"]
        resp.read()
        conn.close()
    finally:
        httpd.shutdown()
        thread.join(30)
    url, httpd, thread = start(model, timeout_s=1e-3)
    try:
        status, doc = request(url + "/v1/completions", {"prompt": "Hi", "max_tokens": 50, "ignore_eos": True})
        assert status == 200 and doc["choices"][0]["finish_reason"] == "length"
        assert 1 <= doc["usage"]["completion_tokens"] < 50
    finally:
        httpd.shutdown()
        thread.join(30)


def test_503_carries_retry_after(model):
    url, httpd, thread = start(model, slots=1, max_queue=0)
    try:
        conn = http.client.HTTPConnection(url.split("//")[1], timeout=60)
        conn.request("POST", "/v1/completions", json.dumps({"prompt": "Hi", "stream": True, "max_tokens": 200,
                                                            "ignore_eos": True}))
        resp = conn.getresponse()
        while metrics(url)["requests_running"] < 1:
            time.sleep(0.01)
        second = http.client.HTTPConnection(url.split("//")[1], timeout=60)
        second.request("POST", "/v1/completions", json.dumps({"prompt": "Hi", "max_tokens": 1}))
        r = second.getresponse()
        assert r.status == 503 and r.getheader("Retry-After") == "1"
        assert json.loads(r.read())["error"]["type"] == "server_error"
        conn.close()
    finally:
        httpd.shutdown()
        thread.join(30)


@pytest.mark.parametrize("path, body, status, match", [
    ("/v1/completions", {"prompt": 5}, 400, "prompt must be a string"),
    ("/v1/completions", {"prompt": "hi", "temperature": "hot"}, 400, "temperature must be a number"),
    ("/v1/completions", {"prompt": "hi", "temperature": -1}, 400, "temperature must be >= 0"),
    ("/v1/completions", {"prompt": "hi", "n": 9}, 400, "n must be >= 1 and <= 4"),
    ("/v1/completions", {"prompt": "hi", "seed": 2**64}, 400, "seed must be >= 0"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 1.5}, 400, "max_tokens must be an integer"),
    ("/v1/completions", {"prompt": "hi", "top_p": 0}, 400, "top_p must be > 0"),
    ("/v1/completions", {"prompt": "hi", "logprobs": 50}, 400, "logprobs must be >= 0 and <= 20"),
    ("/v1/completions", {"prompt": "hi", "stop": [1]}, 400, "stop must be a string or a list of strings"),
    ("/v1/completions", {"prompt": "hi", "model": "gpt-4o"}, 404, 'this server serves "smol"'),
    ("/v1/completions", {"prompt": "word " * 300}, 400, "leaves no room in the context of 256"),
    ("/v1/completions", {"prompt": "word " * 300, "stream": True}, 400, "leaves no room in the context"),
    ("/v1/completions", {"prompt": [1, 99999999]}, 400, "outside the vocabulary"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages must be a non-empty list"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "wizard"),
    ("/v1/chat/completions", {"messages": CHAT, "response_format": {"type": "json_object"}}, 400,
     "response_format \"json_object\" is not supported"),
    ("/v1/chat/completions", {"messages": CHAT, "tools": [{"type": "function"}]}, 400, "tools"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "only text parts"),
    ("/v1/chat/completions", {"messages": CHAT, "logprobs": 3}, 400, "logprobs must be true or false"),
    ("/v1/chat/completions", {"messages": CHAT, "top_logprobs": 2}, 400, "top_logprobs needs logprobs"),
    ("/v1/embeddings", {"input": 5}, 400, "input must be a string"),
    ("/v1/nope", {}, 404, "no endpoint /v1/nope"),
])
def test_bad_requests_get_one_line_errors(server, path, body, status, match):
    _, url, _ = server
    got, doc = request(url + path, body)
    assert got == status and match in doc["error"]["message"] and "\n" not in doc["error"]["message"], doc


@pytest.mark.parametrize("raw, match", [(b'{"prompt": "hi", "max_tokens": Infinity}', "Infinity"),
                                        (b'{"prompt": "hi", "temperature": NaN}', "NaN"),
                                        (b"{not json", "not JSON"), (b"[1, 2]", "must be a JSON object")])
def test_non_finite_numbers_and_bad_json_are_400(server, raw, match):
    _, url, _ = server
    status, doc = request(url + "/v1/completions", raw=raw)
    assert status == 400 and match in doc["error"]["message"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_every_method_gets_a_json_error(server, method):
    _, url, _ = server
    status, doc = request(url + "/v1/completions", method=method, raw=b"" if method != "GET" else None)
    assert status == 405 and "takes POST" in doc["error"]["message"]
    status, doc = request(url + "/nowhere", method=method, raw=b"" if method != "GET" else None)
    assert status == 404 and "no endpoint" in doc["error"]["message"]


def test_oversized_body_and_a_bad_length(server):
    _, url, _ = server
    conn = http.client.HTTPConnection(url.split("//")[1], timeout=30)    # headers only: not read
    conn.putrequest("POST", "/v1/completions")
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and "limit" in json.loads(r.read())["error"]["message"]
    conn.close()
    conn = http.client.HTTPConnection(url.split("//")[1], timeout=30)
    conn.putrequest("POST", "/v1/completions")
    conn.putheader("Content-Length", "lots")
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 400 and "Content-Length" in json.loads(r.read())["error"]["message"]
    conn.close()
    assert request(url + "/health")[0] == 200             # and the server still answers


def test_a_bounded_load_with_random_disconnects(server):
    """40 requests from 8 threads, every third one abandoned: no 5xx, every slot free after."""
    _, url, _ = server
    host, port = url.split("//")[1].split(":")
    rng = np.random.default_rng(0)
    plan = [(PROMPTS[i % len(PROMPTS)], int(rng.integers(1, 12)), i % 3 == 0, bool(i % 2)) for i in range(40)]

    def one(job):
        prompt, n, leave, stream = job
        if leave:
            body = json.dumps({"prompt": prompt, "max_tokens": 50, "stream": stream}).encode()
            s = socket.create_connection((host, int(port)), timeout=60)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(body)).encode()
                      + b"\r\n\r\n" + body)
            s.close()
            return 200
        return request(url + "/v1/completions", {"prompt": prompt, "max_tokens": n, "stream": stream,
                                                 "temperature": 0.7, "seed": n})[0]

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, plan))
    assert statuses == [200] * len(plan)
    for _ in range(600):
        if metrics(url)["requests_running"] == 0 and metrics(url)["queue_depth"] == 0:
            break
        time.sleep(0.1)
    m = metrics(url)
    assert m["requests_running"] == 0 and m["queue_depth"] == 0


def test_a_taken_port_is_a_clear_error(server):
    model, _, httpd = server
    port = httpd.server_address[1]
    with pytest.raises(ModelInputError, match=f"cannot listen on 127.0.0.1:{port}"):
        serve(model, "smol", "127.0.0.1", port)


def test_cli_serve_bad_port():
    r = run_cli("serve", str(smollm2_path()), "--port", "70000")
    assert r.returncode == 2 and r.stderr.strip() == ("gguf-runtime serve: error: argument --port: must be in "
                                                      "0..65535, got 70000 (see gguf-runtime serve --help)")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_request_exits_cleanly(sig):
    proc = subprocess.Popen([sys.executable, "-m", "gguf_runtime", "serve", str(smollm2_path()), "--port", "0",
                             "-c", "512"], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/v1", line).group(1))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/completions", json.dumps({"prompt": "Once upon a time", "max_tokens": 400,
                                                            "ignore_eos": True, "stream": True}))
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read(32).startswith(b"data: {")     # it is generating
        os.kill(proc.pid, sig)
        assert proc.wait(60) == 0
        rest = proc.stderr.read()
        assert "Traceback" not in rest and "terminate called" not in rest and "stopped" in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
