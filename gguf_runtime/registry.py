"""general.architecture -> ArchSpec: what the file does not say but the architecture implies.

The specs are declared by the family modules (gguf_runtime/models/, one per family) and
collected in gguf_runtime.models; this module is the runtime's lookup over them.
"""

from __future__ import annotations

from .errors import UnsupportedError
from .models import ALIASES, ARCHITECTURES, ArchSpec

__all__ = ["ArchSpec", "ARCHITECTURES", "ALIASES", "supported_architectures", "detect"]


def supported_architectures() -> list[str]:
    return sorted(ARCHITECTURES)


def detect(metadata: dict, source: str = "<metadata>") -> ArchSpec:
    """The ArchSpec for `general.architecture`; UnsupportedError listing the known ones."""
    name = metadata.get("general.architecture")
    name = ALIASES.get(name, name)
    spec = ARCHITECTURES.get(name)
    if spec is None:
        raise UnsupportedError(f"{source}: unknown architecture {name!r}; supported: "
                               f"{', '.join(supported_architectures())}")
    return spec
