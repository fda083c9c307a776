"""`gguf-runtime` command line: run | chat | inspect | convert | quantize | bench | serve.

Every expected failure (bad file, unknown architecture, prompt too long, bad flag) ends as one
line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import math

from .default_models import DEFAULT_MODELS
from .errors import GGUFError

MODEL_HELP = (f"GGUF file, or an embedded model name ({', '.join(DEFAULT_MODELS)}); "
              f"default: gemma3-270m")
MAX_CTX_FLAG = 1 << 24


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: "gguf-runtime run: error: argument -t/--threads: ..."."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _int_in(lo: int, hi: int | None = None):
    """argparse type: an integer in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {'>= ' + str(lo) if hi is None else f'in {lo}..{hi}'}"
                                             f", got {value}")
        return value
    return parse


def _float_in(lo: float, hi: float = math.inf, lo_open: bool = False):
    """argparse type: a finite number in [lo, hi] ((lo, hi] with lo_open)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < lo or value > hi or (lo_open and value == lo):
            low = f"> {lo}" if lo_open else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be a finite number {low}"
                                             + (f" and <= {hi}" if hi != math.inf else "") + f", got {text}")
        return value
    return parse


def _size(text: str) -> int:
    from .memory import MemoryBudgetError, parse_size
    try:
        return parse_size(text)
    except MemoryBudgetError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


MEM_BUDGET_HELP = ("plan the model's memory within SIZE (e.g. 1.5G, 800M, auto): refused if what every token "
                   "reads does not fit; streaming experts' pages advised (gguf_runtime/memory.py)")


def _add_load_flags(p: argparse.ArgumentParser) -> None:
    """MODEL and how to load it (run, chat, serve)."""
    p.add_argument("model", nargs="?", default=None, help=MODEL_HELP)
    p.add_argument("-c", "--ctx-size", type=_int_in(1, MAX_CTX_FLAG), default=None, metavar="N",
                   help="context length in tokens to allocate (default: min(model's, 4096); at most the model's)")
    p.add_argument("-t", "--threads", type=_int_in(1, 1024), default=None, metavar="N",
                   help="CPU threads for the kernels (default: torch's, one per core)")
    p.add_argument("--kv-type", choices=("f32", "f16"), default="f32",
                   help="KV cache element type; f16 halves the cache, as llama.cpp's default")
    p.add_argument("--mem-budget", type=_size, default=None, metavar="SIZE", help=MEM_BUDGET_HELP)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print the kernels chosen at load and timings after each answer")


def _add_generation_flags(p: argparse.ArgumentParser) -> None:
    _add_load_flags(p)
    p.add_argument("-n", "--max-tokens", type=_int_in(0), default=64, metavar="N",
                   help="tokens to generate at most")
    p.add_argument("--temperature", "--temp", type=_float_in(0.0), default=0.0, metavar="T",
                   help="sampling temperature; 0 = greedy (the CLI's default; the server's is 0.8, as llama-server)")
    p.add_argument("--top-k", type=_int_in(0), default=40, metavar="K", help="keep the K most likely tokens (0: all)")
    p.add_argument("--top-p", type=_float_in(0.0, 1.0, lo_open=True), default=0.95, metavar="P",
                   help="nucleus sampling: keep the smallest set of probability >= P (1: off)")
    p.add_argument("--min-p", type=_float_in(0.0, 1.0), default=0.05, metavar="P",
                   help="drop tokens below P times the top token's probability (0: off)")
    p.add_argument("--repeat-penalty", type=_float_in(0.0, lo_open=True), default=1.0, metavar="X",
                   help="divide the logits of recent tokens by X (1: off)")
    p.add_argument("--seed", type=_int_in(0, (1 << 63) - 1), default=None, metavar="N",
                   help="sampling seed (default: random)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true",
                   help="go on past end-of-generation tokens until -n tokens (as llama.cpp)")
    p.add_argument("--chat-template", default=None, metavar="FILE|NAME",
                   help="Jinja chat template file, or a built-in one (chatml, gemma, llama3, phi3, zephyr); "
                        "default: the file's, else its family's built-in")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gguf-runtime", description="Run GGUF language models from disk.",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from . import __version__
    parser.add_argument("--version", action="version", version=f"gguf-runtime {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=lambda **kw: _Parser(
                                    formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kw))

    p = sub.add_parser("run", help="generate a continuation of a prompt")
    _add_generation_flags(p)
    p.add_argument("-p", "--prompt", default="The capital of France is",
                   help="the prompt text; - reads it from standard input")
    p.add_argument("-f", "--file", default=None, metavar="FILE", help="read the prompt from FILE")
    p.add_argument("--no-echo", action="store_true", help="do not print the prompt before the continuation")
    p.add_argument("--chat-format", action="store_true",
                   help="wrap the prompt as one user message with the chat template (see --chat-template)")

    p = sub.add_parser("chat", help="interactive chat with history")
    _add_generation_flags(p)
    p.add_argument("--system", default=None, help="system prompt (change it in the chat with /system TEXT)")

    p = sub.add_parser("inspect", help="describe a GGUF file")
    p.add_argument("model", nargs="?", default=None, help=MODEL_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also the kernels this CPU would run and why (CPU flags, per row role)")
    p.add_argument("--mem-budget", type=_size, default=None, metavar="SIZE",
                   help="also the memory plan within SIZE: what stays resident, what streams (with -c N)")
    p.add_argument("-c", "--ctx-size", type=_int_in(1, MAX_CTX_FLAG), default=None, metavar="N",
                   help="context for the --mem-budget plan's KV cache (default: min(model's, 4096))")

    p = sub.add_parser("bench", help="benchmark against llama.cpp on the same file")
    p.add_argument("model", nargs="?", default=None, help=MODEL_HELP)
    p.add_argument("-t", "--threads", type=_int_in(1, 1024), default=2, help="threads for both engines")
    p.add_argument("--prompt-tokens", type=_int_in(1), default=512, help="prompt length for the prefill")
    p.add_argument("--decode-tokens", type=_int_in(1), default=128, help="greedy decode steps")
    p.add_argument("--repeats", type=_int_in(1), default=1, help="alternating runs per engine; the best is kept")
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
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=_int_in(0, 65535), default=8080, help="port to listen on (0: any free one)")
    p.add_argument("-np", "--parallel", type=_int_in(1, 16), default=4, metavar="N",
                   help="sequences decoded together (slots, each a KV cache of -c tokens)")
    p.add_argument("-n", "--max-tokens", type=_int_in(1), default=512, metavar="N",
                   help="a request's max_tokens when it sends none, and its cap")
    p.add_argument("--timeout", type=_float_in(0.0, lo_open=True), default=600.0, metavar="S",
                   help="a request's time limit in seconds from its arrival (then it ends with what it has)")
    p.add_argument("--queue", type=_int_in(0), default=64, metavar="N",
                   help="requests that may wait for a slot; more get HTTP 503 with Retry-After")
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
    if args.mem_budget is not None:
        from .api import load
        plan = load(gf.path, n_ctx=args.ctx_size, memory_budget=args.mem_budget).memory_plan
        info["memory_plan"] = plan.lines()
    text = format_description(info)
    print(json.dumps(info, indent=2) if args.json else
          text + (f"\nkernels: {info['kernels']}" if args.verbose else "")
          + ("\n" + "\n".join(info["memory_plan"]) if "memory_plan" in info else ""))
    return 0


def _load(args: argparse.Namespace):
    from .api import load

    t0 = time.perf_counter()
    if sys.stderr.isatty():
        print("loading model...", end="\r", file=sys.stderr, flush=True)
    model = load(args.model, n_ctx=args.ctx_size, threads=args.threads, kv_type=args.kv_type,
                 memory_budget=args.mem_budget)
    if sys.stderr.isatty():
        print(" " * 20, end="\r", file=sys.stderr, flush=True)
    if args.ctx_size is not None and args.ctx_size > model.config.context_length:
        raise GGUFError(f"-c {args.ctx_size} exceeds the model's context length "
                        f"({model.config.context_length} tokens)")
    if args.verbose:
        from quant.kernels import describe_choices
        print(f"[loaded {model.path.name} ({model.architecture}) in "
              f"{time.perf_counter() - t0:.2f} s]", file=sys.stderr)
        print(f"[kernels: {describe_choices()}]", file=sys.stderr)
    return model


def _gen_kwargs(args: argparse.Namespace) -> dict:
    return dict(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                seed=args.seed, stop=args.stop, stream=True, ignore_eos=args.ignore_eos)


def _template(args: argparse.Namespace) -> str | None:
    """--chat-template as Jinja source or a built-in name, checked before the model loads."""
    if args.chat_template is None:
        return None
    from .chat_templates import resolve_template
    return resolve_template(args.chat_template)


def _prompt_text(args: argparse.Namespace) -> str:
    if args.file is not None:
        try:
            with open(args.file, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise GGUFError(f"-f {args.file}: cannot read the prompt ({e.strerror if isinstance(e, OSError) else e})") from None
    return sys.stdin.read() if args.prompt == "-" else args.prompt


def cmd_run(args: argparse.Namespace) -> int:
    prompt, template = _prompt_text(args), _template(args)
    model = _load(args)
    kwargs = _gen_kwargs(args)
    if args.chat_format:
        pieces = model.chat([{"role": "user", "content": prompt}], chat_template=template, **kwargs)
    else:
        pieces = model.generate(prompt, **kwargs)        # tokenized and checked before the echo
        if not args.no_echo:
            print(prompt, end="", flush=True)
    try:
        for piece in pieces:
            print(piece, end="", flush=True)
    finally:
        print()
    t = model.timings
    print(f"[{t.summary()}]" if args.verbose else f"[{t.generated_tokens} tokens, {t.decode_rate:.1f} tok/s]",
          file=sys.stderr)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat_repl import ChatSession, run_chat

    template = _template(args)
    model = _load(args)
    model.chat_prompt([{"role": "user", "content": "hi"}], template)    # the template renders
    return run_chat(ChatSession(model, _gen_kwargs(args), template, args.system))


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve.server import serve

    model = _load(args)       # --port is range-checked by its flag type
    name = model.path.name

    def ready(httpd) -> None:
        host, port = httpd.server_address[:2]
        print(f"serving {name} on http://{host}:{port}/v1 (Ctrl-C stops)", file=sys.stderr, flush=True)

    serve(model, name, args.host, args.port, args.verbose, ready, slots=args.parallel,
          max_tokens=args.max_tokens, timeout_s=args.timeout, max_queue=args.queue)
    print("stopped", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .bench import format_table, llama_cpp_available, run_bench, run_profile
    from .bench.floor import bandwidth_floor
    from .default_models import resolve_model
    from .gguf_file import open_gguf

    path = str(resolve_model(args.model))
    gf = open_gguf(path)       # a bad file is reported here, once, not by each engine
    if not llama_cpp_available():
        print("[llama-cpp-python not installed: benchmarking gguf-runtime alone]",
              file=sys.stderr)
    results = run_bench(path, args.threads, args.prompt_tokens, args.decode_tokens,
                        args.repeats)
    floor = bandwidth_floor(gf, args.threads)
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
