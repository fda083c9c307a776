"""A Hugging Face model folder, read lazily: config.json and safetensors tensors one at a time.

Tensors are found through `model.safetensors.index.json` (sharded) or by listing every
`*.safetensors` file; only headers are read until `read(name)` asks for one tensor's bytes.
The converter's errors (defined in errors.py, in the runtime's `GGUFError` family) are
re-exported here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO

import torch

from ..errors import ConvertError, OutputExistsError, ShapeMismatchError, SourceError

__all__ = ["ConvertError", "SourceError", "ShapeMismatchError", "OutputExistsError", "HFSource"]

INDEX_FILE = "model.safetensors.index.json"
READ_CHUNK_BYTES = 1 << 24       # bytes read and widened to float32 at a time


class HFSource:
    """config.json plus a lazy view of the safetensors weights of one folder.

    Tensors are read with plain file reads, not a memory map: a mapped file's pages stay in the
    process's resident set once touched, and a 2 GB checkpoint would then cost 2 GB of RSS.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: not a directory")
        self.config = _read_json(self.folder / "config.json", "config.json")
        self.files = _tensor_files(self.folder)       # tensor name -> safetensors file
        self._headers: dict[Path, tuple[int, dict]] = {}
        self._handles: dict[Path, BinaryIO] = {}

    def names(self) -> list[str]:
        """Tensor names in file order (shard by shard)."""
        return list(self.files)

    def _entry(self, name: str) -> tuple[int, dict]:
        """(absolute data offset, header entry {dtype, shape, data_offsets}) of a tensor."""
        path = self.files[name]
        if path not in self._headers:
            self._headers[path] = _read_header(path)
        start, header = self._headers[path]
        if name not in header:
            raise SourceError(f"{path}: no tensor {name!r} (named in {INDEX_FILE})")
        return start, header[name]

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape from the header only (no tensor bytes read)."""
        return tuple(self._entry(name)[1]["shape"])

    def read(self, name: str) -> torch.Tensor:
        """One tensor as float32 (bf16/f16 widened exactly)."""
        start, entry = self._entry(name)
        path = self.files[name]
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise SourceError(f"{path}: tensor {name!r} has dtype {entry['dtype']}; supported: "
                              f"{', '.join(_DTYPES)}")
        begin, end = entry["data_offsets"]
        out = torch.empty(entry["shape"], dtype=torch.float32)
        flat, size = out.view(-1), dtype.itemsize
        if (end - begin) != flat.numel() * size:
            raise SourceError(f"{path}: tensor {name!r} has {end - begin} bytes; shape "
                              f"{entry['shape']} of {entry['dtype']} needs {flat.numel() * size}")
        if path not in self._handles:
            self._handles[path] = open(path, "rb")
        f = self._handles[path]
        f.seek(start + begin)
        step = max(1, READ_CHUNK_BYTES // size)          # widen piece by piece: no second copy
        raw = torch.empty(min(step, flat.numel()) * size, dtype=torch.uint8)
        for i in range(0, flat.numel(), step):
            n = min(step, flat.numel() - i) * size
            if f.readinto(raw[:n].numpy()) != n:
                raise SourceError(f"{path}: truncated data for tensor {name!r}")
            flat[i:i + n // size] = raw[:n].view(dtype)
        return out

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles.clear()


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "F64": torch.float64}


def _read_header(path: Path) -> tuple[int, dict]:
    """safetensors layout: header length N: u64 | N bytes of JSON {name: {dtype, shape,
    data_offsets: [begin, end]} relative to the data, "__metadata__"} | data."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > os.path.getsize(path) - 8:
                raise ValueError(f"header length {n} exceeds the file")
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        if not all(isinstance(e, dict) and {"dtype", "shape", "data_offsets"} <= e.keys()
                   for e in header.values()):
            raise ValueError("header entries lack dtype / shape / data_offsets")
    except (OSError, ValueError, AttributeError) as e:
        raise SourceError(f"{path}: cannot read safetensors header: {e}") from e
    return 8 + n, header


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
    return list(_read_header(path)[1])
