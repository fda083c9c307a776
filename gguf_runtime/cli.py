"""`gguf-runtime` command line: run | chat | inspect | convert | quantize | bench | serve.

Every expected failure (bad file, unknown architecture, prompt too long, bad flag) ends as one
line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .default_models import DEFAULT_MODELS
from .errors import GGUFError

MODEL_HELP = (f"GGUF file, or an embedded model name ({', '.join(DEFAULT_MODELS)}); "
              f"default: gemma3-270m")


def _add_load_flags(p: argparse.ArgumentParser) -> None:
    """MODEL and how to load it (run, chat, serve)."""
    p.add_argument("model", nargs="?", default=None, help=MODEL_HELP)
    p.add_argument("-c", "--ctx-size", type=int, default=None,
                   help="context length to allocate (default: min(model's, 4096))")
    p.add_argument("-t", "--threads", type=int, default=None)
    p.add_argument("--kv-type", choices=("f32", "f16"), default="f32",
                   help="KV cache element type (default f32; f16 halves the cache, as llama.cpp's default)")


def _add_generation_flags(p: argparse.ArgumentParser) -> None:
    _add_load_flags(p)
    p.add_argument("-n", "--max-tokens", type=int, default=64)
    p.add_argument("--temperature", "--temp", type=float, default=0.0,
                   help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="print timings at the end")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gguf-runtime",
                                     description="Run GGUF language models from disk.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="generate a continuation of a prompt")
    _add_generation_flags(p)
    p.add_argument("-p", "--prompt", default="The capital of France is")
    p.add_argument("--chat-format", action="store_true",
                   help="wrap the prompt as one user message with the model's chat template")

    p = sub.add_parser("chat", help="interactive chat with history")
    _add_generation_flags(p)
    p.add_argument("--system", default=None, help="system prompt")

    p = sub.add_parser("inspect", help="describe a GGUF file")
    p.add_argument("model", nargs="?", default=None, help=MODEL_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also the kernels this CPU would run and why (CPU flags, per row role)")

    p = sub.add_parser("bench", help="benchmark against llama.cpp on the same file")
    p.add_argument("model", nargs="?", default=None, help=MODEL_HELP)
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--profile", action="store_true",
                   help="also profile gguf-runtime's decode step: time in the native kernels vs outside")

    from . import convert as convert_cmd

    p = sub.add_parser("convert", help="Hugging Face folder -> GGUF (F32/F16/BF16/Q8_0)")
    convert_cmd.add_arguments(p)

    from . import requantize as quantize_cmd

    p = sub.add_parser("quantize", help="requantize an F32/F16/BF16 GGUF (Q4_K_M, Q6_K, ...)")
    quantize_cmd.add_arguments(p)

    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions)")
    _add_load_flags(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser


def cmd_inspect(args: argparse.Namespace) -> int:
    from .default_models import resolve_model
    from .describe import describe, format_description
    from .gguf_file import open_gguf

    t0 = time.perf_counter()
    gf = open_gguf(resolve_model(args.model))
    info = describe(gf)
    info["open_seconds"] = round(time.perf_counter() - t0, 4)
    if args.verbose:
        from quant.kernels import describe_choices
        info["kernels"] = describe_choices()
    text = format_description(info)
    print(json.dumps(info, indent=2) if args.json else
          text + (f"\nkernels: {info['kernels']}" if args.verbose else ""))
    return 0


def _load(args: argparse.Namespace):
    from .api import load

    t0 = time.perf_counter()
    if sys.stderr.isatty():
        print("loading model...", end="\r", file=sys.stderr, flush=True)
    model = load(args.model, n_ctx=args.ctx_size, threads=args.threads, kv_type=args.kv_type)
    if sys.stderr.isatty():
        print(" " * 20, end="\r", file=sys.stderr, flush=True)
    if args.verbose:
        from quant.kernels import describe_choices
        print(f"[loaded {model.path.name} ({model.architecture}) in "
              f"{time.perf_counter() - t0:.2f} s]", file=sys.stderr)
        print(f"[kernels: {describe_choices()}]", file=sys.stderr)
    return model


def _gen_kwargs(args: argparse.Namespace) -> dict:
    if args.max_tokens < 0:
        raise GGUFError(f"--max-tokens must be >= 0, got {args.max_tokens}")
    return dict(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                seed=args.seed, stop=args.stop, stream=True)


def _print_stream(pieces) -> None:
    for piece in pieces:
        print(piece, end="", flush=True)
    print()


def cmd_run(args: argparse.Namespace) -> int:
    model = _load(args)
    kwargs = _gen_kwargs(args)
    if args.chat_format:
        pieces = model.chat([{"role": "user", "content": args.prompt}], **kwargs)
    else:
        print(args.prompt, end="", flush=True)
        pieces = model.generate(args.prompt, **kwargs)
    _print_stream(pieces)
    if args.verbose:
        print(f"[{model.timings.summary()}]", file=sys.stderr)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    model = _load(args)
    kwargs = _gen_kwargs(args)
    history = [{"role": "system", "content": args.system}] if args.system else []
    print("chat with the model; an empty line or Ctrl-D ends it", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if not line.strip():
            break
        history.append({"role": "user", "content": line})
        reply = []
        for piece in model.chat(history, **kwargs):
            reply.append(piece)
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": "".join(reply)})
        if args.verbose:
            print(f"[{model.timings.summary()}]", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    if not 0 <= args.port <= 65535:
        raise GGUFError(f"--port must be in 0..65535, got {args.port}")
    model = _load(args)
    name = model.path.name

    def ready(httpd) -> None:
        host, port = httpd.server_address[:2]
        print(f"serving {name} on http://{host}:{port}/v1 (Ctrl-C stops)", file=sys.stderr, flush=True)

    serve(model, name, args.host, args.port, args.verbose, ready)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .bench import format_table, llama_cpp_available, run_bench, run_profile
    from .bench_floor import bandwidth_floor
    from .default_models import resolve_model
    from .gguf_file import open_gguf

    path = str(resolve_model(args.model))
    if min(args.threads, args.prompt_tokens, args.decode_tokens, args.repeats) <= 0:
        raise GGUFError("--threads, --prompt-tokens, --decode-tokens, --repeats must be > 0")
    if not llama_cpp_available():
        print("[llama-cpp-python not installed: benchmarking gguf-runtime alone]",
              file=sys.stderr)
    results = run_bench(path, args.threads, args.prompt_tokens, args.decode_tokens,
                        args.repeats)
    floor = bandwidth_floor(open_gguf(path), args.threads)
    print(format_table(path, args.threads, results, floor))
    if args.profile:
        print(run_profile(path, args.threads, args.prompt_tokens, 32))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": path, "threads": args.threads, "floor": asdict(floor)
                       | {"tok_per_s": floor.tok_per_s},
                       "results": [asdict(r) for r in results]}, f, indent=2)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from . import convert as convert_cmd
    return convert_cmd.run(args) or 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from . import requantize as quantize_cmd
    return quantize_cmd.run(args) or 0


COMMANDS = {"inspect": cmd_inspect, "run": cmd_run, "chat": cmd_chat, "bench": cmd_bench,
            "convert": cmd_convert, "quantize": cmd_quantize, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except GGUFError as e:
        print(f"gguf-runtime: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
