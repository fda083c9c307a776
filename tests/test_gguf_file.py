"""GGUF reader: round trips through gguf-py's writer, every hostile input, and a byte-level fuzz.

Good files come from the independent writer (`gguf.GGUFWriter`); bad ones are built byte by byte
with the small helpers below (`_gguf`, `_kv`, `_tinfo`), so each lie sits exactly where the test
puts it. Every error must be a `GGUFError` whose message is one line naming the file.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import time
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from hypothesis import given, settings
from hypothesis import strategies as st

from gguf_runtime.errors import GGUFError, GGUFFormatError, UnsupportedError
from gguf_runtime.gguf_file import open_gguf
from tests.realmodels import gemma3_path, smollm2_path

# ------------------------------------------------------------------ byte-level builder
#   file  = "GGUF" | version u32 | n_tensors u64 | n_kv u64 | kv* | tensor_info* | pad | data
#   kv    = str key | u32 type | value          str = u64 len | bytes
#   info  = str name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset
_SCALAR_FMT = {V.UINT8: "<B", V.INT8: "<b", V.UINT16: "<H", V.INT16: "<h", V.UINT32: "<I",
               V.INT32: "<i", V.FLOAT32: "<f", V.BOOL: "<?", V.UINT64: "<Q", V.INT64: "<q",
               V.FLOAT64: "<d"}


def _str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def _val(vtype: int, value) -> bytes:
    """A value's payload (no type tag); arrays are given as (element_type, items)."""
    if vtype == V.STRING:
        return _str(value)
    if vtype == V.ARRAY:
        etype, items = value
        return struct.pack("<IQ", etype, len(items)) + b"".join(_val(etype, v) for v in items)
    return struct.pack(_SCALAR_FMT[vtype], value)


def _kv(key: str, vtype: int, value) -> bytes:
    return _str(key) + struct.pack("<I", vtype) + _val(vtype, value)


def _tinfo(name: str, ne, type_id: int, offset: int) -> bytes:
    return (_str(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
            + struct.pack("<IQ", type_id, offset))


def _gguf(kvs=(), infos=(), data=b"", *, version=3, n_kv=None, n_tensors=None,
          alignment=32) -> bytes:
    """A whole file; n_kv / n_tensors override the true counts to make the header lie."""
    n_tensors = len(infos) if n_tensors is None else n_tensors
    n_kv = len(kvs) if n_kv is None else n_kv
    out = b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + b"".join(kvs) + b"".join(infos)
    if data:
        out += b"\0" * (-len(out) % alignment) + data
    return out


_ARCH = _kv("general.architecture", V.STRING, "llama")


def _tiny(**kw) -> bytes:
    """A valid file: one key, one 8-element F32 tensor."""
    return _gguf([_ARCH], [_tinfo("w", [8], T.F32, 0)], bytes(range(32)), **kw)


def _write(tmp_path: Path, blob: bytes, name: str = "model.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def _expect(path: Path, *words: str, cls: type = GGUFError, named: Path | None = None) -> str:
    """Open must raise `cls` with a one-line message naming the file (or `named`) and each word."""
    with pytest.raises(cls) as info:
        open_gguf(path)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert str(named or path) in msg, msg
    for word in words:
        assert word.lower() in msg.lower(), msg
    return msg


def _backed_by_mmap(arr: np.ndarray) -> bool:
    """True when arr is a view whose `.base` chain ends in a memory map (no copy was made)."""
    base = arr
    while isinstance(base, np.ndarray):
        if base.flags.owndata:
            return False
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap)


# ------------------------------------------------------------------ round trip via GGUFWriter
# key -> (value type, value written, value read back)
_META = {
    "t.u8": (V.UINT8, 255, 255), "t.i8": (V.INT8, -128, -128),
    "t.u16": (V.UINT16, 65535, 65535), "t.i16": (V.INT16, -32768, -32768),
    "t.u32": (V.UINT32, 2**32 - 1, 2**32 - 1), "t.i32": (V.INT32, -2**31, -2**31),
    "t.f32": (V.FLOAT32, 1.5, 1.5), "t.u64": (V.UINT64, 2**64 - 1, 2**64 - 1),
    "t.i64": (V.INT64, -2**63, -2**63), "t.f64": (V.FLOAT64, -1e300, -1e300),
    "t.true": (V.BOOL, True, True), "t.false": (V.BOOL, False, False),
    "t.str": (V.STRING, "héllo ✓", "héllo ✓"), "t.empty_str": (V.STRING, "", ""),
    # Byte tokens that are not UTF-8 come back losslessly (surrogateescape).
    "t.bytes_str": (V.STRING, b"\xff\x00a", "\udcff\x00a"),
    "t.arr_str": (V.ARRAY, ["a", "", "ü"], ["a", "", "ü"]),
    "t.arr_i32": (V.ARRAY, [1, -2, 3], [1, -2, 3]),
    "t.arr_f32": (V.ARRAY, [0.5, -2.0], [0.5, -2.0]),
    "t.arr_bool": (V.ARRAY, [True, False, True], [True, False, True]),
    "t.arr_nested": (V.ARRAY, [[1, 2], [3]], [[1, 2], [3]]),
    "t.arr_nested3": (V.ARRAY, [[["x"]], [["y", "z"]]], [[["x"]], [["y", "z"]]]),
}
_SUBTYPED = {"t.arr_u8": (V.UINT8, [0, 255]), "t.arr_u64": (V.UINT64, [2**64 - 1, 0]),
             "t.arr_f64": (V.FLOAT64, [1e-300, 2.5]), "t.arr_i16": (V.INT16, [-5, 7])}


def _tensors() -> dict[str, tuple]:
    """name -> (array given to the writer, raw_dtype, expected qtype, expected PyTorch shape)."""
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((2, 3, 4)).astype(np.float32)
    return {
        "f32_3d": (f32, None, T.F32, (2, 3, 4)),
        "f32_4d": (rng.standard_normal((2, 1, 3, 2)).astype(np.float32), None, T.F32, (2, 1, 3, 2)),
        "f32_vec": (rng.standard_normal(7).astype(np.float32), None, T.F32, (7,)),
        "f16": (rng.standard_normal((5, 8)).astype(np.float16), None, T.F16, (5, 8)),
        # Quantized tensors as raw bytes: (rows, row bytes) -> (rows, row elements).
        "q8_0": (rng.integers(0, 256, (3, 2 * 34), dtype=np.uint8), T.Q8_0, T.Q8_0, (3, 64)),
        "q4_k": (rng.integers(0, 256, (2, 144), dtype=np.uint8), T.Q4_K, T.Q4_K, (2, 256)),
    }


def _write_with_gguf_py(path: Path, alignment: int | None = None, split_max_tensors: int = 0):
    writer = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    for key, (vtype, value, _) in _META.items():
        writer.add_key_value(key, value, vtype)
    for key, (sub, value) in _SUBTYPED.items():
        writer.add_key_value(key, value, V.ARRAY, sub_type=sub)
    for name, (arr, raw_dtype, _, _) in _tensors().items():
        writer.add_tensor(name, arr, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _check_tensors(gf, alignment: int = 32) -> None:
    assert list(gf.tensors) == list(_tensors())
    for name, (arr, _, qtype, shape) in _tensors().items():
        t = gf.tensors[name]
        assert (t.name, t.qtype, t.shape, t.nbytes) == (name, qtype, shape, arr.nbytes)
        assert t.offset % alignment == 0
        assert t.data.dtype == np.uint8 and t.data.nbytes == arr.nbytes
        assert t.data.tobytes() == arr.tobytes()
        assert _backed_by_mmap(t.data), f"{name} data is a copy"


def test_round_trip_metadata_and_tensors(tmp_path):
    path = tmp_path / "model.gguf"
    _write_with_gguf_py(path)
    gf = open_gguf(path)
    assert gf.version == 3 and gf.architecture == "llama"
    for key, (_, _, expected) in _META.items():
        assert gf.metadata[key] == expected, key
        assert type(gf.metadata[key]) is type(expected), key
    for key, (_, expected) in _SUBTYPED.items():
        assert gf.metadata[key] == expected, key
    _check_tensors(gf)
    assert gf.tensor("q4_k") is gf.tensors["q4_k"]
    with pytest.raises(GGUFError, match="nope"):
        gf.tensor("nope")


def test_hand_built_values_round_trip(tmp_path):
    """Values gguf-py cannot write: an empty array, non-0/1 bool bytes, a v2 header."""
    kvs = [_kv("empty", V.ARRAY, (V.INT32, [])),
           _kv("empty_nested", V.ARRAY, (V.ARRAY, [(V.STRING, []), (V.UINT8, [7])])),
           _str("bool2") + struct.pack("<IB", V.BOOL, 2)]
    gf = open_gguf(_write(tmp_path, _gguf(kvs, version=2)))
    assert gf.version == 2 and gf.tensors == {}
    assert gf.metadata == {"empty": [], "empty_nested": [[], [7]], "bool2": True}


def test_version_2_file_reads_like_version_3(tmp_path):
    path = tmp_path / "model.gguf"
    _write_with_gguf_py(path)
    blob = bytearray(path.read_bytes())
    assert struct.unpack_from("<I", blob, 4) == (3,)
    struct.pack_into("<I", blob, 4, 2)
    v2 = _write(tmp_path, bytes(blob), "v2.gguf")
    gf = open_gguf(v2)
    assert gf.version == 2
    assert gf.metadata == open_gguf(path).metadata
    _check_tensors(gf)


def test_custom_alignment_is_respected(tmp_path):
    path = tmp_path / "model.gguf"
    _write_with_gguf_py(path, alignment=64)
    gf = open_gguf(path)
    assert gf.metadata["general.alignment"] == 64
    _check_tensors(gf, alignment=64)


def test_custom_alignment_moves_data_start(tmp_path):
    """A header whose end rounds differently to 32 and to 64: only 64 finds the data."""
    info = _tinfo("w", [8], T.F32, 0)
    for fill in range(64):
        kvs = [_kv("general.alignment", V.UINT32, 64), _kv("fill", V.STRING, "x" * fill)]
        head = len(_gguf(kvs, [info]))
        if 0 < head % 64 <= 32:  # ceil to 32 != ceil to 64
            break
    payload = np.arange(8, dtype=np.float32).tobytes()
    gf = open_gguf(_write(tmp_path, _gguf(kvs, [info], payload, alignment=64)))
    t = gf.tensors["w"]
    assert t.offset == -(-head // 64) * 64 and t.offset != -(-head // 32) * 32
    assert t.data.tobytes() == payload


def _rss_bytes() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def test_open_reads_no_tensor_data(tmp_path):
    """A 200 MB sparse data region: opening maps it and touches none of it."""
    n = 50_000_000  # F32 elements = 200 MB
    path = _write(tmp_path, _gguf([_ARCH], [_tinfo("big", [n], T.F32, 0)]))
    with open(path, "r+b") as f:
        f.truncate(-(-path.stat().st_size // 32) * 32 + 4 * n)  # sparse: no blocks on disk
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    gf = open_gguf(path)
    elapsed = time.perf_counter() - t0
    rss1 = _rss_bytes()
    big = gf.tensors["big"]
    assert big.nbytes == 4 * n and big.data.shape == (4 * n,)
    assert _backed_by_mmap(big.data)
    if rss0 is not None:
        assert rss1 - rss0 < 50 * 2**20, f"open grew RSS by {(rss1 - rss0) >> 20} MB"
    assert big.data[-4:].tolist() == [0, 0, 0, 0]  # readable lazily, page by page
    print(f"opened a 200 MB sparse file in {elapsed * 1e3:.1f} ms")


def test_split_model_opens_all_parts(tmp_path):
    _write_with_gguf_py(tmp_path / "model.gguf", split_max_tensors=2)
    parts = sorted(tmp_path.glob("model-*-of-00003.gguf"))
    assert [p.name for p in parts] == [f"model-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    gf = open_gguf(parts[0])
    assert gf.metadata["split.count"] == 3
    _check_tensors(gf)
    assert gf.nbytes == sum(p.stat().st_size for p in parts)
    _expect(parts[1], "split", "first")  # a later part alone is refused
    parts[2].unlink()
    _expect(parts[0], "missing", parts[2].name)


def test_split_parts_with_the_same_tensor_name(tmp_path):
    blob = _gguf([_ARCH, _kv("split.count", V.UINT16, 2)], [_tinfo("w", [8], T.F32, 0)],
                 bytes(32))
    first = _write(tmp_path, blob, "m-00001-of-00002.gguf")
    second = _write(tmp_path, blob, "m-00002-of-00002.gguf")
    _expect(first, "duplicate tensor name 'w'", cls=GGUFFormatError, named=second)


# ------------------------------------------------------------------ bad input
def _one(ne, type_id: int = T.F32, offset: int = 0) -> bytes:
    """A file with one tensor 'w' described by (ne, type_id, offset) and 32 data bytes."""
    return _gguf([_ARCH], [_tinfo("w", ne, type_id, offset)], bytes(32))


def _two(second: str, offset: int) -> bytes:
    """Tensors 'a' then `second`, both 8 x F32, the second at `offset`."""
    infos = [_tinfo("a", [8], T.F32, 0), _tinfo(second, [8], T.F32, offset)]
    return _gguf([_ARCH], infos, bytes(96))


def _meta_only(*kvs: bytes) -> bytes:
    return _gguf(list(kvs))


def _bad_cases() -> dict[str, tuple[bytes, list[str], type]]:
    """id -> (file bytes, words the message must contain, error class)."""
    fmt, unsup = GGUFFormatError, UnsupportedError
    nested = (V.INT32, [1])
    for _ in range(10):
        nested = (V.ARRAY, [nested])
    align = lambda vtype, value: _meta_only(_kv("general.alignment", vtype, value))  # noqa: E731
    return {
        "wrong magic": (b"GGML" + _tiny()[4:], ["not a gguf", "magic"], fmt),
        "pdf magic": (b"%PDF-1.7\n" + bytes(40), ["not a gguf"], fmt),
        "version 1": (_tiny(version=1), ["version 1", "supported"], unsup),
        "version 99": (_tiny(version=99), ["version 99", "supported"], unsup),
        "big-endian": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), ["big-endian"], unsup),
        "empty": (b"", ["empty"], fmt),
        "unknown value type": (_meta_only(_str("k") + struct.pack("<IQ", 13, 0)),
                               ["unknown value type 13", "'k'"], fmt),
        "unknown array type": (_meta_only(_str("k") + struct.pack("<IIQ", V.ARRAY, 77, 0)),
                               ["unknown array element type 77"], fmt),
        "nested arrays": (_meta_only(_kv("deep", V.ARRAY, nested)), ["nested deeper"], fmt),
        "alignment 48": (align(V.UINT32, 48), ["power of two", "48"], fmt),
        "alignment 0": (align(V.UINT32, 0), ["power of two"], fmt),
        "alignment string": (align(V.STRING, "32"), ["power of two"], fmt),
        "unknown ggml type 4": (_one([8], 4), ["unknown ggml type id 4", "'w'"], fmt),
        "unknown ggml type 1000": (_one([8], 1000), ["unknown ggml type id 1000"], fmt),
        "zero dims": (_one([]), ["0 dimensions"], fmt),
        "five dims": (_one([1] * 5), ["5 dimensions"], fmt),
        "zero-size dim": (_one([8, 0]), ["zero-size dimension"], fmt),
        "dim product overflow": (_one([2**32, 2**32]), ["overflow"], fmt),
        "dim 2**64-1": (_one([2**64 - 1]), ["overflow"], fmt),
        "row not whole blocks": (_one([33], T.Q8_0), ["block size 32"], fmt),
        "offset past end": (_one([8], offset=2**40), ["'w'", "past the end"], fmt),
        "offset 2**64-32": (_one([8], offset=2**64 - 32), ["past the end"], fmt),
        "size past end": (_one([2**20]), ["'w'", "past the end"], fmt),
        "misaligned offset": (_two("b", 36), ["'b'", "not aligned"], fmt),
        "duplicate names": (_two("a", 32), ["duplicate tensor name 'a'"], fmt),
        "newline in name": (_two("a\nb", 3), ["'a\\nb'", "not aligned"], fmt),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input(tmp_path, case):
    blob, words, cls = _bad_cases()[case]
    _expect(_write(tmp_path, blob), *words, cls=cls)


def test_nonexistent_path_and_directory(tmp_path):
    _expect(tmp_path / "nope.gguf", "cannot open", cls=GGUFFormatError)
    _expect(tmp_path, "cannot open", cls=GGUFFormatError)


def _sections() -> tuple[bytes, dict[str, tuple[int, int]]]:
    """A valid file with two keys and two tensors, and the byte range of each section."""
    kvs = [_ARCH, _kv("tokens", V.ARRAY, (V.STRING, ["<s>", "hello", "world"]))]
    infos = [_tinfo("a", [8], T.F32, 0), _tinfo("b", [4, 2], T.F16, 32)]
    blob = _gguf(kvs, infos, bytes(range(48)))  # 32 + 16 bytes: b ends the file
    kv_end = 24 + sum(map(len, kvs))
    info_end = kv_end + sum(map(len, infos))
    return blob, {"header": (1, 24), "metadata": (24, kv_end), "tensor infos": (kv_end, info_end),
                  "data": (len(blob) - 48, len(blob))}


@pytest.mark.parametrize("section", ["header", "metadata", "tensor infos", "data"])
def test_truncated_file(tmp_path, section):
    blob, ranges = _sections()
    assert open_gguf(_write(tmp_path, blob, "whole.gguf")).tensors["b"].shape == (2, 4)
    lo, hi = ranges[section]
    cuts = sorted({lo, lo + 1, (lo + hi) // 2, hi - 1, *range(lo, min(hi, lo + 9))})
    for cut in cuts:
        _expect(_write(tmp_path, blob[:cut], f"cut{cut}.gguf"), "truncat", cls=GGUFFormatError)


_HUGE = [2**62, 2**63 - 1, 2**64 - 1, 2**40]


def _lying_lengths(n: int) -> dict[str, bytes]:
    """Files whose one length or count field claims n, far beyond the file."""
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
    info = b"GGUF" + struct.pack("<IQQ", 3, 1, 0)
    return {
        "key length": head + struct.pack("<Q", n) + bytes(64),
        "string value length": head + _str("k") + struct.pack("<IQ", V.STRING, n) + bytes(64),
        "u8 array count": head + _str("k") + struct.pack("<IIQ", V.ARRAY, V.UINT8, n) + bytes(64),
        "f64 array count": head + _str("k") + struct.pack("<IIQ", V.ARRAY, V.FLOAT64, n),
        "string array count": head + _str("k") + struct.pack("<IIQ", V.ARRAY, V.STRING, n),
        "nested array count": head + _str("k") + struct.pack("<IIQ", V.ARRAY, V.ARRAY, n),
        "string in array": head + _str("k") + struct.pack("<IIQQ", V.ARRAY, V.STRING, 1, n),
        "metadata count": _gguf(n_kv=n) + bytes(64),
        "tensor count": _gguf(n_tensors=n) + bytes(64),
        "tensor name length": info + struct.pack("<Q", n) + bytes(64),
        "tensor dimension": info + _tinfo("w", [n], T.F32, 0) + bytes(64),
    }


@pytest.mark.parametrize("n", _HUGE)
def test_lying_lengths_fail_fast_without_allocating(tmp_path, n):
    for field, blob in _lying_lengths(n).items():
        path = _write(tmp_path, blob, f"{field.replace(' ', '_')}.gguf")
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            _expect(path, cls=GGUFFormatError)
        finally:
            elapsed = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < 2**20, f"{field}: peak {peak} bytes allocated"
        assert elapsed < 2.0, f"{field}: took {elapsed:.2f} s"


# ------------------------------------------------------------------ fuzz
_LIES = [0, 1, 2, 5, 13, 31, 32, 255, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
_POS = st.one_of(st.integers(0, 1024), st.integers(0, 2**16))  # taken modulo the length
_MUTATION = st.one_of(
    st.tuples(st.just("flip"), _POS, st.integers(0, 7)),
    st.tuples(st.just("set"), _POS, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("int"), _POS, st.sampled_from(_LIES), st.sampled_from([4, 8])),
    st.tuples(st.just("cut"), _POS),
)


def _mutate(base: bytes, mutations) -> bytes:
    buf = bytearray(base)
    for kind, pos, *args in mutations:
        if not buf:
            break
        pos %= len(buf)
        if kind == "flip":
            buf[pos] ^= 1 << args[0]
        elif kind == "set":
            buf[pos:pos + len(args[0])] = args[0]
        elif kind == "int":
            value, width = args
            buf[pos:pos + width] = (value % 2**(8 * width)).to_bytes(width, "little")
        else:
            del buf[pos:]
    return bytes(buf)


@pytest.fixture(scope="module", params=["small", "smollm2"])
def fuzz_base(request, tmp_path_factory) -> bytes:
    """The first 64 KB of a real file: SmolLM2's, or a small one gguf-py wrote (whole)."""
    if request.param == "smollm2":
        path = smollm2_path()
    else:
        path = tmp_path_factory.mktemp("fuzz") / "small.gguf"
        _write_with_gguf_py(path)
    with open(path, "rb") as f:
        return f.read(64 * 1024)


@settings(max_examples=300, deadline=None)
@given(mutations=st.lists(_MUTATION, min_size=1, max_size=4))
def test_fuzz_only_gguf_errors_escape(fuzz_base, mutations):
    blob = _mutate(fuzz_base, mutations)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.gguf"
        path.write_bytes(blob)
        try:
            gf = open_gguf(path)
        except GGUFError as e:
            assert "\n" not in str(e) and str(path) in str(e), str(e)
            return
        for t in gf.tensors.values():
            assert t.offset + t.nbytes <= len(blob) and t.data.nbytes == t.nbytes
        gf.close()


# ------------------------------------------------------------------ real models
@pytest.mark.realmodel
@pytest.mark.parametrize("find, arch, count", [(gemma3_path, "gemma3", 236),
                                               (smollm2_path, "llama", 272)])
def test_real_model(find, arch, count):
    path = find()
    t0 = time.perf_counter()
    gf = open_gguf(path)
    elapsed = time.perf_counter() - t0
    print(f"{path.name}: opened in {elapsed * 1e3:.1f} ms")
    assert (gf.architecture, len(gf.tensors), gf.version) == (arch, count, 3)
    size = path.stat().st_size
    spans = sorted((t.offset, t.offset + t.nbytes) for t in gf.tensors.values())
    assert sum(t.nbytes for t in gf.tensors.values()) <= size
    assert spans[-1][1] <= size
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:])), "tensors overlap"
    alignment = gf.metadata.get("general.alignment", 32)
    assert all(start % alignment == 0 for start, _ in spans)
    assert all(_backed_by_mmap(t.data) for t in gf.tensors.values())
