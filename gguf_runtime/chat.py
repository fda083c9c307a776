"""Chat templates: `tokenizer.chat_template` rendered with jinja2 in a sandbox."""

from __future__ import annotations

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


def _raise(message: str):
    raise TemplateError(message)


def render_chat(template: str | None, messages: list[dict[str, str]], bos_token: str = "",
                eos_token: str = "", add_generation_prompt: bool = True) -> str:
    """The prompt text for `messages`, as the model's template writes it."""
    if not template:
        raise ModelInputError("this model has no chat template (tokenizer.chat_template); "
                              "pass chat_template=... or use plain generation")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=_raise,
                       strftime_now=lambda fmt: datetime.now().strftime(fmt))
    try:
        return env.from_string(template).render(
            messages=validate_messages(messages), bos_token=bos_token, eos_token=eos_token,
            add_generation_prompt=add_generation_prompt)
    except TemplateError as e:
        raise ModelInputError(f"chat template failed: {e}") from None
