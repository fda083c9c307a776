"""Paths of the two real GGUFs from their PyPI packages; tests skip cleanly when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from gguf_runtime.default_models import gemma3_270m_path, smollm2_135m_path
from gguf_runtime.errors import GGUFError


def _or_skip(find) -> Path:
    try:
        return find()
    except GGUFError as e:
        pytest.skip(str(e))


def gemma3_path() -> Path:
    return _or_skip(gemma3_270m_path)


def smollm2_path() -> Path:
    return _or_skip(smollm2_135m_path)
