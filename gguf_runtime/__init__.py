"""gguf-runtime: run GGUF language models from their memory-mapped quantized blocks."""

from .errors import GGUFError, GGUFFormatError, MissingKeyError, ModelInputError, UnsupportedError
from .gguf_file import GGUFFile, TensorInfo, open_gguf

__version__ = "0.1.0"

__all__ = ["open_gguf", "GGUFFile", "TensorInfo", "GGUFError", "GGUFFormatError",
           "UnsupportedError", "MissingKeyError", "ModelInputError"]
