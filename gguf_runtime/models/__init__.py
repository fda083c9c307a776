"""The architecture families, one module each; every registry is built here from them.

A module declares `FAMILIES = [Family(ArchSpec(...), ConvertSpec(...), hf_classes=...)]`
(models/spec.py; its hparams writer builds on models/hparams.py) and, only where its math
truly differs, its own block pieces (deepseek2's latent attention). Adding a family is one module here (found by its `FAMILIES`); the runtime
(registry.py), `inspect` and the converter (convert/arch.py) read the tables below.
"""

from __future__ import annotations

import pkgutil
from importlib import import_module

from .spec import ArchSpec, ConvertSpec, Family

# every module of this package but spec.py (the types) and hparams.py (config.json lookups
# shared by the families' converter writers) declares families
FAMILY_MODULES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in ("spec", "hparams")))


def _families() -> dict[str, Family]:
    out: dict[str, Family] = {}
    for module in FAMILY_MODULES:
        for family in import_module(f".{module}", __name__).FAMILIES:
            if family.name in out:
                raise ValueError(f"architecture {family.name!r} is declared twice")
            out[family.name] = family
    return out


FAMILIES: dict[str, Family] = _families()
ARCHITECTURES: dict[str, ArchSpec] = {name: f.spec for name, f in FAMILIES.items()}
ALIASES: dict[str, str] = {alias: name for name, f in FAMILIES.items() for alias in f.aliases}
CONVERTERS: dict[str, ConvertSpec] = {name: f.convert for name, f in FAMILIES.items() if f.convert}
HF_ARCHITECTURES: dict[str, str] = {hf: name for name, f in FAMILIES.items() for hf in f.hf_classes}

__all__ = ["ArchSpec", "ConvertSpec", "Family", "FAMILIES", "ARCHITECTURES", "ALIASES", "CONVERTERS",
           "HF_ARCHITECTURES"]
