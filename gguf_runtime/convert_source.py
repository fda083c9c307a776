"""A Hugging Face model folder, read lazily: config.json and safetensors tensors one at a time.

Tensors are found through `model.safetensors.index.json` (sharded) or by listing every
`*.safetensors` file; only headers are read until `read(name)` asks for one tensor's bytes.
The converter's errors live here too, all in the runtime's `GGUFError` family.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import GGUFError

INDEX_FILE = "model.safetensors.index.json"


class ConvertError(GGUFError):
    """A Hugging Face folder that cannot be converted (base of the converter's errors)."""


class SourceError(ConvertError, FileNotFoundError):
    """A file the conversion needs is missing or unreadable (config, weights, a shard)."""


class ShapeMismatchError(ConvertError, ValueError):
    """A tensor's shape disagrees with what config.json implies."""


class OutputExistsError(ConvertError, FileExistsError):
    """The output file exists and `force` was not given."""


class HFSource:
    """config.json plus a lazy view of the safetensors weights of one folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: not a directory")
        self.config = _read_json(self.folder / "config.json", "config.json")
        self.files = _tensor_files(self.folder)       # tensor name -> safetensors file
        self._handles: dict[Path, object] = {}

    def names(self) -> list[str]:
        """Tensor names in file order (shard by shard)."""
        return list(self.files)

    def _handle(self, name: str):
        from safetensors import safe_open

        path = self.files[name]
        if path not in self._handles:
            try:
                self._handles[path] = safe_open(str(path), framework="pt")
            except Exception as e:  # safetensors raises its own types for a bad header
                raise SourceError(f"{path}: cannot read safetensors file: {e}") from e
        return self._handles[path]

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape from the header only (no tensor bytes read)."""
        return tuple(self._handle(name).get_slice(name).get_shape())

    def read(self, name: str) -> torch.Tensor:
        """One tensor as float32 (bf16/f16 widened exactly)."""
        return self._handle(name).get_tensor(name).to(torch.float32)

    def close(self) -> None:
        self._handles.clear()


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise SourceError(f"{path.parent}: no {what} (is this a Hugging Face model folder?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{path}: cannot parse {what}: {e}") from e
    if not isinstance(data, dict):
        raise SourceError(f"{path}: {what} is not a JSON object")
    return data


def _tensor_files(folder: Path) -> dict[str, Path]:
    """tensor name -> file, from the shard index when there is one, else every *.safetensors."""
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = _read_json(index, INDEX_FILE).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise SourceError(f"{index}: no weight_map")
        files: dict[str, Path] = {}
        for name, shard in weight_map.items():
            path = folder / str(shard)
            if not path.is_file():
                raise SourceError(f"{folder}: shard {shard!r} listed in {INDEX_FILE} is missing "
                                  f"(needed for tensor {name!r})")
            files[name] = path
        return files
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise SourceError(f"{folder}: no weights (*.safetensors); .bin / .pth checkpoints are "
                          f"not supported, re-save with safe_serialization=True")
    return {name: path for path in shards for name in _header_names(path)}


def _header_names(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as e:
        raise SourceError(f"{path}: cannot read safetensors header: {e}") from e
