"""The runtime's one exception family. Every message is one line naming the file/key/tensor."""

from quant.errors import QuantError


MAX_MESSAGE = 600     # characters: a message longer than this keeps its head and its tail


class GGUFError(Exception):
    """Base of every error the runtime raises on purpose. Its message is always one line of
    at most MAX_MESSAGE characters, whatever a hostile file put into it."""

    def __str__(self) -> str:
        raw = str(self.args[0]) if len(self.args) == 1 else Exception.__str__(self)
        text = " ".join(raw.split())
        if len(text) > MAX_MESSAGE:
            half = MAX_MESSAGE // 2 - 10
            text = f"{text[:half]} [... {len(text) - 2 * half} characters ...] {text[-half:]}"
        return text


class GGUFFormatError(GGUFError):
    """The file is not a well-formed GGUF (bad magic, truncated, lying lengths, ...)."""


class UnsupportedError(GGUFError):
    """Well-formed input this runtime does not support (version, architecture, tensor type...)."""


class MissingKeyError(GGUFError, KeyError):
    """A required metadata key is absent."""

    __str__ = GGUFError.__str__  # KeyError's would quote the message


class ModelInputError(GGUFError, ValueError):
    """Bad user input at run time: prompt too long, empty prompt, bad chat roles..."""


class ConvertError(GGUFError):
    """A Hugging Face folder that cannot be converted (base of the converter's errors)."""


class SourceError(ConvertError, FileNotFoundError):
    """A file the conversion needs is missing or unreadable (config, weights, a shard)."""


class ShapeMismatchError(ConvertError, ValueError):
    """A tensor's shape disagrees with what config.json implies."""


class OutputExistsError(ConvertError, FileExistsError):
    """The output file exists and `force` was not given."""


__all__ = ["GGUFError", "GGUFFormatError", "UnsupportedError", "MissingKeyError",
           "ModelInputError", "QuantError", "ConvertError", "SourceError", "ShapeMismatchError",
           "OutputExistsError"]
