"""`gguf-runtime chat` driven through a pseudo-terminal as a person would use it, and every bad
flag of the issue: a one-line error naming the flag, exit 2, no traceback, before any load."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.realmodels import smollm2_path


class Terminal:
    """A child process on a pseudo-terminal: write keys, read the screen text until a marker."""

    def __init__(self, *args: str):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:                                          # the child
            # As a shell starts a foreground job: Ctrl-C and Ctrl-\ at their defaults. A test
            # run started in the background of a non-interactive shell (as CI runners and
            # `nohup ... &` do) inherits SIGINT ignored, and Python then installs no handler.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGQUIT, signal.SIG_DFL)
            os.execv(sys.executable, [sys.executable, "-m", "gguf_runtime", *args])
        self.text = ""

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def expect(self, marker: str, timeout: float = 300) -> str:
        """Read until `marker` appears after what was read so far; the new text."""
        start, deadline = len(self.text), time.monotonic() + timeout
        while marker not in self.text[start:]:
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} within {timeout} s; screen: {self.text[-800:]!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:                                   # the child closed the terminal
                    chunk = b""
                assert chunk, f"the process ended before {marker!r}; screen: {self.text[-800:]!r}"
                self.text += chunk.decode("utf-8", "replace")
        return self.text[start:]

    def waiting_for_a_key(self, timeout: float = 120) -> None:
        """Block until the child sleeps in select/poll on the terminal, as a person's Ctrl-C
        finds it. A SIGINT that lands between readline printing the prompt and entering its
        select() is only seen at the next key (CPython's readline loop), which a loaded
        machine makes likely when the key follows the prompt within microseconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(f"/proc/{self.pid}/wchan") as f:
                where = f.read()
            if "select" in where or "poll" in where:
                return
            time.sleep(0.02)
        raise AssertionError(f"chat never waited for a key within {timeout} s")

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                os.read(self.fd, 4096)
            except OSError:
                pass
            time.sleep(0.05)
        os.kill(self.pid, 9)
        raise AssertionError("chat did not exit")


@pytest.mark.realmodel
def test_a_chat_session_survives_mistakes():
    term = Terminal("chat", str(smollm2_path()), "-n", "16")
    term.expect("> ")
    term.waiting_for_a_key()
    term.send("\x03")                                 # Ctrl-C at the prompt: a new prompt
    term.expect("> ")
    term.send("\r")                                   # an empty line is ignored: a new prompt
    term.expect("> ")
    term.send("/help\r")
    assert "/clear" in term.expect("> ")
    term.send("Say hello.\r")
    answer = term.expect("> ")
    assert "tok/s]" in answer and "Traceback" not in answer
    term.send("/exit\r")
    assert term.wait() == 0
    assert "Traceback" not in term.text


@pytest.mark.realmodel
def test_ctrl_c_stops_an_answer_and_keeps_the_session():
    term = Terminal("chat", str(smollm2_path()), "-n", "5000", "--ignore-eos")
    term.expect("> ")
    term.send("Count from 1 to 500, one number per line.\r")
    term.expect("line.\r\n")
    term.expect(" ")                                  # the answer is streaming
    term.send("\x03")                                 # Ctrl-C stops the answer, not the session
    assert "[stopped:" in term.expect("> ")
    term.send("/system You answer in one word.\r")
    assert "system prompt set" in term.expect("> ")
    term.send("/clear\r")
    assert "history cleared" in term.expect("> ")
    term.send("\x1b[A\x1b[D\r")                       # arrow keys edit the line (readline), no ^[[A
    after = term.expect("> ")
    assert "^[[" not in after
    term.send("\x04")                                 # Ctrl-D ends it
    assert term.wait() == 0
    assert "Traceback" not in term.text


@pytest.mark.realmodel
def test_chat_format_works_on_a_model_without_a_template():
    """Gemma 3's file has no tokenizer.chat_template: its family's built-in (gemma) is used."""
    r = subprocess.run([sys.executable, "-m", "gguf_runtime", "run", "--chat-format", "-p", "Hi", "-n", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "tok/s]" in r.stderr, r.stderr


BAD_FLAGS = [
    (["run", "-t", "-1"], "-t/--threads"), (["run", "-t", "0"], "-t/--threads"),
    (["run", "--temp", "nan"], "--temperature/--temp"), (["run", "--temp", "inf"], "--temperature/--temp"),
    (["run", "--temp", "-1"], "--temperature/--temp"), (["run", "--top-p", "2"], "--top-p"),
    (["run", "--repeat-penalty", "0"], "--repeat-penalty"), (["run", "-c", "0"], "-c/--ctx-size"),
    (["run", "-c", "99999999"], "-c/--ctx-size"), (["run", "-n", "-3"], "-n/--max-tokens"),
    (["run", "--min-p", "1.5"], "--min-p"), (["run", "--seed", "-1"], "--seed"),
    (["chat", "--top-k", "-2"], "--top-k"), (["serve", "--port", "70000"], "--port"),
    (["bench", "--repeats", "0"], "--repeats"), (["run", "--no-such-flag"], "--no-such-flag"),
]


@pytest.mark.parametrize("args,flag", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_a_bad_flag_is_one_line_naming_it(args, flag):
    """The model named does not exist: a flag checked before any load is what gets reported."""
    verb, *flags = args
    r = subprocess.run([sys.executable, "-m", "gguf_runtime", verb, "no-such-model.gguf", *flags],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and flag in r.stderr and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr, r.stderr
    assert "no-such-model" not in r.stderr


def test_an_unknown_template_name_lists_the_built_in_ones():
    r = subprocess.run([sys.executable, "-m", "gguf_runtime", "run", "--chat-template", "nope"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "built-in: chatml, gemma" in r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_version():
    r = subprocess.run([sys.executable, "-m", "gguf_runtime", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("gguf-runtime ")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gguf_runtime", *args], capture_output=True,
                          text=True, timeout=300)


def test_an_unknown_model_name_lists_the_embedded_ones(tmp_path):
    for verb in (["inspect"], ["run"], ["bench"], ["quantize"]):
        args = verb + (["gemma3-27b", str(tmp_path / "o.gguf"), "Q8_0"] if verb == ["quantize"]
                       else ["gemma3-27b"])
        r = cli(*args)
        assert r.returncode == 1 and "gemma3-270m, smollm2-135m" in r.stderr, (verb, r.stderr)
        assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr


@pytest.mark.realmodel
def test_embedded_names_open_everywhere(tmp_path):
    import gguf_runtime
    assert gguf_runtime.open_gguf("smollm2-135m").architecture == "llama"
    assert "llama" in cli("inspect", "smollm2-135m").stdout
    r = cli("quantize", "smollm2-135m", str(tmp_path / "o.gguf"), "Q8_0")   # found; but it is Q4_1
    assert r.returncode == 1 and "quantize needs a file of F32, F16 or BF16" in r.stderr


def test_bench_reports_a_bad_file_once(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00")
    r = cli("bench", str(bad), "--prompt-tokens", "4", "--decode-tokens", "2")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and str(bad) in r.stderr, r.stderr


@pytest.mark.realmodel
def test_prompt_from_a_file_or_stdin_and_no_echo(tmp_path):
    prompt = tmp_path / "p.txt"
    prompt.write_text("The capital of France is")
    from_file = cli("run", "smollm2-135m", "-f", str(prompt), "-n", "4", "--no-echo")
    assert from_file.returncode == 0 and not from_file.stdout.startswith("The capital"), from_file.stderr
    r = subprocess.run([sys.executable, "-m", "gguf_runtime", "run", "smollm2-135m", "-p", "-", "-n", "4"],
                       input="The capital of France is", capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("The capital of France is")
    assert r.stdout[len("The capital of France is"):].strip() == from_file.stdout.strip()   # greedy
    assert "tok/s" in r.stderr                   # the rate line, without -v
    missing = cli("run", "smollm2-135m", "-f", str(tmp_path / "none.txt"))
    assert missing.returncode != 0 and "none.txt" in missing.stderr and "Traceback" not in missing.stderr
