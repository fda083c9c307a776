"""Open a GGUF file: memory-map it, parse header, metadata and tensor infos, hand out zero-copy views.

File layout (little-endian, GGUF v2/v3):

    magic "GGUF" | version: u32 | n_tensors: u64 | n_kv: u64
    n_kv x       { key: str | value_type: u32 | value }
    n_tensors x  { name: str | n_dims: u32 | ne: u64[n_dims] | ggml_type: u32 | offset: u64 }
    padding to `general.alignment` (default 32)
    tensor data  (each tensor at data_start + offset, offsets aligned)

    str   = len: u64 | utf-8 bytes
    array = elem_type: u32 | count: u64 | elements

`ne` lists dimensions innermost first (ne[0] = row length); `TensorInfo.shape` is the PyTorch order
(reversed). Every length read from the file is checked against the bytes left before anything is
allocated, so a lying header costs neither time nor memory.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from .errors import GGUFFormatError, UnsupportedError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4          # GGML_MAX_DIMS
MAX_ARRAY_NESTING = 4
INT64_MAX = 2**63 - 1

# GGUF value type id -> (struct code, byte size) for the fixed-size scalars.
_SCALARS = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}
_NUMPY_DTYPES = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4",
                 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9
_MIN_VALUE_SIZE = {**{k: v[1] for k, v in _SCALARS.items()}, _STRING: 8, _ARRAY: 12}
# Numeric arrays of more elements stay read-only numpy views of the map (a hostile 300 MB
# array would otherwise become 300 M Python objects); smaller ones (per-layer values) are lists.
LIST_MAX = 1 << 16


def _q(name: str, n: int = 80) -> str:
    """A name for an error message: quoted, at most n characters of it (hostile files carry
    names of megabytes)."""
    return repr(name) if len(name) <= n else repr(name[:n]) + f"... ({len(name)} characters)"


_SPLIT_NAME = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the file: its type, PyTorch-order shape and a zero-copy view of its blocks."""

    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]          # PyTorch order: (..., rows, cols); cols = GGUF ne[0]
    offset: int                     # absolute byte offset in its file
    nbytes: int
    data: np.ndarray = field(repr=False)  # uint8 view into the memory map, no copy

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def qtensor(self):
        """The tensor as a `quant.QTensor` (still the raw blocks, still no copy)."""
        from quant import QTensor
        return QTensor(self.data, self.qtype, self.shape)


class _Cursor:
    """Bounds-checked little-endian reads over a memory map."""

    def __init__(self, buf: memoryview, path: Path):
        self.buf, self.pos, self.end, self.path = buf, 0, len(buf), path

    def fail(self, what: str) -> GGUFFormatError:
        return GGUFFormatError(f"{self.path}: {what} (at byte {self.pos} of {self.end})")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise self.fail(f"truncated or corrupt file: {what} needs {n} bytes, "
                            f"{self.end - self.pos} left")

    def scalar(self, code: str, size: int, what: str):
        self.need(size, what)
        (value,) = struct.unpack_from(code, self.buf, self.pos)
        self.pos += size
        return value

    def u32(self, what: str) -> int:
        return self.scalar("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.scalar("<Q", 8, what)

    def string(self, what: str) -> str:
        n = self.u64(f"length of {what}")
        self.need(n, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        # Vocabularies may hold byte tokens that are not valid UTF-8: keep them losslessly.
        return raw.decode("utf-8", errors="surrogateescape")

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.scalar(*_SCALARS[vtype], what)
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            return self.array(what, depth)
        raise self.fail(f"unknown value type {vtype} for {what}; known: 0-12")

    def array(self, what: str, depth: int) -> list | np.ndarray:
        if depth >= MAX_ARRAY_NESTING:
            raise self.fail(f"arrays nested deeper than {MAX_ARRAY_NESTING} in {what}")
        etype = self.u32(f"element type of {what}")
        count = self.u64(f"element count of {what}")
        if etype not in _MIN_VALUE_SIZE:
            raise self.fail(f"unknown array element type {etype} for {what}; known: 0-12")
        self.need(count * _MIN_VALUE_SIZE[etype], f"{count} elements of {what}")
        if etype in _NUMPY_DTYPES:  # fixed-size elements: one vectorised read
            size = _MIN_VALUE_SIZE[etype]
            arr = np.frombuffer(self.buf, dtype=_NUMPY_DTYPES[etype], count=count, offset=self.pos)
            self.pos += count * size
            if count > LIST_MAX:          # a view of the map: no per-element Python objects
                arr.flags.writeable = False
                return arr
            return arr.tolist()
        if etype == _STRING:
            return self.string_array(count, what)
        return [self.array(what, depth + 1) for _ in range(count)]

    def string_array(self, count: int, what: str) -> list[str]:
        # Tight loop: a 262k-token vocabulary must parse in well under a second.
        buf, pos, end, out = self.buf, self.pos, self.end, []
        unpack = struct.Struct("<Q").unpack_from
        append = out.append
        for _ in range(count):
            if pos + 8 > end:
                self.pos = pos
                raise self.fail(f"truncated or corrupt file: string length in {what}")
            (n,) = unpack(buf, pos)
            pos += 8
            if pos + n > end:
                self.pos = pos
                raise self.fail(f"truncated or corrupt file: string of {n} bytes in {what}")
            append(str(buf[pos:pos + n], "utf-8", "surrogateescape"))
            pos += n
        self.pos = pos
        return out


def _open_map(path: Path) -> mmap.mmap:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise GGUFFormatError(f"{path}: empty file, not a GGUF")
            # Copy-on-write private map: writable views for torch.from_numpy, never written.
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except FileNotFoundError:
        from .default_models import DEFAULT_MODELS
        raise GGUFFormatError(f"{path}: cannot open: no such file (give a .gguf path or an "
                              f"embedded model name: {', '.join(DEFAULT_MODELS)})") from None
    except OSError as e:
        raise GGUFFormatError(f"{path}: cannot open: {e.strerror or e}") from None


class GGUFFile:
    """A parsed GGUF file (or a split set opened as one): metadata, tensor infos, zero-copy data.

    Attributes:
        path: the first (or only) file.
        version: GGUF version (2 or 3).
        metadata: dict key -> Python value (int, float, bool, str, list).
        metadata_types: dict key -> (GGUF value type id, array element type id or None), as
            stored, so a writer can copy a value with its exact type.
        tensors: dict name -> TensorInfo, in file order.
        architecture: `general.architecture` or None.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._maps: list[mmap.mmap] = []
        self._map_of: dict[str, int] = {}       # tensor name -> index of its file's map
        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, tuple[int, int | None]] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self.version = 0
        self._parse(self.path, first=True)
        for part in self._split_paths():
            self._parse(part, first=False)

    def advise(self, name: str, advice: int) -> int:
        """madvise(advice) on the pages holding tensor `name` (mmap.MADV_*); 1 if done, 0 where
        the platform or the kernel refuses (advice only: nothing depends on it)."""
        info, mm = self.tensors[name], self._maps[self._map_of[name]]
        start = info.offset // mmap.PAGESIZE * mmap.PAGESIZE
        try:
            mm.madvise(advice, start, info.offset + info.nbytes - start)
        except (AttributeError, OSError, ValueError):
            return 0
        return 1

    # ---------------------------------------------------------------- parsing
    def _parse(self, path: Path, first: bool) -> None:
        mm = _open_map(path)
        self._maps.append(mm)
        cur = _Cursor(memoryview(mm), path)
        self._header(cur, first)
        n_tensors, n_kv = cur.u64("tensor count"), cur.u64("metadata count")
        if n_kv * 13 > cur.end - cur.pos:
            raise cur.fail(f"metadata count {n_kv} cannot fit in the file")
        meta, types = self._metadata(cur, n_kv)
        if first:
            self.metadata, self.metadata_types = meta, types
        if n_tensors * 32 > cur.end - cur.pos:
            raise cur.fail(f"tensor count {n_tensors} cannot fit in the file")
        alignment = meta.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise cur.fail(f"general.alignment must be a power of two, got {alignment!r}")
        infos = [self._tensor_info(cur) for _ in range(n_tensors)]
        data_start = -(-cur.pos // alignment) * alignment
        whole = np.frombuffer(mm, dtype=np.uint8)
        for name, qtype, shape, rel, nbytes in infos:
            if name in self.tensors:
                raise GGUFFormatError(f"{path}: duplicate tensor name {_q(name)}")
            if rel % alignment:
                raise GGUFFormatError(f"{path}: tensor {_q(name)} data offset {rel} is not "
                                      f"aligned to {alignment} bytes")
            start = data_start + rel
            if start + nbytes > cur.end:
                raise GGUFFormatError(f"{path}: tensor {_q(name)} data ({nbytes} bytes at {start}) "
                                      f"runs past the end of the file ({cur.end} bytes): truncated?")
            self.tensors[name] = TensorInfo(name, qtype, shape, start, nbytes,
                                            whole[start:start + nbytes])
            self._map_of[name] = len(self._maps) - 1

    def _header(self, cur: _Cursor, first: bool) -> None:
        cur.need(4, "magic")
        magic = bytes(cur.buf[0:4])
        if magic != GGUF_MAGIC:
            raise GGUFFormatError(f"{cur.path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
        cur.pos = 4
        version = cur.u32("version")
        if version not in SUPPORTED_VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            kind = "big-endian GGUF" if swapped in SUPPORTED_VERSIONS else f"GGUF version {version}"
            raise UnsupportedError(f"{cur.path}: {kind} is not supported; supported: "
                                   f"little-endian GGUF v2 and v3")
        if first:
            self.version = version

    def _metadata(self, cur: _Cursor, n_kv: int) -> tuple[dict[str, Any], dict]:
        """key -> value, and key -> (value type id, array element type id or None)."""
        meta: dict[str, Any] = {}
        types: dict[str, tuple[int, int | None]] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            vtype = cur.u32(f"value type of {_q(key)}")
            etype = None
            if vtype == _ARRAY:
                cur.need(4, f"element type of {_q(key)}")
                etype = int.from_bytes(cur.buf[cur.pos:cur.pos + 4], "little")
            meta[key] = cur.value(vtype, f"metadata {_q(key)}")
            types[key] = (vtype, etype)
        return meta, types

    def _tensor_info(self, cur: _Cursor) -> tuple:
        name = cur.string("tensor name")
        n_dims = cur.u32(f"dimension count of tensor {_q(name)}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.fail(f"tensor {_q(name)} has {n_dims} dimensions; supported: 1 to {MAX_DIMS}")
        ne = [cur.u64(f"dimension {i} of tensor {_q(name)}") for i in range(n_dims)]
        type_id = cur.u32(f"type of tensor {_q(name)}")
        rel = cur.u64(f"data offset of tensor {_q(name)}")
        try:
            qtype = GGMLQuantizationType(type_id)
            block, type_size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise cur.fail(f"tensor {_q(name)} has unknown GGML type id {type_id}") from None
        if any(d == 0 for d in ne):
            raise cur.fail(f"tensor {_q(name)} has a zero-size dimension {ne}")
        n = 1
        for d in ne:
            n *= d
        if n > INT64_MAX:
            raise cur.fail(f"tensor {_q(name)} dimensions {ne} overflow int64")
        if ne[0] % block:
            raise cur.fail(f"tensor {_q(name)} row length {ne[0]} is not a multiple of the "
                           f"{qtype.name} block size {block}")
        nbytes = n // block * type_size
        return name, qtype, tuple(reversed(ne)), rel, nbytes

    def _split_paths(self) -> list[Path]:
        count = self.metadata.get("split.count", 1)
        m = _SPLIT_NAME.match(self.path.name)
        if not isinstance(count, int) or count <= 1:
            return []
        if m is None or int(m["no"]) != 1 or int(m["count"]) != count:
            raise GGUFFormatError(f"{self.path}: split.count={count} but the name is not "
                                  f"'<name>-00001-of-{count:05d}.gguf'; open the first split")
        parts = [self.path.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf")
                 for i in range(2, count + 1)]
        missing = [p.name for p in parts if not p.exists()]
        if missing:
            raise GGUFFormatError(f"{self.path}: split parts missing: {', '.join(missing)}")
        return parts

    # ---------------------------------------------------------------- access
    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    @property
    def nbytes(self) -> int:
        """Total size of the file(s) on disk."""
        return sum(len(m) for m in self._maps)

    def tensor(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFFormatError(f"{self.path}: tensor {_q(name)} not found") from None

    def __repr__(self) -> str:
        return (f"GGUFFile({str(self.path)!r}, v{self.version}, arch={self.architecture!r}, "
                f"{len(self.metadata)} keys, {len(self.tensors)} tensors)")

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Drop this object's references; the maps close when no tensor view is alive."""
        self.tensors = {}
        self._maps = []


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    """Open a GGUF file (the first part of a split model opens all parts).

    Reads header, metadata and tensor infos; reads no tensor bytes. Raises `GGUFError`
    subclasses with one-line messages for malformed or unsupported files. `path` may also name
    an embedded model ("gemma3-270m", "smollm2-135m") where no such file exists.
    """
    from .default_models import resolve_model
    return GGUFFile(resolve_model(os.fspath(path)))
