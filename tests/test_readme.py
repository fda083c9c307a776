"""The README's Python snippet runs as written, on the embedded models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.realmodel
def test_the_python_snippet_runs_as_written(capsys):
    (snippet,) = python_blocks()
    exec(compile(snippet, str(README), "exec"), {})
    out = capsys.readouterr().out
    assert "Paris" in out                          # SmolLM2's greedy continuation
    assert re.search(r"tensor\(0\.0\d+", out)      # Q8_0's round-trip error, printed


def test_the_quick_start_has_exactly_two_commands():
    quick = README.read_text().split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in quick.strip().splitlines()] == [["make", "run"], ["make", "test"]]
