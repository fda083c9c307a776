"""`gguf-runtime serve`: the OpenAI-compatible endpoints on the real SmolLM2 model, in-process on
an ephemeral port; replies equal the Python API's, streams equal whole replies, bad requests
get one-line JSON errors."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.error
import urllib.request

import pytest

import gguf_runtime
from gguf_runtime.errors import ModelInputError
from gguf_runtime.server import MAX_BODY, serve
from tests.realmodels import smollm2_path
from tests.test_cli import run_cli

pytestmark = pytest.mark.realmodel
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server():
    model = gguf_runtime.load(smollm2_path(), n_ctx=128)
    started = threading.Event()
    box = {}

    def ready(httpd):
        box["httpd"] = httpd
        started.set()

    thread = threading.Thread(target=serve, args=(model, "smol", "127.0.0.1", 0), kwargs={"ready": ready},
                              daemon=True)
    thread.start()
    assert started.wait(30)
    host, port = box["httpd"].server_address[:2]
    yield model, f"http://{host}:{port}", box["httpd"]
    box["httpd"].shutdown()


def request(url: str, body=None, method: str | None = None, raw: bytes | None = None):
    """(status, decoded JSON or the raw event-stream text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if r.headers["Content-Type"] == "application/json" else text
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def events(text: str) -> list:
    assert text.endswith("data: [DONE]\n\n")
    return [json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: {")]


def test_health_and_models(server):
    _, url, _ = server
    assert request(url + "/health") == (200, {"status": "ok"})
    status, doc = request(url + "/v1/models")
    assert status == 200 and doc["data"][0]["id"] == "smol" and doc["data"][0]["architecture"] == "llama"


def test_completion_equals_the_api(server):
    model, url, _ = server
    want = model.generate("The capital of France is", max_tokens=8, temperature=0)
    status, doc = request(url + "/v1/completions", {"prompt": "The capital of France is", "max_tokens": 8,
                                                    "temperature": 0, "model": "ignored"})
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
    assert status == 200 and chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == want
    assert chunks[-1]["choices"][0]["finish_reason"] == doc["choices"][0]["finish_reason"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_completion_stream_with_a_stop_string(server):
    model, url, _ = server
    want = model.generate("The capital of France is", max_tokens=16, temperature=0, stop=".")
    status, text = request(url + "/v1/completions", {"prompt": "The capital of France is", "max_tokens": 16,
                                                     "temperature": 0, "stop": ".", "stream": True})
    chunks = events(text)
    assert status == 200 and "".join(c["choices"][0]["text"] for c in chunks) == want
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "." not in want


@pytest.mark.parametrize("path, body, status, match", [
    ("/v1/completions", {"prompt": 5}, 400, "prompt must be a string"),
    ("/v1/completions", {"prompt": "hi", "temperature": "hot"}, 400, "temperature must be a number"),
    ("/v1/completions", {"prompt": "hi", "temperature": -1}, 400, "temperature must be >= 0"),
    ("/v1/completions", {"prompt": "hi", "n": 2}, 400, "only n=1"),
    ("/v1/completions", {"prompt": "hi", "stop": [1]}, 400, "stop must be a string or a list of strings"),
    ("/v1/completions", {"prompt": "word " * 200}, 400, "longer than the context of 128"),
    ("/v1/completions", {"prompt": "word " * 200, "stream": True}, 400, "longer than the context of 128"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages must be a non-empty list"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "wizard"),
    ("/v1/nope", {}, 404, "no endpoint /v1/nope"),
])
def test_bad_requests_get_one_line_errors(server, path, body, status, match):
    _, url, _ = server
    got, doc = request(url + path, body)
    assert got == status and match in doc["error"]["message"] and "\n" not in doc["error"]["message"]


def test_bad_bodies_and_methods(server):
    _, url, _ = server
    assert request(url + "/v1/completions", raw=b"{not json")[0] == 400
    assert request(url + "/v1/completions", raw=b"[1, 2]")[1]["error"]["message"] == "the body must be a JSON object"
    assert request(url + "/v1/completions", method="GET")[0] == 405
    conn = http.client.HTTPConnection(url.split("//")[1], timeout=30)    # headers only: not read
    conn.putrequest("POST", "/v1/completions")
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and "limit" in json.loads(r.read())["error"]["message"]
    conn.close()
    assert request(url + "/health")[0] == 200             # and the server still answers


def test_a_client_leaving_mid_stream_frees_the_model(server):
    """The stream stops and releases the model: the next request is answered."""
    _, url, _ = server
    conn = http.client.HTTPConnection(url.split("//")[1], timeout=30)
    conn.request("POST", "/v1/completions", json.dumps({"prompt": "Once upon a time", "max_tokens": 100,
                                                         "temperature": 0, "stream": True}))
    r = conn.getresponse()
    assert r.status == 200 and r.read(64).startswith(b"data: {")
    conn.close()                                            # leave after the first bytes
    status, doc = request(url + "/v1/completions", {"prompt": "Hello", "max_tokens": 2, "temperature": 0})
    assert status == 200 and doc["usage"]["completion_tokens"] == 2


def test_a_taken_port_is_a_clear_error(server):
    model, _, httpd = server
    port = httpd.server_address[1]
    with pytest.raises(ModelInputError, match=f"cannot listen on 127.0.0.1:{port}"):
        serve(model, "smol", "127.0.0.1", port)


def test_cli_serve_bad_port():
    r = run_cli("serve", str(smollm2_path()), "--port", "70000")
    assert r.returncode == 2 and r.stderr.strip() == ("gguf-runtime serve: error: argument --port: must be in "
                                                      "0..65535, got 70000 (see gguf-runtime serve --help)")
