"""The one exception type of the `quant` package (the runtime wraps it in its GGUFError family)."""


class QuantError(ValueError):
    """A block format problem: unsupported type, bad byte count, a value that cannot be quantized."""
