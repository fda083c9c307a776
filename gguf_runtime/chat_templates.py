"""Built-in chat templates, for files without `tokenizer.chat_template` (and `--chat-template NAME`).

The turn formats are llama.cpp's built-in ones of the same names (llm_chat_apply_template),
written here as Jinja so one renderer (chat.render_chat, bounded) serves them and the files'
own templates alike. A file without a template gets its family's format (Gemma's `gemma` for
gemma, gemma2, gemma3; `phi3` for phi3), else `chatml`, llama.cpp's fallback.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ModelInputError

# Gemma: no system role; a system message is put before the first user turn's text.
GEMMA = (
    "{% set ns = namespace(system='') %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.system = ns.system + m['content'] + '\\n\\n' %}"
    "{% else %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ ns.system + m['content'] }}<end_of_turn>\n{% set ns.system = '' %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")

BUILTIN = {
    "chatml": ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    "gemma": GEMMA,
    "llama3": ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
               "{{ m['content'] }}<|eot_id|>{% endfor %}"
               "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"),
    "phi3": ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"),
    "zephyr": ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
               "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"),
}
FAMILY_DEFAULT = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "phi3": "phi3"}


def default_template(architecture: str) -> tuple[str, str]:
    """(name, Jinja source) of the built-in template for a file of `architecture` without one."""
    name = FAMILY_DEFAULT.get(architecture, "chatml")
    return name, BUILTIN[name]


def resolve_template(name_or_file: str) -> str:
    """A built-in template's source by name, else the text of the file of that path.

    Raises ModelInputError naming the built-in names when it is neither."""
    if name_or_file in BUILTIN:
        return BUILTIN[name_or_file]
    path = Path(name_or_file)
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ModelInputError(f"--chat-template {name_or_file}: cannot read it ({e})") from None
    raise ModelInputError(f"--chat-template {name_or_file!r} is neither a file nor a built-in "
                          f"template; built-in: {', '.join(BUILTIN)}")
