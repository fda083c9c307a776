"""The runtime's one exception family. Every message is one line naming the file/key/tensor."""

from quant.errors import QuantError


class GGUFError(Exception):
    """Base of every error the runtime raises on purpose."""


class GGUFFormatError(GGUFError):
    """The file is not a well-formed GGUF (bad magic, truncated, lying lengths, ...)."""


class UnsupportedError(GGUFError):
    """Well-formed input this runtime does not support (version, architecture, tensor type...)."""


class MissingKeyError(GGUFError, KeyError):
    """A required metadata key is absent."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ModelInputError(GGUFError, ValueError):
    """Bad user input at run time: prompt too long, empty prompt, bad chat roles..."""


__all__ = ["GGUFError", "GGUFFormatError", "UnsupportedError", "MissingKeyError",
           "ModelInputError", "QuantError"]
