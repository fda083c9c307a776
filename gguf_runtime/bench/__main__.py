"""`python -m gguf_runtime.bench --worker ENGINE PATH THREADS N_PROMPT N_DECODE`: one engine's
run in its own process, its result as one JSON line (what `run_bench` starts per engine)."""

import sys

from . import _worker_main

if len(sys.argv) > 1 and sys.argv[1] == "--worker":
    _worker_main(sys.argv[2:])
else:
    sys.exit("usage: python -m gguf_runtime.bench --worker ENGINE PATH THREADS N_PROMPT N_DECODE "
             "(use `gguf-runtime bench` to benchmark)")
