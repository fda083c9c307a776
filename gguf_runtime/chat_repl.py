"""`gguf-runtime chat`: an interactive chat that survives mistakes.

Line editing and history come from the standard library's readline (arrow keys, Up for the
last lines). Ctrl-C during an answer stops that answer and keeps the session and its history;
Ctrl-D, /exit or /quit ends it; an empty line is ignored. /clear forgets the history,
/system TEXT sets the system prompt, /help lists the commands. When the history no longer
fits the context with room for an answer, the oldest turns are dropped, and it says so. After
each answer a dim line on stderr gives its tokens and tok/s.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

from .errors import GGUFError

COMMANDS = ("/exit", "/quit", "/clear", "/system TEXT", "/help")


@dataclass
class ChatSession:
    model: object                                  # gguf_runtime.api.Model
    gen_kwargs: dict
    template: str | None = None                    # a Jinja source or built-in name; None: the model's
    system: str | None = None
    turns: list[dict] = field(default_factory=list)   # user / assistant messages, oldest first

    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def fit_context(self) -> int:
        """Drop the oldest turns until the prompt leaves room for an answer; turns dropped."""
        m, room = self.model, self.gen_kwargs.get("max_tokens", 64)
        dropped = 0
        while True:
            prompt, add_bos = m.chat_prompt(self.messages(), self.template)
            if len(m.tokenize(prompt, add_bos=add_bos)) + min(room, m.n_ctx // 2) <= m.n_ctx or len(self.turns) <= 1:
                return dropped
            del self.turns[:2 if len(self.turns) > 2 else 1]
            dropped += 1


def _dim(text: str) -> str:
    return f"\x1b[2m{text}\x1b[0m" if sys.stderr.isatty() else text


def _command(session: ChatSession, line: str) -> bool:
    """Run a /command; False when the session should end."""
    word, _, rest = line.partition(" ")
    if word in ("/exit", "/quit"):
        return False
    if word == "/clear":
        session.turns.clear()
        print(_dim("[history cleared]"), file=sys.stderr)
    elif word == "/system":
        session.system = rest.strip() or None
        print(_dim(f"[system prompt {'set' if session.system else 'removed'}]"), file=sys.stderr)
    else:
        print(_dim(f"[commands: {', '.join(COMMANDS)}; Ctrl-C stops an answer, Ctrl-D quits]"),
              file=sys.stderr)
    return True


@contextmanager
def _ctrl_c_sets_a_flag():
    """While an answer streams, Ctrl-C only sets a flag that the loop reads between two tokens.

    A KeyboardInterrupt raised wherever the interpreter happens to be (inside the model's
    cache update, a finalizer that swallows it) could leave a half-written cache or be lost;
    the flag stops the answer at a token boundary, always."""
    pressed = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def _answer(session: ChatSession) -> None:
    """Stream one answer to the last user turn; Ctrl-C stops it, an error drops the turn."""
    dropped = session.fit_context()
    if dropped:
        print(_dim(f"[dropped the {dropped} oldest turn(s) to fit the context of "
                   f"{session.model.n_ctx} tokens]"), file=sys.stderr)
    reply = []
    with _ctrl_c_sets_a_flag() as pressed:
        pieces = session.model.chat(session.messages(), chat_template=session.template,
                                    **session.gen_kwargs)
        try:
            for piece in pieces:
                reply.append(piece)
                print(piece, end="", flush=True)
                if pressed:
                    break
        except GGUFError as e:
            print(f"\n[error: {e}]", file=sys.stderr)
            session.turns.pop()
            return
        finally:
            pieces.close()
    stopped = bool(pressed)
    print()
    session.turns.append({"role": "assistant", "content": "".join(reply)})
    t = session.model.timings
    print(_dim(f"[{'stopped: ' if stopped else ''}{t.generated_tokens} tokens, {t.decode_rate:.1f} tok/s]"),
          file=sys.stderr)


def run_chat(session: ChatSession) -> int:
    """The read-answer loop until /exit or end of input."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    print(_dim("[chat: /exit or Ctrl-D quits, /clear forgets, /system TEXT, Ctrl-C stops an answer]"),
          file=sys.stderr)
    while True:
        try:
            if not _turn(session):
                return 0
        except KeyboardInterrupt:       # Ctrl-C at the prompt, or between two steps: a new prompt
            print()
            if session.turns and session.turns[-1]["role"] == "user":
                session.turns.pop()     # a question whose answer never started


def _turn(session: ChatSession) -> bool:
    """Read one line and act on it; False when the session should end."""
    try:
        line = input("> ").strip()
    except EOFError:
        print()
        return False
    if not line:
        return True
    if line.startswith("/"):
        return _command(session, line)
    session.turns.append({"role": "user", "content": line})
    _answer(session)
    return True
