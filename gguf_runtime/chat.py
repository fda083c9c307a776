"""Chat templates: `tokenizer.chat_template` rendered with jinja2 in a sandbox, bounded.

A template comes from the file, so it may be hostile. Jinja's sandbox stops attribute escapes;
on top of it a render is bounded in time (RENDER_SECONDS, checked on every line the compiled
template runs), in output (MAX_OUTPUT characters, checked as it is produced) and in what one
operation may build (a string or list repeat, a padded format, str.center / ljust / zfill ...,
filters center / indent / format: at most MAX_OUTPUT characters each; `range` is jinja's, at
most 100,000 items). Every failure, a recursion or a 1 // 0 included, is one ModelInputError.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ModelInputError

ROLES = ("system", "user", "assistant", "tool")


def validate_messages(messages: Any) -> list[dict[str, str]]:
    """A list of {"role": one of ROLES, "content": str}; anything else is a ModelInputError."""
    if not isinstance(messages, list) or not messages:
        raise ModelInputError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ModelInputError(f"message {i} must be a dict with a string 'content'")
        if m.get("role") not in ROLES:
            raise ModelInputError(f"message {i} has role {m.get('role')!r}; "
                                  f"supported: {', '.join(ROLES)}")
    return messages


RENDER_SECONDS = 2.0
MAX_OUTPUT = 1 << 20                  # characters of rendered prompt
_PADDING = re.compile(r"\{[^{}]*:[^{}]*?(\d+)[^{}]*\}|%[-+ #0]*(\d+)")
_SIZED_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}


class TemplateLimit(TemplateError):
    """A render went past one of the bounds above."""


def _raise(message: str):
    raise TemplateError(message)


def _check_size(n: int, what: str) -> None:
    if n > MAX_OUTPUT:
        raise TemplateLimit(f"{what} would make {n} characters (at most {MAX_OUTPUT})")


def _check_padding(fmt: str) -> None:
    for m in _PADDING.finditer(fmt):
        _check_size(int(m.group(1) or m.group(2)), "a padded format")


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    _check_size(len(seq) * n, "a repeat")
        elif isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 4096:
            raise TemplateLimit(f"{left} ** {right} is too large")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        if getattr(__obj, "__name__", "") in _SIZED_METHODS and isinstance(getattr(__obj, "__self__", None), str):
            _check_size(max([a for a in args if isinstance(a, int)] or [0]), f"str.{__obj.__name__}")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_padding(value.__self__)
            return wrapped(*args, **kwargs)
        return checked


def _environment() -> _BoundedSandbox:
    env = _BoundedSandbox(trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=_raise, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    env.globals.pop("lipsum", None)
    center, indent, fmt = env.filters["center"], env.filters["indent"], env.filters["format"]

    def checked_center(value, width=80):
        _check_size(int(width), "center")
        return center(value, width)

    def checked_indent(s, width=4, *args, **kwargs):
        _check_size(len(str(s)) * (int(width) if isinstance(width, int) else len(str(width))), "indent")
        return indent(s, width, *args, **kwargs)

    def checked_format(value, *args, **kwargs):
        _check_padding(str(value))
        return fmt(value, *args, **kwargs)

    env.filters.update(center=checked_center, indent=checked_indent, format=checked_format)
    return env


def _bounded_render(template, variables: dict) -> str:
    """template.generate(variables) joined, within RENDER_SECONDS and MAX_OUTPUT."""
    deadline = time.monotonic() + RENDER_SECONDS

    def on_line(frame, event, arg):
        if time.monotonic() > deadline:
            raise TemplateLimit(f"rendering took more than {RENDER_SECONDS} s")
        return on_line

    def on_call(frame, event, arg):             # trace only the compiled template's frames
        return on_line if frame.f_code.co_filename == "<template>" else None

    before = sys.gettrace()
    sys.settrace(on_call)
    try:
        out, size = [], 0
        for piece in template.generate(**variables):
            size += len(piece)
            _check_size(size, "the rendered prompt")
            out.append(piece)
        return "".join(out)
    finally:
        sys.settrace(before)


def render_chat(template: str | None, messages: list[dict[str, str]], bos_token: str = "",
                eos_token: str = "", add_generation_prompt: bool = True) -> str:
    """The prompt text for `messages`, as the model's template writes it."""
    if not template:
        raise ModelInputError("this model has no chat template (tokenizer.chat_template); "
                              "pass chat_template=... or use plain generation")
    try:
        compiled = _environment().from_string(template)
        return _bounded_render(compiled, dict(
            messages=validate_messages(messages), bos_token=bos_token, eos_token=eos_token,
            add_generation_prompt=add_generation_prompt))
    except ModelInputError:
        raise
    except (TemplateError, RecursionError, MemoryError, ArithmeticError, TypeError, ValueError,
            LookupError, AttributeError, RuntimeError) as e:
        raise ModelInputError(f"chat template failed: {type(e).__name__}: {e}") from None
