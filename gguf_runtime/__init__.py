"""gguf-runtime: run GGUF language models from their memory-mapped quantized blocks."""

from .errors import GGUFError, GGUFFormatError, MissingKeyError, ModelInputError, UnsupportedError
from .gguf_file import GGUFFile, TensorInfo, open_gguf
from .tokenizer import Tokenizer, load_tokenizer


def load(path=None, n_ctx=None, threads=None, kv_type="f32", memory_budget=None):
    """Load a GGUF model for generation (see gguf_runtime.api.load)."""
    from .api import load as _load
    return _load(path, n_ctx=n_ctx, threads=threads, kv_type=kv_type, memory_budget=memory_budget)

__version__ = "0.1.0"

__all__ = ["open_gguf", "load", "load_tokenizer", "Tokenizer", "GGUFFile", "TensorInfo", "GGUFError", "GGUFFormatError",
           "UnsupportedError", "MissingKeyError", "ModelInputError"]
