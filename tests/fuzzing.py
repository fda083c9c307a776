"""A seeded mutation fuzzer for GGUF files (tests/test_fuzz.py, CI-sized; tools/fuzz.py, long).

Seeds: a 1-block llama (float32 and Q8_0 weights) with a SentencePiece-style vocabulary of
300 pieces. A case mutates a seed's header (metadata and tensor infos: where every lie the
issue lists lives) by one to three of: bit flips, an aligned 4- or 8-byte field overwritten with
an interesting value (0, 1, -1, 2^31, 2^32 - 1, 2^63, float inf / nan / 1e-45), a byte range
deleted or duplicated, or the file truncated. `check(path)` then opens the file, loads it,
computes logits and loads its tokenizer: anything but success or a GGUFError with a one-line
message is a finding.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import gguf
import numpy as np

INTERESTING = [struct.pack("<I", v) for v in (0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xbbdb4b31)] + \
    [struct.pack("<Q", v) for v in (0, 1 << 31, 1 << 32, 1 << 63, (1 << 64) - 1)] + \
    [struct.pack("<f", v) for v in (float("inf"), float("nan"), 1e-45, -1.0)]
D, H, KV, DK, F = 32, 4, 2, 8, 64


def vocabulary() -> list[str]:
    return ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + \
        ["\u2581the", "\u2581a", "\u2581cat", "\u2581sat", "\u2581on", "\u2581mat", "at", "th", "e",
         "\u2581", "s", "t", "a", "c", "m", "o", "n", "h", "r", "d", "l", "i", "u", "g", "f",
         "\u2581dog", "\u2581ran", "\u2581is", "\u2581it", "\u2581in", "\u2581of", "w", "y",
         "\u2581and", "b", "p", "k", "v", "x", "\u2581to", "z"]


SEED_KEYS = {"context_length": 64, "embedding_length": D, "block_count": 1, "feed_forward_length": F,
             "attention.head_count": H, "attention.head_count_kv": KV, "rope.dimension_count": DK,
             "attention.layer_norm_rms_epsilon": 1e-5}


def seed_shapes(v: int) -> dict[str, tuple]:
    return {"token_embd.weight": (v, D), "output_norm.weight": (D,), "blk.0.attn_norm.weight": (D,),
            "blk.0.attn_q.weight": (H * DK, D), "blk.0.attn_k.weight": (KV * DK, D),
            "blk.0.attn_v.weight": (KV * DK, D), "blk.0.attn_output.weight": (D, H * DK),
            "blk.0.ffn_norm.weight": (D,), "blk.0.ffn_gate.weight": (F, D),
            "blk.0.ffn_up.weight": (F, D), "blk.0.ffn_down.weight": (D, F)}


def add_key(w: gguf.GGUFWriter, key: str, value) -> None:
    """key = value with the GGUF type its Python type calls for (uint64 past 32 bits)."""
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    elif isinstance(value, list):
        w.add_array(key, value)
    elif value < 0:
        w.add_int64(key, value)
    else:
        w.add_uint64(key, value) if value >= 1 << 32 else w.add_uint32(key, value)


def write_seed(path: Path, qtype: str = "F32", keys: dict | None = None,
               shapes: dict | None = None) -> Path:
    """The seed model: 1 llama block, vocabulary() as a SentencePiece-style vocabulary;
    `keys` and `shapes` override llama.* values and tensor shapes (None drops one)."""
    tokens = vocabulary()
    v = len(tokens)
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    for key, value in {**SEED_KEYS, **(keys or {})}.items():
        if value is not None:
            add_key(w, f"llama.{key}", value)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(v)])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (v - 259))
    w.add_bos_token_id(1), w.add_eos_token_id(2)
    for name, shape in {**seed_shapes(v), **(shapes or {})}.items():
        if shape is None:
            continue
        a = (rng.standard_normal(shape) * 0.1 + (1.0 if len(shape) == 1 else 0.0)).astype(np.float32)
        if qtype == "Q8_0" and len(shape) == 2 and shape[-1] % 32 == 0:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, a)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file()
    w.close()
    return path


SIZES = [0, 1, 2, 3, 7, 8, 16, 31, 32, 33, 63, 64, 65, 128, 4000, 1 << 20, 1 << 31, (1 << 32) - 1, 1 << 40]
VALUES = SIZES + [-1, -(1 << 31), 0.5, 1e-45, float("inf"), float("nan"), -1.0, "x", True, [1, 2], [], [D] * 3]


def semantic_case(rng: random.Random) -> tuple[dict, dict]:
    """(keys, shapes) overrides for write_seed: 1-3 keys given odd values or dropped, or 1-2
    tensors given odd shapes or dropped (what the config and shape checks must catch)."""
    keys, shapes = {}, {}
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.55:
            key = rng.choice(list(SEED_KEYS) + ["attention.key_length", "attention.value_length",
                                                "vocab_size", "attention.sliding_window", "rope.freq_base",
                                                "expert_count", "expert_used_count"])
            keys[key] = None if rng.random() < 0.15 else rng.choice(VALUES)
        else:
            name = rng.choice(list(seed_shapes(1)))
            if rng.random() < 0.2:
                shapes[name] = None
            else:
                dims = rng.choice([1, 2, 2, 3])
                shape = [rng.choice([1, 2, 8, 16, 31, 32, 33, 64, 96, 300, 4000]) for _ in range(dims)]
                while np.prod(shape) > 1 << 18:                   # a small file still
                    shape[rng.randrange(dims)] = 1
                shapes[name] = tuple(shape)
    return keys, shapes


def header_length(data: bytes) -> int:
    """Bytes before the tensor data (where the mutations go): the first tensor's offset."""
    from gguf_runtime.gguf_file import open_gguf
    import tempfile, os  # noqa: E401

    fd, tmp = tempfile.mkstemp(suffix=".gguf")
    try:
        os.write(fd, data), os.close(fd)
        return min(t.offset for t in open_gguf(tmp).tensors.values())
    finally:
        os.unlink(tmp)


def mutate(data: bytes, header: int, rng: random.Random) -> bytes:
    """One case: 1-3 mutations of the first `header` bytes (or a truncation)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        end = min(header, len(buf))
        if kind < 0.35:                                  # bit flips
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(end)
                buf[i] ^= 1 << rng.randrange(8)
        elif kind < 0.8:                                 # an interesting value on a 4-byte boundary
            v = rng.choice(INTERESTING)
            i = rng.randrange(0, max(1, end - len(v))) & ~3
            buf[i:i + len(v)] = v
        elif kind < 0.9:                                 # delete or duplicate a range
            i = rng.randrange(end)
            n = rng.randint(1, 16)
            buf[i:i] = buf[i:i + n] if rng.random() < 0.5 else b""
            if rng.random() >= 0.5:
                del buf[i:i + n]
        else:                                            # truncate
            del buf[rng.randrange(len(buf)):]
    return bytes(buf)


def check(path: Path) -> str | None:
    """None if every step ran or failed with one clean GGUFError; else what went wrong. Steps:
    open (the others need it), load + logits, tokenizer + encode."""
    import gguf_runtime

    def load_and_run():
        gguf_runtime.load(path, n_ctx=8, threads=1).logits([0, 1, 2])

    def tokenize():
        gguf_runtime.load_tokenizer(path).encode("the cat sat")

    problem = _step("open", lambda: gguf_runtime.open_gguf(path))
    if problem is not False:
        return problem or None
    for name, fn in (("load", load_and_run), ("tokenizer", tokenize)):
        problem = _step(name, fn)
        if problem:
            return problem
    return None


def _step(name: str, fn) -> str | bool:
    """False: it ran; "": a clean GGUFError; else the finding."""
    from gguf_runtime.errors import GGUFError

    try:
        fn()
    except GGUFError as e:
        text = str(e)
        if "\n" in text or len(text) > 2000:
            return f"{name}: a {len(text)}-character or multi-line message: {text[:120]!r}"
        return ""
    except Exception as e:  # noqa: BLE001 - the finding
        return f"{name}: {type(e).__name__}: {' '.join(str(e).split())[:160]}"
    return False
