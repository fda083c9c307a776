"""Serve benchmark: N concurrent streaming clients against `gguf-runtime serve` (and, with
--llama-cpp, llama-cpp-python's server on the same file, which runs one request at a time).

Each client sends `--requests` completions in a row (a distinct prompt per client, greedy,
`--tokens` tokens, ignore_eos). Printed per client count: aggregate decode tok/s (all tokens /
wall time), time to first token p50 / p95, per-client tok/s (a stream's tokens after the first
/ its time after the first), 5xx count, server RSS before and after.

    python tools/bench_serve.py smollm2-135m --clients 1 4 8
    python tools/bench_serve.py smollm2-135m --load 500      # bounded load run, random disconnects
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = ["Once upon a time", "The capital of France is", "def fibonacci(n):", "My favourite colour is",
           "In 1492, Columbus", "The recipe needs two eggs and", "Dear Sir or Madam,", "The weather today"]


def start_ours(model: str, threads: int, slots: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "gguf_runtime", "serve", model, "--port", "0", "-t", str(threads),
                             "-np", str(slots), "-c", "1024", "--queue", "1000"], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    m = re.search(r":(\d+)/v1", line)
    if not m:
        proc.kill()
        raise SystemExit(f"serve did not start: {line}{proc.stderr.read()}")
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, int(m.group(1))


def start_llama_cpp(model: str, threads: int) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", model, "--port", str(port),
                             "--n_threads", str(threads), "--n_ctx", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/v1/models")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start")


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stream_once(port: int, prompt: str, tokens: int) -> dict:
    """One streaming completion: time to first token, stream times, token count, status."""
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/completions", json.dumps({"prompt": prompt, "max_tokens": tokens, "temperature": 0,
                                                     "ignore_eos": True, "stream": True}),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        return {"status": r.status}
    times = []
    for raw in r:
        line = raw.decode().strip()
        if line.startswith("data: {"):
            doc = json.loads(line[6:])
            if doc["choices"] and doc["choices"][0].get("text"):
                times.append(time.perf_counter())
    c.close()
    return {"status": 200, "ttft": times[0] - t0 if times else None, "first": times[0] if times else t0,
            "last": times[-1] if times else t0, "chunks": len(times)}


def run_clients(port: int, n: int, requests: int, tokens: int) -> dict:
    results: list[dict] = []
    lock = threading.Lock()

    def client(i):
        for _ in range(requests):
            res = stream_once(port, PROMPTS[i % len(PROMPTS)], tokens)
            with lock:
                results.append(res)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["status"] == 200 and r["ttft"] is not None]
    ttft = sorted(r["ttft"] for r in ok)
    per = [(r["chunks"] - 1) / (r["last"] - r["first"]) for r in ok if r["chunks"] > 1 and r["last"] > r["first"]]
    return {"clients": n, "aggregate": sum(r["chunks"] for r in ok) / wall,
            "ttft_p50": statistics.median(ttft), "ttft_p95": ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))],
            "per_client": statistics.mean(per) if per else 0.0,
            "errors_5xx": sum(r["status"] >= 500 for r in results)}


def load_run(port: int, total: int, workers: int = 8) -> dict:
    """`total` requests, a third of them abandoned mid-way: statuses counted."""
    statuses: list[int] = []
    lock = threading.Lock()
    rng = random.Random(0)
    plan = [(PROMPTS[i % len(PROMPTS)], rng.randint(1, 24), rng.random() < 0.33, rng.random() < 0.5)
            for i in range(total)]

    def worker(jobs):
        for prompt, n, leave, stream in jobs:
            body = json.dumps({"prompt": prompt, "max_tokens": n, "stream": stream, "temperature": 0.7})
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            if leave:
                c.sock.close()
                status = 0
            else:
                r = c.getresponse()
                r.read()
                status = r.status
            c.close()
            with lock:
                statuses.append(status)

    chunks = [plan[i::workers] for i in range(workers)]
    threads = [threading.Thread(target=worker, args=(ch,)) for ch in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"requests": total, "abandoned": statuses.count(0), "ok": statuses.count(200),
            "5xx": sum(s >= 500 for s in statuses), "other": sum(s not in (0, 200) and s < 500 for s in statuses)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="smollm2-135m")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-np", "--parallel", type=int, default=8)
    ap.add_argument("--load", type=int, default=0, help="also a bounded load run of this many requests")
    ap.add_argument("--llama-cpp", action="store_true", help="also llama-cpp-python's server on the same file")
    args = ap.parse_args()
    from gguf_runtime.default_models import resolve_model
    path = str(resolve_model(args.model))
    engines = [("gguf-runtime", lambda: start_ours(path, args.threads, args.parallel))]
    if args.llama_cpp:
        engines.append(("llama-cpp-python server", lambda: start_llama_cpp(path, args.threads)))
    print(f"{Path(path).name}, {args.threads} threads, {args.tokens} tokens x {args.requests} requests per client")
    print(f"{'server':24s} {'clients':>7s} {'aggregate tok/s':>15s} {'TTFT p50 s':>10s} {'TTFT p95 s':>10s} "
          f"{'per-client tok/s':>16s} {'5xx':>4s}")
    for name, start in engines:
        proc, port = start()
        try:
            stream_once(port, "Hello", 4)                                  # warm up
            rss0 = rss_mib(proc.pid)
            for n in args.clients:
                r = run_clients(port, n, args.requests, args.tokens)
                print(f"{name:24s} {n:7d} {r['aggregate']:15.1f} {r['ttft_p50']:10.2f} {r['ttft_p95']:10.2f} "
                      f"{r['per_client']:16.1f} {r['errors_5xx']:4d}", flush=True)
            if args.load and name == "gguf-runtime":
                r = load_run(port, args.load)
                time.sleep(1)
                print(f"load run: {r}; RSS {rss0:.0f} MiB before, {rss_mib(proc.pid):.0f} MiB after")
            print(f"{name}: RSS {rss0:.0f} MiB after warm-up, {rss_mib(proc.pid):.0f} MiB at the end")
        finally:
            proc.terminate()
            proc.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
